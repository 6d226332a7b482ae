"""`hf-dlm` command line: subcommands live next to the code they drive."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "train": ("hf_dlm.trainer", "cli_main", "adapt / fine-tune a causal LM into a diffusion LM"),
        "generate": ("hf_dlm.demo", "generate_main", "decode prompts with any DiffusionLM checkpoint"),
        "demo": ("hf_dlm.demo", "demo_main", "watch the default model answer by diffusion, next to AR"),
        "bench": ("hf_dlm.bench", "cli_main", "compare length strategies, cache and AR on a JSONL of prompts"),
    }
    parser = argparse.ArgumentParser(prog="hf-dlm", description="Diffusion LMs with variable-length decoding.")
    parser.add_argument("command", choices=sorted(commands), help="; ".join(f"{k}: {v[2]}" for k, v in commands.items()))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    args = parser.parse_args(argv[:1])
    module_name, function, _ = commands[args.command]
    import importlib

    return importlib.import_module(module_name).__dict__[function](argv[1:]) or 0


if __name__ == "__main__":
    raise SystemExit(main())
