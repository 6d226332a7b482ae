"""DiffusionLM.from_causal_lm: every source (model, directory, Hub id, GGUF), the dedicated mask and pad tokens,
the AR weights kept, and bad inputs refused with an error that says what to do."""

import copy

import huggingface_hub
import pytest
import torch
from transformers import AutoModelForCausalLM, BertConfig, BertForMaskedLM, GPT2Config, GPT2Model

from hf_dlm import DiffusionLM
from hf_dlm.adapt import DEFAULT_MASK_TOKEN
from hf_dlm.testing import ENDOFTEXT, char_tokenizer, tiny_causal_lm, tiny_config
from tests.conftest import BACKBONES, make_dlm

IDS = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])


def causal_and_tokenizer(model_type="gpt2", seed=0, **config_overrides):
    torch.manual_seed(seed)
    tok = char_tokenizer()
    config = tiny_config(model_type, config_overrides.pop("vocab_size", len(tok)))
    for key, value in config_overrides.items():
        setattr(config, key, value)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa"), tok


# ----------------------------------------------------------------------------------------------- tokens
def test_mask_token_is_a_new_dedicated_id():
    causal, tok = causal_and_tokenizer()
    vocab_before = dict(tok.get_vocab())
    model = DiffusionLM.from_causal_lm(causal, tok)
    mask_id = tok.mask_token_id
    assert tok.mask_token == DEFAULT_MASK_TOKEN
    assert mask_id not in vocab_before.values()  # not a reused vocabulary entry
    assert mask_id not in {tok.pad_token_id, tok.eos_token_id, tok.bos_token_id}
    assert model.config.mask_token_id == model.generation_config.mask_token_id == mask_id
    assert tok.encode(f"ab{DEFAULT_MASK_TOKEN}c", add_special_tokens=False) == [
        tok.convert_tokens_to_ids("a"), tok.convert_tokens_to_ids("b"), mask_id, tok.convert_tokens_to_ids("c")]
    assert model.tokenizer is tok


def test_gpt2_like_tokenizer_gets_a_dedicated_pad_and_batches():
    """GPT-2 habit: one <|endoftext|> is bos = eos, and there is no pad. Padding with EOS would make the answer's
    end and the padding indistinguishable, so a pad token of its own is added."""
    model, tok = make_dlm("gpt2")
    eos = tok.convert_tokens_to_ids(ENDOFTEXT)
    assert tok.eos_token_id == tok.bos_token_id == eos
    assert tok.pad_token_id not in {eos, tok.mask_token_id}
    assert (model.config.pad_token_id, model.config.eos_token_id, model.config.bos_token_id) == (
        tok.pad_token_id, eos, eos)

    tok.padding_side = "left"
    enc = tok(["hello world", "hi"], return_tensors="pt", padding=True)
    assert enc.input_ids[1, 0] == tok.pad_token_id and enc.attention_mask[1].tolist() == [0] * 9 + [1, 1]
    with torch.no_grad():
        batch = model(**enc).logits
        alone = model(**tok(["hi"], return_tensors="pt")).logits
    torch.testing.assert_close(batch[1, -1], alone[0, -1], rtol=0, atol=1e-5)
    out = model.diffusion_generate(enc.input_ids, enc.attention_mask, max_new_tokens=8, block_length=4,
                                   return_dict_in_generate=True)
    assert out.sequences.shape[0] == 2 and (out.sequences != tok.mask_token_id).all()


def test_special_tokens_the_tokenizer_already_has_are_kept():
    causal, tok = causal_and_tokenizer()
    tok.add_special_tokens({"pad_token": "<pad>", "mask_token": "<mask>"})
    pad_id, mask_id, size = tok.pad_token_id, tok.mask_token_id, len(tok)
    causal.resize_token_embeddings(size)
    model = DiffusionLM.from_causal_lm(causal, tok)
    assert (tok.pad_token_id, tok.mask_token_id, len(tok)) == (pad_id, mask_id, size)
    assert model.config.mask_token_id == mask_id and model.get_input_embeddings().weight.shape[0] == size


