"""Length error of the `predict` strategy: `evaluate` metric module of hf_dlm (load it with
`evaluate.load(hf_dlm.metrics.path("length_prediction"))`).

`diffusion_generate(length_strategy="predict")` reads an answer length from p(EOS) at its first step and decodes a
canvas of predicted + 1 + `length_margin` positions, growing rows that outgrow it. This scores that bound against
true lengths (`hf_dlm.metrics.length_prediction_summary`, the numbers of `hf-dlm bench`'s `predict_error`).
"""

import datasets
import evaluate

from hf_dlm.generation_dlm import DiffusionGenerationConfig
from hf_dlm.metrics import length_prediction_summary

_DESCRIPTION = """Error of predicted answer lengths, and how well the predicted canvas covered the answers."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted lengths in tokens (`DiffusionGenerateOutput.predicted_lengths`, before the margin).
    references: true lengths in tokens (the reference answer's, or the decoded answer's `lengths`).
    length_margin: the margin the decoder added (default: DiffusionGenerationConfig's default, 8).
    max_new_tokens: the budget that caps the canvas (optional).
    grew: the decoder's per-row flags (`DiffusionGenerateOutput.grew`), optional; without them the growth the
        true lengths imply is reported.
Returns:
    mean_error, median_error, p10_error, p90_error: quantiles of predicted - true length.
    exact: share predicted exactly. under: share predicted too short.
    coverage: share whose answer and EOS fit in the canvas. mean_slack: mean extra canvas positions of covered rows.
    grew: share of rows that grew past the canvas.
Examples:
    >>> metric = evaluate.load(hf_dlm.metrics.path("length_prediction"))
    >>> metric.compute(predictions=[5, 9], references=[6, 3], length_margin=0)["coverage"]
    0.5
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LengthPrediction(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, length_margin=None, max_new_tokens=None, grew=None):
        if length_margin is None:
            length_margin = DiffusionGenerationConfig().length_margin
        summary = length_prediction_summary(predictions, references, length_margin=length_margin,
                                            max_new_tokens=max_new_tokens, grew=grew)
        error = summary["error"]
        return {
            "mean_error": error["mean"],
            "median_error": error["median"],
            "p10_error": error["p10"],
            "p90_error": error["p90"],
            "exact": error["exact"],
            "under": error["under"],
            "coverage": summary["coverage"],
            "mean_slack": summary["mean_slack"],
            "grew": summary["grew"],
        }
