"""Two-stream training rows of attention="causal_prefix" models (hf_dlm.two_stream) and the causal-prefix forward."""

import copy

import pytest
import torch
from transformers.cache_utils import DynamicCache

from hf_dlm import DiffusionLM
from hf_dlm.noise import DiffusionNoise, diffusion_loss
from hf_dlm.testing import char_tokenizer, tiny_causal_lm
from hf_dlm.two_stream import cut_after_eos_block, two_stream_rows


def causal_prefix_model(model_type="llama", seed=0):
    torch.manual_seed(seed)
    tokenizer = char_tokenizer()
    causal_lm = tiny_causal_lm(model_type, vocab_size=len(tokenizer) + 2).eval()
    reference = copy.deepcopy(causal_lm)
    model = DiffusionLM.from_causal_lm(causal_lm, tokenizer, attention="causal_prefix").eval()
    return model, reference, tokenizer


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_context_is_the_causal_lm_and_the_cache_is_exact(model_type):
    model, reference, tokenizer = causal_prefix_model(model_type)
    vocab = len(tokenizer) - 2  # the last rows are the added pad and mask tokens (their embeddings changed)
    ids = torch.randint(1, 30, (2, 12))
    with torch.no_grad():
        causal = reference(ids).logits[..., :vocab]
        no_canvas = model(ids, canvas_start=12).logits[..., :vocab]
        assert torch.allclose(no_canvas[:, 1:], causal[:, :-1], atol=1e-5)  # aligned: logits[i] scores token i

        full = model(ids, canvas_start=8).logits
        cache = DynamicCache()
        model(ids[:, :7], canvas_start=8, past_key_values=cache, use_cache=True)
        rest = model(ids[:, 7:], canvas_start=8, past_key_values=cache, use_cache=True,
                     attention_mask=torch.ones(2, 12, dtype=torch.long)).logits
        assert torch.allclose(rest[:, 1:], full[:, 8:], atol=1e-5)  # the context's KV does not depend on the canvas

        changed = ids.clone()
        changed[:, 11] = 3
        after = model(changed, canvas_start=8).logits
        assert torch.equal(after[:, :8], full[:, :8])  # the context never sees the canvas
        assert not torch.allclose(after[:, 8:11], full[:, 8:11])  # the canvas sees all of itself


def test_causal_prefix_forward_needs_canvas_start():
    model, _, _ = causal_prefix_model()
    with pytest.raises(ValueError, match="canvas_start"):
        model(torch.randint(1, 30, (1, 5)))


def test_two_stream_rows_equal_the_decoders_view_block_by_block():
    """The loss of one two-stream forward equals the sum over blocks of the loss of the view decoding has at that
    block: context clean and causal, the block noised, nothing after it (canvas_start = block start)."""
    model, _, _ = causal_prefix_model()
    block = 4
    lengths = [17, 12]
    ids = torch.zeros(2, 17, dtype=torch.long)
    attention = torch.zeros(2, 17, dtype=torch.long)
    loss_mask = torch.zeros(2, 17, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(1, 30, (n,))
        attention[row, :n] = 1
        loss_mask[row, 5 - row : n] = 1  # answers start at different positions
    noisy = DiffusionNoise(mask_token_id=model.config.mask_token_id, seed=3)(ids, attention, loss_mask, step=0)
    assert noisy.masked.any()
    rows = two_stream_rows(ids, noisy.input_ids, attention, loss_mask, noisy.loss_weight, block)
    with torch.no_grad():
        logits = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask, position_ids=rows.position_ids,
                       logits_to_keep=rows.noisy_length).logits
        two_stream = diffusion_loss(logits, rows.targets, rows.loss_weight)

        expected = torch.zeros(())
        for row, n in enumerate(lengths):
            start = int(loss_mask[row].nonzero()[0])
            for block_start in range(start, n, block):
                block_end = min(block_start + block, n)
                view = torch.cat([ids[row, :block_start], noisy.input_ids[row, block_start:block_end]])[None]
                view_logits = model(view, canvas_start=block_start).logits
                weight = torch.zeros(1, block_end)
                weight[0, block_start:] = noisy.loss_weight[row, block_start:block_end]
                expected += diffusion_loss(view_logits, ids[row : row + 1, :block_end], weight)
    assert torch.allclose(two_stream, expected, rtol=1e-4)
    assert rows.loss_weight.gt(0).sum() == noisy.masked.sum()  # every masked token carries loss once, anchors none


