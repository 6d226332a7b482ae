"""How much adaptation does the suite's AR base need? (docs/benchmarks.md, "Learning curve")

Adapts the suite's AR base (benchmarks/checkpoints/<preset>/ar, `make bench`'s stage 1) with `DiffusionTrainer` on
the AR run's own training examples, in one run that passes 0.5x, 1x, 2x and 4x the rows the AR base trained on
(`--points`), and at each point decodes `--n-test` held-out prompts with `fixed`, `grow` and `predict` (threshold,
prefix cache): exact match, forwards, tokens per forward, predict's bound coverage. The run resumes, it does not
restart: the learning rate is constant after warmup (a cosine schedule would make every point depend on the
last), and a checkpoint is kept at each point, so a killed run continues with the same command (`--resume`). The
AR base's exact match on the same prompts is in the result for reference.

    python benchmarks/learning_curve.py --work /tmp/curve/defaults --out benchmarks/results/curve_defaults.json
    python benchmarks/learning_curve.py --work /tmp/curve/blocks --arg all_blocks=True \\
        --out benchmarks/results/curve_all_blocks.json

Every argument not given by `--arg` is the library's default (as `make bench`'s adaptation: max_length = the
preset's row_length, block_length 8, its attention annealing over a tenth of its steps); seed 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="full")
    parser.add_argument("--ar", type=Path, help="the AR base (default benchmarks/checkpoints/<preset>/ar)")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--points", default="0.5,1,2,4", help="multiples of the AR base's training rows")
    parser.add_argument("--arg", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="DiffusionTrainingArguments fields changed from the defaults")
    parser.add_argument("--attention", default="bidirectional", choices=("bidirectional", "causal_prefix"),
                        help="DiffusionLM.from_causal_lm's attention (causal_prefix: block diffusion, causal context)")
    parser.add_argument("--lr", type=float, help="default: the preset's diffusion_lr")
    parser.add_argument("--anneal-steps", type=int, default=100,
                        help="attention annealing steps (make bench's: a tenth of its 1000 steps)")
    parser.add_argument("--n-test", type=int, default=128)
    parser.add_argument("--budget", type=int, help="default: the preset's main_budget")
    parser.add_argument("--threshold", type=lambda text: None if text == "none" else float(text), default=0.9,
                        help="commit threshold; none: one token per step")
    parser.add_argument("--unmasking", default="low_confidence", help="diffusion_generate's unmasking rule")
    parser.add_argument("--decided-as-context", action="store_true",
                        help="diffusion_generate(decided_as_context=True): causal-prefix models only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="continue from the last point's checkpoint in --work")
    parser.add_argument("--cooldown-from", type=Path, metavar="CHECKPOINT",
                        help="instead of the curve: load a point's checkpoint (<work>/run/checkpoint-N), train "
                        "--cooldown-steps more with the learning rate decaying linearly to 0 (WSD's cooldown: what "
                        "stopping at that point would give), decode, and add the result to --out's 'cooldowns'")
    parser.add_argument("--cooldown-steps", type=int, default=150)
    parser.add_argument("--keep-cooldown", action="store_true",
                        help="save the cooled-down model in <work>/cooldown-<step>-<cooldown steps> (for --decode-from)")
    parser.add_argument("--decode-from", type=Path, metavar="CHECKPOINT",
                        help="instead of the curve: decode a kept checkpoint with this command's decoding settings and "
                        "add the result to --out's 'decodes' (other decoding settings on the same weights). Every "
                        "mode reads --out, adds its entry and writes it back: one process per --out file at a time")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import torch
    from common import ar_base_dir, quiet_torch, task_dataset
    from config import get_preset
    from probe_ar import per_task_exact
    from probe_defaults import decode_strategies
    from run import _typed
    from tasks import make_split
    from train_ar import training_arguments
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from hf_dlm import DiffusionLM, DiffusionTrainer, DiffusionTrainingArguments

    quiet_torch(args.threads)
    preset = get_preset(args.preset)
    ar_dir = ar_base_dir(args.ar, args.preset)
    if not (ar_dir / "train_log.json").exists():
        raise SystemExit(f"No AR base at {ar_dir}: run `python benchmarks/run.py --preset {args.preset} --stages ar` "
                         f"first (or pass --ar).")
    ar_log = json.loads((ar_dir / "train_log.json").read_text())
    ar_rows = ar_log["steps"] * preset.ar_rows_per_step
    rows = preset.diffusion_rows_per_step
    multiples = [float(p) for p in args.points.split(",")]
    point_steps = {round(m * ar_rows / rows): m for m in multiples}
    changed = {k: _typed(v) for k, v in (item.split("=", 1) for item in args.arg)}
    budget = args.budget or preset.main_budget
    records = make_split("test", args.n_test, seed=0, tasks=list(preset.tasks))

    payload = {"preset": args.preset, "ar": str(ar_dir), "ar_training_seconds": ar_log["seconds"],
               "ar_rows": ar_rows, "rows_per_step": rows, "changed_from_defaults": changed, "seed": preset.seed,
               "schedule": "constant_with_warmup", "anneal_steps": args.anneal_steps, "attention": args.attention, "threads": args.threads,
               "decoding": decoding_record(args, preset, budget, len(records)), "points": []}
    if (args.resume or args.cooldown_from or args.decode_from) and args.out.exists():
        previous = json.loads(args.out.read_text())
        payload["decoding"] = previous.get("decoding", payload["decoding"])  # the curve's own; each entry has its own
        for key in ("points", "cooldowns", "decodes"):
            payload[key] = previous.get(key, [])
    if args.decode_from:
        return decode_only(args, payload, preset, records, budget)
    if args.cooldown_from:
        return cooldown(args, payload, preset, records, budget, changed, rows)
    tokenizer = AutoTokenizer.from_pretrained(ar_dir)
    if "ar_exact" not in payload:
        ar_model = AutoModelForCausalLM.from_pretrained(ar_dir).eval()
        with torch.no_grad():
            payload["ar_exact"] = per_task_exact(ar_model, tokenizer, records, budget)
        del ar_model

    model = DiffusionLM.from_causal_lm(AutoModelForCausalLM.from_pretrained(ar_dir, attn_implementation="sdpa"),
                                       tokenizer, attention=args.attention)
    training = DiffusionTrainingArguments(
        **training_arguments(preset, args.work / "run", max(point_steps), args.lr or preset.diffusion_lr, rows)
        | {"lr_scheduler_type": "constant_with_warmup", "save_strategy": "no", "logging_steps": 50},
        max_length=preset.row_length, block_length=preset.block_length, anneal_steps=args.anneal_steps,
        **changed,
    )
    done = {p["steps"] for p in payload["points"]}
    clock = {"train": 0.0, "since": time.perf_counter()}

    class Points(TrainerCallback):
        """At each point: time the training so far, save a checkpoint (to resume), decode, write the curve."""

        def on_train_begin(self, targs, state, control, **kwargs):
            clock["since"] = time.perf_counter()  # training time only: not the tokenising, not the AR reference

        def on_step_end(self, targs, state, control, **kwargs):
            step = state.global_step
            if step not in point_steps or step in done:
                return
            clock["train"] += time.perf_counter() - clock["since"]
            control.should_save = True  # the Trainer writes checkpoint-<step> after this callback (--resume)
            model.eval()
            with torch.no_grad():
                results = decode_strategies(model, model.tokenizer, records, budget, preset.block_length,
                                            args.threshold, **decoding_settings(args))
            model.train()
            losses = [h["loss"] for h in state.log_history if "loss" in h]
            payload["points"].append({"multiple_of_ar_rows": point_steps[step], "steps": step, "rows": step * rows,
                                      "train_seconds": clock["train"], "last_loss": losses[-1] if losses else None,
                                      "results": results})
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(payload, indent=1) + "\n")
            print(f"point {point_steps[step]}x ({step} steps): " + ", ".join(
                f"{m} {r['exact']:.3f}" for m, r in results.items()), flush=True)
            clock["since"] = time.perf_counter()

    trainer = DiffusionTrainer(model=model, args=training,
                               train_dataset=task_dataset(preset, "train").remove_columns("task"),
                               processing_class=model.tokenizer, callbacks=[Points()])
    resume = None
    if args.resume:
        checkpoints = sorted((args.work / "run").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        resume = str(checkpoints[-1]) if checkpoints else None
        if payload["points"]:
            clock["train"] = payload["points"][-1]["train_seconds"]
    trainer.train(resume_from_checkpoint=resume)
    return 0


def cooldown(args, payload: dict, preset, records, budget: int, changed: dict, rows: int) -> int:
    """WSD's cooldown from a point of the constant-rate curve: the checkpoint's weights, `--cooldown-steps` more
    steps on the same data with the rate decaying linearly from the curve's to 0 (a fresh AdamW: its moments are
    rebuilt within the first steps), then the same decoding as the curve's points."""
    import torch
    from common import task_dataset
    from probe_defaults import decode_strategies
    from train_ar import training_arguments

    from hf_dlm import DiffusionTrainer, DiffusionTrainingArguments
    from hf_dlm.loading import load_diffusion_lm

    step = int(args.cooldown_from.name.rsplit("-", 1)[1])
    model = load_diffusion_lm(str(args.cooldown_from))
    training = DiffusionTrainingArguments(
        **training_arguments(preset, args.work / "cooldown", args.cooldown_steps, args.lr or preset.diffusion_lr, rows)
        | {"lr_scheduler_type": "linear", "warmup_steps": 0, "save_strategy": "no", "logging_steps": 50,
           "seed": preset.seed + step},  # a data order of its own (the curve's next rows are not replayed)
        max_length=preset.row_length, block_length=preset.block_length, anneal_steps=0, **changed,
    )
    trainer = DiffusionTrainer(model=model, args=training,
                               train_dataset=task_dataset(preset, "train").remove_columns("task"),
                               processing_class=model.tokenizer)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        results = decode_strategies(model, model.tokenizer, records, budget, preset.block_length, args.threshold,
                                    **decoding_settings(args))
    if args.keep_cooldown:
        model.save_pretrained(args.work / f"cooldown-{step}-{args.cooldown_steps}")
    payload.setdefault("cooldowns", []).append({"from_steps": step, "cooldown_steps": args.cooldown_steps,
                                                "cooldown_seconds": seconds, "results": results,
                                                "decoding": decoding_record(args, preset, budget, len(records))})
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"cooldown from {step} (+{args.cooldown_steps}): " + ", ".join(
        f"{m} {r['exact']:.3f}" for m, r in results.items()), flush=True)
    return 0


