"""evaluation.py: the metrics of docs/quality.md on hand-made answers and tiny models."""

import math

import pytest
import torch

from hf_dlm.evaluation import (
    Answer,
    answer_autoregressive,
    answer_diffusion,
    chat_inputs,
    distinct_n,
    generative_perplexity,
    is_degenerate,
    length_summary,
    split_answer,
    summarize,
)
from hf_dlm.testing import char_tokenizer, tiny_causal_lm
from tests.conftest import make_dlm

CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"


def causal_lm_and_tokenizer(seed=0):
    torch.manual_seed(seed)
    tok = char_tokenizer()
    tok.add_special_tokens({"pad_token": "<|pad|>"})
    model = tiny_causal_lm("llama", vocab_size=len(tok)).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    return model, tok


def answer(prompt, text, tok, ended=True):
    return Answer(prompt, text, tok(text, add_special_tokens=False).input_ids, ended, nfe=1, seconds=1.0)


def test_distinct_n_counts_unique_ngrams_over_the_corpus():
    assert distinct_n([[1, 2, 1, 2]], 1) == 0.5
    assert distinct_n([[1, 2, 1, 2]], 2) == pytest.approx(2 / 3)
    assert distinct_n([[1, 2], [1, 2]], 2) == 0.5  # the same bigram in two answers counts once
    assert distinct_n([[1]], 2) == 1.0  # nothing to count


def test_a_looping_answer_is_degenerate_and_a_plain_sentence_is_not():
    loop = [5, 6, 7, 8] * 10
    assert is_degenerate(loop)
    assert not is_degenerate(list(range(40)))


def test_split_answer_stops_at_the_first_eos_and_drops_trailing_pad():
    assert split_answer([5, 6, 1, 7, 1], eos_ids=[1], pad_id=0) == ([5, 6], True)
    assert split_answer([5, 6, 0, 0], eos_ids=[1], pad_id=0) == ([5, 6], False)


def test_length_summary_reports_quantiles():
    summary = length_summary(list(range(1, 11)))
    assert summary["median"] == 5.5 and summary["min"] == 1 and summary["max"] == 10
    assert summary["p10"] == 2 and summary["p90"] == 10


def test_chat_inputs_apply_the_template_and_pad_on_the_left():
    tok = char_tokenizer()
    tok.add_special_tokens({"pad_token": "<|pad|>"})
    tok.chat_template = CHAT_TEMPLATE
    enc = chat_inputs(tok, ["hi", "a longer one"])
    text = "".join(tok.convert_ids_to_tokens(enc["input_ids"][1]))
    assert text == "user: a longer one\nassistant: "
    assert enc["attention_mask"][0, 0] == 0 and enc["attention_mask"][0, -1] == 1
    raw = chat_inputs(tok, ["hi"], chat_template=False)
    assert tok.convert_ids_to_tokens(raw["input_ids"][0]) == ["h", "i"]


def test_generative_perplexity_is_the_exp_mean_nll_of_answer_tokens_given_the_prompt():
    model, tok = causal_lm_and_tokenizer()
    a = answer("abc", "hello", tok, ended=True)
    result = generative_perplexity(model, tok, [a])
    ids = tok("abchello", add_special_tokens=False).input_ids + [tok.eos_token_id]
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    nll = -sum(logp[i - 1, ids[i]].item() for i in range(3, len(ids)))  # 5 answer tokens + the EOS
    assert result["tokens"] == [6]
    assert result["ppl"] == pytest.approx(math.exp(nll / 6), rel=1e-4)


def test_generative_perplexity_of_an_answer_does_not_depend_on_its_batch():
    model, tok = causal_lm_and_tokenizer()
    answers = [answer("a", "one two", tok), answer("a much longer prompt", "x", tok, ended=False),
               answer("bb", "three", tok)]
    together = generative_perplexity(model, tok, answers, batch_size=3)
    alone = [generative_perplexity(model, tok, [a])["nll_per_answer"][0] for a in answers]
    assert together["nll_per_answer"] == pytest.approx(alone, rel=1e-4, abs=1e-4)
    assert together["tokens"] == [8, 1, 6]  # the unfinished answer's missing EOS is not scored


def test_autoregressive_answers_match_generate_and_count_one_forward_per_token():
    model, tok = causal_lm_and_tokenizer()
    answers = answer_autoregressive(model, tok, ["ab", "cde"], max_new_tokens=6, batch_size=2)
    for a in answers:
        enc = tok(a.prompt, return_tensors="pt", add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
        alone, ended = split_answer(out[0, enc.input_ids.shape[1] :].tolist(), [tok.eos_token_id], tok.pad_token_id)
        assert a.tokens == alone and a.ended == ended
        assert a.nfe == 6 or a.ended


def test_diffusion_answers_carry_the_decoder_lengths_and_forwards():
    model, tok = make_dlm("gpt2")
    answers = answer_diffusion(model, tok, ["ab", "cd"], batch_size=2, max_new_tokens=8, block_length=4,
                               length_strategy="fixed", threshold=None)
    for a in answers:
        assert a.nfe == 8  # fixed length, one token per step: the whole budget
        assert len(a.tokens) <= 8 and tok.mask_token_id not in a.tokens
    predicted = answer_diffusion(model, tok, ["ab"], max_new_tokens=8, block_length=4, length_strategy="predict")
    assert set(predicted[0].extra) == {"predicted_length", "grew"}


def test_summary_reports_ending_repetition_and_speed():
    tok = char_tokenizer()
    answers = [answer("p", "abcdefgh", tok), Answer("q", "", [7, 8, 9, 10] * 6, False, nfe=4, seconds=1.0)]
    s = summarize(answers)
    assert s["ended_share"] == 0.5 and s["degenerate_share"] == 0.5
    assert s["tokens_per_second"] == pytest.approx((8 + 24) / 2)
    assert s["tokens_per_forward"] == pytest.approx(32 / 5)
