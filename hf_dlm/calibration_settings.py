"""The settings of `hf-dlm calibrate` and the split-conformal count behind them, with the standard library only.

`hf_dlm.calibration` (the fit, on tensors) and `hf-dlm calibrate` (cli/calibrate.py, before torch is imported) both
take from here: where the true lengths come from (`REFERENCES`), the default coverage, and how many prompts a
coverage needs (`min_prompts`), so the command refuses too few prompts with the rule the fit applies.
"""

from __future__ import annotations

import math

DEFAULT_TARGET_COVERAGE = 0.95
REFERENCES = ("completion", "grow")  # true lengths: the reference answers, or the model's own `grow` answers


def conformal_rank(prompts: int, target_coverage: float) -> int:
    """Which order statistic (1-based) of `prompts` scores is the split-conformal quantile for the coverage."""
    return math.ceil((prompts + 1) * target_coverage)


def min_prompts(target_coverage: float) -> int:
    """The fewest prompts `fit_length_rule` accepts for a coverage (two halves, each with a conformal quantile)."""
    n = 1
    while conformal_rank(n, target_coverage) > n:
        n += 1
    return 2 * n


__all__ = ["DEFAULT_TARGET_COVERAGE", "REFERENCES", "conformal_rank", "min_prompts"]
