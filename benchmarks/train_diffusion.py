"""Stages 2 and 3: the diffusion models, both trained with `DiffusionTrainer` on the same data and schedule.

- `adapt`: the AR model of stage 1 turned into a DiffusionLM (`DiffusionLM.from_causal_lm`: bidirectional
  attention, shift kept, a new mask token) and trained with the diffusion objective: DiffuGPT's recipe. A preset
  may set `attention="causal_prefix"` (block diffusion with a causal context) and decoding settings, which are saved
  in the model's generation config.
- `scratch`: the control. The same GPT-2 shape from the same random initialisation the AR model started from,
  wrapped the same way and trained with identical arguments for the same number of steps. The only difference
  is the AR pretraining, so "adapted > scratch" measures what the AR weights are worth.

Data: the AR run's prompt/completion examples, one per row, with the library's default treatment of such data:
EOS-filled (LLaDA's SFT padding, so that p(EOS) learns where answers end: the signal the `predict` strategy reads)
to a random length up to `row_length` (padding="random": every canvas size of the tables is trained).
"""

from __future__ import annotations

from pathlib import Path

from common import Stopwatch, base_tokenizer, fresh_gpt2, task_dataset, write_json
from config import Preset
from train_ar import training_arguments
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_dlm import DiffusionLM, DiffusionTrainer, DiffusionTrainingArguments

INITS = ("adapt", "scratch")


def diffusion_arguments(preset: Preset, output_dir: Path) -> DiffusionTrainingArguments:
    return DiffusionTrainingArguments(
        **training_arguments(preset, output_dir, preset.diffusion_steps, preset.diffusion_lr,
                             preset.diffusion_rows_per_step),
        # Everything else is DiffusionTrainer's default (EOS filling and padding="random" for prompt/completion
        # data, block_rows, the noise range): the benchmark checks the defaults a user gets.
        max_length=preset.row_length,
        block_length=preset.block_length,  # the block the tables decode with
        # DiffuGPT anneals causal -> bidirectional attention over its first 10k steps; a tenth of this short run
        # eases the AR weights in the same way. The scratch control gets the same schedule (only the init differs).
        anneal_steps=max(preset.diffusion_steps // 10, 0) if preset.attention == "bidirectional" else 0,
        **dict(preset.diffusion_args),
    )


def initial_model(preset: Preset, out: Path, init: str) -> DiffusionLM:
    if init == "adapt":
        causal = AutoModelForCausalLM.from_pretrained(out / "ar", attn_implementation="sdpa")
        tokenizer = AutoTokenizer.from_pretrained(out / "ar")
    elif init == "scratch":
        tokenizer = base_tokenizer()
        causal = fresh_gpt2(preset, len(tokenizer), tokenizer)
    else:
        raise ValueError(f"init must be one of {INITS}, got {init!r}.")
    return DiffusionLM.from_causal_lm(causal, tokenizer, attention=preset.attention)


def train_diffusion(preset: Preset, out: Path, init: str) -> Path:
    model = initial_model(preset, out, init)
    trainer = DiffusionTrainer(
        model=model,
        args=diffusion_arguments(preset, out / f"{init}-run"),
        train_dataset=task_dataset(preset, "train").remove_columns("task"),
        processing_class=model.tokenizer,
    )
    clock = Stopwatch()
    trainer.train()
    path = out / init
    for name, value in preset.decoding:
        setattr(model.generation_config, name, value)
    model.generation_config.validate()
    model.save_pretrained(path)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    write_json(path / "train_log.json", {"stage": init, "steps": preset.diffusion_steps, "seconds": clock.seconds,
                                         "rows": len(trainer.train_dataset), "losses": losses,
                                         "preset": preset.to_dict()})
    return path
