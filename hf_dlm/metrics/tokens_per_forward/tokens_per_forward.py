"""Tokens per forward: `evaluate` metric module of hf_dlm (load it with
`evaluate.load(hf_dlm.metrics.path("tokens_per_forward"))`).

The parallelism of a decoder: answer tokens divided by model forwards (NFE), over a whole set of answers.
Autoregressive decoding makes one token per forward; a diffusion decoder that commits several masks per step makes
more. Computed by `hf_dlm.metrics.tokens_per_forward`, as in `hf-dlm bench` and docs/quality.md.
"""

import datasets
import evaluate

from hf_dlm.metrics import tokens_per_forward

_DESCRIPTION = """Answer tokens per model forward (total tokens / total forwards), plus the means of both."""

_KWARGS_DESCRIPTION = """
Args:
    lengths: answer length in tokens, per answer (EOS excluded).
    forwards: model forwards the answer took part in (`DiffusionGenerateOutput.nfe_per_row`).
Returns:
    tokens_per_forward: sum(lengths) / sum(forwards).
    mean_length, mean_forwards: per-answer means.
Examples:
    >>> metric = evaluate.load(hf_dlm.metrics.path("tokens_per_forward"))
    >>> metric.compute(lengths=[6, 2], forwards=[2, 2])["tokens_per_forward"]
    2.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TokensPerForward(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"lengths": datasets.Value("int64"), "forwards": datasets.Value("int64")}),
        )

    def _compute(self, lengths, forwards):
        return {
            "tokens_per_forward": tokens_per_forward(lengths, forwards),
            "mean_length": sum(lengths) / len(lengths),
            "mean_forwards": sum(forwards) / len(forwards),
        }
