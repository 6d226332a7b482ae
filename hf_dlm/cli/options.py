"""What the decoding commands (`generate`, `demo`, `bench`) share: model and decoding flags, settings checked
before anything heavy is loaded, prompts read and refused when empty, one model loader, progress lines.

Standard library only at import time: `--help` and every bad-setting error must answer in milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
from pathlib import Path

from ..settings_dlm import SETTING_NAMES, SETTINGS, validate_generation_settings

DTYPES = ("auto", "float32", "bfloat16", "float16")


# ----------------------------------------------------------------------------------------------- flags
def _argument_type(setting):
    """argparse type of a setting: its own parser (`Setting.parse`), with argparse's error for bad text."""

    def parse(text: str):
        try:
            return setting.parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = setting.type.__name__  # argparse names the type in its messages
    return parse


# Flags that read better than the setting's name.
_FLAG_NAMES = {"length_strategy": ("--strategy", "--length-strategy"), "use_cache": ("--cache",)}


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per decoding setting (`settings_dlm.SETTINGS`, group "decoding": the table
    `DiffusionGenerationConfig` is built from). Unset flags keep the model's generation_config.json."""
    group = parser.add_argument_group("decoding (defaults: the model's generation_config.json)")
    for setting in SETTINGS:
        if setting.group != "decoding":
            continue
        flags = _FLAG_NAMES.get(setting.name, ("--" + setting.name.replace("_", "-"),))
        kwargs = dict(dest=setting.name, default=argparse.SUPPRESS, help=setting.help)
        if setting.type is bool and setting.words:
            # `--cache` (True), `--cache dual`, `--no-cache` (False): a switch that also takes a word.
            kwargs.update(nargs="?", const=True, type=_argument_type(setting), metavar="|".join(setting.words))
            group.add_argument(*flags, **kwargs)
            group.add_argument(*("--no-" + flag[2:] for flag in flags), dest=setting.name, action="store_const",
                               const=False, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            continue
        if setting.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif setting.choices:
            kwargs["choices"] = setting.choices
        else:
            kwargs["type"] = _argument_type(setting)
        group.add_argument(*flags, **kwargs)


def decoding_settings(args: argparse.Namespace) -> dict:
    """The decoding flags the user gave (unset ones are absent: `default=SUPPRESS`), by setting name."""
    return {name: value for name, value in vars(args).items() if name in SETTING_NAMES}


def add_model_arguments(parser: argparse.ArgumentParser, default_help: str) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None, help=f"DiffusionLM checkpoint: a directory or Hub id (default: "
                       f"{default_help})")
    group.add_argument("--dtype", choices=DTYPES, default="auto",
                       help="auto: bfloat16 on CPUs with native bfloat16 (AVX512-BF16/AMX) or GPUs, else float32")
    group.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    group.add_argument("--threads", type=int, default=None, help="torch CPU threads")


# ----------------------------------------------------------------------------------------------- checks
def saved_generation_settings(model: str | None) -> dict:
    """The decoding defaults a model will bring (its generation_config.json), read as JSON without loading it:
    the embedded default's adapter, or a local checkpoint. A Hub id is not fetched here: {}."""
    if model is None:
        from ..default import DEFAULT_ADAPTER

        directory = DEFAULT_ADAPTER
    else:
        directory = Path(model).expanduser()
    path = directory / "generation_config.json"
    if not path.is_file():
        return {}
    return {k: v for k, v in json.loads(path.read_text()).items() if k in SETTING_NAMES}


def check_decoding(parser: argparse.ArgumentParser, model: str | None, settings: dict) -> None:
    """Refuse impossible decoding settings before the model loads: the flags over the model's saved defaults,
    validated by the same function `DiffusionGenerationConfig.validate` calls."""
    try:
        validate_generation_settings(saved_generation_settings(model) | settings)
    except ValueError as error:
        parser.error(str(error))


DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")
_DEVICE = re.compile(r"^(?P<type>[a-z]+)(:(?P<index>\d+))?$")


def check_model_flags(parser: argparse.ArgumentParser, device: str | None, threads: int | None) -> None:
    """`--device` and `--threads` as text, before torch loads (torch's own errors are tracebacks: "Expected one of
    cpu, cuda, ... device type at start of device string: garbage"). Availability is `check_device`'s job."""
    if threads is not None and threads < 1:
        parser.error(f"--threads must be >= 1 (torch CPU threads), got {threads}")
    if device is None:
        return
    match = _DEVICE.match(device.strip().lower())
    if not match or match["type"] not in DEVICE_TYPES:
        parser.error(f"--device {device!r} is not a device: use cpu, cuda, cuda:N, mps or xpu (or leave it out)")


def check_device(parser: argparse.ArgumentParser, device) -> None:
    """Refuse a device this machine does not have (torch would fail later, inside the first `.to(device)`)."""
    import torch

    backend = {"cuda": torch.cuda, "xpu": getattr(torch, "xpu", None), "mps": torch.backends.mps}.get(device.type)
    if backend is None:
        return
    if not backend.is_available():
        parser.error(f"--device {device}: this machine has no {device.type.upper()} device available to torch; "
                     f"use --device cpu (or leave --device out)")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if device.index is not None and device.index >= count:
        parser.error(f"--device {device}: this machine has {count} {device.type} device(s), numbered from 0")


