"""Choosing tokens for the masks of a block, and which masks commit first: the decoder's sampling and unmasking.

Remote code: copied next to every saved checkpoint (`decoder_dlm.py` imports it); imports only torch, transformers and
`settings_dlm.py`.

Sampling is transformers' `LogitsProcessorList`: `TemperatureLogitsWarper` and `TopKLogitsWarper` as they are (the
same arithmetic as `generate`'s), then `TopPKeepingCrossing`, our top-p. It keeps the same tokens as transformers'
`TopPLogitsWarper` on untied logits (every token until the probability before it reaches `top_p`), but it sorts
from the most likely token down where transformers sorts from the least likely up and compares with `1 - top_p`:
where tied tokens straddle the boundary, ours keeps the leftmost of them and transformers' the rightmost (and the two
float sums may round apart there). This decoder's seeded outputs are pinned (tests/test_decoding_pinned.py), so ours
stays (tests/test_generation.py shows the tie). The repetition penalty is CTRL's rule, as transformers'
`RepetitionPenaltyLogitsProcessor`, but not that class: EOS is exempt, only decided positions count (masks and
padding do not), and one penalty applies to every position of a block at once (`apply_repetition_penalty`; its
test compares it with transformers' processor on every other token).

Unmasking (which masks to commit when the schedule or the at-least-one rule picks) is one small class per
`unmasking` setting behind `UnmaskingRule`, as the length strategies are: a score per position (higher commits first)
and, for `left_to_right`, a restriction of the commits. `UNMASKING_RULE_CLASSES` maps the names of
`settings_dlm.UNMASKING_RULES` to them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper

from .settings_dlm import UNMASKING_RULES


# ----------------------------------------------------------------------------------------------- sampling
class TopPKeepingCrossing(LogitsProcessor):
    """Nucleus sampling (Holtzman et al. 2020): keep the smallest set of most likely tokens whose probability reaches
    `top_p`, the token that crosses it included; the rest get -inf. Works on scores of any shape [..., vocab]."""

    def __init__(self, top_p: float):
        self.top_p = top_p

    def __call__(self, input_ids: torch.LongTensor | None, scores: torch.Tensor) -> torch.Tensor:
        sorted_logits, order = scores.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= self.top_p  # the probability before a token already reaches top_p
        return scores.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), -torch.inf)


def sampling_warpers(temperature: float, top_k: int | None, top_p: float | None) -> LogitsProcessorList | None:
    """The warpers that turn logits into the sampling distribution, in transformers' order (temperature, top-k,
    top-p); None for greedy decoding (temperature 0)."""
    if temperature == 0:
        return None
    warpers = LogitsProcessorList([TemperatureLogitsWarper(float(temperature))])
    if top_k is not None:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p is not None:
        warpers.append(TopPKeepingCrossing(top_p))
    return warpers


def choose_tokens(logits: torch.Tensor, warpers: LogitsProcessorList | None,
                  generator: torch.Generator | None) -> torch.LongTensor:
    """A token for every position of `logits` [rows, q, vocab]: the argmax (no warpers), else a sample from the
    softmax of the warped logits."""
    if warpers is None:
        return logits.argmax(-1)
    scaled = warpers(None, logits)  # these warpers read no input_ids
    flat = scaled.softmax(-1).reshape(-1, scaled.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(scaled.shape[:-1])


def apply_repetition_penalty(
    logits: torch.Tensor, ids: torch.Tensor, decided: torch.Tensor, penalty: float, exempt: torch.Tensor
) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al. 2019) on `logits` [rows, q, vocab]: every token that occurs in
    `ids` [rows, n] where `decided` is True gets its logit divided by `penalty` if positive, multiplied if negative.
    Tokens in `exempt` (the EOS ids) are left alone: the chat template puts EOS in every prompt, and a penalty on it
    would argue against ending, which a variable-length decoder must not do."""
    counts = torch.zeros(ids.shape[0], logits.shape[-1], dtype=torch.long, device=logits.device)
    counts.scatter_add_(1, ids, decided.long())
    seen = counts > 0
    seen[:, exempt] = False
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen[:, None, :], penalised, logits)


# ----------------------------------------------------------------------------------------------- unmasking
class UnmaskingRule(ABC):
    """Which masks of a block commit first. `score` ranks the positions of a block (higher first; the decoder takes
    the top of the ranking up to the step's schedule, ties to the leftmost); `restrict` may then drop commits."""

    name: str = ""

    @abstractmethod
    def score(self, probs: torch.Tensor, x0: torch.LongTensor, p_x0: torch.Tensor,
              generator: torch.Generator | None) -> torch.Tensor:
        """The ranking score [rows, q] from the token distribution `probs` [rows, q, vocab], the chosen tokens `x0`
        and their probability `p_x0`."""

    def restrict(self, commit: torch.BoolTensor, is_mask: torch.BoolTensor) -> torch.BoolTensor:
        """The commits [rows, q] that may stand, given which positions were masks. Default: all of them."""
        return commit


class LowConfidence(UnmaskingRule):
    """LLaDA's `low_confidence` remasking: the probability of the chosen token."""

    name = "low_confidence"

    def score(self, probs, x0, p_x0, generator):
        return p_x0


class Margin(UnmaskingRule):
    """Top-1 minus top-2 probability."""

    name = "margin"

    def score(self, probs, x0, p_x0, generator):
        top2 = probs.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]


class Entropy(UnmaskingRule):
    """Dream's entropy order: the lowest entropy first."""

    name = "entropy"

    def score(self, probs, x0, p_x0, generator):
        return (probs * probs.clamp_min(1e-12).log()).sum(-1)  # negative entropy: higher = surer


class RandomOrder(UnmaskingRule):
    """LLaDA's `random` remasking: a uniform order (drawn from the call's generator)."""

    name = "random"

    def score(self, probs, x0, p_x0, generator):
        return torch.rand(x0.shape, generator=generator, device=x0.device)


class LeftToRight(UnmaskingRule):
    """The leftmost masks first, and a mask never commits while one to its left in the block stays masked, so
    threshold commits only extend the decided prefix."""

    name = "left_to_right"

    def score(self, probs, x0, p_x0, generator):
        return -torch.arange(x0.shape[-1], device=x0.device, dtype=probs.dtype).expand(x0.shape)

    def restrict(self, commit, is_mask):
        # Only the decided prefix grows: drop commits that lie right of a mask staying masked.
        return commit & ((is_mask & ~commit).long().cumsum(-1) == 0)


# `unmasking` name -> class; the names are settings_dlm.UNMASKING_RULES (one without a class here fails at import).
_BUILT_IN = {cls.name: cls for cls in (LowConfidence, Margin, Entropy, RandomOrder, LeftToRight)}
UNMASKING_RULE_CLASSES: dict[str, type[UnmaskingRule]] = {name: _BUILT_IN[name] for name in UNMASKING_RULES}


__all__ = [
    "UNMASKING_RULE_CLASSES",
    "Entropy",
    "LeftToRight",
    "LowConfidence",
    "Margin",
    "RandomOrder",
    "TopPKeepingCrossing",
    "UnmaskingRule",
    "apply_repetition_penalty",
    "choose_tokens",
    "sampling_warpers",
]