@pytest.mark.parametrize(
    "model_type, overrides",
    [("gpt2", {}), ("llama", {"tie_word_embeddings": False}), ("qwen2", {"vocab_size": 64})],
    ids=["gpt2-tied", "llama-untied", "qwen2-padded-matrix"],
)
def test_new_rows_are_the_mean_of_the_old_and_every_ar_weight_is_kept(model_type, overrides):
    """`qwen2-padded-matrix`: the embedding matrix is larger than the tokenizer (as in real Qwen2 checkpoints), so
    the new ids fall inside it; their never-trained rows are initialised too and left out of the mean."""
    causal, tok = causal_and_tokenizer(model_type, **overrides)
    before = {k: v.clone() for k, v in causal.state_dict().items()}
    vocab = len(tok)
    model = DiffusionLM.from_causal_lm(causal, tok)
    new_ids = [tok.mask_token_id, tok.pad_token_id]
    assert new_ids == [vocab, vocab + 1]

    after = model.backbone.state_dict()
    assert after.keys() == before.keys()
    for name, old in before.items():
        new = after[name]
        if new.shape == old.shape and name not in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(new, old), name
        else:  # an embedding or LM head: the original vocabulary rows are untouched
            assert torch.equal(new[:vocab], old[:vocab]), name
    for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
        mean = emb.weight[:vocab].mean(dim=0)
        for i in new_ids:
            torch.testing.assert_close(emb.weight[i], mean, rtol=0, atol=1e-6)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tied == causal.config.tie_word_embeddings


@pytest.mark.parametrize("model_type, overrides", [("gpt2", {}), ("llama", {"tie_word_embeddings": False})],
                         ids=["tied-head", "untied-head"])
def test_a_causal_lm_trained_in_this_process_adapts_and_trains_while_its_last_loss_is_alive(
        model_type, overrides, tmp_path):
    """The notebook path: train the causal LM, keep its `loss`, adapt it (the vocabulary grows by 2), train the
    DiffusionLM. The resized embedding must not reuse the autograd accumulator of the old graph (old shape)."""
    from datasets import Dataset

    from hf_dlm import DiffusionTrainer, DiffusionTrainingArguments

    causal, tok = causal_and_tokenizer(model_type, **overrides)
    ids = torch.tensor([tok.encode("sort 3142=1234")])
    optimizer = torch.optim.AdamW(causal.parameters(), lr=1e-3)
    loss = causal(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()

    model = DiffusionLM.from_causal_lm(causal, tok)
    embedding, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert (head is embedding) == (model_type == "gpt2") and embedding.requires_grad and head.requires_grad
    assert embedding.grad is None and embedding.shape[0] == len(tok)
    before = {"embedding": embedding.detach().clone(), "head": head.detach().clone()}
    data = Dataset.from_dict({"text": [f"sort {a}{b}{c}={''.join(sorted(f'{a}{b}{c}'))}"
                                       for a, b, c in zip("31415926", "27182818", "16180339")]})
    args = DiffusionTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, disable_tqdm=True,
                                      save_strategy="no", per_device_train_batch_size=4, learning_rate=1e-2,
                                      max_steps=3, seed=0, max_length=16)
    DiffusionTrainer(model=model, args=args, train_dataset=data, processing_class=tok).train()

    assert loss.grad_fn is not None  # the causal LM's graph was alive throughout
    assert model.get_input_embeddings().weight is embedding and model.get_output_embeddings().weight is head
    mask = tok.mask_token_id  # a row the resize created: fed as input, and scored by the head
    assert not torch.equal(embedding[mask], before["embedding"][mask])
    assert not torch.equal(head[: mask], before["head"][: mask])


# ----------------------------------------------------------------------------------------------- sources
def test_local_directory_adapts_like_the_loaded_model(tmp_path):
    causal, tok = causal_and_tokenizer("gpt2")
    causal.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    from_dir = DiffusionLM.from_causal_lm(str(tmp_path))
    from_object = DiffusionLM.from_causal_lm(causal, tok)
    assert from_dir.config.mask_token_id == from_object.config.mask_token_id
    assert from_dir.tokenizer.mask_token == DEFAULT_MASK_TOKEN
    with torch.no_grad():
        torch.testing.assert_close(from_dir(IDS).logits, from_object(IDS).logits, rtol=0, atol=0)


