"""Load a `DiffusionLM` from whatever a user names: a DiffusionLM checkpoint (directory or Hub id), or a causal LM
to adapt (directory, Hub id, GGUF file). The one loader behind `hf-dlm generate / demo / bench / train`, the
trainer's `model="..."` and the lm-eval model, so that a wrong path or an offline Hub id gets the same clear
message everywhere.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .checks import check_special_tokens


class ModelNotFoundError(OSError):
    """The named model is neither a local directory nor a reachable Hub repository (the message says which)."""


def looks_like_path(name: str) -> bool:
    """True when `name` can only be a local path: a Hub id is `name` or `owner/name`, never `/x`, `./x` or `a/b/c`."""
    return (
        name.startswith(("/", ".", "~"))
        or name.count("/") > 1
        or name.endswith("/")
        or os.sep != "/" and os.sep in name
    )


def check_model_source(name: str) -> None:
    """Raise `ModelNotFoundError` at once for a path that does not exist (before torch is even imported)."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"{name} is a file, not a model directory (for a GGUF file pass its directory "
                                     f"and gguf_file=NAME).")
        if not os.access(path, os.R_OK | os.X_OK):  # else it would read as "holds no config.json"
            raise ModelNotFoundError(f"{name}: permission denied, the directory cannot be read (check its "
                                     f"permissions or owner).")
        if not (path / "config.json").is_file() and not any(path.glob("*.gguf")):
            raise ModelNotFoundError(f"{name} holds no config.json: not a saved model directory.")
        return
    if looks_like_path(name):
        raise ModelNotFoundError(f"{name}: no such directory.")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def explain_load_error(name: str, error: Exception) -> ModelNotFoundError:
    """Turn transformers' long Hub error for a missing model into one sentence that says what to do."""
    if _hub_offline():
        return ModelNotFoundError(
            f"{name} is not a local directory and HF_HUB_OFFLINE is set, so the Hub was not asked. Pass a saved "
            f"model directory, or unset HF_HUB_OFFLINE to download {name}."
        )
    return ModelNotFoundError(
        f"{name} is not a local directory and could not be fetched from the Hugging Face Hub "
        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no details'}). Check the name, "
        f"your network, and for private repositories your token (`hf auth login`)."
    )


def load_autoregressive_lm(name_or_path: str, role: str, **kwargs):
    """`AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)` for a role only an autoregressive model can play
    (a verifier, a teacher, an AR baseline). With hf_dlm in use, AutoModelForCausalLM also loads DiffusionLM
    checkpoints (transformers' text-generation pipeline loads with that class), so one is refused here by name,
    before it could silently decode by diffusion where left-to-right answers are expected."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    if getattr(model.config, "model_type", None) == "diffusion_lm":
        raise ValueError(f"{name_or_path} does not load as a causal LM: it is a DiffusionLM checkpoint. {role} needs "
                         f"the autoregressive model (e.g. the one the diffusion model was adapted from).")
    return model


def load_checkpoint(name_or_path: str, **kwargs):
    """`DiffusionLM.from_pretrained`, with the errors of a damaged checkpoint said in one sentence: a truncated
    weights file (safetensors' "invalid header length") and weights whose shapes do not fit config.json (transformers'
    "You set `ignore_mismatched_sizes` to `False`")."""
    from .modeling_dlm import DiffusionLM

    try:
        return DiffusionLM.from_pretrained(name_or_path, **kwargs)
    except Exception as error:
        if type(error).__name__ == "SafetensorError":  # safetensors' Rust error type, not importable by a stable name
            raise ValueError(f"{name_or_path}: the weights file is damaged or truncated ({error}); save or download "
                             f"the model again.") from error
        if isinstance(error, RuntimeError) and "ignore_mismatched_sizes" in str(error):
            raise ValueError(f"{name_or_path}: the weights do not fit config.json (a tensor's shape differs, e.g. "
                             f"vocab_size or hidden size was edited); restore the config.json saved with these "
                             f"weights.") from error
        raise


def load_tokenizer(name_or_path: str):
    """`AutoTokenizer.from_pretrained`, saying "install sentencepiece" where that is why it fails (a checkpoint with
    only a tokenizer.model file, read by the slow SentencePiece tokenizer)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (ImportError, ValueError, OSError) as error:
        if "sentencepiece" in str(error).lower() and importlib.util.find_spec("sentencepiece") is None:
            raise ImportError(f"The tokenizer of {name_or_path} needs the sentencepiece package: install sentencepiece "
                              f"(pip install sentencepiece).") from error
        raise


def load_diffusion_lm(name_or_path: str, *, adapt: bool = False, gguf_file: str | None = None,
                      tokenizer: str | None = None, attn_implementation: str = "sdpa", dtype=None,
                      attention: str | None = None):
    """A `DiffusionLM` with its tokenizer attached (`model.tokenizer`).

    Args:
        name_or_path: a DiffusionLM checkpoint (directory or Hub id), or, with `adapt=True`, a causal LM to adapt.
        adapt: accept a causal LM and adapt it (`DiffusionLM.from_causal_lm`); otherwise a causal LM is refused
            with the advice to adapt or train it first.
        gguf_file: a GGUF file inside `name_or_path` (a causal LM: implies adaptation).
        tokenizer: a tokenizer directory / id, if not the model's own.
        attn_implementation / dtype: passed on (`dtype` a torch dtype or its name).
        attention: `DiffusionLM.from_causal_lm`'s attention when a causal LM is adapted ("bidirectional", the
            default, or "causal_prefix"); a DiffusionLM checkpoint keeps its own and refuses another.
    """
    check_model_source(name_or_path)
    from transformers import AutoConfig

    from . import register_auto_classes
    from .configuration_dlm import DiffusionLMConfig
    from .modeling_dlm import DiffusionLM

    register_auto_classes()  # AutoConfig / AutoTokenizer must know model_type "diffusion_lm" in a fresh process
    if gguf_file is None:
        try:
            model_type = AutoConfig.from_pretrained(name_or_path).model_type
        except OSError as error:
            if Path(name_or_path).expanduser().is_dir():
                raise
            raise explain_load_error(name_or_path, error) from error
        if model_type == DiffusionLMConfig.model_type:
            model = load_checkpoint(name_or_path, attn_implementation=attn_implementation, dtype=dtype)
            saved = getattr(model.config, "attention", "bidirectional")
            if attention is not None and attention != saved:
                raise ValueError(
                    f"{name_or_path} is a DiffusionLM with attention={saved!r}; attention={attention!r} applies when "
                    f"a causal LM is adapted. Leave it unset to keep training this checkpoint."
                )
            model.tokenizer = load_tokenizer(tokenizer or name_or_path)
            check_special_tokens(model, model.tokenizer, source=name_or_path)
            return model
        if not adapt:
            raise ValueError(
                f"{name_or_path} is a {model_type!r} model, not a DiffusionLM checkpoint. Adapt and train it first "
                f"(`hf-dlm train --model_name_or_path {name_or_path} ...`, docs/training.md), or load it with "
                f"DiffusionLM.from_causal_lm."
            )
    tok = load_tokenizer(tokenizer) if tokenizer else None
    return DiffusionLM.from_causal_lm(
        name_or_path, tok, gguf_file=gguf_file, attn_implementation=attn_implementation, dtype=dtype,
        **({"attention": attention} if attention is not None else {}),
    )


__all__ = ["ModelNotFoundError", "check_model_source", "explain_load_error", "load_checkpoint", "load_diffusion_lm",
           "load_tokenizer", "looks_like_path"]
