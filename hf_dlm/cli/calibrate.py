"""`hf-dlm calibrate --model DIR --prompts held_out.jsonl [--target-coverage 0.95] [--reference completion|grow]`:
fit `predict`'s length bound (`predict_threshold`, `length_margin`) so that it covers the true answer length with
the target probability, and write it, with `length_coverage`, into DIR/generation_config.json.

Each JSONL line holds a `prompt` and (for `--reference completion`, the default) its reference `completion`; with
`--reference grow` the model's own `grow` answers give the true lengths. The prompts are split in two halves
(`--seed`): the rule is fitted on one (split conformal, hf_dlm/calibration.py) and its coverage is measured on the
other; both figures are printed, and `--out FILE` keeps them as JSON. `--dry-run` prints without writing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..calibration_settings import DEFAULT_TARGET_COVERAGE, REFERENCES, min_prompts
from .options import DTYPES, check_model_flags, load_model, progress
from .paths import check_output_file, output_file_problem, write_text_atomically


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-dlm calibrate",
        description="Fit the predict strategy's length bound (predict_threshold, length_margin) for a target "
        "coverage on held-out prompts and write it into the checkpoint's generation_config.json.",
    )
    parser.add_argument("--model", required=True, help="a saved DiffusionLM checkpoint directory (it is updated)")
    parser.add_argument("--prompts", required=True, help="JSONL: one {\"prompt\": ..., \"completion\": ...} per line")
    parser.add_argument("--target-coverage", type=float, default=DEFAULT_TARGET_COVERAGE,
                        help=f"probability that the bound covers the answer and its EOS (default "
                        f"{DEFAULT_TARGET_COVERAGE})")
    parser.add_argument("--reference", choices=REFERENCES, default="completion",
                        help="true lengths from the reference completions, or from the model's own grow answers")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="budget the rule is fitted for (default: the checkpoint's max_new_tokens)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per forward (left padded)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fit / held-out split")
    parser.add_argument("--no-chat-template", dest="chat_template", action="store_false", default=None,
                        help="feed prompts as raw text even when the tokenizer has a chat template")
    parser.add_argument("--dry-run", action="store_true", help="print the rule without writing it")
    parser.add_argument("--out", default=None, help="also write the fit and held-out figures to this JSON file")
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="model dtype (see hf-dlm generate)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser


def read_records(parser: argparse.ArgumentParser, path: str, reference: str) -> list[dict]:
    records = []
    try:
        with open(path) as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    parser.error(f"{path}:{number}: not JSON ({error.msg})")
                if not isinstance(record, dict) or not str(record.get("prompt", "")).strip():
                    parser.error(f"{path}:{number}: every line needs a non-empty 'prompt'")
                if reference == "completion" and not isinstance(record.get("completion"), str):
                    parser.error(f"{path}:{number}: no 'completion' (the reference answer); add one to every line "
                                 f"or use --reference grow (the model's own answers give the lengths)")
                records.append(record)
    except OSError as error:
        parser.error(f"cannot read --prompts {path}: {error.strerror}")
    return records


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[dict]:
    """Everything that can be refused before torch loads: numbers, the checkpoint directory, the prompts."""
    if not 0.0 < args.target_coverage < 1.0:
        parser.error(f"--target-coverage must be in (0, 1), got {args.target_coverage}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    directory = Path(args.model).expanduser()
    if not directory.is_dir():
        parser.error(f"{args.model}: no such directory (calibrate needs a saved checkpoint it can update)")
    if not (directory / "generation_config.json").is_file():
        parser.error(f"{args.model} has no generation_config.json: save the model with save_pretrained first")
    check_model_flags(parser, args.device, args.threads)
    check_output_file(parser, "--out", args.out)  # before the work: an unwritable --out would lose it at the end
    if not args.dry_run:
        problem = output_file_problem(str(directory / "generation_config.json"))
        if problem:
            parser.error(f"--model {args.model}: the rule is written to its generation_config.json, but {problem} "
                         f"(or use --dry-run)")
    records = read_records(parser, args.prompts, args.reference)
    # Half the prompts fit the rule (a half of them to pick the threshold, a half whose conformal quantile, the
    # ceil((n + 1) c)-th of n scores, must exist); the other half measures it.
    needed = min_prompts(args.target_coverage)
    if len(records) // 2 < needed:
        parser.error(f"{len(records)} prompts are too few for {args.target_coverage:.0%} coverage: half of them fit "
                     f"the rule, which needs {needed}, so give at least {2 * needed} (or a lower --target-coverage)")
    return records


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    records = check_arguments(parser, args)

    import torch

    from .. import register_auto_classes
    from ..calibration import (
        calibrate_length_rule,
        completion_lengths,
        first_step_eos_probabilities,
        grow_lengths,
        write_length_rule,
    )
    from ..evaluation import chat_inputs

    register_auto_classes()  # the checkpoint's config.json names model_type "diffusion_lm": ours, not remote code
    model = load_model(parser, args.model, args.dtype, args.device, args.threads, status=progress)
    tokenizer = model.tokenizer
    budget = args.max_new_tokens or model.generation_config.max_new_tokens
    inputs = chat_inputs(tokenizer, [r["prompt"] for r in records], args.chat_template)
    ids, mask = inputs["input_ids"].to(model.device), inputs["attention_mask"].to(model.device)
    try:
        with progress(f"First-step p(EOS) of {len(records)} prompts"):
            p_eos = first_step_eos_probabilities(model, ids, mask, budget, args.batch_size)
        if args.reference == "completion":
            lengths = completion_lengths(tokenizer, [r["completion"] for r in records])
        else:
            with progress(f"grow answers to {len(records)} prompts"):
                lengths = grow_lengths(model, ids, mask, budget, args.batch_size)
        calibration = calibrate_length_rule(p_eos, lengths.to(torch.long), budget, args.target_coverage, args.seed)
    except ValueError as error:  # e.g. a prompt longer than the model's context
        parser.error(str(error))
    rule, fit, held = calibration.rule, calibration.fit, calibration.held_out
    print(f"predict_threshold={rule.predict_threshold} length_margin={rule.length_margin} "
          f"(length_coverage={rule.length_coverage}, budget {budget}, reference: {args.reference})")
    for name, stats in (("fit", fit), ("held-out", held)):
        print(f"  {name:8s} {stats.prompts:4d} prompts: coverage {stats.coverage:.3f}, mean slack {stats.mean_slack:.1f}"
              f" tokens, mean bound {stats.mean_bound:.1f}, mean shortfall {stats.mean_shortfall:.1f}")
    if args.out:
        write_text_atomically(args.out, json.dumps(calibration.to_json() | {"reference": args.reference}, indent=2) + "\n")
    if args.dry_run:
        print("--dry-run: generation_config.json left as it was", file=sys.stderr)
    else:
        path = write_length_rule(args.model, rule)
        print(f"written to {path}", file=sys.stderr)
    return 0


__all__ = ["build_parser", "main"]
