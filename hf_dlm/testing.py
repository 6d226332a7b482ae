"""Tiny tokenizers and causal LMs built locally from configs: tests, examples and benchmarks never download.

`char_tokenizer` is a real character-level fast tokenizer (saved and loaded like any other), with GPT-2's
special-token habit on purpose: one `<|endoftext|>` that is bos, eos and unk, and no pad.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

DEFAULT_ALPHABET = string.ascii_lowercase + string.digits + " ,.:;!?+-*/=()[]<>|#\n"
ENDOFTEXT = "<|endoftext|>"


def char_tokenizer(alphabet: str = DEFAULT_ALPHABET) -> PreTrainedTokenizerFast:
    """A character-level tokenizer; id 0 is `<|endoftext|>` (bos = eos = unk, as in GPT-2), no pad token."""
    vocab = {ENDOFTEXT: 0}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token=ENDOFTEXT))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.decoder = decoders.Fuse()  # characters join back without spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=ENDOFTEXT
    )
    tokenizer.clean_up_tokenization_spaces = False
    return tokenizer


def tiny_config(model_type: str, vocab_size: int, *, hidden: int = 64, layers: int = 2, heads: int = 4,
                positions: int = 512, bos_token_id: int = 0, eos_token_id: int = 0):
    """A small config of a causal-LM family: gpt2, llama or qwen2."""
    common = dict(vocab_size=vocab_size, bos_token_id=bos_token_id, eos_token_id=eos_token_id)
    if model_type == "gpt2":
        return GPT2Config(n_layer=layers, n_embd=hidden, n_head=heads, n_positions=positions,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
    families = {"llama": LlamaConfig, "qwen2": Qwen2Config}
    if model_type not in families:
        raise ValueError(f"tiny_config knows gpt2, llama and qwen2, not {model_type!r}.")
    return families[model_type](
        num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
        intermediate_size=2 * hidden, max_position_embeddings=positions, tie_word_embeddings=True, **common
    )


def tiny_causal_lm(model_type: str = "gpt2", vocab_size: int = 64, attn_implementation: str = "sdpa", **kwargs):
    """A randomly initialised small causal LM (a stand-in for a pretrained one in tests)."""
    config = tiny_config(model_type, vocab_size, **kwargs)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)


__all__ = ["char_tokenizer", "tiny_causal_lm", "tiny_config"]
