"""The decoding settings of `diffusion_generate`: names, defaults, one-line help, and their validation, in one place.

Remote code (copied next to checkpoints, imported relatively by generation_dlm.py) and standard library only, so
that the `hf-dlm` command line can check every flag in milliseconds, before torch or a model is loaded.
`DiffusionGenerationConfig` takes its defaults from `GENERATION_SETTINGS` and validates with
`validate_generation_settings`; its docstring explains each setting at length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LENGTH_STRATEGIES = ("fixed", "grow", "predict")
UNMASKING_RULES = ("low_confidence", "margin", "entropy", "random", "left_to_right")


@dataclass(frozen=True)
class Setting:
    name: str
    default: object
    type: type
    help: str
    optional: bool = False  # None is a valid value
    choices: tuple | None = None


GENERATION_SETTINGS = (
    Setting("max_new_tokens", 256, int, "token budget per answer (never exceeded)"),
    Setting("length_strategy", "predict", str, "fixed (LLaDA), grow (dLLM-Var) or predict (length bound from p(EOS) "
            "at the first step)", choices=LENGTH_STRATEGIES),
    Setting("block_length", 32, int, "tokens per semi-autoregressive block"),
    Setting("steps", None, int, "denoising steps for the whole budget (LLaDA schedule); 'none': from the threshold",
            optional=True),
    Setting("threshold", 0.9, float, "commit every mask whose probability reaches this (Fast-dLLM); 'none' disables",
            optional=True),
    Setting("unmasking", "low_confidence", str, "which masks to commit first (left_to_right: only extend the "
            "decided prefix)", choices=UNMASKING_RULES),
    Setting("defer_repeats", False, bool, "do not commit a token equal to its left neighbour's in the same step"),
    Setting("repetition_penalty", 1.0, float, "CTRL penalty on tokens already decided (EOS exempt); 1.0 disables"),
    Setting("temperature", 0.0, float, "0 = greedy"),
    Setting("top_k", None, int, "sample from the k most likely tokens", optional=True),
    Setting("top_p", None, float, "sample from the smallest set with this cumulative probability", optional=True),
    Setting("seed", None, int, "seed of the sampling generator", optional=True),
    Setting("predict_threshold", 0.5, float, "predict: the length is the first position whose p(EOS) reaches this"),
    Setting("length_margin", 8, int, "predict: safety margin added to the predicted length"),
    Setting("use_cache", True, bool, "prefix KV cache (--no-cache decodes exactly, slower)"),
    Setting("output_history", False, bool, "return the canvas after every step"),
    Setting("return_dict_in_generate", False, bool, "return a DiffusionGenerateOutput"),
    Setting("mask_token_id", None, int, "the mask token (from the model config)", optional=True),
    Setting("pad_token_id", None, int, "the pad token (from the model config)", optional=True),
    Setting("eos_token_id", None, int, "EOS id or list of ids (from the model config)", optional=True),
    Setting("bos_token_id", None, int, "the BOS token (from the model config)", optional=True),
)
GENERATION_DEFAULTS = {s.name: s.default for s in GENERATION_SETTINGS}


def token_id_list(value) -> list[int]:
    """A token id, a list of them, or None, as a list (EOS is often several ids: chat models end turns with one
    token and documents with another)."""
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def validate_generation_settings(settings: dict) -> None:
    """Raise `ValueError` saying what to change. `settings` may hold some fields only: the others take their
    defaults. Nothing is clamped silently."""
    unknown = sorted(set(settings) - set(GENERATION_DEFAULTS))
    if unknown:
        raise ValueError(f"Unknown diffusion generation settings: {unknown}. Valid ones: {sorted(GENERATION_DEFAULTS)}.")
    s = GENERATION_DEFAULTS | settings

    def positive_int(name):
        if not _is_int(s[name]) or s[name] <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {s[name]!r}.")

    positive_int("max_new_tokens")
    positive_int("block_length")
    if s["length_strategy"] not in LENGTH_STRATEGIES:
        raise ValueError(f"`length_strategy` must be one of {LENGTH_STRATEGIES}, got {s['length_strategy']!r}.")
    if s["unmasking"] not in UNMASKING_RULES:
        raise ValueError(f"`unmasking` must be one of {UNMASKING_RULES}, got {s['unmasking']!r}.")
    for name in ("defer_repeats", "use_cache", "output_history", "return_dict_in_generate"):
        if not isinstance(s[name], bool):
            raise ValueError(f"`{name}` must be True or False, got {s[name]!r}.")
    if not _is_number(s["repetition_penalty"]) or not s["repetition_penalty"] > 0:
        raise ValueError(
            f"`repetition_penalty` must be a number > 0 (1.0 disables, > 1 discourages repeats), "
            f"got {s['repetition_penalty']!r}."
        )
    threshold = s["threshold"]
    if threshold is not None and not (_is_number(threshold) and 0.0 < threshold <= 1.0):
        raise ValueError(
            f"`threshold` must be in (0, 1] (commit masks whose token probability reaches it) or None, got {threshold!r}."
        )
    steps, budget = s["steps"], s["max_new_tokens"]
    if steps is not None:
        positive_int("steps")
        blocks = math.ceil(budget / s["block_length"])
        if steps > budget:
            raise ValueError(
                f"`steps`={steps} is more than the {budget} masks of the budget: some steps would commit nothing. "
                f"Use steps <= max_new_tokens."
            )
        if steps < blocks:
            raise ValueError(
                f"`steps`={steps} leaves blocks with zero steps: max_new_tokens={budget} with "
                f"block_length={s['block_length']} makes {blocks} blocks. Use steps >= {blocks}."
            )
        if steps % blocks:
            raise ValueError(
                f"`steps`={steps} does not split evenly over the {blocks} blocks; use a multiple of {blocks} "
                f"(e.g. {blocks * max(1, steps // blocks)})."
            )
    if not _is_number(s["temperature"]) or s["temperature"] < 0:
        raise ValueError(f"`temperature` must be >= 0 (0 = greedy), got {s['temperature']!r}.")
    if s["top_k"] is not None and (not _is_int(s["top_k"]) or s["top_k"] <= 0):
        raise ValueError(f"`top_k` must be a positive integer or None, got {s['top_k']!r}.")
    if s["top_p"] is not None and not (_is_number(s["top_p"]) and 0.0 < s["top_p"] <= 1.0):
        raise ValueError(f"`top_p` must be in (0, 1] or None, got {s['top_p']!r}.")
    if s["seed"] is not None and not _is_int(s["seed"]):
        raise ValueError(f"`seed` must be an integer or None, got {s['seed']!r}.")
    if not (_is_number(s["predict_threshold"]) and 0.0 < s["predict_threshold"] < 1.0):
        raise ValueError(f"`predict_threshold` must be in (0, 1), got {s['predict_threshold']!r}.")
    if not _is_int(s["length_margin"]) or s["length_margin"] < 0:
        raise ValueError(f"`length_margin` must be an integer >= 0, got {s['length_margin']!r}.")


__all__ = ["GENERATION_DEFAULTS", "GENERATION_SETTINGS", "LENGTH_STRATEGIES", "Setting", "UNMASKING_RULES",
           "token_id_list", "validate_generation_settings"]
