"""DiffusionLM.forward: bidirectional attention on every backbone and kernel, padding, the AR shift, the KV cache."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_dlm import DiffusionLM, DiffusionLMConfig
from hf_dlm.modeling_dlm import FewRowsHead
from hf_dlm.testing import char_tokenizer, tiny_causal_lm, tiny_config
from tests.conftest import BACKBONES, KERNELS, make_dlm

IDS = torch.tensor([[5, 9, 1, 7, 3, 8, 2, 6, 4, 10]])


def adapted_and_original(model_type, attn_implementation):
    """A tiny adapted model and an untouched copy of the causal LM it was built from."""
    torch.manual_seed(0)
    tok = char_tokenizer()
    causal = tiny_causal_lm(model_type, vocab_size=len(tok), attn_implementation=attn_implementation)
    original = copy.deepcopy(causal)
    return DiffusionLM.from_causal_lm(causal, tok, attn_implementation=attn_implementation), original


def with_last_token(ids, token):
    changed = ids.clone()
    changed[:, -1] = token
    return changed


@torch.no_grad()
@pytest.mark.parametrize("attn_implementation", KERNELS)
@pytest.mark.parametrize("model_type", BACKBONES)
def test_position_zero_sees_the_last_token_only_after_adaptation(model_type, attn_implementation):
    model, original = adapted_and_original(model_type, attn_implementation)
    changed = with_last_token(IDS, 11)
    assert model.backbone.config._attn_implementation == attn_implementation
    assert not torch.allclose(model(IDS).logits[:, 0], model(changed).logits[:, 0], atol=1e-4)
    # The causal LM it came from: nothing before the last position can see it.
    torch.testing.assert_close(original(IDS).logits[:, :-1], original(changed).logits[:, :-1], rtol=0, atol=0)


def left_padded(rows, pad_id):
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


@torch.no_grad()
@pytest.mark.parametrize("attn_implementation", KERNELS)
@pytest.mark.parametrize("model_type", BACKBONES)
def test_left_padded_row_gives_the_logits_of_the_row_alone(model_type, attn_implementation):
    """Padding is invisible and position ids restart at the first real token. The first real token's own logit is
    excluded: with the shift it is read from the position before it (position 0 is never predicted)."""
    model, tok = make_dlm(model_type, attn_implementation)
    rows = [[5, 9, 1, 7, 3, 8, 2], [4, 12, 6]]
    ids, mask = left_padded(rows, tok.pad_token_id)
    batch = model(ids, attention_mask=mask).logits
    short = rows[1]
    alone = model(torch.tensor([short])).logits
    torch.testing.assert_close(batch[1, -len(short) + 1 :], alone[0, 1:], rtol=0, atol=1e-5)
    torch.testing.assert_close(batch[0], model(torch.tensor([rows[0]])).logits[0], rtol=0, atol=1e-5)

    garbage = ids.clone()
    garbage[1, : -len(short)] = torch.tensor([13, 14, 15, 16])
    changed = model(garbage, attention_mask=mask).logits
    torch.testing.assert_close(changed[:, -len(short) + 1 :], batch[:, -len(short) + 1 :], rtol=0, atol=1e-5)
    torch.testing.assert_close(changed[0], batch[0], rtol=0, atol=0)


@torch.no_grad()
@pytest.mark.parametrize("model_type", BACKBONES)
def test_logit_at_i_is_the_backbone_logit_at_i_minus_1(model_type):
    """The AR shift is kept: hidden state i-1 scores token i, under the same bidirectional attention."""
    model, _ = make_dlm(model_type)
    aligned = model(IDS).logits
    raw = model.backbone(IDS).logits  # the backbone of a DiffusionLM is bidirectional too
    assert aligned.shape == raw.shape
    torch.testing.assert_close(aligned[:, 1:], raw[:, :-1], rtol=0, atol=0)
    torch.testing.assert_close(aligned[:, 0], raw[:, 0], rtol=0, atol=0)  # position 0 has no predecessor


@torch.no_grad()
@pytest.mark.parametrize("n", [1, 2, 5, 9, 10])
@pytest.mark.parametrize("shift", [True, False])
def test_logits_to_keep_returns_exactly_the_last_n_aligned_logits(n, shift):
    model, _ = make_dlm("llama")
    model.config.shift_logits = shift
    full = model(IDS).logits
    kept = model(IDS, logits_to_keep=n).logits
    assert kept.shape[1] == n
    torch.testing.assert_close(kept, full[:, -n:], rtol=0, atol=1e-6)


@torch.no_grad()
def test_shift_off_returns_the_backbone_logits_unshifted():
    model, _ = make_dlm("qwen2")
    model.config.shift_logits = False
    torch.testing.assert_close(model(IDS).logits, model.backbone(IDS).logits, rtol=0, atol=0)


def prefix_cannot_see_rest(length, prefix, batch=1):
    """4D mask (True = may attend): everyone sees the prefix; only the rest sees the rest."""
    mask = torch.ones(batch, 1, length, length, dtype=torch.bool)
    mask[:, :, :prefix, prefix:] = False
    return mask


@torch.no_grad()
@pytest.mark.parametrize("anchor", [False, True])
@pytest.mark.parametrize("attn_implementation", KERNELS)
@pytest.mark.parametrize("model_type", BACKBONES)
def test_cached_block_equals_full_forward_where_the_prefix_cannot_see_the_block(model_type, attn_implementation, anchor):
    """The backbone's KV cache under bidirectional attention: the block attends to the cached prefix and to itself;
    the prefix's keys/values are those of a prefix that never saw the block. With `anchor` the cache stops one token
    early and that token is fed again with the block (generation_dlm's scheme), which also scores the block's first
    token."""
    model, _ = make_dlm(model_type, attn_implementation)
    cached = 5 if anchor else 6
    prefix = model(IDS[:, :cached], use_cache=True)
    block = model(IDS[:, cached:], past_key_values=prefix.past_key_values, use_cache=True)
    full = model(IDS, attention_mask=prefix_cannot_see_rest(IDS.shape[1], cached)).logits
    first_scored = cached + 1  # inside a forward, the first token has no predecessor
    torch.testing.assert_close(block.logits[:, 1:], full[:, first_scored:], rtol=0, atol=1e-5)
    torch.testing.assert_close(prefix.logits, full[:, :cached], rtol=0, atol=1e-5)


@torch.no_grad()
def test_cache_is_accepted_under_both_transformers_names():
    """transformers 5.24 renamed `past_key_values` to `cache`: both names give the same forward, never both."""
    model, _ = make_dlm("gpt2", "sdpa")
    old = model(IDS[:, 6:], past_key_values=model(IDS[:, :6], use_cache=True).past_key_values, use_cache=True)
    new = model(IDS[:, 6:], cache=model(IDS[:, :6], use_cache=True).cache, use_cache=True)
    torch.testing.assert_close(old.logits, new.logits, rtol=0, atol=0)
    assert new.cache.get_seq_length() == IDS.shape[1]
    with pytest.raises(ValueError, match="not both"):
        model(IDS[:, 6:], cache=new.cache, past_key_values=old.cache)


@torch.no_grad()
@pytest.mark.parametrize("attn_implementation", KERNELS)
def test_cache_with_left_padding_takes_a_2d_mask_over_past_and_current_tokens(attn_implementation):
    model, tok = make_dlm("llama", attn_implementation)
    ids, mask = left_padded([[5, 9, 1, 7, 3, 8, 2, 6], [4, 12, 6, 11, 10]], tok.pad_token_id)
    cached = 4
    prefix = model(ids[:, :cached], attention_mask=mask[:, :cached], use_cache=True)
    block = model(ids[:, cached:], attention_mask=mask, past_key_values=prefix.past_key_values, use_cache=True)
    visible = prefix_cannot_see_rest(ids.shape[1], cached, batch=2) & mask[:, None, None, :].bool()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    full = model(ids, attention_mask=visible, position_ids=positions).logits
    torch.testing.assert_close(block.logits[:, 1:], full[:, cached + 1 :], rtol=0, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("attn_implementation", KERNELS)
@pytest.mark.parametrize("model_type", BACKBONES)
def test_a_4d_bool_mask_means_the_same_to_every_kernel(model_type, attn_implementation):
    """True = may attend. A causal 4D mask reproduces the causal LM exactly (eager adds masks to the scores, so
    forward turns bool masks into additive ones); an all-True mask is the default bidirectional attention."""
    model, original = adapted_and_original(model_type, attn_implementation)
    length = IDS.shape[1]
    causal = torch.ones(1, 1, length, length, dtype=torch.bool).tril()
    as_causal = model(IDS, attention_mask=causal).logits
    vocab = original.config.vocab_size  # the new mask/pad rows score tokens the causal LM never had
    torch.testing.assert_close(as_causal[:, 1:, :vocab], original(IDS).logits[:, :-1], rtol=0, atol=1e-5)
    everything = torch.ones(1, 1, length, length, dtype=torch.bool)
    torch.testing.assert_close(model(IDS, attention_mask=everything).logits, model(IDS).logits, rtol=0, atol=1e-6)


@torch.no_grad()
def test_hidden_states_and_inputs_embeds_pass_through():
    model, _ = make_dlm("gpt2")
    out = model(IDS, output_hidden_states=True)
    assert len(out.hidden_states) == model.config.backbone_config.n_layer + 1
    embeds = model.get_input_embeddings()(IDS)
    torch.testing.assert_close(model(inputs_embeds=embeds).logits, out.logits, rtol=0, atol=1e-6)
    assert out.past_key_values is None  # use_cache defaults to False: training never pays for a cache


def few_rows_copy(plain: torch.nn.Linear) -> FewRowsHead:
    """A FewRowsHead with `plain`'s weights (what `model.use_few_rows_head()` makes of its head, without touching
    `plain`)."""
    head = copy.deepcopy(plain)
    head.__class__ = FewRowsHead
    return head


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 576), (5, 576), (1, 5, 576), (2, 3, 576), (16, 576), (2, 9, 576)])
def test_few_rows_head_computes_the_linear_product(shape, bias):
    torch.manual_seed(0)
    plain = torch.nn.Linear(576, 300, bias=bias)
    head = few_rows_copy(plain)
    x = torch.randn(shape)
    with torch.no_grad():
        out = head(x)
        assert out.shape == (*shape[:-1], 300) and out.is_contiguous()
        torch.testing.assert_close(out, plain(x), rtol=1e-5, atol=1e-5)
    grad_out = head(x)  # with autograd it is nn.Linear itself
    torch.testing.assert_close(grad_out, plain(x), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 4, 16, 20])
def test_few_rows_head_takes_a_view_of_the_last_rows_in_any_dtype(rows, dtype):
    """What a head gets inside a forward: `hidden[:, -n:]`, a view with the whole sequence's batch stride."""
    torch.manual_seed(0)
    plain = torch.nn.Linear(64, 300, bias=False, dtype=dtype)
    head = few_rows_copy(plain)
    x = torch.randn(2, rows + 3, 64, dtype=dtype)[:, -rows:]
    with torch.no_grad():
        out = head(x)
        assert out.shape == (2, rows, 300) and out.dtype == dtype and out.is_contiguous()
        tolerance = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(out, plain(x), rtol=tolerance, atol=tolerance)


