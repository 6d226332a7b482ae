"""The dual KV cache (`use_cache="dual"`, Fast-dLLM's DualCache): logits against uncached forwards on the same
canvas, identity with the prefix cache at block starts, and batch invariance, on gpt2, llama and qwen2."""

import pytest
import torch

from hf_dlm.decoder_dlm import _Decoder
from tests.conftest import BACKBONES, KERNELS, make_dlm

TEXTS = ["sort: 3 1 2 =", "ab", "reverse: hello world ="]


def left_padded(tok, texts=TEXTS):
    tok.padding_side = "left"
    return tok(texts, return_tensors="pt", padding=True)


def decoder(model, enc, **settings):
    config = model._prepare_diffusion_config(None, dict(return_dict_in_generate=True, **settings))
    return _Decoder(model, config, enc.input_ids, enc.attention_mask, None, None)


def record_forwards(dec):
    """Wrap `dec._forward`: every call leaves (state before the forward, window, logits) in the returned list."""
    calls = []
    forward = dec._forward

    def recording(window_start, window_end):
        state = dict(seq=dec.seq.clone(), canvas_len=dec.canvas_len.clone(), active=dec.active.clone(),
                     block=dec.block, step_in_block=dec.step_in_block)
        logits = forward(window_start, window_end)
        calls.append(dict(state, window_start=window_start, logits=logits))
        return logits

    dec._forward = recording
    return calls


def uncached_logits(model, dec, call):
    """What an uncached forward on the canvas of `call` gives for the positions `call` scored."""
    rows, start, n = call["active"], call["window_start"], call["logits"].shape[1]
    end = dec.prompt_length + int(call["canvas_len"][rows].max())  # the whole canvas, whatever the forward ran on
    index = torch.arange(end - dec.prompt_length)
    mask = torch.cat([dec.prompt_mask[rows], (index[None] < call["canvas_len"][rows, None]).long()], dim=1)
    extra = {}
    if dec.causal_prefix:
        extra["canvas_start"] = dec.prompt_length + call["block"] * dec.block_length
        extra["canvas_block_length"] = dec.block_length  # the decoder's causal-prefix canvas is block-causal
    out = model(input_ids=call["seq"][rows, :end], attention_mask=mask, logits_to_keep=end - start, **extra)
    logits = out.logits.float()[:, :n]
    logits[..., dec.banned] = -torch.inf
    return logits


def step(dec, commit=True):
    """One iteration of `_Decoder.run` (commit=False: the forward alone, nothing changes but the cache)."""
    if commit:
        return dec.advance()
    block_start = dec.prompt_length + dec.block * dec.block_length
    return dec._forward(block_start, dec.prompt_length + int(dec.canvas_len[dec.active].max()))


