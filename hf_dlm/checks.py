"""Cross-checks that turn silent wrong results into a clear `ValueError` at load and before training.

A checkpoint's mask token id lives in three places: config.json (what `DiffusionTrainer` masks with), the
generation config (what `diffusion_generate` fills) and the tokenizer (what text encodes `<|mask|>` as). Saved by
hf_dlm they agree; edited by hand, merged from two runs or paired with another tokenizer they may not, and nothing
fails: the trainer then teaches an ordinary token as the mask. Ids past the embedding fail only mid-training with
an IndexError. So `load_diffusion_lm` and `DiffusionTrainer.__init__` call `check_special_tokens`, and the
trainer also `check_max_length` (GPT-2 fails with an IndexError past its positions; Llama silently trains past
them).

Not remote code: the file-to-file part every load needs lives in `settings_dlm.check_special_token_ids` (standard
library, travels with checkpoints); this module adds the tokenizer, which `from_pretrained` never sees.
"""

from __future__ import annotations

from .settings_dlm import check_loaded_token_ids


def check_special_tokens(model, tokenizer=None, source: str | None = None) -> None:
    """Raise `ValueError` saying which file to fix when config.json, the generation config and the tokenizer disagree
    on the mask token, or name an id the model has no embedding for. `model`: a `DiffusionLM` (or a PEFT model
    around one); `source`: where it was loaded from, for the message."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config, vocab_size = base.config, base.get_input_embeddings().num_embeddings
    where = f"{source}: " if source else ""
    check_loaded_token_ids(base, source or "the model")
    if tokenizer is None:
        return
    tokenizer_mask = getattr(tokenizer, "mask_token_id", None)
    if tokenizer_mask is not None and config.mask_token_id is not None and tokenizer_mask != config.mask_token_id:
        raise ValueError(
            f"{where}the tokenizer's mask token {tokenizer.mask_token!r} has id {tokenizer_mask}, but config.json has "
            f"mask_token_id={config.mask_token_id}: the model would be trained and decoded with another token than "
            f"the one text encodes as the mask. Set mask_token_id to {tokenizer_mask} in config.json and "
            f"generation_config.json (or use the tokenizer saved with the model)."
        )
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"{where}the tokenizer has {len(tokenizer)} tokens but the model embeds only {vocab_size}: ids >= "
            f"{vocab_size} would fail inside the model. Use the tokenizer saved with the model (or resize the "
            f"model's embeddings to the tokenizer)."
        )


def check_max_length(config, max_length: int | None) -> None:
    """Refuse training rows longer than the backbone's positions: GPT-2's position embedding fails with an
    IndexError, and rotary models (Llama) train silently on positions they were never built for."""
    from .modeling_dlm import config_max_positions

    limit = config_max_positions(getattr(config, "backbone_config", config))
    if max_length is not None and limit is not None and max_length > limit:
        raise ValueError(
            f"max_length={max_length} is more than the model's {limit} positions (max_position_embeddings / "
            f"n_positions of its config): set max_length <= {limit}."
        )


def check_before_training(model, tokenizer, max_length: int | None) -> None:
    """What `DiffusionTrainer.__init__` checks before any data is tokenised."""
    check_special_tokens(model, tokenizer)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    check_max_length(base.config, max_length)


__all__ = ["check_before_training", "check_max_length", "check_special_tokens"]
