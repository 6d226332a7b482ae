"""transformers' `generate()` arguments, as the diffusion decoder honours them.

Remote code: copied next to every saved checkpoint; imports only torch, transformers and its sibling files.

`DiffusionLM.generate` is what pipelines (`pipeline("text-generation")`) and code written for causal LMs call, with
the arguments of transformers' `GenerationMixin.generate`. `generate_arguments` sorts them into what
`diffusion_generate` takes; whatever the decoder cannot honour is refused with what to do instead, never ignored:

- `generation_config`: a `DiffusionGenerationConfig` is used as it is; a plain transformers `GenerationConfig`
  contributes the fields it sets (transformers 5 leaves unset fields None), read like keyword arguments.
- `do_sample=False`: greedy, temperature 0 (top_k / top_p of the generation config are dropped with it, as the
  pipeline drops its sampling defaults when not sampling). `do_sample=True`: the given temperature, else the
  generation config's when > 0, else 1.0 (transformers' default temperature). A temperature that contradicts an
  explicit `do_sample` is refused (transformers warns and ignores it).
- `max_length` (prompt + answer, transformers' older budget) becomes `max_new_tokens` when that is not given;
  `max_new_tokens` wins when both are, as in transformers.
- `num_return_sequences=n`: each prompt repeated n times, sampling only (transformers refuses n > 1 for greedy
  search: the n answers would be equal).
- `attention_mask`, `streamer`, `stop_strings` (with `tokenizer=`), `stopping_criteria`, `generator`, `callback`:
  arguments of `diffusion_generate`.
- Neutral values (`num_beams=1`, `output_scores=False`, an empty `logits_processor`, ...) pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Arguments passed on to diffusion_generate as they are (not decoding settings).
CALL_ARGUMENTS = ("attention_mask", "streamer", "stop_strings", "tokenizer", "stopping_criteria", "generator",
                  "callback")
# transformers generation arguments whose value here changes nothing (the decoder does exactly this anyway).
NEUTRAL_VALUES = {
    "num_beams": (1,),
    "num_beam_groups": (1,),
    "num_return_sequences": (1,),
    "min_new_tokens": (0,),
    "min_length": (0,),
    "output_scores": (False,),
    "output_logits": (False,),
    "output_attentions": (False,),
    "output_hidden_states": (False,),
    "renormalize_logits": (False,),
    "synced_gpus": (False,),
    "low_memory": (False,),
    "early_stopping": (False,),
    "length_penalty": (1.0,),
    "diversity_penalty": (0.0,),
    "top_k": (0,),  # transformers treats top_k=0 as "no top-k filtering"
}
# Why the rest cannot be honoured, for the refusal.
REASONS = {
    "num_beams": "beam search keeps several left-to-right hypotheses, which a diffusion canvas has no notion of; "
                 "use num_beams=1",
    "num_return_sequences": "more than one answer per prompt needs sampling (do_sample=True with a temperature > 0); "
                            "greedy answers would all be equal",
    "min_new_tokens": "the decoder cannot forbid EOS before a length; drop min_new_tokens / min_length",
    "min_length": "the decoder cannot forbid EOS before a length; drop min_new_tokens / min_length",
    "output_scores": "the decoder returns no per-token scores (return_dict_in_generate=True gives nfe, lengths and "
                     "the canvas history with output_history=True)",
    "output_logits": "the decoder returns no per-token logits (callback= sees the canvas after every step)",
    "logits_processor": "the decoder applies no logits processors; its own settings are temperature, top_k, top_p "
                        "and repetition_penalty",
    "assistant_model": "assisted decoding is for causal LMs; a gated drafter checkpoint drafts for its own base "
                       "(speculative_generate)",
}

METADATA = ("transformers_version", "_from_model_config", "_commit_hash", "_original_object_hash")


@dataclass
class GenerateArguments:
    """`generate`'s arguments sorted for `diffusion_generate`."""

    settings: dict = field(default_factory=dict)  # DiffusionGenerationConfig fields for this call
    call: dict = field(default_factory=dict)  # CALL_ARGUMENTS given
    copies: int = 1  # num_return_sequences: rows per prompt


