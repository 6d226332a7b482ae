"""hf_dlm: turn any Hugging Face causal LM into a diffusion LM that decodes with variable output length."""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from .configuration_dlm import DiffusionLMConfig
from .generation_dlm import DiffusionGenerateOutput, DiffusionGenerationConfig, DiffusionStep
from .modeling_dlm import DiffusionLM

__version__ = "0.1.0"

# In-process registration (no trust_remote_code needed while hf_dlm is installed); register_for_auto_class makes
# save_pretrained write `auto_map` and copy the *_dlm.py files so checkpoints load without hf_dlm.
AutoConfig.register(DiffusionLMConfig.model_type, DiffusionLMConfig, exist_ok=True)
AutoModel.register(DiffusionLMConfig, DiffusionLM, exist_ok=True)
AutoModelForMaskedLM.register(DiffusionLMConfig, DiffusionLM, exist_ok=True)
DiffusionLMConfig.register_for_auto_class()
DiffusionLM.register_for_auto_class("AutoModel")  # save_pretrained adds AutoModelForMaskedLM to auto_map too

__all__ = [
    "DiffusionGenerateOutput",
    "DiffusionGenerationConfig",
    "DiffusionLM",
    "DiffusionLMConfig",
    "DiffusionStep",
    "__version__",
]

_LAZY = {"DiffusionTrainer": ".trainer", "DiffusionTrainingArguments": ".trainer"}


def __getattr__(name):
    # The trainer pulls in datasets/peft/accelerate; import it only when asked for.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'hf_dlm' has no attribute {name!r}")
