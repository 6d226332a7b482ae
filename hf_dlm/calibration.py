"""A calibrated length bound for `length_strategy="predict"`: choose `predict_threshold` and `length_margin` so that
the bound covers the answer's true length with a stated probability (`length_coverage`).

`predict` reads p(EOS) over prompt + `max_new_tokens` masks at the first step; the predicted length is the first
position whose p(EOS) reaches `predict_threshold`, and the canvas (the bound) is predicted + 1 (the EOS) +
`length_margin`, at most the budget. The bound *covers* an answer of L tokens when the answer and its EOS fit:
bound >= min(L + 1, budget) (an answer that fills the budget is covered by the whole budget, as it would be by any
rule). A bound that is too short is repaired by growing, at the cost of extra forwards; one that is too long costs
masks in every forward. Calibration takes the shortest rule that still covers.

The fit is split conformal prediction (Vovk et al. 2005; Angelopoulos & Bates 2021, "A Gentle Introduction to
Conformal Prediction", section 1): for a threshold t, the score of a prompt is the margin it needs,
max(0, min(L, budget - 1) - predicted_t); the margin is the ceil((n + 1) * coverage)-th smallest of the n scores,
which covers a new prompt from the same distribution with probability >= coverage. The threshold is picked (smallest
mean bound) on one half of the fit prompts and its margin certified on the other, so the choice does not eat into
the guarantee. `calibrate_length_rule` keeps a further half of all prompts out of the fit to measure coverage.

True lengths come from reference answers (`reference="completion"`, tokenized) or from the model's own `grow`
answers (`reference="grow"`: the bound then covers what the model would write, which is what decides whether
`predict` has to grow).

Used by `hf-dlm calibrate` (cli/calibrate.py); `write_length_rule` stores the rule in a checkpoint's
`generation_config.json`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .calibration_settings import DEFAULT_TARGET_COVERAGE, REFERENCES, conformal_rank, min_prompts
from .files import write_text_atomically
from .length_strategies_dlm import length_bound, predicted_lengths

# Candidate thresholds: p(EOS) estimates P(length <= j), so t is a quantile of the model's length belief.
DEFAULT_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20)) + (0.01, 0.02, 0.98, 0.99)


@dataclass(frozen=True)
class LengthRule:
    """The bound rule of `predict` and the coverage it was fitted for."""

    predict_threshold: float
    length_margin: int
    length_coverage: float

    def settings(self) -> dict:
        """As generation settings (the names of `DiffusionGenerationConfig`)."""
        return asdict(self)


@dataclass(frozen=True)
class BoundStats:
    """How a rule's bounds meet the true lengths on a set of prompts. `slack`: bound minus min(length + 1,
    budget), over the covered prompts (masks a forward carries for nothing); `shortfall`: the same negated over
    the uncovered ones (positions the row has to grow)."""

    prompts: int
    coverage: float
    mean_slack: float
    mean_shortfall: float
    mean_bound: float


def needed(lengths: torch.Tensor, budget: int) -> torch.Tensor:
    """The canvas an answer needs: its tokens and its EOS, at most the budget."""
    return (lengths + 1).clamp(max=budget)


def bound_stats(p_eos: torch.Tensor, lengths: torch.Tensor, rule: LengthRule, budget: int) -> BoundStats:
    """Coverage and slack of `rule` on prompts with first-step p(EOS) `p_eos` [n, budget] and true `lengths` [n]."""
    bounds = length_bound(predicted_lengths(p_eos, rule.predict_threshold), rule.length_margin, budget)
    gap = bounds - needed(lengths, budget)
    covered = gap >= 0
    return BoundStats(
        prompts=len(lengths),
        coverage=float(covered.float().mean()),
        mean_slack=float(gap[covered].float().mean()) if covered.any() else 0.0,
        mean_shortfall=float((-gap[~covered]).float().mean()) if (~covered).any() else 0.0,
        mean_bound=float(bounds.float().mean()),
    )


def _margin(p_eos, lengths, budget, threshold, rank) -> tuple[int, torch.Tensor]:
    predicted = predicted_lengths(p_eos, threshold)
    scores = (needed(lengths, budget) - 1 - predicted).clamp(min=0)  # the margin each prompt needs
    return int(scores.sort().values[rank - 1]), predicted


def fit_length_rule(
    p_eos: torch.Tensor,
    lengths: torch.Tensor,
    budget: int,
    target_coverage: float = DEFAULT_TARGET_COVERAGE,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> LengthRule:
    """The split-conformal rule for `target_coverage` (module docstring). The prompts are used in two halves, in
    the order given: the first picks the threshold (the one whose conformal margin gives the smallest mean bound
    there), the second sets that threshold's margin. Picking and certifying on the same prompts would favour a
    threshold whose quantile came out lucky (measured: 0.92 instead of 0.95 on fresh prompts). Raises ValueError
    when there are too few prompts for the coverage."""
    if not 0.0 < target_coverage < 1.0:
        raise ValueError(f"target_coverage must be in (0, 1), got {target_coverage!r}.")
    n = len(lengths)
    if p_eos.shape != (n, budget):
        raise ValueError(f"p_eos must be [prompts, budget] = [{n}, {budget}], got {tuple(p_eos.shape)}.")
    if n < min_prompts(target_coverage):
        raise ValueError(
            f"{n} prompts cannot certify {target_coverage:.0%} coverage: the fit needs at least "
            f"{min_prompts(target_coverage)} (half to pick the threshold, half for the conformal margin). Give more "
            f"prompts or lower the target coverage."
        )
    pick, certify = slice(0, n // 2), slice(n // 2, n)
    best = None
    for threshold in sorted(set(thresholds)):
        margin, predicted = _margin(p_eos[pick], lengths[pick], budget, threshold,
                                    conformal_rank(n // 2, target_coverage))
        key = (float(length_bound(predicted, margin, budget).float().mean()), margin)
        if best is None or key < best[0]:
            best = (key, threshold)
    threshold = best[1]
    margin, _ = _margin(p_eos[certify], lengths[certify], budget, threshold,
                        conformal_rank(n - n // 2, target_coverage))
    return LengthRule(float(threshold), margin, float(target_coverage))


@dataclass(frozen=True)
class Calibration:
    """A fitted rule with its coverage on the prompts it was fitted on and on held-out ones."""

    rule: LengthRule
    fit: BoundStats
    held_out: BoundStats
    budget: int

    def to_json(self) -> dict:
        return {"rule": asdict(self.rule), "fit": asdict(self.fit), "held_out": asdict(self.held_out),
                "budget": self.budget}


def calibrate_length_rule(
    p_eos: torch.Tensor,
    lengths: torch.Tensor,
    budget: int,
    target_coverage: float = DEFAULT_TARGET_COVERAGE,
    seed: int = 0,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> Calibration:
    """Shuffle the prompts (`seed`), fit on one half, measure on the other: the rule returned is the one fitted on
    the first half, so the held-out figures are those of the rule that gets written."""
    n = len(lengths)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    fit_rows, held_rows = torch.tensor(order[: n // 2]), torch.tensor(order[n // 2 :])
    rule = fit_length_rule(p_eos[fit_rows], lengths[fit_rows], budget, target_coverage, thresholds)
    return Calibration(
        rule=rule,
        fit=bound_stats(p_eos[fit_rows], lengths[fit_rows], rule, budget),
        held_out=bound_stats(p_eos[held_rows], lengths[held_rows], rule, budget),
        budget=budget,
    )


# ----------------------------------------------------------------------------------------------- from a model
@torch.no_grad()
def first_step_eos_probabilities(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, max_new_tokens: int | None = None,
    batch_size: int = 8,
) -> torch.Tensor:
    """p(EOS) [prompts, budget] at every canvas position of `predict`'s first forward (prompt + budget masks), read
    by the decoder's own forward (`DiffusionLM.first_step_eos_probabilities`), so it is exactly what `predict`
    thresholds."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    settings = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
    return torch.cat([
        model.first_step_eos_probabilities(input_ids[start : start + batch_size],
                                           attention_mask[start : start + batch_size], **settings).cpu()
        for start in range(0, len(input_ids), batch_size)
    ])