def close(a, b):
    finite = torch.isfinite(b)
    assert torch.equal(finite, torch.isfinite(a))
    torch.testing.assert_close(a[finite], b[finite], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------- against uncached
@pytest.mark.parametrize("attention", ["bidirectional", "causal_prefix"])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("model_type", BACKBONES)
def test_first_inner_step_equals_an_uncached_forward_on_the_block_start_canvas(model_type, kernel, attention):
    """At a block's first inner step the cached suffix holds the keys/values the block-start forward computed.
    With nothing committed in between, those are exactly an uncached forward's (at block 0 the prefix is from the
    same forward), so [anchor | block] against [prefix | suffix] must give the uncached logits of the block: positions,
    key order, padding and the causal-prefix mask are all under test. Left-padded batch of three."""
    model, tok = make_dlm(model_type, attn_implementation=kernel, attention=attention)
    dec = decoder(model, left_padded(tok), max_new_tokens=24, block_length=8, length_strategy="fixed",
                  use_cache="dual", threshold=0.5)
    calls = record_forwards(dec)
    start = step(dec, commit=False)
    dec.step_in_block = 1  # an inner step, on the same canvas
    inner = step(dec, commit=False)
    assert inner.shape[1] == 8 and start.shape[1] == 24  # the block alone, against the whole canvas
    close(inner, start[:, :8])
    close(inner, uncached_logits(model, dec, calls[1]))


@pytest.mark.parametrize("model_type", BACKBONES)
def test_causal_prefix_inner_steps_equal_uncached_at_every_block(model_type):
    """With `attention="causal_prefix"` the prefix is exact (the context never attends ahead), so at any block the
    first inner forward, on the canvas its block-start forward saw, equals the uncached forward."""
    model, tok = make_dlm(model_type, attention="causal_prefix")
    dec = decoder(model, left_padded(tok), max_new_tokens=24, block_length=8, length_strategy="fixed",
                  use_cache="dual", threshold=0.5)
    calls = record_forwards(dec)
    checked = 0
    while dec.active.numel():
        if dec.step_in_block == 0:
            step(dec, commit=False)
            dec.step_in_block = 1
            step(dec, commit=False)
            close(calls[-1]["logits"], uncached_logits(model, dec, calls[-1]))
            checked += 1
            dec.step_in_block = 0
        step(dec)
    assert checked == 3


@pytest.mark.parametrize("strategy", ["fixed", "predict", "grow"])
@pytest.mark.parametrize("model_type", BACKBONES)
def test_one_layer_model_every_dual_forward_equals_uncached(model_type, strategy):
    """In a one-layer model a token's keys/values depend only on the token and its position, never on the other
    tokens, so a cache cannot be stale: every forward of a dual-cache decode (block starts and inner steps, a
    left-padded batch whose rows finish at different times, `predict` cutting its canvas) must equal the uncached
    forward on the canvas it ran on."""
    model, tok = make_dlm(model_type, layers=1)
    dec = decoder(model, left_padded(tok), max_new_tokens=24, block_length=8, length_strategy=strategy,
                  use_cache="dual", threshold=0.3)
    calls = record_forwards(dec)
    dec.run()
    inner = [c for c in calls if c["step_in_block"] > 0]
    assert inner and len(inner) < len(calls)
    for call in calls:
        close(call["logits"], uncached_logits(model, dec, call))


# ----------------------------------------------------------------------------------------------- against prefix
@pytest.mark.parametrize("attention", ["bidirectional", "causal_prefix"])
@pytest.mark.parametrize("strategy", ["fixed", "predict"])
@pytest.mark.parametrize("model_type", BACKBONES)
def test_block_start_forwards_equal_the_prefix_caches(model_type, strategy, attention):
    """Teacher forcing: the dual decoder commits what the prefix-cache decoder committed (its history). Then every
    block-start forward of the two is the same forward on the same cache, and their logits must be equal; the inner
    steps differ (the block alone against a suffix encoded at the block start)."""
    model, tok = make_dlm(model_type, attention=attention)
    enc = left_padded(tok)
    settings = dict(max_new_tokens=24, block_length=8, length_strategy=strategy, threshold=0.3)
    prefix = decoder(model, enc, use_cache=True, output_history=True, **settings)
    prefix_calls = record_forwards(prefix)
    history = prefix.run()["history"]
    dual = decoder(model, enc, use_cache="dual", **settings)
    dual_calls = record_forwards(dual)
    commit = dual._commit

    def forced(logits, window_start):
        commit(logits, window_start)
        dual.seq.copy_(history[dual.step])

    dual._commit = forced
    dual.run()
    assert len(dual_calls) == len(prefix_calls)
    starts = [(p, d) for p, d in zip(prefix_calls, dual_calls, strict=True) if d["step_in_block"] == 0]
    assert len(starts) == 3
    for p, d in starts:
        assert torch.equal(p["seq"], d["seq"])
        torch.testing.assert_close(d["logits"], p["logits"], rtol=0, atol=0)
    inner = [(p["logits"][:, :8], d["logits"]) for p, d in zip(prefix_calls, dual_calls, strict=True)
             if d["step_in_block"] > 0]
    assert inner
    if attention == "causal_prefix":
        # A causal-prefix block never sees the canvas after it (block-causal), so the suffix changes nothing: the
        # dual cache is the prefix cache, step for step.
        for p, d in inner:
            torch.testing.assert_close(d, p, rtol=1e-5, atol=1e-5)
    else:
        assert any(not torch.equal(p, d) for p, d in inner)  # the check can fail: inner steps are other forwards


# ----------------------------------------------------------------------------------------------- batches
@pytest.mark.parametrize("strategy", ["fixed", "grow", "predict"])
@pytest.mark.parametrize("model_type", BACKBONES)
def test_dual_row_alone_equals_row_in_left_padded_batch(model_type, strategy):
    model, tok = make_dlm(model_type, attn_implementation="eager")
    enc = left_padded(tok)
    kwargs = dict(max_new_tokens=16, block_length=4, length_strategy=strategy, use_cache="dual", threshold=0.5,
                  return_dict_in_generate=True)
    together = model.diffusion_generate(enc.input_ids, enc.attention_mask, **kwargs)
    width = enc.input_ids.shape[1]
    for i, text in enumerate(TEXTS):
        ids = tok([text], return_tensors="pt").input_ids
        alone = model.diffusion_generate(ids, **kwargs)
        a = alone.sequences[0, ids.shape[1]:].tolist()
        b = together.sequences[i, width:].tolist()[: len(a)]
        assert a == b, (text, a, b)
        assert together.lengths[i] == alone.lengths[0]


def test_dual_is_refused_on_a_causal_backbone():
    model, tok = make_dlm("llama")
    model.backbone.config.is_causal = True
    with pytest.raises(ValueError, match="use_cache=True"):
        model.diffusion_generate(tok(["ab"], return_tensors="pt").input_ids, use_cache="dual")


@pytest.mark.parametrize("value, message", [("full", "`use_cache` must be True or False"), (1, "\"dual\"")])
def test_bad_use_cache_values_are_refused(value, message):
    model, tok = make_dlm("gpt2")
    with pytest.raises(ValueError, match=message):
        model.diffusion_generate(tok(["ab"], return_tensors="pt").input_ids, use_cache=value)


# ----------------------------------------------------------------------------------------------- full refresh
@pytest.mark.parametrize("use_cache", [True, "dual"])
@pytest.mark.parametrize("model_type", BACKBONES)
def test_full_refresh_makes_every_block_start_an_uncached_forward(model_type, use_cache):
    """`cache_refresh="full"` (Fast-dLLM): a block's first forward re-encodes the whole sequence, so its logits are
    the uncached forward's on that canvas at every block; with the partial refresh (dLLM-Var) they are not (the
    check can fail) once blocks have been committed."""
    model, tok = make_dlm(model_type)
    enc = left_padded(tok)
    differs = []
    for refresh in ("full", "partial"):
        dec = decoder(model, enc, max_new_tokens=24, block_length=8, length_strategy="fixed", use_cache=use_cache,
                      threshold=0.3, cache_refresh=refresh)
        calls = record_forwards(dec)
        dec.run()
        starts = [c for c in calls if c["step_in_block"] == 0]
        assert len(starts) == 3
        for call in starts:
            reference = uncached_logits(model, dec, call)
            if refresh == "full":
                close(call["logits"], reference)
            else:
                differs.append(not torch.allclose(call["logits"][torch.isfinite(reference)],
                                                  reference[torch.isfinite(reference)], atol=1e-4))
    assert any(differs)


def test_cache_refresh_is_validated():
    model, tok = make_dlm("gpt2")
    with pytest.raises(ValueError, match="`cache_refresh` must be one of"):
        model.diffusion_generate(tok(["ab"], return_tensors="pt").input_ids, cache_refresh="sometimes")


@pytest.mark.parametrize("use_cache", [True, "dual"])
@pytest.mark.parametrize("model_type", BACKBONES)
def test_predict_re_encodes_the_prompt_after_cutting_the_canvas(model_type, use_cache):
    """`predict`'s first forward spans the whole budget; once the canvas is cut to the bound, the prompt's cached
    keys/values (which attended to all those masks) are stale for every later forward. The decoder re-encodes from
    position 0 in the next forward, so that forward is exactly the uncached one on the cut canvas (it was not
    before: cached predict then agreed with uncached decoding on 8 of 16 toy prompts)."""
    model, tok = make_dlm(model_type)
    dec = decoder(model, left_padded(tok), max_new_tokens=32, block_length=8, length_strategy="predict",
                  use_cache=use_cache, threshold=0.9, predict_threshold=0.001, length_margin=12)
    calls = record_forwards(dec)
    dec.run()
    assert int(calls[1]["canvas_len"].max()) < 32  # the bound cut the canvas
    assert calls[1]["block"] == 0 and calls[1]["step_in_block"] == 1
    close(calls[1]["logits"], uncached_logits(model, dec, calls[1]))
