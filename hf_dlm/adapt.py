"""Adapt a causal LM for `DiffusionLM.from_causal_lm`: the DiffuGPT / DiffuLLaMA recipe (github.com/HKUNLP/DiffuLLaMA).

Remote code: `modeling_dlm.py` imports this file, so it travels with saved checkpoints; it imports only torch,
transformers and `configuration_dlm.py`. It never imports the model: `modeling_dlm` calls `prepare_causal_lm`, then
wraps what it returns, so the two files depend in one direction.

Steps: load the causal LM (object, Hub id, local directory, or GGUF file), give the tokenizer a *dedicated* mask
token (DiffuGPT-small and DiffuLLaMA reused vocabulary ids 10541 / 811, which makes real occurrences of those
tokens ambiguous) and a pad token if it has none, grow the embeddings with the mean of the existing rows, and
build the `DiffusionLMConfig`; `DiffusionLM.from_causal_lm` then wraps the untouched AR weights in a DiffusionLM
with bidirectional attention and the shift kept.
"""

from __future__ import annotations

import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from .configuration_dlm import MASK_HONOURING_ATTENTION, DiffusionLMConfig

DEFAULT_MASK_TOKEN = "<|mask|>"
DEFAULT_PAD_TOKEN = "<|pad|>"


def prepare_causal_lm(
    model_or_path: PreTrainedModel | str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    gguf_file: str | None = None,
    mask_token: str = DEFAULT_MASK_TOKEN,
    attn_implementation: str = "sdpa",
    attention: str | None = None,
    dtype: torch.dtype | str | None = None,
    drafter: str | None = None,
    drafter_rank: int = 32,
    drafter_alpha: float | None = None,
    drafter_target_modules: list[str] | None = None,
    **load_kwargs,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, DiffusionLMConfig]:
    """Everything `DiffusionLM.from_causal_lm` does before it wraps the causal LM (its docstring has the arguments):
    check and load the causal LM, add the mask (and pad) token to the tokenizer in place, grow the embeddings, and
    build the config. Returns (causal LM, tokenizer, config)."""
    if attn_implementation not in MASK_HONOURING_ATTENTION:
        raise ValueError(
            f"attn_implementation={attn_implementation!r} ignores custom attention masks; "
            f"use one of {MASK_HONOURING_ATTENTION}."
        )
    if isinstance(model_or_path, PreTrainedModel) and model_or_path.config.model_type == DiffusionLMConfig.model_type:
        raise ValueError("This model is already a DiffusionLM; load it with DiffusionLM.from_pretrained(...).")
    if isinstance(model_or_path, PreTrainedModel):
        causal_lm = model_or_path
        if tokenizer is None:
            raise ValueError("Pass the model's tokenizer: from_causal_lm(model, tokenizer). It gets the mask token.")
        unused = sorted(load_kwargs) + (["gguf_file"] if gguf_file is not None else []) + (
            ["dtype"] if dtype is not None else [])
        if unused:
            raise TypeError(
                f"from_causal_lm got {unused} with a model instance: those arguments load a checkpoint and would be "
                f"ignored. Load the causal LM with them first, or pass a Hub id or directory instead of the model. "
                f"Adaptation itself takes: mask_token, attn_implementation, attention, drafter, drafter_rank, "
                f"drafter_alpha, drafter_target_modules."
            )
    elif isinstance(model_or_path, (str, os.PathLike)):
        source = os.fspath(model_or_path)
        check_is_causal_lm_checkpoint(source, gguf_file, load_kwargs)
        causal_lm = AutoModelForCausalLM.from_pretrained(
            source, gguf_file=gguf_file, attn_implementation=attn_implementation, dtype=dtype, **load_kwargs
        )
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file, **_tokenizer_kwargs(load_kwargs))
    else:
        raise TypeError(
            f"from_causal_lm takes a causal LM model, a Hub id or a local directory, not {type(model_or_path).__name__}."
        )
    check_is_causal_lm(causal_lm)
    if attention is None:
        attention = "causal" if drafter is not None else "bidirectional"
    base_vocab = causal_lm.get_input_embeddings().num_embeddings

    added = add_special_tokens(tokenizer, mask_token)
    resize_embeddings_with_mean(causal_lm, len(tokenizer), added)

    backbone_config = causal_lm.config
    eos = _eos_token_ids(tokenizer, causal_lm)
    config = DiffusionLMConfig(
        backbone_config=backbone_config,
        mask_token_id=tokenizer.mask_token_id,
        shift_logits=True,
        attention=attention,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos[0] if len(eos) == 1 else eos,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=getattr(backbone_config, "tie_word_embeddings", False),
        drafter=drafter,
        drafter_rank=drafter_rank,
        drafter_alpha=drafter_alpha,
        drafter_target_modules=drafter_target_modules,
        drafter_base_vocab_size=base_vocab if drafter is not None else None,
    )
    config._attn_implementation = attn_implementation
    config.dtype = causal_lm.dtype
    return causal_lm, tokenizer, config