def test_forward_never_changes_the_head_class():
    model, _ = make_dlm("llama")
    model(IDS)
    with torch.no_grad():
        model(IDS)
        model.diffusion_generate(IDS, max_new_tokens=4, block_length=2)
    assert type(model.get_output_embeddings()) is torch.nn.Linear


def test_use_few_rows_head_gives_the_head_the_few_rows_product_and_keeps_weights_and_tie():
    model, _ = make_dlm("llama")  # tied head and embedding, like SmolLM2
    keys = set(model.state_dict())
    logits = model(IDS).logits
    assert model.use_few_rows_head() is model
    model.use_few_rows_head()  # idempotent
    head = model.get_output_embeddings()
    assert type(head) is FewRowsHead
    assert head.weight is model.get_input_embeddings().weight  # still tied
    assert set(model.state_dict()) == keys
    with torch.no_grad():
        fast = model(IDS, logits_to_keep=4).logits  # 5 rows reach the head: the W @ x^T product
    torch.testing.assert_close(fast, logits[:, -4:].detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(IDS).logits, logits, rtol=0, atol=0)  # with autograd it is nn.Linear itself
    clone = copy.deepcopy(model)  # a class swapped in place still copies and pickles like any module
    assert type(clone.get_output_embeddings()) is FewRowsHead
    model.use_few_rows_head(False)
    assert type(model.get_output_embeddings()) is torch.nn.Linear and head.weight is model.get_input_embeddings().weight