def test_cut_after_eos_block_keeps_the_block_that_holds_eos():
    ids = torch.tensor([[5, 6, 7, 8, 9, 0, 0, 0, 0, 0, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "loss_mask": torch.tensor([[0, 0] + [1] * 10])}
    out = cut_after_eos_block(batch, block_length=4, eos_token_ids=[0], pad_token_id=1)
    # answer starts at 2; its EOS (index 5) is in block [2, 6): the row ends there
    assert out["attention_mask"].tolist() == [[1] * 6 + [0] * 6]
    assert out["loss_mask"].tolist() == [[0, 0, 1, 1, 1, 1] + [0] * 6]
    assert out["input_ids"][0, 6:].eq(1).all()


@pytest.mark.parametrize("strategy", ["grow", "fixed", "predict"])
def test_causal_prefix_decoding_with_cache_equals_without(strategy, monkeypatch):
    """The context of a causal-prefix model never sees what comes after it, so its KV cache is exact: every
    denoising step of the cached decoder sees the logits of the uncached one (a bidirectional model's cache is an
    approximation, and the same check fails for it)."""
    from hf_dlm import decoder_dlm

    seen = []
    commit = decoder_dlm._Decoder._commit

    def spy(self, logits, window_start):
        seen.append(logits.clone())
        return commit(self, logits, window_start)

    monkeypatch.setattr(decoder_dlm._Decoder, "_commit", spy)
    model, _, tokenizer = causal_prefix_model()
    prompts = tokenizer(["hello wor", "abc"], return_tensors="pt", padding=True, padding_side="left")
    settings = dict(max_new_tokens=12, block_length=4, length_strategy=strategy, threshold=0.3,
                    return_dict_in_generate=True)
    with torch.no_grad():
        cached = model.diffusion_generate(**prompts, use_cache=True, **settings)
        steps = len(seen)
        uncached = model.diffusion_generate(**prompts, use_cache=False, **settings)
    assert torch.equal(cached.sequences, uncached.sequences)
    assert cached.nfe == uncached.nfe == steps and steps > 3
    for with_cache, without in zip(seen[:steps], seen[steps:]):
        assert torch.allclose(with_cache, without, atol=1e-4)


def test_block_causal_canvas_mask():
    """`causal_prefix_mask(..., block_length=b)`: the context is causal, a canvas query sees the context, its own
    block and the blocks before it, never a later block; without `block_length` the canvas sees all of itself."""
    from hf_dlm.modeling_dlm import causal_prefix_mask

    padding = torch.ones(1, 9, dtype=torch.long)
    blocks = causal_prefix_mask(padding, 9, canvas_start=3, block_length=2)[0, 0].int()
    # context 0-2 causal; canvas blocks [3, 5), [5, 7), [7, 9)
    sees_up_to = [int(row.nonzero().max()) for row in blocks]
    assert sees_up_to == [0, 1, 2, 4, 4, 6, 6, 8, 8]
    assert all(row[: min(3, q + 1)].all() for q, row in enumerate(blocks))  # everything before the canvas (causal)
    whole = causal_prefix_mask(padding, 9, canvas_start=3)[0, 0].int()
    assert [int(row.nonzero().max()) for row in whole] == [0, 1, 2, 8, 8, 8, 8, 8, 8]


@pytest.mark.parametrize("use_cache", [False, True, "dual"])
@pytest.mark.parametrize("strategy", ["fixed", "predict"])
def test_causal_prefix_blocks_never_see_the_masks_after_them(strategy, use_cache, monkeypatch):
    """Two-stream training shows a block its context and itself, nothing after it, and decoding gives it the same
    view: every step of the first block scores it as with no canvas after it (budget 8 + 16 masks against a budget
    of 8), so the tokens are the same too. Before, a `fixed` canvas let the block attend to every later mask, a view
    never trained."""
    from hf_dlm import decoder_dlm

    seen = []
    commit = decoder_dlm._Decoder._commit

    def spy(self, logits, window_start):
        if self.block == 0:
            seen[-1].append(logits[:, :8].clone())
        return commit(self, logits, window_start)

    monkeypatch.setattr(decoder_dlm._Decoder, "_commit", spy)
    model, _, tokenizer = causal_prefix_model()
    prompts = tokenizer(["hello wor", "abc"], return_tensors="pt", padding=True, padding_side="left")
    width = prompts.input_ids.shape[1]
    settings = dict(block_length=8, length_strategy=strategy, threshold=0.3, use_cache=use_cache,
                    return_dict_in_generate=True)
    with torch.no_grad():
        seen.append([])
        short = model.diffusion_generate(**prompts, max_new_tokens=8, **settings)
        seen.append([])
        long = model.diffusion_generate(**prompts, max_new_tokens=24, **settings)
    assert torch.equal(long.sequences[:, : width + 8], short.sequences[:, : width + 8])
    assert len(seen[0]) == len(seen[1]) > 1
    for alone, with_masks_after in zip(*seen):
        torch.testing.assert_close(with_masks_after, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_cache", [False, True, "dual"])
@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_decided_as_context_decodes_the_causal_lms_greedy_answer_one_token_per_step(model_type, use_cache):
    """With the block's decided prefix in the causal context, the first mask is scored by the causal LM's own
    next-token computation. So a causal-prefix model fresh from its causal LM, decoding one token per step from the
    left, writes exactly the causal LM's greedy answer; without `decided_as_context` the positions inside a block are
    scored by the canvas stream (masks around them), which the fresh model has not learnt, and the answers differ."""
    torch.manual_seed(3)
    tokenizer = char_tokenizer()
    causal_lm = tiny_causal_lm(model_type, vocab_size=len(tokenizer) + 2).eval()
    with torch.no_grad():  # larger weights than the init's: a random model whose next token depends on the context
        for parameter in causal_lm.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3)
    reference = copy.deepcopy(causal_lm)
    model = DiffusionLM.from_causal_lm(causal_lm, tokenizer, attention="causal_prefix").eval()
    prompt = tokenizer(["hello wor"], return_tensors="pt")
    budget = 12
    with torch.no_grad():
        # The decoder never writes the mask or the pad token (the ids adaptation gave them): nor may the reference.
        greedy = reference.generate(**prompt, max_new_tokens=budget, do_sample=False, eos_token_id=None,
                                    pad_token_id=tokenizer.pad_token_id,
                                    suppress_tokens=[model.config.mask_token_id, tokenizer.pad_token_id],
                                    )[0, prompt.input_ids.shape[1]:]
        settings = dict(max_new_tokens=budget, length_strategy="grow", block_length=4, threshold=None,
                        unmasking="left_to_right", use_cache=use_cache)
        answer = model.diffusion_generate(**prompt, decided_as_context=True, **settings)[0, prompt.input_ids.shape[1]:]
        canvas = model.diffusion_generate(**prompt, decided_as_context=False, **settings)[0, prompt.input_ids.shape[1]:]

    def until_eos(ids):
        ids = ids.tolist()
        return ids[: ids.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in ids else ids

    assert len(until_eos(greedy)) > 4  # more than one block is decoded
    assert until_eos(answer) == until_eos(greedy)
    assert until_eos(canvas) != until_eos(greedy)


def test_decided_as_context_is_refused_on_a_bidirectional_model():
    from tests.conftest import make_dlm

    model, tokenizer = make_dlm("llama")
    prompt = tokenizer(["abc"], return_tensors="pt")
    with pytest.raises(ValueError, match="decided_as_context=True .*attention='causal_prefix'"):
        model.diffusion_generate(**prompt, max_new_tokens=4, block_length=4, decided_as_context=True)
