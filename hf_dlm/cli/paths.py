"""Output paths of the commands: checked before the work starts, written atomically, and never silently over a model.

A benchmark that runs for an hour and then fails to write its result file has lost the hour; a training run whose
`--output_dir` is the checkpoint it trains from destroys that checkpoint. So every command checks where it will
write before it loads anything, and writes result files through a temporary file in the same directory followed
by `os.replace` (an interrupted write never leaves a half-written file under the final name): `write_text_atomically`,
from the core's `hf_dlm/files.py`.

Standard library only: the checks run before torch is imported.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..files import write_text_atomically

# Files whose presence means "a model (or adapter, or Trainer checkpoint) lives here".
MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
               "adapter_config.json", "adapter_model.safetensors", "trainer_state.json")


def output_file_problem(path: str) -> str | None:
    """Why `path` cannot be written as a result file (None when it can): a directory, a missing or read-only
    parent directory."""
    target = Path(path).expanduser()
    if target.is_dir():
        return f"{path} is a directory; give a file name (e.g. {Path(path) / 'results.json'})"
    parent = target.parent
    if not parent.is_dir():
        return f"the directory {parent} does not exist; create it first or choose another path"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"the directory {parent} is not writable"
    if target.exists() and not os.access(target, os.W_OK):
        return f"{path} exists and is not writable"
    return None


def check_output_file(parser: argparse.ArgumentParser, flag: str, path: str | None) -> None:
    """`parser.error` (exit 2, one line) when `path` cannot be written; a no-op for None."""
    if path is None:
        return
    problem = output_file_problem(path)
    if problem:
        parser.error(f"{flag} {path}: {problem}")


def model_files_in(directory: Path) -> list[str]:
    """The model files (and Trainer checkpoints) `directory` holds: what a training run would overwrite."""
    found = [name for name in MODEL_FILES if (directory / name).exists()]
    found += sorted(p.name for p in directory.glob("checkpoint-*") if p.is_dir())
    return found


def output_dir_problem(output_dir: str, *, overwrite: bool, resuming: bool, overwrite_flag: str) -> str | None:
    """Why training must not write into `output_dir` (None when it may): a file in the way, a read-only or
    missing-parent location, or a directory that already holds a model and neither `overwrite` nor `resuming`."""
    directory = Path(output_dir).expanduser()
    if directory.exists() and not directory.is_dir():
        return f"{output_dir} is a file, not a directory; choose another --output_dir"
    if directory.is_dir():
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"{output_dir} is not writable"
        found = model_files_in(directory)
        if found and not (overwrite or resuming):
            shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
            return (f"{output_dir} already holds a model ({shown}) that training would overwrite. Choose an empty "
                    f"--output_dir, pass {overwrite_flag} to replace it, or --resume_from_checkpoint to continue "
                    f"a run saved there")
        return None
    ancestor = directory.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{output_dir} cannot be created: {ancestor} is not a writable directory"
    return None


__all__ = ["MODEL_FILES", "check_output_file", "model_files_in", "output_dir_problem", "output_file_problem",
           "write_text_atomically"]
