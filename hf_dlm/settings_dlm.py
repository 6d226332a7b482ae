"""The settings of `diffusion_generate`: one table (name, default, type, one-line help) and their validation.

Remote code, standard library only: `generation_dlm.py` imports it relatively, so transformers' `save_pretrained`
copies it next to every checkpoint. It imports neither torch nor transformers, so `hf-dlm` can build its decoding
flags from `SETTINGS` and refuse an impossible combination in milliseconds, before loading a model.
`DiffusionGenerationConfig` (generation_dlm.py) takes its defaults from `SETTINGS` and validates itself with
`validate_generation_settings`: the checks live here and nowhere else. The meaning of every setting is documented
in the `DiffusionGenerationConfig` docstring and docs/decoding.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

LENGTH_STRATEGIES = ("fixed", "grow", "predict")  # the built-in ones; length_strategies_dlm maps each to its class
UNMASKING_RULES = ("low_confidence", "margin", "entropy", "random", "left_to_right")
# `use_cache` values beside True (= "prefix") and False (no cache): the KV caches of decoder_dlm.py.
CACHE_MODES = ("prefix", "dual")
CACHE_REFRESHES = ("partial", "full")  # what a block's first forward re-encodes (dLLM-Var / Fast-dLLM)


@dataclass(frozen=True)
class Setting:
    """One field of `DiffusionGenerationConfig`.

    `type` is the type of a value (`int`, `float`, `str` or `bool`; a float setting also takes an int);
    `optional`: None is a value too (it switches the feature off, or means "from the model config");
    `group`: "decoding" (how answers are decoded: the flags of `hf-dlm generate`), "output" (what
    `diffusion_generate` returns), "tokens" (special token ids, filled from the model config when None) or
    "calibration" (a record of how other settings were fitted, written by `hf-dlm calibrate`; no flag).
    `words`: command-line words read as values beyond those of `type` (e.g. "dual" for `use_cache`).
    """

    name: str
    default: Any
    type: type
    help: str
    choices: tuple[str, ...] | None = None
    optional: bool = False
    group: str = "decoding"
    words: tuple[str, ...] = ()

    def parse(self, text: str) -> Any:
        """A command-line string as a value of this setting ("none" or "off" is None when `optional`). Raises
        `ValueError` for text that is not of the setting's type; ranges are `validate_generation_settings`'s job."""
        word = text.strip().lower()
        if word in self.words:
            return word
        if self.optional and word in ("none", "off"):
            return None
        if self.type is bool:
            if word in ("true", "yes", "on", "1"):
                return True
            if word in ("false", "no", "off", "0"):
                return False
        else:
            try:
                return self.type(text.strip())
            except ValueError:
                pass
        expected = {bool: "true or false", int: "an integer", float: "a number", str: "a word"}[self.type]
        expected += "".join(f", {word}" for word in self.words)
        raise ValueError(f"`{self.name}` expects {expected}{' or none' if self.optional else ''}, got {text!r}.")


SETTINGS: tuple[Setting, ...] = (
    Setting("max_new_tokens", 256, int, "token budget per answer (EOS included); never exceeded"),
    Setting("length_strategy", "predict", str, "fixed (LLaDA), grow (dLLM-Var) or predict (length bound from "
            "p(EOS) at step 1, then grow)", choices=LENGTH_STRATEGIES),
    Setting("block_length", 32, int, "tokens per semi-autoregressive block; masks commit only inside the current one"),
    Setting("steps", None, int, "denoising steps for the whole budget (LLaDA schedule), a multiple of the number of "
            "blocks; none: one token per step unless a threshold is set", optional=True),
    Setting("threshold", 0.9, float, "commit every mask whose token probability reaches this (Fast-dLLM), at least "
            "one per step; none disables", optional=True),
    Setting("unmasking", "low_confidence", str, "which masks to commit first (left_to_right: only extend the decided "
            "prefix)", choices=UNMASKING_RULES),
    Setting("decided_as_context", False, bool, "causal-prefix models: the decided prefix of the current block "
            "attends causally, as context, so the first mask after it is scored as the causal LM scores its next token"),
    Setting("defer_repeats", False, bool, "keep a token masked when its left neighbour commits the same token in the "
            "same step"),
    Setting("repetition_penalty", 1.0, float, "CTRL penalty on tokens already decided (EOS exempt); 1.0 disables"),
    Setting("temperature", 0.0, float, "0 = greedy (argmax); > 0 samples from softmax(logits / temperature)"),
    Setting("top_k", None, int, "sample among the k most likely tokens (needs temperature > 0)", optional=True),
    Setting("top_p", None, float, "sample from the smallest set of tokens with probability >= top_p (needs "
            "temperature > 0)", optional=True),
    Setting("seed", None, int, "seed of the generator for sampling and unmasking=random", optional=True),
    Setting("predict_threshold", 0.5, float, "predict: the answer ends at the first position whose p(EOS) at step 1 "
            "reaches this"),
    Setting("length_margin", 8, int, "predict: canvas = predicted length + 1 (the EOS) + this margin, capped by the "
            "budget"),
    Setting("length_coverage", None, float, "predict: the probability that the bound covers the answer which "
            "predict_threshold and length_margin were calibrated for (hf-dlm calibrate); a record, not a knob",
            optional=True, group="calibration"),
    Setting("use_cache", True, bool, "KV cache: true or prefix = the prompt and finished blocks are not "
            "recomputed; dual = also the canvas after the current block, refreshed at each block start; false = "
            "none", words=CACHE_MODES),
    Setting("cache_refresh", "partial", str, "at each block start re-encode the block just finished (partial, "
            "dLLM-Var) or the whole sequence (full, Fast-dLLM: fresher keys, a full-length forward per block)",
            choices=CACHE_REFRESHES),
    Setting("output_history", False, bool, "return the canvas after every step in `history` (needs "
            "return_dict_in_generate)", group="output"),
    Setting("return_dict_in_generate", False, bool, "return a DiffusionGenerateOutput instead of the sequences",
            group="output"),
    Setting("mask_token_id", None, int, "the mask token", optional=True, group="tokens"),
    Setting("pad_token_id", None, int, "fills prompts' left padding and everything after a row's EOS", optional=True,
            group="tokens"),
    Setting("eos_token_id", None, int, "ends a row; a list of ids: any of them does", optional=True, group="tokens"),
    Setting("bos_token_id", None, int, "begins a text", optional=True, group="tokens"),
)
SETTING_NAMES = tuple(setting.name for setting in SETTINGS)


def default_settings() -> dict[str, Any]:
    """Every setting with its default, in table order."""
    return {setting.name: setting.default for setting in SETTINGS}


def refuse_unknown_settings(names: Iterable[str]) -> None:
    """Raise `ValueError` naming the names that are not settings, and listing the valid ones."""
    unknown = sorted(set(names) - set(SETTING_NAMES))
    if unknown:
        raise ValueError(f"Unknown diffusion generation settings: {unknown}. Valid ones: {sorted(SETTING_NAMES)}.")


def cache_mode(use_cache) -> str | None:
    """The KV cache a `use_cache` value asks for: "prefix" (True too), "dual", or None (False: no cache)."""
    if use_cache is True:
        return "prefix"
    return use_cache or None


def token_id_list(value) -> list[int]:
    """A token id, a list of them, or None, as a list (EOS is often several ids: chat models end turns with one
    token and documents with another; any of them ends a row)."""
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)


def num_blocks(max_new_tokens: int, block_length: int) -> int:
    """Semi-autoregressive blocks of a budget; the last one may be partial."""
    return math.ceil(max_new_tokens / block_length)


def steps_per_block(max_new_tokens: int, block_length: int, steps: int | None, threshold: float | None) -> int | None:
    """Steps each block gets: `steps` split evenly over the blocks; without `steps` one token per step, unless a
    threshold decides (None: no schedule, at least one commit per step)."""
    if steps is None:
        return None if threshold is not None else block_length
    return steps // num_blocks(max_new_tokens, block_length)


# ----------------------------------------------------------------------------------------------- validation
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_token_id(value) -> bool:
    return _is_int(value) and value >= 0


def _check_one(name: str, value, length_strategies: tuple[str, ...]) -> None:
    """The checks a setting needs on its own."""
    if name in ("max_new_tokens", "block_length") or (name == "steps" and value is not None):
        if not _is_int(value) or value <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    elif name == "length_strategy":
        if not isinstance(value, str) or value not in length_strategies:
            raise ValueError(f"`length_strategy` must be one of {length_strategies}, got {value!r}.")
    elif name == "cache_refresh":
        if not isinstance(value, str) or value not in CACHE_REFRESHES:
            raise ValueError(f"`cache_refresh` must be one of {CACHE_REFRESHES}, got {value!r}.")
    elif name == "unmasking":
        if not isinstance(value, str) or value not in UNMASKING_RULES:
            raise ValueError(f"`unmasking` must be one of {UNMASKING_RULES}, got {value!r}.")
    elif name == "use_cache":
        if not (isinstance(value, bool) or value in CACHE_MODES):
            raise ValueError(
                f"`use_cache` must be True or False, \"prefix\" (= True) or \"dual\", got {value!r}."
            )
    elif name in ("defer_repeats", "decided_as_context", "output_history", "return_dict_in_generate"):
        if not isinstance(value, bool):
            raise ValueError(f"`{name}` must be True or False, got {value!r}.")
    elif name == "repetition_penalty":
        if not _is_number(value) or not 0 < value < math.inf:
            raise ValueError(
                f"`repetition_penalty` must be a finite number > 0 (1.0 disables, > 1 discourages repeats), got "
                f"{value!r}."
            )
    elif name == "threshold":
        if value is not None and not (_is_number(value) and 0.0 < value <= 1.0):
            raise ValueError(
                f"`threshold` must be in (0, 1] (commit masks whose token probability reaches it) or None, "
                f"got {value!r}."
            )
    elif name == "temperature":
        if not _is_number(value) or not 0 <= value < math.inf:  # NaN fails the comparison too
            raise ValueError(f"`temperature` must be a finite number >= 0 (0 = greedy), got {value!r}.")
    elif name == "top_k":
        if value is not None and not (_is_int(value) and value > 0):
            raise ValueError(f"`top_k` must be a positive integer or None, got {value!r}.")
    elif name == "top_p":
        if value is not None and not (_is_number(value) and 0.0 < value <= 1.0):
            raise ValueError(f"`top_p` must be in (0, 1] or None, got {value!r}.")
    elif name == "seed":
        if value is not None and not _is_int(value):
            raise ValueError(f"`seed` must be an integer or None, got {value!r}.")
    elif name == "predict_threshold":
        if not (_is_number(value) and 0.0 < value < 1.0):
            raise ValueError(f"`predict_threshold` must be in (0, 1), got {value!r}.")
    elif name == "length_coverage":
        if value is not None and not (_is_number(value) and 0.0 < value < 1.0):
            raise ValueError(f"`length_coverage` must be in (0, 1) or None, got {value!r}.")
    elif name == "length_margin":
        if not _is_int(value) or value < 0:
            raise ValueError(f"`length_margin` must be an integer >= 0, got {value!r}.")
    elif name == "eos_token_id":
        ids = value if isinstance(value, list | tuple) else [value]
        if value is not None and not all(_is_token_id(i) for i in ids):
            raise ValueError(
                f"`eos_token_id` must be a token id (an integer >= 0), a list of them, or None, got {value!r}."
            )
    elif name in ("mask_token_id", "pad_token_id", "bos_token_id"):
        if value is not None and not _is_token_id(value):
            raise ValueError(f"`{name}` must be a token id (an integer >= 0) or None, got {value!r}.")


def _check_steps(max_new_tokens: int, block_length: int, steps: int) -> None:
    blocks = num_blocks(max_new_tokens, block_length)
    if steps > max_new_tokens:
        raise ValueError(
            f"`steps`={steps} is more than the {max_new_tokens} masks of the budget: some steps would commit nothing. "
            f"Use steps <= max_new_tokens."
        )
    if steps < blocks:
        raise ValueError(
            f"`steps`={steps} leaves blocks with zero steps: max_new_tokens={max_new_tokens} with "
            f"block_length={block_length} makes {blocks} blocks. Use steps >= {blocks}."
        )
    if steps % blocks:
        raise ValueError(
            f"`steps`={steps} does not split evenly over the {blocks} blocks; use a multiple of {blocks} "
            f"(e.g. {blocks * max(1, steps // blocks)})."
        )


def validate_generation_settings(
    settings: Mapping[str, Any], length_strategies: tuple[str, ...] = LENGTH_STRATEGIES
) -> None:
    """Raise `ValueError` saying what to change if `settings` (setting name -> value) cannot be decoded with.

    A partial mapping is fine (e.g. only the flags a user gave): every setting present is checked, and every
    combination whose settings are all present. Nothing is clamped silently. `length_strategies`: the names
    accepted for `length_strategy` (`DiffusionGenerationConfig` passes its registry, which may hold plug-ins).
    """
    refuse_unknown_settings(settings)
    for name, value in settings.items():
        _check_one(name, value, length_strategies)

    def given(*names: str) -> bool:
        return all(name in settings for name in names)

    if given("max_new_tokens", "block_length", "steps") and settings["steps"] is not None:
        _check_steps(settings["max_new_tokens"], settings["block_length"], settings["steps"])
    if given("temperature") and settings["temperature"] == 0:
        # top_k/top_p only restrict sampling; greedy decoding would ignore them without a word.
        for name in ("top_k", "top_p"):
            if settings.get(name) is not None:
                raise ValueError(
                    f"`{name}`={settings[name]!r} restricts sampling, but temperature=0 decodes greedily and would "
                    f"ignore it: set temperature > 0, or {name}=None."
                )
    if given("output_history", "return_dict_in_generate"):
        if settings["output_history"] and not settings["return_dict_in_generate"]:
            raise ValueError(
                "output_history=True needs return_dict_in_generate=True (the history is in the output)."
            )
    if settings.get("mask_token_id") is not None:
        eos = settings.get("eos_token_id")
        others = {
            "pad_token_id": [settings.get("pad_token_id")],
            "eos_token_id": eos if isinstance(eos, list | tuple) else [eos],
            "bos_token_id": [settings.get("bos_token_id")],
        }
        for name, ids in others.items():
            if settings["mask_token_id"] in ids:
                raise ValueError(
                    f"`mask_token_id`={settings['mask_token_id']} is also the `{name}`: the decoder could not tell a "
                    f"mask from that token. Give the mask its own token (DiffusionLM.from_causal_lm adds one)."
                )


# ----------------------------------------------------------------------------------------------- token ids
SPECIAL_TOKEN_SETTINGS = ("mask_token_id", "pad_token_id", "eos_token_id", "bos_token_id")


def check_special_token_ids(model_ids: Mapping[str, Any], generation_ids: Mapping[str, Any],
                            vocab_size: int | None) -> None:
    """Raise `ValueError` naming the file to fix when the special token ids of a checkpoint cannot be right.

    `model_ids` / `generation_ids`: the special token settings of config.json and of generation_config.json (name ->
    id, a list for eos, None when unset). The mask id must be the same in both: decoding reads the generation
    config's, training the model config's, and a disagreement silently trains an ordinary token as the mask. Every
    id must be below `vocab_size` (the model's embedding rows): a larger one fails with an IndexError deep inside a
    forward, or mid-training.
    """
    model_mask, generation_mask = model_ids.get("mask_token_id"), generation_ids.get("mask_token_id")
    if model_mask is not None and generation_mask is not None and model_mask != generation_mask:
        raise ValueError(
            f"config.json has mask_token_id={model_mask} but generation_config.json has mask_token_id="
            f"{generation_mask}: decoding and training would use different mask tokens. Set both to the id of the "
            f"tokenizer's mask token."
        )
    if vocab_size is None:
        return
    for file, ids in (("config.json", model_ids), ("generation_config.json", generation_ids)):
        check_token_ids_in_vocabulary(ids, vocab_size, f"{file} has", f"fix it in {file} (the tokenizer's id of "
                                      f"that token), or resize the embeddings to the tokenizer")


def check_token_ids_in_vocabulary(ids: Mapping[str, Any], vocab_size: int, where: str, advice: str) -> None:
    """Raise `ValueError` when a special token id (name -> id or list) is not below `vocab_size`: the embedding has
    no row for it, and the forward would fail with an IndexError (or, on some kernels, read garbage)."""
    for name in SPECIAL_TOKEN_SETTINGS:
        for token_id in token_id_list(ids.get(name)):
            if _is_int(token_id) and token_id >= vocab_size:
                raise ValueError(
                    f"{where} {name}={ids.get(name)!r}, but the model has only {vocab_size} token ids "
                    f"(0..{vocab_size - 1}): {advice}."
                )


def check_loaded_token_ids(model, source) -> None:
    """`check_special_token_ids` on a model just loaded by `from_pretrained` (its config, generation config and
    embedding rows), the message prefixed with where it came from. Duck-typed: no torch import here."""

    def ids(config) -> dict:
        return {name: getattr(config, name, None) for name in SPECIAL_TOKEN_SETTINGS} if config is not None else {}

    try:
        check_special_token_ids(ids(model.config), ids(getattr(model, "generation_config", None)),
                                model.get_input_embeddings().num_embeddings)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def check_prompt_tensors(input_ids, attention_mask) -> None:
    """Refuse prompt tensors that would decode wrongly without an error, or crash inside torch: a float or bool
    `input_ids` (bool ids are read as tokens 0 and 1), an empty batch, and an `attention_mask` with values other than
    0 and 1 (a 2 would count as a real token in some places and not in others). Duck-typed on the tensor methods,
    so this file still imports no torch."""
    dtype = str(getattr(input_ids, "dtype", ""))
    if dtype == "torch.bool" or getattr(input_ids, "is_floating_point", lambda: False)() or "complex" in dtype:
        raise ValueError(f"input_ids must hold integer token ids (torch.long), got dtype {dtype}: pass the tokenizer's "
                         f"output (tokenizer(..., return_tensors='pt').input_ids).")
    if getattr(input_ids, "dim", lambda: 0)() == 2 and input_ids.shape[0] == 0:
        raise ValueError("The batch is empty (input_ids has 0 rows): pass at least one prompt.")
    if attention_mask is not None and hasattr(attention_mask, "any"):
        if bool(((attention_mask != 0) & (attention_mask != 1)).any()):
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (a real token); use the tokenizer's "
                             "attention_mask.")
