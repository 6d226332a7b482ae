"""Self-distillation data for parallel decoding: a model's own answers, to train a diffusion LM to commit them in
few forwards.

A diffusion LM commits about one token per forward when its confidence rarely clears the decoding threshold.
dParallel ("certainty-forcing distillation", Chen et al. 2025, github.com/czg1225/dParallel) fixes this by
fine-tuning the model on its *own* answers (its sampling trajectories) with the masked CE plus an entropy penalty
on the positions it already gets right; d3LLM uses such pseudo-trajectories too. The targets are then answers the
model can already produce, so the training signal is about *how fast* (how confidently) it commits them, not about
what to answer. For a model adapted from a causal LM, the AR base is the natural teacher: its greedy answers are
what the adaptation tries to keep.

`build_distillation_dataset` generates the answers and returns a `datasets.Dataset` in TRL's prompt/completion
format; train on it with `DiffusionTrainer` and `DISTILLATION_ARGUMENTS` (semi-autoregressive block rows, the
confidence term on). `hf-dlm distill` (hf_dlm/cli/distill.py) runs both steps on any checkpoint.

Teachers (`teacher=`):
- "diffusion": the DiffusionLM itself, through `diffusion_generate` with the given decoding settings (dParallel's
  self-distillation; decode slowly, e.g. `threshold=None`, for the best answers).
- "base": the AR base. A causal LM given as `model` (e.g. the model a merged checkpoint was adapted from, loaded
  separately) answers with `generate`; a DiffusionLM wrapped in a LoRA adapter (peft) answers with the adapter
  disabled and causal attention, which is exactly the causal LM it was adapted from (`autoregressive_base`).
- "auto": "base" for a causal LM, "diffusion" for a DiffusionLM.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from .evaluation import answer_autoregressive, answer_diffusion
from .modeling_dlm import DiffusionLM, unwrap_peft
from .training_settings import DISTILLATION_ARGUMENTS, TEACHERS, check_training_settings

logger = logging.getLogger(__name__)


def _diffusion_lm(model):
    """The DiffusionLM of `model` (itself, or inside a peft wrapper), or None for any other model."""
    inner = unwrap_peft(model)
    return inner if isinstance(inner, DiffusionLM) else None


@contextlib.contextmanager
def autoregressive_base(model):
    """The causal LM a LoRA-adapted DiffusionLM came from, for the duration of the block: the peft adapter disabled
    (LoRA deltas and the trainable mask row off) and the backbone's attention causal again
    (`config.is_causal = True`, transformers' switch that adaptation turned off). Restored on exit."""
    dlm = _diffusion_lm(model)
    if dlm is None or not hasattr(model, "disable_adapter"):
        raise ValueError(
            "autoregressive_base needs a DiffusionLM wrapped in a peft adapter (the base is the adapter disabled). "
            "For a merged or fully fine-tuned checkpoint, load the causal LM it was adapted from and pass it as the "
            "model with teacher='base'."
        )
    backbone = dlm.backbone
    was_causal = getattr(backbone.config, "is_causal", None)
    with model.disable_adapter():
        backbone.config.is_causal = True
        try:
            yield backbone
        finally:
            backbone.config.is_causal = was_causal


def _added_tokens(dlm, tokenizer) -> list[int]:
    """Tokens adaptation added that a causal LM must never write: the mask token, and a pad token that is not EOS."""
    eos = set(dlm.config.eos_token_ids)
    ids = [dlm.config.mask_token_id, tokenizer.pad_token_id]
    return sorted({i for i in ids if i is not None and i not in eos})


@contextlib.contextmanager
def _padding_token(tokenizer):
    """Batches of prompts are left padded; a causal LM's tokenizer often has no pad token (GPT-2's). Padding is
    masked out, so EOS serves for the call; the tokenizer is restored afterwards."""
    if tokenizer.pad_token is not None:
        yield
        return
    if tokenizer.eos_token is None:
        raise ValueError("The tokenizer has neither a pad nor an EOS token: set tokenizer.pad_token.")
    tokenizer.pad_token = tokenizer.eos_token
    try:
        yield
    finally:
        tokenizer.pad_token = None


def _record(prompt: str, completion: str, conversational: bool) -> dict:
    if conversational:
        return {"prompt": [{"role": "user", "content": prompt}],
                "completion": [{"role": "assistant", "content": completion}]}
    return {"prompt": prompt, "completion": completion}


def build_distillation_dataset(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    teacher: str = "auto",
    max_new_tokens: int = 256,
    batch_size: int = 8,
    chat_template: bool | None = None,
    keep_unfinished: bool = False,
    **generate_kwargs,
):
    """Answer `prompts` with the teacher and return them as a prompt/completion `datasets.Dataset`.

    Args:
        model: a DiffusionLM (plain or in a peft wrapper) or a causal LM (the AR base).
        tokenizer: the tokenizer both models share (the diffusion one: the AR base ignores the tokens adaptation
            added, and is kept from writing them).
        prompts: user prompts; through the chat template when the tokenizer has one (unless `chat_template=False`),
            and then the dataset is conversational (lists of messages), as `DiffusionTrainer` expects.
        teacher: "auto", "diffusion" or "base" (see the module docstring).
        max_new_tokens: the answer budget.
        batch_size: prompts answered together.
        keep_unfinished: keep answers that hit the budget without an EOS. Off by default: the trainer appends EOS
            to every completion, which would teach the model to stop where the budget cut.
        generate_kwargs: decoding settings: `diffusion_generate`'s for teacher="diffusion" (e.g. `threshold=None,
            length_strategy="grow"`), `generate`'s for "base" (greedy by default).

    Returns a `datasets.Dataset` with `prompt` and `completion` columns, one row per kept answer; raises when no
    answer ended within the budget.
    """
    from datasets import Dataset

    check_training_settings({"teacher": teacher})
    prompts = list(prompts)
    if not prompts:
        raise ValueError("No prompts: give the questions the teacher should answer.")
    if any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError("Every prompt must be a non-empty string (an empty prompt has nothing to answer).")
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens} and {batch_size}.")
    dlm = _diffusion_lm(model)
    if teacher == "auto":
        teacher = "base" if dlm is None else "diffusion"
    common = dict(batch_size=batch_size, chat_template=chat_template, max_new_tokens=max_new_tokens)
    was_training = model.training
    model.eval()
    try:
        with _padding_token(tokenizer):
            answers = _answer(model, dlm, tokenizer, prompts, teacher, common, generate_kwargs)
    finally:
        model.train(was_training)
    kept = [a for a in answers if a.ended or keep_unfinished]
    logger.info("Distillation data: %d of %d answers kept (%s teacher; the others reached the %d-token budget).",
                len(kept), len(answers), teacher, max_new_tokens)
    if not kept:
        raise ValueError(
            f"No answer ended within max_new_tokens={max_new_tokens}: raise the budget, or pass "
            f"keep_unfinished=True to train on cut answers."
        )
    conversational = getattr(tokenizer, "chat_template", None) is not None if chat_template is None else chat_template
    return Dataset.from_list([_record(a.prompt, a.text, conversational) for a in kept])


def _answer(model, dlm, tokenizer, prompts, teacher, common, generate_kwargs):
    if teacher == "diffusion":
        if dlm is None:
            raise ValueError("teacher='diffusion' needs a DiffusionLM; a causal LM answers with teacher='base'.")
        return answer_diffusion(model, tokenizer, prompts, **common, **generate_kwargs)
    if dlm is None:  # a causal LM: the AR base itself
        return answer_autoregressive(model, tokenizer, prompts, **common, **generate_kwargs)
    generate_kwargs.setdefault("suppress_tokens", _added_tokens(dlm, tokenizer))
    with autoregressive_base(model) as causal_lm:
        return answer_autoregressive(causal_lm, tokenizer, prompts, **common, **generate_kwargs)


__all__ = ["DISTILLATION_ARGUMENTS", "TEACHERS", "autoregressive_base", "build_distillation_dataset"]
