"""Do `DiffusionTrainer`'s defaults serve all three length strategies? A small-scale probe (docs/benchmarks.md,
"Training defaults"): adapt an AR checkpoint with `DiffusionTrainer`, changing only the given training arguments
from the library defaults, then decode held-out prompts with `fixed`, `grow` and `predict` (threshold, cache) and
report exact match, NFE and, for `predict`, how often its bound covers the true length.

    python benchmarks/probe_defaults.py --ar /tmp/probe/ar --work /tmp/probe/longest --steps 400 \\
        --arg padding=longest --out benchmarks/results/defaults_longest.json

Only `max_length`, the step count, batch and learning rate are set for every variant (the task and the machine
need them); everything else is the library's default unless `--arg` overrides it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def decode_strategies(model, tokenizer, records, budget: int, block: int, threshold: float, batch_size: int = 32,
                      **decoding):
    """Exact match (all and per task), mean NFE and predict's bound coverage for each length strategy. `decoding`:
    more `diffusion_generate` settings (e.g. unmasking, decided_as_context)."""
    from hf_dlm.evaluation import answer_diffusion

    prompts = [r["prompt"] for r in records]
    out = {}
    for method in ("fixed", "grow", "predict"):
        start = time.perf_counter()
        answers = answer_diffusion(model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=budget,
                                   length_strategy=method, block_length=block, threshold=threshold, use_cache=True,
                                   temperature=0.0, **decoding)
        correct = [a.text == r["completion"] for a, r in zip(answers, records)]
        per_task = defaultdict(list)
        for c, r in zip(correct, records):
            per_task[r["task"]].append(c)
        produced = sum(len(a.tokens) + int(a.ended) for a in answers)  # answer tokens and the EOS that ends them
        row = {"exact": sum(correct) / len(records), "mean_nfe": statistics.fmean(a.nfe for a in answers),
               "tokens_per_forward": produced / max(1, sum(a.nfe for a in answers)),
               "seconds": time.perf_counter() - start,
               "per_task": {t: sum(v) / len(v) for t, v in sorted(per_task.items())}}
        if method == "predict":
            true = [len(tokenizer(r["completion"], add_special_tokens=False)["input_ids"]) for r in records]
            predicted = [a.extra["predicted_length"] for a in answers]
            row["coverage"] = sum(p >= t for p, t in zip(predicted, true)) / len(records)
            row["grew"] = sum(a.extra["grew"] for a in answers) / len(records)
        out[method] = row
        print(method, json.dumps(row), flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ar", type=Path, required=True, help="AR checkpoint (probe_ar.py's <work>/ar)")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--arg", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="DiffusionTrainingArguments fields changed from the defaults")
    parser.add_argument("--budget", type=int, default=64)
    parser.add_argument("--block", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--n-test", type=int, default=128)
    parser.add_argument("--tasks", nargs="+", help="a subset of benchmarks/tasks.py's tasks (default: all)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--save", action="store_true", help="keep the adapted model in <work>/model")
    args = parser.parse_args(argv)

    import datasets
    import torch
    import transformers
    from run import _typed
    from tasks import make_split
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_dlm import DiffusionLM, DiffusionTrainer, DiffusionTrainingArguments

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    changed = dict(item.split("=", 1) for item in args.arg)
    changed = {k: _typed(v) for k, v in changed.items()}
    training = DiffusionTrainingArguments(
        output_dir=str(args.work / "run"), max_steps=args.steps, per_device_train_batch_size=args.batch,
        learning_rate=args.lr, max_length=args.max_length, use_cpu=True, report_to=[], save_strategy="no",
        disable_tqdm=True, logging_steps=max(1, args.steps // 10), **changed)
    tokenizer = AutoTokenizer.from_pretrained(args.ar)
    model = DiffusionLM.from_causal_lm(AutoModelForCausalLM.from_pretrained(args.ar, attn_implementation="sdpa"),
                                       tokenizer)
    train = datasets.Dataset.from_list(make_split("train", args.steps * args.batch, seed=1, tasks=args.tasks)).remove_columns("task")
    trainer = DiffusionTrainer(model=model, args=training, train_dataset=train, processing_class=model.tokenizer)
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    if args.save:
        model.save_pretrained(args.work / "model")
    model.eval()
    records = make_split("test", args.n_test, seed=0, tasks=args.tasks)
    with torch.no_grad():
        results = decode_strategies(model, model.tokenizer, records, args.budget, args.block, args.threshold)
    payload = {"ar": str(args.ar), "tasks": args.tasks, "changed_from_defaults": changed, "steps": args.steps, "batch": args.batch,
               "lr": args.lr, "max_length": args.max_length, "train_seconds": train_seconds,
               "decoding": {"budget": args.budget, "block_length": args.block, "threshold": args.threshold,
                            "use_cache": True, "n": len(records)},
               "training_args": {k: getattr(training, k) for k in ("padding", "eos_fill", "block_rows",
                                                                   "block_length", "t_min", "t_max", "anneal_steps")},
               "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
