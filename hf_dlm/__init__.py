"""hf_dlm: turn any Hugging Face causal LM into a diffusion LM that decodes with variable output length.

The public names load on first use (PEP 562), so `import hf_dlm` and the `hf-dlm` command line cost milliseconds
instead of the seconds torch and transformers take; `from hf_dlm import DiffusionLM` imports what it needs.

Loading any public name (or calling `register_auto_classes()`) also registers `DiffusionLMConfig` / `DiffusionLM`
with transformers' `AutoConfig`, `AutoModel`, `AutoModelForMaskedLM` and `AutoModelForCausalLM` (the class the
"text-generation" pipeline loads with), so saved checkpoints load without `trust_remote_code` while hf_dlm is in use. Checkpoints carry their own code either way (`auto_map`).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "DiffusionLMConfig": ".configuration_dlm",
    "DiffusionLM": ".modeling_dlm",
    "DiffusionGenerationConfig": ".generation_dlm",
    "DiffusionGenerateOutput": ".generation_dlm",
    "DiffusionStep": ".generation_dlm",
    "DiffusionTrainer": ".trainer",
    "DiffusionTrainingArguments": ".training_args",
    "SpeculativeOutput": ".drafter_dlm",
    "speculative_generate": ".speculative",
}

__all__ = [*sorted(_PUBLIC), "__version__", "register_auto_classes"]

_registered = False


def register_auto_classes() -> None:
    """Register the diffusion classes with transformers' Auto classes (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    from .configuration_dlm import DiffusionLMConfig
    from .modeling_dlm import DiffusionLM

    AutoConfig.register(DiffusionLMConfig.model_type, DiffusionLMConfig, exist_ok=True)
    AutoModel.register(DiffusionLMConfig, DiffusionLM, exist_ok=True)
    AutoModelForMaskedLM.register(DiffusionLMConfig, DiffusionLM, exist_ok=True)
    AutoModelForCausalLM.register(DiffusionLMConfig, DiffusionLM, exist_ok=True)
    # Saving needs none of this: the classes declare `_auto_class`, so save_pretrained always writes `auto_map`.
    _registered = True


def __getattr__(name: str):
    if name in _PUBLIC:
        register_auto_classes()
        value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'hf_dlm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
