"""Pieces every benchmark stage shares: the tokenizer, the task datasets, the model shape."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from config import Preset
from datasets import Dataset
from tasks import make_split, word_tokenizer
from transformers import PreTrainedTokenizerFast

from hf_dlm.data import prepare_dataset
from hf_dlm.testing import tiny_causal_lm


def base_tokenizer() -> PreTrainedTokenizerFast:
    """The tasks' word tokenizer, with a dedicated pad token from the start, so that the AR model, the adapted model
    and the from-scratch model share every id except the mask token that adaptation adds."""
    return word_tokenizer()


def fresh_gpt2(preset: Preset, vocab_size: int, tokenizer) -> torch.nn.Module:
    """A randomly initialised GPT-2 of the preset's shape, seeded: the AR base and the from-scratch control start
    from the very same weights."""
    torch.manual_seed(preset.seed)
    model = tiny_causal_lm(
        "gpt2", vocab_size=vocab_size, hidden=preset.hidden, layers=preset.layers, heads=preset.heads,
        positions=preset.positions, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def task_dataset(preset: Preset, split: str, n: int | None = None) -> Dataset:
    """Prompt/completion examples of `split` as a `datasets.Dataset` (the `task` column kept for reports)."""
    n = n if n is not None else (preset.n_train if split == "train" else preset.n_test)
    return Dataset.from_list(make_split(split, n, seed=preset.seed, tasks=list(preset.tasks)))


def train_rows(preset: Preset, tokenizer) -> Dataset:
    """Training rows, one example each (prompt + completion + EOS), `input_ids` + `loss_mask` (1 on completion + EOS).
    The AR run trains on exactly these rows; the diffusion runs tokenise the same examples the same way and
    EOS-fill them to `row_length` in their collator."""
    dataset = task_dataset(preset, "train").remove_columns("task")
    return prepare_dataset(dataset, tokenizer, max_length=preset.row_length, packing=False)


def quiet_torch(threads: int | None) -> None:
    """A benchmark's process: no progress bars or transformers warnings in its log, `threads` torch threads."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    if threads:
        torch.set_num_threads(threads)


def ar_base_dir(given: Path | None, preset_name: str) -> Path:
    """The AR base a benchmark starts from: `given`, else `make bench`'s stage 1 (benchmarks/checkpoints/<preset>/ar)."""
    return given or Path(__file__).resolve().parent / "checkpoints" / preset_name / "ar"


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n")


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
