"""`hf-dlm`: the command line. One module per command; this dispatcher imports none of them until asked.

    hf-dlm generate  decode prompts with any DiffusionLM checkpoint (cli/generate.py)
    hf-dlm demo      watch the embedded default answer by diffusion, next to its AR self (cli/demo.py)
    hf-dlm bench     length strategies, cache and AR compared on a JSONL of prompts (cli/bench.py)
    hf-dlm serve     the web demo: watch the canvas fill in, in a browser (cli/serve.py)
    hf-dlm train     adapt / fine-tune a causal LM with DiffusionTrainer (cli/train.py)
    hf-dlm distill   self-distillation for parallel decoding: teacher answers, then DiffusionTrainer (cli/distill.py)
    hf-dlm calibrate fit predict's length bound for a target coverage (cli/calibrate.py)

Why so lazy: `import torch, transformers` takes seconds, and a user who typed `--help` or a wrong flag should get
the answer at once. Every command parses and validates its arguments with the standard library only, then imports
the heavy stack (tests/test_cli.py holds them to it).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "generate": ("decode prompts with any DiffusionLM checkpoint (default: the embedded model)", "generate"),
    "demo": ("watch the embedded default answer by diffusion, next to its autoregressive self", "demo"),
    "bench": ("compare length strategies, cache and AR decoding on a JSONL of prompts", "bench"),
    "serve": ("a web page on which the canvas of each answer fills in live (Gradio)", "serve"),
    "train": ("adapt or fine-tune a causal LM into a diffusion LM (DiffusionTrainer)", "train"),
    "distill": ("self-distillation: train a diffusion LM to commit its teacher's answers in few forwards", "distill"),
    "calibrate": ("fit predict's length bound for a target coverage; write it to generation_config.json", "calibrate"),
}


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("hf-dlm")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-dlm",
        description="Diffusion language models with variable-length decoding, on the Hugging Face stack.",
        epilog="Run `hf-dlm COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"hf-dlm {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (summary, _) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(f"{__name__}.{COMMANDS[argv[0]][1]}")
        return module.main(argv[1:]) or 0
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    parser.parse_args(argv)  # --help, --version, or an unknown command: argparse answers and exits
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
