"""The names and checks of the training settings, in one place and with the standard library only.

`settings_dlm.py` is this for decoding; this file is it for training. Every door a training setting comes through
calls `check_training_settings`: `DiffusionTrainingArguments.__post_init__` (training_args.py), `DiffusionNoise`
(noise.py), `prepare_dataset`, `DataCollatorForDiffusion` and `block_rows` (data.py), and `hf-dlm distill`
(cli/distill.py, before torch is imported). So a rule has one message, whichever door refuses the value. Settings
that only transformers' `TrainingArguments` knows (learning rate, steps, ...) are checked by transformers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

DATASET_FORMATS = ("text", "prompt_completion", "messages")  # TRL's dataset formats (hf_dlm.data)
PADDING_STRATEGIES = ("random", "longest", "max_length")  # EOS fill lengths (DataCollatorForDiffusion)
TEACHERS = ("auto", "diffusion", "base")  # who answers the prompts of self-distillation (hf_dlm.distill)
# What distillation trains with, beside the data (DiffusionTrainingArguments fields): every row a semi-AR block row
# (the answer's blocks before block k clean, block k noised, nothing after it: what `grow` decoding meets), and the
# confidence term on (dParallel's certainty forcing; LLaDA 2.0's CAP). Set block_length to the decoding block. One
# random block per row (all_blocks=False): the recipe as measured (docs/training.md).
DISTILLATION_ARGUMENTS = {"block_rows": 1.0, "confidence_loss_weight": 1.0, "all_blocks": False}


def check_training_settings(settings: Mapping[str, Any]) -> None:
    """Raise `ValueError`, saying what to change, for the first value in `settings` (name -> value) that is out of
    range, and for a combination that cannot work when all of its settings are present. `eos_token_ids` and
    `eos_token_id` (from the model config or the tokenizer) are taken for the combinations that need them."""
    for name, value in settings.items():
        _check_one(name, value)
    _check_combinations(settings)


def _check_one(name: str, value: Any) -> None:
    if name == "max_length":
        if value is not None and value < 2:
            raise ValueError(f"max_length must be >= 2 (position 0 is never predicted), got {value}.")
    elif name == "dataset_format":
        if value is not None and value not in DATASET_FORMATS:
            raise ValueError(f"dataset_format must be one of {DATASET_FORMATS} or None, got {value!r}.")
    elif name == "padding":
        if value not in PADDING_STRATEGIES:
            raise ValueError(f"padding must be one of {PADDING_STRATEGIES}, got {value!r}.")
    elif name == "anneal_steps":
        if value < 0:
            raise ValueError(f"anneal_steps must be >= 0 (0 = bidirectional from the start), got {value}.")
    elif name == "block_rows":
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"block_rows is a share of rows in [0, 1], got {value}.")
    elif name in ("confidence_loss_weight", "ar_loss_weight"):
        if name == "ar_loss_weight" and value is None:
            return  # the trainer's default for the model (DEFAULT_AR_LOSS_WEIGHT on causal-prefix models, else 0)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0 (0 = off), got {value}.")
    elif name == "all_masked_rows":
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"all_masked_rows is a share of rows in [0, 1], got {value}.")
    elif name == "length_groups":
        if value < 1:
            raise ValueError(f"length_groups must be >= 1 (1 = one forward per micro-batch), got {value}.")
    elif name in ("block_length", "sample_max_new_tokens"):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")
    elif name == "draft_length":
        if value < 1:
            raise ValueError(f"draft_length must be >= 1 (masks per cut), got {value}.")
    elif name == "draft_cuts":
        if value is not None and value < 1:
            raise ValueError(f"draft_cuts must be >= 1 or None (every cut), got {value}.")
    elif name == "sample_steps":
        if value is not None and value < 1:
            raise ValueError(f"sample_steps must be >= 1 or None, got {value}.")
    elif name == "teacher":
        if value not in TEACHERS:
            raise ValueError(f"teacher must be one of {TEACHERS}, got {value!r}.")
    elif name not in ("t_min", "t_max", "packing", "eos_fill", "eos_always_masked", "eos_token_id", "eos_token_ids",
                      "all_blocks", "complementary_masks"):
        raise KeyError(f"{name!r} is not a training setting hf_dlm checks.")


def _check_combinations(settings: Mapping[str, Any]) -> None:
    def given(*names: str) -> bool:
        return all(name in settings for name in names)

    if given("t_min", "t_max") and not 0.0 < settings["t_min"] <= settings["t_max"] <= 1.0:
        raise ValueError(
            f"Need 0 < t_min <= t_max <= 1, got t_min={settings['t_min']}, t_max={settings['t_max']}. t_min=0 would "
            f"give weight 1/t = inf; use 1e-3 (MDLM) or 0.1 (dLLM-Var)."
        )
    if given("padding", "max_length") and settings["max_length"] is None:
        if settings["padding"] == "max_length":
            raise ValueError("padding='max_length' needs max_length.")
        if settings["padding"] == "random":
            raise ValueError(
                "padding='random' (the default) EOS-fills rows up to max_length: set max_length (prompt + the largest "
                "max_new_tokens you decode with), or padding='longest'."
            )
    if given("packing", "max_length") and settings["packing"] and settings["max_length"] is None:
        raise ValueError("packing needs max_length (the length of a packed row).")
    if given("eos_always_masked", "eos_token_ids") and settings["eos_always_masked"] and not settings["eos_token_ids"]:
        raise ValueError("eos_always_masked=True needs eos_token_ids (the model config's eos_token_id).")
    if given("eos_fill", "eos_token_id") and settings["eos_fill"] and settings["eos_token_id"] is None:
        raise ValueError("eos_fill=True needs eos_token_id (the token the answers are padded with).")


__all__ = ["DATASET_FORMATS", "DISTILLATION_ARGUMENTS", "PADDING_STRATEGIES", "TEACHERS", "check_training_settings"]