def check_model(parser: argparse.ArgumentParser, model: str | None) -> None:
    if model is None:
        return
    from ..loading import ModelNotFoundError, check_model_source

    try:
        check_model_source(model)
    except ModelNotFoundError as error:
        parser.error(str(error))


def read_prompts(parser: argparse.ArgumentParser, positional: list[str], file: str | None = None,
                 flag: str = "--file") -> list[str]:
    """Prompts from arguments, a file (one per line) or stdin ('-', or piped input when none is given). An empty
    prompt is refused: with the AR shift position 0 is never predicted, and there is nothing to answer. `flag`: the
    option that named `file`, for the messages (`hf-dlm distill` calls it --prompts)."""
    prompts = [p for p in positional if p != "-"]
    if any(not p.strip() for p in prompts):
        parser.error("a prompt is empty: give some text to answer (empty prompts are refused).")
    if file is not None:
        prompts += read_prompt_file(parser, file, flag)
    if "-" in positional or (not positional and file is None and not sys.stdin.isatty()):
        prompts += [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not prompts:
        if file is not None:
            parser.error(f"{flag} {file} holds no prompt: give a text file with one prompt per line")
        parser.error(f"no prompt: pass PROMPT arguments, {flag} FILE, or pipe prompts on stdin (one per line)")
    return prompts


def read_prompt_file(parser: argparse.ArgumentParser, file: str, flag: str) -> list[str]:
    """The non-empty lines of a UTF-8 text file; a binary file is refused (it would decode to garbage prompts, or
    fail inside the reading loop with a UnicodeDecodeError traceback)."""
    try:
        with open(file, encoding="utf-8") as handle:
            lines = [line.rstrip("\n") for line in handle if line.strip()]
    except UnicodeDecodeError:
        parser.error(f"{flag} {file} is not UTF-8 text: give a text file with one prompt per line")
    except OSError as error:
        parser.error(f"cannot read {flag} {file}: {error.strerror}")
    if any("\x00" in line for line in lines):
        parser.error(f"{flag} {file} holds NUL bytes, so it is not a text file: give one prompt per line")
    return lines


# ----------------------------------------------------------------------------------------------- loading
def resolve_dtype(name: str):
    import torch

    if name == "auto":
        from ..default import preferred_dtype

        return preferred_dtype()
    return getattr(torch, name)


def resolve_device(name: str | None):
    import torch

    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def progress(message: str) -> contextlib.AbstractContextManager:
    """A loading stage on stderr: a spinner on a terminal, else a line when it starts and one when it ends (logs
    and pipes see progress too)."""
    if sys.stderr.isatty():
        from rich.console import Console

        return Console(stderr=True).status(message + "...")
    return _stage_lines(message)


@contextlib.contextmanager
def _stage_lines(message: str):
    started = time.perf_counter()
    print(f"{message}...", file=sys.stderr, flush=True)
    yield
    print(f"{message}: done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


def load_model(parser: argparse.ArgumentParser, name_or_path: str | None, dtype_name: str = "auto",
               device_name: str | None = None, threads: int | None = None, status=progress, autoregressive=False,
               gated=False):
    """The embedded default (`name_or_path=None`; with `autoregressive=True` also SmolLM2 itself; with `gated=True`
    SmolLM2 with its gated drafter instead of the diffusion adapter) or a saved DiffusionLM, on the device. Load
    failures the user can fix end in `parser.error`, not a traceback."""
    import torch

    from ..loading import load_diffusion_lm

    check_model_flags(parser, device_name, threads)
    if threads:
        torch.set_num_threads(threads)
    dtype, device = resolve_dtype(dtype_name), resolve_device(device_name)
    check_device(parser, device)
    try:
        if name_or_path is None:
            from ..default import load_default, load_default_drafter

            loader = load_default_drafter if gated else load_default
            loaded = loader(dtype, autoregressive=autoregressive, status=status)
            return tuple(m.to(device) for m in loaded) if autoregressive else loaded.to(device)
        with status(f"Loading {name_or_path}"):
            # Inference only: the explicit FewRowsHead step (faster LM head for the few rows a step scores, on CPU).
            return load_diffusion_lm(name_or_path, dtype=dtype).to(device).eval().use_few_rows_head()
    except (OSError, ValueError) as error:  # not found, unreadable, a broken config.json or weights file
        parser.error(one_line(error))


def one_line(error: BaseException) -> str:
    """An error's message on one line (transformers' and torch's run over several; stderr gets one line)."""
    text = " ".join(str(error).split())
    return text if len(text) <= 400 else text[:397] + "..."


__all__ = ["add_decoding_arguments", "add_model_arguments", "check_decoding", "check_device", "check_model",
           "check_model_flags", "decoding_settings", "one_line",
           "load_model", "progress", "read_prompts", "resolve_device", "resolve_dtype", "saved_generation_settings"]