def test_hub_id_resolves_through_from_pretrained(tmp_path, monkeypatch):
    """No network here: the repo sits in a Hub cache (the layout `from_pretrained` downloads into), offline mode on.
    The id takes the same AutoModelForCausalLM/AutoTokenizer.from_pretrained path a download would."""
    causal, tok = causal_and_tokenizer("llama")
    repo = tmp_path / "models--tiny-org--tiny-llama"
    commit = "0123456789abcdef0123456789abcdef01234567"
    causal.save_pretrained(repo / "snapshots" / commit)
    tok.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = DiffusionLM.from_causal_lm("tiny-org/tiny-llama", cache_dir=str(tmp_path))
    assert model.backbone.config._name_or_path == "tiny-org/tiny-llama"
    assert model.tokenizer.mask_token_id == model.config.mask_token_id
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, DiffusionLM.from_causal_lm(causal, tok)(IDS).logits,
                                   rtol=0, atol=0)


def write_tiny_llama_gguf(path, model, tokens, merges):
    """A GGUF file of a tiny Llama as llama.cpp's converter writes it (Q/K rows permuted for its rope layout), with a
    byte-level BPE tokenizer whose id 0 is <|endoftext|> (bos = eos)."""
    import gguf

    config = model.config
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}

    def permute(w, heads):
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * (len(tokens) - 1))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    for i in range(config.num_hidden_layers):
        layer = f"model.layers.{i}."
        names = {"attn_norm": "input_layernorm", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                 "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj"}
        for gguf_name, hf_name in names.items():
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight", weights[layer + hf_name + ".weight"])
        writer.add_tensor(f"blk.{i}.attn_q.weight",
                          permute(weights[layer + "self_attn.q_proj.weight"], config.num_attention_heads))
        writer.add_tensor(f"blk.{i}.attn_k.weight",
                          permute(weights[layer + "self_attn.k_proj.weight"], config.num_key_value_heads))
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])  # no output.weight: tied
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_file_is_adapted_with_its_own_tokenizer(tmp_path):
    pytest.importorskip("gguf")
    tokens = [ENDOFTEXT, *"abcdefghijklmnopqrstuvwxyz ", "ab", "abc"]
    torch.manual_seed(0)
    source = tiny_causal_lm("llama", vocab_size=len(tokens))
    write_tiny_llama_gguf(tmp_path / "tiny.gguf", source, tokens, merges=["a b", "ab c"])

    model = DiffusionLM.from_causal_lm(str(tmp_path), gguf_file="tiny.gguf")
    tok = model.tokenizer
    assert tok.encode("abc ab", add_special_tokens=False) == [tokens.index("abc"), tokens.index(" "),
                                                              tokens.index("ab")]
    assert tok.mask_token_id == len(tokens) and model.config.mask_token_id == len(tokens)
    assert tok.pad_token_id == len(tokens) + 1 and model.config.eos_token_id == 0
    original = source.state_dict()
    for name, weight in model.backbone.state_dict().items():
        torch.testing.assert_close(weight[: original[name].shape[0]], original[name], rtol=0, atol=0, msg=name)
    ids = torch.tensor([[0, 5, 3, 9, 28]])
    changed = ids.clone()
    changed[0, -1] = 7
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits[:, 0], model(changed).logits[:, 0], atol=1e-4)


# ----------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=58)), "no causal-LM head.*ForCausalLM"),
        (lambda: BertForMaskedLM(BertConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                            intermediate_size=32, vocab_size=58)), "BERT-like encoder.*decoder-only"),
        (lambda: make_dlm()[0], "already a DiffusionLM.*DiffusionLM.from_pretrained"),
    ],
    ids=["base-model", "bert-encoder", "diffusion-lm"],
)
def test_models_that_are_not_causal_lms_are_refused(build, message):
    tok = char_tokenizer()
    size = len(tok)
    with pytest.raises(ValueError, match=message):
        DiffusionLM.from_causal_lm(build(), tok)
    assert len(tok) == size  # nothing added to a tokenizer whose model was refused