def check_is_causal_lm(model: torch.nn.Module) -> None:
    if not isinstance(model, PreTrainedModel) or model.get_output_embeddings() is None:
        raise ValueError(
            f"{type(model).__name__} has no causal-LM head. Pass a `...ForCausalLM` model (e.g. "
            f"AutoModelForCausalLM.from_pretrained(...)), not a base model or an encoder."
        )
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError(f"{type(model).__name__} is an encoder-decoder model; DiffusionLM adapts decoder-only causal LMs.")
    check_is_decoder_only(model.config.model_type, type(model).__name__)


def check_is_decoder_only(model_type: str, name: str) -> None:
    """BERT-like encoders (families with a masked-LM class) have an LM head too, but their weights were never trained
    to predict the next token, which is what the recipe reuses (the shift)."""
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise ValueError(
            f"{name} is a {model_type!r} model, a BERT-like encoder; DiffusionLM adapts decoder-only causal LMs "
            f"(gpt2, llama, qwen2, smollm, ...). Pass one of those, loaded with AutoModelForCausalLM."
        )


def check_is_causal_lm_checkpoint(source: str, gguf_file: str | None, load_kwargs: dict) -> None:
    """Fail before downloading weights when the checkpoint is not a causal LM of a known type."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, gguf_file=gguf_file, **_tokenizer_kwargs(load_kwargs))
    if config.model_type == DiffusionLMConfig.model_type:
        raise ValueError(f"{source} is already a DiffusionLM checkpoint; load it with DiffusionLM.from_pretrained.")
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(config, "auto_map", None):
        raise ValueError(
            f"{source} is a {config.model_type!r} checkpoint, which has no causal-LM class in transformers; "
            f"DiffusionLM adapts decoder-only causal LMs (gpt2, llama, qwen2, smollm, ...)."
        )
    check_is_decoder_only(config.model_type, source)


def add_special_tokens(tokenizer: PreTrainedTokenizerBase, mask_token: str = DEFAULT_MASK_TOKEN) -> list[int]:
    """Give the tokenizer a dedicated mask token, and a pad token if it has none (GPT-2), in place; return the ids
    of the tokens added.

    A mask token the tokenizer already has is kept if it is a distinct special token. The new token must not
    already be an ordinary vocabulary entry (that would reuse its id, which is what we avoid).
    """
    specials = {tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id} - {None}
    added = []
    if tokenizer.mask_token is None:
        if mask_token in tokenizer.get_vocab():
            raise ValueError(
                f"{mask_token!r} is already in this tokenizer's vocabulary (id {tokenizer.convert_tokens_to_ids(mask_token)}); "
                f"reusing it would make real occurrences ambiguous. Pass mask_token='<some new string>'."
            )
        tokenizer.add_special_tokens({"mask_token": mask_token})
        added.append(tokenizer.mask_token_id)
    if tokenizer.mask_token_id in specials:
        raise ValueError(
            f"The tokenizer's mask token {tokenizer.mask_token!r} (id {tokenizer.mask_token_id}) is also its pad/eos/bos "
            f"token. Set tokenizer.mask_token = None to let hf_dlm add a dedicated one, or pass a different token."
        )
    if tokenizer.pad_token is None:
        # A dedicated pad rather than pad = eos (GPT-2's habit): the decoder writes pad after the first EOS,
        # and the two must stay distinguishable (GPT-2's pad = eos = bos 50256 makes padding and "the answer ended" one token).
        tokenizer.add_special_tokens({"pad_token": DEFAULT_PAD_TOKEN})
        added.append(tokenizer.pad_token_id)
    return added


def resize_embeddings_with_mean(model: PreTrainedModel, vocab_size: int, new_token_ids: list[int] | None = None) -> None:
    """Grow input (and untied output) embeddings to at least `vocab_size` and set the rows of `new_token_ids`
    (default: the rows the resize creates) to the mean of the rows before the first of them: a neutral start that
    keeps the new tokens' logits ordinary (random rows would put them off the embedding manifold).

    New ids can fall inside the matrix: Qwen2 checkpoints pad it past the tokenizer (151936 rows, 151665 tokens),
    and those padding rows were never trained, so they are initialised too (and left out of the mean).

    Every Parameter the resize grows is a new Parameter object afterwards (ties kept), so that the model trains
    even while a graph built before the resize is alive (`_renew_resized_parameters` says why).
    """
    old = model.get_input_embeddings().weight.shape[0]
    if vocab_size > old:
        before = _embedding_parameters(model)
        model.resize_token_embeddings(vocab_size, mean_resizing=False)
        _renew_resized_parameters(model, before)
    new = sorted(new_token_ids) if new_token_ids is not None else list(range(old, vocab_size))
    if not new:
        return
    reference = new[0]  # rows [0, reference) are the original vocabulary
    with torch.no_grad():
        for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
            if emb is None:
                continue
            emb.weight[new] = emb.weight[:reference].mean(dim=0, keepdim=True)
            bias = getattr(emb, "bias", None)
            if bias is not None and bias.shape[0] == emb.weight.shape[0]:
                bias[new] = bias[:reference].mean()


def _embedding_parameters(model: PreTrainedModel) -> dict[int, tuple[torch.nn.Parameter, torch.Size]]:
    """The Parameters of the input and output embeddings (weights and bias), by id, with their shapes."""
    found = {}
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        for param in (module.parameters(recurse=False) if module is not None else ()):
            found[id(param)] = (param, param.shape)
    return found


def _renew_resized_parameters(model: PreTrainedModel, before: dict[int, tuple[torch.nn.Parameter, torch.Size]]) -> None:
    """Give every Parameter that `resize_token_embeddings` grew in place a new Parameter object (same storage, dtype,
    device and requires_grad), wherever the model holds it, so that ties stay ties.

    transformers resizes the input embedding (and a tied head's bias) by swapping `.data` of the same Parameter. A
    Parameter's autograd accumulator is created once and kept while any graph that used it is alive, with the shape it
    had then: a causal LM trained in this process, whose last loss is still referenced (a notebook), would make the
    first backward of the adapted model fail with "returned an invalid gradient ... got [V+2, d] but expected [V, d]".
    A new Parameter object gets a new accumulator; its `.grad` starts empty instead of keeping the old shape.
    """
    renewed: dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None or id(param) not in before or param.shape == before[id(param)][1]:
                continue
            if id(param) not in renewed:
                fresh = torch.nn.Parameter(param.detach(), requires_grad=param.requires_grad)
                fresh.__dict__.update(param.__dict__)  # flags transformers keeps on parameters (e.g. initialised)
                renewed[id(param)] = fresh
            setattr(module, name, renewed[id(param)])


def _eos_token_ids(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> list[int]:
    """Every id that ends an answer: the tokenizer's eos plus the model's generation_config eos (chat models end
    turns with e.g. <|im_end|> while <|endoftext|> ends documents)."""
    ids: list[int] = []
    candidates = [tokenizer.eos_token_id]
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    candidates += gen_eos if isinstance(gen_eos, list) else [gen_eos]
    for i in candidates:
        if i is not None and i not in ids:
            ids.append(int(i))
    if not ids:
        raise ValueError("The tokenizer has no eos token; set tokenizer.eos_token so that answers can end.")
    return ids


def _tokenizer_kwargs(load_kwargs: dict) -> dict:
    return {k: v for k, v in load_kwargs.items() if k in ("revision", "token", "cache_dir", "local_files_only", "trust_remote_code")}


__all__ = ["DEFAULT_MASK_TOKEN", "add_special_tokens", "prepare_causal_lm", "resize_embeddings_with_mean"]
