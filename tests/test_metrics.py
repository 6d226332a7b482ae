"""Our measurements as `evaluate` metric modules, loaded offline from their paths: values on hand-made inputs, and
agreement with what the decoder itself reports."""

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before evaluate reads its config: loading must not need the Hub

import evaluate  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hf_dlm import metrics  # noqa: E402
from hf_dlm.testing import char_tokenizer, tiny_causal_lm  # noqa: E402
from tests.oracle import batch, oracle_model  # noqa: E402


@pytest.fixture(scope="module")
def loaded():
    return {name: evaluate.load(metrics.path(name)) for name in metrics.METRIC_NAMES}


def test_every_metric_module_loads_from_its_local_path(loaded):
    assert {name: module.name for name, module in loaded.items()} == {name: name for name in metrics.METRIC_NAMES}
    with pytest.raises(ValueError, match="available: exact_length_match"):
        metrics.path("bleu")


def test_exact_length_match_counts_text_and_length_in_tokens(loaded, tmp_path):
    tokenizer = char_tokenizer()
    metric = loaded["exact_length_match"]
    answers, references = ["paris", "par", "pariss", "lyon"], ["paris", "paris", "paris", "nice"]
    expected = {"exact_match": 0.25, "length_match": 0.5, "exact_and_length_match": 0.25}  # "lyon" / "nice": 4 = 4
    assert metric.compute(predictions=answers, references=references, tokenizer=tokenizer) == expected
    # Token ids (the generated ids, exact lengths) and a tokenizer given by its directory.
    tokenizer.save_pretrained(tmp_path)
    as_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in answers]
    refs = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in references]
    assert metric.compute(predictions=as_ids, references=refs, tokenizer=str(tmp_path)) == expected
    with pytest.raises(ValueError, match="pass tokenizer="):
        metric.compute(predictions=answers, references=references)


def test_length_prediction_scores_the_predicted_bound(loaded):
    metric = loaded["length_prediction"]
    # bounds = predicted + 1 + margin: 8, 12, 6, 13; an answer of t tokens fits when t + 1 <= bound.
    result = metric.compute(predictions=[5, 9, 3, 10], references=[6, 3, 3, 20], length_margin=2, max_new_tokens=16)
    assert result["mean_error"] == -1.25 and result["exact"] == 0.25 and result["under"] == 0.5
    assert result["coverage"] == 0.75 and result["mean_slack"] == pytest.approx((1 + 8 + 2) / 3)
    assert result["grew"] == 0.25  # the 20-token answer outgrows its 13 positions
    # At the budget a row cannot grow any more: the same miss is then a truncation, not growth.
    capped = metric.compute(predictions=[5, 9, 3, 10], references=[6, 3, 3, 20], length_margin=2, max_new_tokens=13)
    assert capped["grew"] == 0.0 and capped["coverage"] == 0.75
    flags = metric.compute(predictions=[5, 9], references=[6, 3], length_margin=2, grew=[True, True])
    assert flags["grew"] == 1.0


def test_length_prediction_agrees_with_the_decoder_s_own_growth_flags(loaded):
    """The oracle hedges p(EOS) before the true end of the first answer only: its bound is short and it grows."""
    model = oracle_model({4: list(range(10, 30)), 5: [10, 11, 12]}, logit=5.0, eos_logit=4.5, early_eos={4: 6})
    input_ids, attention_mask = batch([[4, 8], [5, 8]])
    settings = dict(max_new_tokens=64, block_length=4, length_strategy="predict", predict_threshold=0.3,
                    length_margin=0, threshold=None)
    out = model.diffusion_generate(input_ids, attention_mask, return_dict_in_generate=True, **settings)
    assert out.grew.tolist() == [True, False]
    result = loaded["length_prediction"].compute(predictions=out.predicted_lengths.tolist(),
                                                 references=out.lengths.tolist(), length_margin=0, max_new_tokens=64)
    assert result["grew"] == 0.5 and result["coverage"] == 0.5
    forwards = loaded["tokens_per_forward"].compute(lengths=out.lengths.tolist(), forwards=out.nfe_per_row.tolist())
    assert forwards["tokens_per_forward"] == pytest.approx(23 / int(out.nfe_per_row.sum()))


def test_tokens_per_forward_is_a_corpus_ratio(loaded):
    metric = loaded["tokens_per_forward"]
    assert metric.compute(lengths=[6, 2], forwards=[2, 2]) == {"tokens_per_forward": 2.0, "mean_length": 4.0,
                                                               "mean_forwards": 2.0}
    with pytest.raises(ValueError, match="No forwards"):
        metric.compute(lengths=[3], forwards=[0])


def test_generative_perplexity_scores_answers_given_their_prompts(loaded):
    torch.manual_seed(0)
    tokenizer = char_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token  # batching pads; padded positions are masked out
    scorer = tiny_causal_lm("gpt2", vocab_size=len(tokenizer)).eval()
    prompts, answers = ["2+2=", "name a color:"], ["4", " blue sky"]
    nll, count = 0.0, 0
    for prompt, answer in zip(prompts, answers):  # by hand: one sequence at a time, the EOS scored too
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        with torch.no_grad():
            logp = scorer(torch.tensor([prompt_ids + answer_ids])).logits[0].log_softmax(-1)
        for j, token in enumerate(answer_ids):
            nll -= float(logp[len(prompt_ids) + j - 1, token])
        count += len(answer_ids)
    result = loaded["generative_perplexity"].compute(predictions=answers, prompts=prompts, model=scorer,
                                                     tokenizer=tokenizer)
    assert result["tokens"] == count
    assert result["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)
    with pytest.raises(ValueError, match="scoring causal LM"):
        loaded["generative_perplexity"].compute(predictions=answers, prompts=prompts)