def test_checkpoint_directories_that_are_not_causal_lms_are_refused(tmp_path):
    BertForMaskedLM(BertConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                               vocab_size=58)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="BERT-like encoder"):
        DiffusionLM.from_causal_lm(str(tmp_path / "bert"), char_tokenizer())
    model, _ = make_dlm()
    model.save_pretrained(tmp_path / "dlm")
    with pytest.raises(ValueError, match="already a DiffusionLM checkpoint.*DiffusionLM.from_pretrained"):
        DiffusionLM.from_causal_lm(str(tmp_path / "dlm"))


def test_a_causal_lm_checkpoint_loaded_as_diffusion_lm_says_to_adapt_it(tmp_path):
    causal, tok = causal_and_tokenizer("qwen2")
    causal.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"'qwen2' checkpoint, not a DiffusionLM.*DiffusionLM.from_causal_lm"):
        DiffusionLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("special", ["eos_token", "pad_token"])
def test_mask_token_equal_to_pad_or_eos_is_refused(special):
    causal, tok = causal_and_tokenizer()
    if special == "pad_token":
        tok.add_special_tokens({"pad_token": "<pad>"})
        causal.resize_token_embeddings(len(tok))
    tok.mask_token = getattr(tok, special)
    with pytest.raises(ValueError, match="also its pad/eos/bos token.*tokenizer.mask_token = None"):
        DiffusionLM.from_causal_lm(causal, tok)


@pytest.mark.parametrize("mask_token", ["a", ENDOFTEXT])
def test_mask_token_string_already_in_the_vocabulary_is_refused(mask_token):
    causal, tok = causal_and_tokenizer()
    size = len(tok)
    with pytest.raises(ValueError, match="already in this tokenizer's vocabulary.*mask_token="):
        DiffusionLM.from_causal_lm(causal, tok, mask_token=mask_token)
    assert len(tok) == size and tok.mask_token is None


def test_a_model_without_its_tokenizer_or_of_the_wrong_type_is_refused():
    causal, _ = causal_and_tokenizer()
    with pytest.raises(ValueError, match="Pass the model's tokenizer"):
        DiffusionLM.from_causal_lm(causal)
    with pytest.raises(TypeError, match="a causal LM model, a Hub id or a local directory"):
        DiffusionLM.from_causal_lm(42, char_tokenizer())


@pytest.mark.parametrize("kernel", ["flash_attention_2", "flex_attention"])
def test_kernels_that_ignore_custom_masks_are_refused_everywhere(kernel, tmp_path):
    """At adaptation, at load time, when switched later, and at forward if a config was edited by hand."""
    causal, tok = causal_and_tokenizer()
    with pytest.raises(ValueError, match="attn_implementation=.*use one of \\('eager', 'sdpa'\\)"):
        DiffusionLM.from_causal_lm(causal, tok, attn_implementation=kernel)
    with pytest.raises(ValueError, match="attn_implementation=.*use one of \\('eager', 'sdpa'\\)"):
        DiffusionLM.from_causal_lm(str(tmp_path), attn_implementation=kernel)

    model, _ = make_dlm()
    model.save_pretrained(tmp_path / "dlm")
    says_what_to_use = f"attn_implementation='{kernel}' is not supported.*attn_implementation='sdpa'.*'eager'"
    with pytest.raises(ValueError, match=says_what_to_use):
        DiffusionLM.from_pretrained(tmp_path / "dlm", attn_implementation=kernel)
    with pytest.raises(ValueError, match=says_what_to_use):
        model.set_attn_implementation(kernel)
    broken = copy.deepcopy(model)
    broken.backbone.config._attn_implementation = kernel
    with pytest.raises(ValueError, match=says_what_to_use):
        broken(IDS)


@pytest.mark.parametrize("model_type", BACKBONES)
def test_adapted_model_is_in_eval_mode_with_bidirectional_backbone(model_type):
    model, _ = make_dlm(model_type)
    assert not model.training and model.backbone.config.is_causal is False
    assert model.config.backbone_config is model.backbone.config and model.config.shift_logits is True
