"""Exact match with length match: `evaluate` metric module of hf_dlm (load it with
`evaluate.load(hf_dlm.metrics.path("exact_length_match"))`).

A variable-length decoder has two ways to be wrong: the wrong text, or the right text at the wrong length
(cut short, or padded with extra tokens). This reports both, per corpus. The computation is
`hf_dlm.metrics.answer_matches`, the same as `hf-dlm bench`'s exact / "len =" columns.
"""

import datasets
import evaluate
from transformers import AutoTokenizer

from hf_dlm.metrics import answer_matches

_DESCRIPTION = """Share of answers equal to their reference (after a round trip through the tokenizer), share whose
length in tokens equals the reference's, and share with both."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: answers, as text or as token ids (the generated ids, EOS excluded: exact lengths).
    references: reference answers, as text or token ids.
    tokenizer: the model's tokenizer (object, or a name / directory for `AutoTokenizer.from_pretrained`). Required:
        lengths are counted in its tokens.
Returns:
    exact_match: share of answers whose text equals the reference's.
    length_match: share of answers with as many tokens as the reference.
    exact_and_length_match: share with both.
Examples:
    >>> metric = evaluate.load(hf_dlm.metrics.path("exact_length_match"))
    >>> metric.compute(predictions=["paris"], references=["paris"], tokenizer=tokenizer)
    {'exact_match': 1.0, 'length_match': 1.0, 'exact_and_length_match': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ExactLengthMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
                datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64")),
                                   "references": datasets.Sequence(datasets.Value("int64"))}),
            ],
        )

    def _compute(self, predictions, references, tokenizer=None):
        if tokenizer is None:
            raise ValueError("exact_length_match counts lengths in tokens: pass tokenizer= (the model's tokenizer "
                             "object, or its name / directory).")
        if isinstance(tokenizer, str):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        matches = answer_matches(predictions, references, tokenizer)
        n = len(predictions)
        both = [e and length for e, length in zip(matches["exact"], matches["length"])]
        return {
            "exact_match": sum(matches["exact"]) / n,
            "length_match": sum(matches["length"]) / n,
            "exact_and_length_match": sum(both) / n,
        }