def test_use_few_rows_head_refuses_a_head_that_is_not_a_plain_linear():
    from peft import LoraConfig, get_peft_model

    tok = char_tokenizer()
    config = tiny_config("llama", len(tok))
    config.tie_word_embeddings = False  # a LoRA layer on a tied head is another matter (peft warns)
    model = DiffusionLM.from_causal_lm(AutoModelForCausalLM.from_config(config), tok)
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["lm_head"]))
    with pytest.raises(ValueError, match="not a plain torch.nn.Linear.*merge_and_unload"):
        lora.use_few_rows_head()
    merged = lora.merge_and_unload()
    assert type(merged.use_few_rows_head().get_output_embeddings()) is FewRowsHead


def test_a_config_built_by_hand_needs_only_the_backbone_and_the_mask_token():
    """The documented alternative to from_causal_lm: special tokens left unset are None, not missing attributes."""
    config = DiffusionLMConfig(backbone_config=tiny_config("llama", 40), mask_token_id=39)
    model = DiffusionLM(config)
    assert (config.pad_token_id, config.eos_token_id, config.bos_token_id, config.eos_token_ids) == (None, None, None, [])
    assert model.generation_config.mask_token_id == 39 and model.generation_config.pad_token_id is None
    with torch.no_grad():
        assert model(IDS).logits.shape == (1, IDS.shape[1], 40)
