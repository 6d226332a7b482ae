"""Our measurements as plain functions, and as `evaluate` metric modules that call them.

Each folder next to this file holds one `evaluate` metric module (`<name>/<name>.py`), loaded offline from its
path: `evaluate.load(hf_dlm.metrics.path("tokens_per_forward"))`. The modules only turn `evaluate`'s inputs into
calls of the functions below (and of `hf_dlm.evaluation`), so `hf-dlm bench`, the docs and `evaluate` compute the
same numbers.

| module | inputs | what it measures |
|---|---|---|
| `exact_length_match` | answers, references (text or token ids), a tokenizer | exact match, and whether the answer has the reference's length in tokens (variable-length decoding gets the length right, not only the text) |
| `length_prediction` | predicted lengths, true lengths, `length_margin` | the `predict` strategy's length bound: signed error, coverage (answer + EOS fit the canvas), slack, rows that grew |
| `tokens_per_forward` | answer lengths, forwards per answer | decoding parallelism: answer tokens / model forwards (1.0 for autoregressive decoding) |
| `generative_perplexity` | answers, prompts, a causal LM | perplexity of the answers under a scoring causal LM (`hf_dlm.evaluation.generative_perplexity`) |
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..evaluation import length_summary
from ..length_strategies_dlm import length_bound

METRICS_DIR = Path(__file__).parent
METRIC_NAMES = ("exact_length_match", "length_prediction", "tokens_per_forward", "generative_perplexity")


def path(name: str) -> str:
    """Local path of one of our `evaluate` metric modules, for `evaluate.load(path)` (no Hub access)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown hf_dlm metric {name!r}; available: {', '.join(METRIC_NAMES)}.")
    return str(METRICS_DIR / name)


def _token_ids(item: str | Sequence[int], tokenizer) -> list[int]:
    if isinstance(item, str):
        return tokenizer(item, add_special_tokens=False)["input_ids"]
    return [int(t) for t in item]


def answer_matches(answers: Sequence[str | Sequence[int]], references: Sequence[str | Sequence[int]],
                   tokenizer) -> dict[str, list[bool]]:
    """Per answer: `exact` (the text equals the reference's) and `length` (same number of tokens).

    Answers and references are text or token ids (an answer's ids exclude its EOS). Both sides go through the
    tokenizer (text is tokenized without special tokens, ids are decoded with special tokens skipped), so two
    spellings the tokenizer writes the same way match, as in `hf-dlm bench`. Pass the generated ids rather than
    their text when you have them: re-tokenizing a decoded answer can change its token count.
    """
    if len(answers) != len(references):
        raise ValueError(f"{len(answers)} answers but {len(references)} references: pass one reference per answer.")
    exact, length = [], []
    for answer, reference in zip(answers, references):
        answer_ids, reference_ids = _token_ids(answer, tokenizer), _token_ids(reference, tokenizer)
        exact.append(tokenizer.decode(answer_ids, skip_special_tokens=True)
                     == tokenizer.decode(reference_ids, skip_special_tokens=True))
        length.append(len(answer_ids) == len(reference_ids))
    return {"exact": exact, "length": length}


def predicted_bound(predicted_length: int, length_margin: int, max_new_tokens: int | None = None) -> int:
    """The canvas the `predict` strategy decodes after its first step: predicted length + 1 (the EOS) + margin,
    capped by the budget when one is given; the decoder's own rule, `length_strategies_dlm.length_bound`."""
    budget = sys.maxsize if max_new_tokens is None else max_new_tokens
    return int(length_bound(torch.as_tensor(predicted_length), length_margin, budget))


def length_prediction_summary(predicted: Sequence[int], true_lengths: Sequence[int], *, length_margin: int,
                              max_new_tokens: int | None = None, grew: Sequence[bool] | None = None) -> dict:
    """How good the `predict` strategy's length bound was.

    - `error`: quantiles of predicted - true length (the raw prediction, before the margin), plus the shares
      `exact` (error 0) and `under` (error < 0), as `hf-dlm bench` reports them;
    - `coverage`: share of answers whose tokens and EOS fit in the bound (no growth needed);
    - `mean_slack`: over covered answers, mean canvas positions beyond the answer's EOS (masks decoded for nothing);
    - `grew`: share of rows that grew past their bound: the decoder's own flags when `grew` is given
      (`DiffusionGenerateOutput.grew`), else the growth the true lengths imply (not covered, and the bound was
      below the budget: a row already at `max_new_tokens` cannot grow).
    """
    if len(predicted) != len(true_lengths):
        raise ValueError(f"{len(predicted)} predicted lengths but {len(true_lengths)} true lengths.")
    if not predicted:
        raise ValueError("No lengths to summarise.")
    if grew is not None and len(grew) != len(predicted):
        raise ValueError(f"`grew` has {len(grew)} flags for {len(predicted)} answers.")
    errors = [p - t for p, t in zip(predicted, true_lengths)]
    n = len(errors)
    bounds = [predicted_bound(p, length_margin, max_new_tokens) for p in predicted]
    # A canvas of `bound` positions holds an answer of t tokens and its EOS when t + 1 <= bound.
    slack = [b - (t + 1) for b, t in zip(bounds, true_lengths)]
    covered = [s for s in slack if s >= 0]
    implied_growth = sum(s < 0 and (max_new_tokens is None or b < max_new_tokens) for b, s in zip(bounds, slack))
    return {
        "error": length_summary(errors) | {"exact": sum(e == 0 for e in errors) / n,
                                           "under": sum(e < 0 for e in errors) / n},
        "coverage": len(covered) / n,
        "mean_slack": sum(covered) / len(covered) if covered else float("nan"),
        "grew": (sum(bool(g) for g in grew) if grew is not None else implied_growth) / n,
    }


def tokens_per_forward(lengths: Sequence[int], forwards: Sequence[int]) -> float:
    """Answer tokens per model forward over a set of answers (corpus level: total tokens / total forwards), the
    parallelism of a decoder. `forwards` are NFE per answer (`DiffusionGenerateOutput.nfe_per_row`)."""
    if len(lengths) != len(forwards):
        raise ValueError(f"{len(lengths)} answer lengths but {len(forwards)} forward counts.")
    total = sum(forwards)
    if total <= 0:
        raise ValueError("No forwards counted: tokens per forward is undefined (pass NFE per answer, >= 1 each).")
    return sum(lengths) / total


__all__ = [
    "METRIC_NAMES",
    "answer_matches",
    "length_prediction_summary",
    "path",
    "predicted_bound",
    "tokens_per_forward",
]