def completion_lengths(tokenizer, completions: Sequence[str]) -> torch.Tensor:
    """Tokens of each reference answer (no special tokens: the EOS is counted by the bound, not the length)."""
    return torch.tensor([len(tokenizer(text, add_special_tokens=False).input_ids) for text in completions])


@torch.no_grad()
def grow_lengths(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int | None = None,
                 batch_size: int = 8, **settings) -> torch.Tensor:
    """The lengths of the model's own `grow` answers (a row without an EOS counts as the whole budget)."""
    kwargs = dict(settings, length_strategy="grow", return_dict_in_generate=True)
    if max_new_tokens is not None:
        kwargs["max_new_tokens"] = max_new_tokens
    lengths = []
    for start in range(0, len(input_ids), batch_size):
        out = model.diffusion_generate(input_ids[start : start + batch_size],
                                       attention_mask[start : start + batch_size], **kwargs)
        lengths.append(out.lengths.cpu())
    return torch.cat(lengths)


def write_length_rule(directory: str | Path, rule: LengthRule) -> Path:
    """Store the rule (predict_threshold, length_margin, length_coverage) in `directory/generation_config.json`,
    keeping every other field; the file must exist (a saved DiffusionLM checkpoint writes it)."""
    path = Path(directory) / "generation_config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: calibrate a saved DiffusionLM checkpoint directory (model.save_pretrained)."
        )
    config = json.loads(path.read_text())
    config.update(rule.settings())
    write_text_atomically(path, json.dumps(config, indent=2, sort_keys=True) + "\n")  # never half a config
    return path


__all__ = [
    "DEFAULT_TARGET_COVERAGE",
    "REFERENCES",
    "BoundStats",
    "Calibration",
    "LengthRule",
    "bound_stats",
    "calibrate_length_rule",
    "conformal_rank",
    "min_prompts",
    "completion_lengths",
    "first_step_eos_probabilities",
    "fit_length_rule",
    "grow_lengths",
    "write_length_rule",
]