def temperature_for(do_sample: bool | None, temperature, configured: float) -> float | None:
    """The temperature that realises `do_sample` (None: leave the setting alone).

    `temperature`: given with it (None if not); `configured`: the generation config's. Raises ValueError when they
    contradict."""
    if do_sample is None:
        return temperature
    if not isinstance(do_sample, bool):
        raise ValueError(f"`do_sample` must be True or False, got {do_sample!r}.")
    if do_sample is False:
        if temperature not in (None, 0, 0.0):
            raise ValueError(
                f"do_sample=False decodes greedily, but temperature={temperature!r} asks to sample: pass "
                f"do_sample=True to sample, or drop temperature."
            )
        return 0.0
    if temperature is not None and temperature == 0:
        raise ValueError("do_sample=True needs a temperature > 0 (0 decodes greedily): give one, e.g. temperature=0.7, "
                         "or do_sample=False.")
    if temperature is not None:
        return temperature
    return configured if configured > 0 else 1.0


def generate_arguments(kwargs: dict, generation_config_fields: dict | None, settings_names, configured: dict,
                       prompt_length: int) -> GenerateArguments:
    """Sort `generate`'s keyword arguments (transformers' names) into a `GenerateArguments`.

    `generation_config_fields`: the fields a plain transformers `GenerationConfig` sets (None when none was given);
    the keyword arguments override them. `settings_names`: the `DiffusionGenerationConfig` fields; `configured`:
    their values for this call before these arguments (the model's or the given diffusion config's).
    `prompt_length`: the prompts' width, to turn `max_length` into `max_new_tokens`."""
    given = {k: v for k, v in (generation_config_fields or {}).items() if k not in METADATA and v is not None}
    if kwargs.get("do_sample") is False:
        # The call's do_sample=False overrides a sampling config; its temperature / top_k / top_p go with it.
        for name in ("temperature", "top_k", "top_p"):
            given.pop(name, None)
    given.update(kwargs)
    out = GenerateArguments()
    for name in CALL_ARGUMENTS:
        if name in given:
            out.call[name] = given.pop(name)
    do_sample = given.pop("do_sample", None)
    explicit = {name: given.get(name) for name in ("temperature", "top_k", "top_p")}
    temperature = temperature_for(do_sample, explicit["temperature"], configured.get("temperature", 0.0))
    if do_sample is False:
        for name in ("top_k", "top_p"):
            if explicit[name] not in (None, 0) and not (name == "top_p" and explicit[name] == 1.0):
                raise ValueError(f"do_sample=False decodes greedily, but {name}={explicit[name]!r} restricts sampling: "
                                 f"pass do_sample=True to sample, or drop {name}.")
            given.pop(name, None)
            out.settings[name] = None
    if temperature is not None:
        given["temperature"] = temperature
    if given.get("top_k") == 0:
        given["top_k"] = None

    max_length = given.pop("max_length", None)
    if max_length is not None and "max_new_tokens" not in given:
        if max_length <= prompt_length:
            raise ValueError(f"max_length={max_length} leaves no room for an answer after the {prompt_length}-token "
                             f"prompt: pass max_new_tokens (the answer's budget) instead.")
        given["max_new_tokens"] = max_length - prompt_length

    copies = given.pop("num_return_sequences", None)
    if copies is not None and copies != 1:
        if not isinstance(copies, int) or copies < 1:
            raise ValueError(f"`num_return_sequences` must be a positive integer, got {copies!r}.")
        if not given.get("temperature", configured.get("temperature", 0.0)):
            raise ValueError(f"num_return_sequences={copies}: {REASONS['num_return_sequences']}.")
        out.copies = copies

    refused = []
    for name in list(given):
        if name in settings_names:
            out.settings[name] = given.pop(name)
        elif given[name] in NEUTRAL_VALUES.get(name, ()) or (name == "logits_processor" and not given[name]):
            given.pop(name)
        else:
            refused.append(name)
    if refused:
        reasons = "; ".join(f"{name}: {REASONS[name]}" for name in refused if name in REASONS)
        raise ValueError(
            f"generate() on a diffusion LM cannot honour {sorted(refused)}" + (f" ({reasons})" if reasons else "")
            + f". It takes transformers' do_sample, temperature, top_k, top_p, max_new_tokens, max_length, "
            f"num_return_sequences (sampling), eos_token_id, pad_token_id, repetition_penalty, use_cache, "
            f"{', '.join(CALL_ARGUMENTS)}, and every DiffusionGenerationConfig field: {sorted(settings_names)}."
        )
    return out


__all__ = ["CALL_ARGUMENTS", "GenerateArguments", "generate_arguments", "temperature_for"]