def decoding_settings(args) -> dict:
    """The decoding settings this command adds to the suite's (budget, block, threshold, cache)."""
    return {"unmasking": args.unmasking, "decided_as_context": args.decided_as_context}


def decoding_record(args, preset, budget: int, n: int) -> dict:
    return {"budget": budget, "block_length": preset.block_length, "threshold": args.threshold, "use_cache": True,
            "n": n, **decoding_settings(args)}


def decode_only(args, payload: dict, preset, records, budget: int) -> int:
    """Decode a kept checkpoint (a curve point's or a kept cooldown's) with this command's decoding settings."""
    import torch
    from probe_defaults import decode_strategies

    from hf_dlm.loading import load_diffusion_lm

    model = load_diffusion_lm(str(args.decode_from)).eval()
    with torch.no_grad():
        results = decode_strategies(model, model.tokenizer, records, budget, preset.block_length, args.threshold,
                                    **decoding_settings(args))
    # checkpoint-<steps> (a curve point) or cooldown-<from>-<cooldown steps> (--keep-cooldown)
    numbers = [int(n) for n in args.decode_from.name.split("-")[1:]]
    payload.setdefault("decodes", []).append({"checkpoint": args.decode_from.name, "steps": sum(numbers),
                                              "cooldown_steps": numbers[1] if len(numbers) > 1 else 0,
                                              "results": results,
                                              "decoding": decoding_record(args, preset, budget, len(records))})
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"decoded {args.decode_from.name}: " + ", ".join(f"{m} {r['exact']:.3f}" for m, r in results.items()),
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
