"""Draft and verify (`hf_dlm.speculative`): the answer is the verifier's greedy `generate` answer, whatever drafts."""

import copy

import pytest
import torch

from hf_dlm import DiffusionLM
from hf_dlm.speculative import speculative_generate
from hf_dlm.testing import char_tokenizer, tiny_causal_lm

PROMPTS = ["the cat sat on", "2+2=", "abc abc abc", "q"]


def pair(model_type="gpt2", attention="bidirectional", drafter_seed=None):
    """(drafter, verifier, tokenizer): the verifier is a tiny random causal LM, the drafter a DiffusionLM adapted
    from a copy of it (as `load_default(autoregressive=True)` pairs them), or from an unrelated model."""
    torch.manual_seed(0)
    tok = char_tokenizer()
    verifier = tiny_causal_lm(model_type, vocab_size=len(tok)).eval()
    if drafter_seed is not None:
        torch.manual_seed(drafter_seed)
        base = tiny_causal_lm(model_type, vocab_size=len(tok))
    else:
        base = copy.deepcopy(verifier)
    drafter = DiffusionLM.from_causal_lm(base, tok, attention=attention).eval()
    return drafter, verifier, tok


def greedy(verifier, ids, max_new_tokens, eos_id):
    out = verifier.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                            do_sample=False, pad_token_id=eos_id, eos_token_id=eos_id)
    answer = out[0, ids.shape[1]:].tolist()
    return answer[: answer.index(eos_id) + 1] if eos_id in answer else answer


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("draft_length", [1, 3, 6])
def test_answers_equal_the_verifiers_greedy_generate(model_type, draft_length):
    drafter, verifier, tok = pair(model_type)
    eos = drafter.config.eos_token_ids[0]
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt").input_ids
        out = speculative_generate(drafter, verifier, ids, max_new_tokens=24, draft_length=draft_length)
        answer = out.sequences[0, ids.shape[1]:].tolist()[: out.new_tokens[0]]
        assert answer == greedy(verifier, ids, 24, eos), prompt


def test_an_unrelated_drafter_changes_the_speed_not_the_answer():
    drafter, verifier, tok = pair(drafter_seed=123)
    eos = drafter.config.eos_token_ids[0]
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt").input_ids
        out = speculative_generate(drafter, verifier, ids, max_new_tokens=20, draft_length=4)
        assert out.sequences[0, ids.shape[1]:].tolist()[: out.new_tokens[0]] == greedy(verifier, ids, 20, eos)


def test_a_causal_prefix_drafter_of_the_same_weights_always_gets_its_first_draft_accepted():
    # Its context is read causally, so the token after the prefix is the AR model's own argmax: every round with a
    # draft keeps at least one, and a round yields at least two tokens for two forwards.
    drafter, verifier, tok = pair(attention="causal_prefix")
    ids = tok("the cat sat on", return_tensors="pt").input_ids
    out = speculative_generate(drafter, verifier, ids, max_new_tokens=30, draft_length=3, eos_token_id=[])
    assert out.new_tokens[0] == 30
    assert out.accepted[0] and min(out.accepted[0]) >= 1
    assert out.draft_forwards[0] == out.verify_forwards[0] == len(out.accepted[0])
    assert out.new_tokens[0] == sum(out.accepted[0]) + out.verify_forwards[0]
    assert out.sequences[0, ids.shape[1]:].tolist() == greedy(verifier, ids, 30, eos_id=10_000)


def test_budget_batches_and_bookkeeping():
    drafter, verifier, tok = pair()
    tok.padding_side = "left"
    batch = tok(PROMPTS[:3], return_tensors="pt", padding=True)
    out = speculative_generate(drafter, verifier, batch.input_ids, batch.attention_mask, max_new_tokens=7,
                               draft_length=4, eos_token_id=[])
    assert out.sequences.shape == (3, batch.input_ids.shape[1] + 7)
    assert out.new_tokens == [7, 7, 7]
    for i, prompt in enumerate(PROMPTS[:3]):
        ids = tok(prompt, return_tensors="pt").input_ids
        assert out.sequences[i, -7:].tolist() == greedy(verifier, ids, 7, eos_id=10_000)
        # Tokens = kept drafts + one verifier token per round; the last round drafts only what the budget allows.
        assert out.new_tokens[i] == sum(out.accepted[i]) + out.verify_forwards[i]
        assert out.nfe_per_row[i] == out.draft_forwards[i] + out.verify_forwards[i]
    assert 0.0 <= out.acceptance_rate <= 1.0


def test_an_answer_stops_at_its_eos_and_pads_after_it():
    drafter, verifier, tok = pair()
    ids = tok("abc", return_tensors="pt").input_ids
    # Make the verifier's first choice the stop id: the answer is that one token.
    first = greedy(verifier, ids, 1, eos_id=10_000)[0]
    out = speculative_generate(drafter, verifier, ids, max_new_tokens=10, draft_length=3, eos_token_id=first)
    assert out.new_tokens == [1] and out.sequences[0, -1].item() == first


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"draft_length": 0}, "draft_length"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 600}, "positions"),
    ],
)
def test_bad_settings_are_refused_with_what_to_change(kwargs, message):
    drafter, verifier, tok = pair()
    ids = tok("abc", return_tensors="pt").input_ids
    with pytest.raises(ValueError, match=message):
        speculative_generate(drafter, verifier, ids, **kwargs)


def test_wrong_models_and_tokens_are_refused():
    drafter, verifier, tok = pair()
    ids = tok("abc", return_tensors="pt").input_ids
    with pytest.raises(TypeError, match="verifier must be a causal LM"):
        speculative_generate(drafter, drafter, ids)
    with pytest.raises(TypeError, match="drafter must be a DiffusionLM"):
        speculative_generate(verifier, verifier, ids)
    with pytest.raises(ValueError, match="outside the verifier's vocabulary"):
        speculative_generate(drafter, verifier, torch.tensor([[1, drafter.config.mask_token_id]]))
    with pytest.raises(ValueError, match="left padded"):
        speculative_generate(drafter, verifier, torch.tensor([[1, 2]]), torch.tensor([[1, 0]]))


def test_drafts_never_reach_past_the_budget_so_the_whole_context_can_be_used():
    # Prompt + budget = every position the models have (512): a round drafts at most the budget left minus one.
    drafter, verifier, tok = pair()
    ids = tok("ab", return_tensors="pt").input_ids
    out = speculative_generate(drafter, verifier, ids, max_new_tokens=512 - ids.shape[1], draft_length=16,
                               eos_token_id=[])
    assert out.new_tokens == [512 - ids.shape[1]]
    assert out.sequences[0, ids.shape[1]:].tolist() == greedy(verifier, ids, 512 - ids.shape[1], eos_id=10_000)
