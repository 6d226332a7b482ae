"""Which tasks does the AR base learn? A small-scale probe run before sizing the suite (docs/benchmarks.md,
"Choosing the tasks"): pretrain the preset's GPT-2 on the tasks for a few steps, then report exact match per task on
the held-out split, and the training throughput (to size `ar_steps` for the time `make bench` has).

    python benchmarks/probe_ar.py --work /tmp/probe --set ar_steps=600 --out benchmarks/results/probe_ar.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def per_task_exact(model, tokenizer, records: list[dict], budget: int, batch_size: int = 64) -> dict:
    from hf_dlm.evaluation import answer_autoregressive

    answers = answer_autoregressive(model, tokenizer, [r["prompt"] for r in records], max_new_tokens=budget,
                                    batch_size=batch_size, eos_token_id=tokenizer.eos_token_id)
    hits, counts = defaultdict(int), defaultdict(int)
    for record, answer in zip(records, answers):
        counts[record["task"]] += 1
        hits[record["task"]] += answer.text == record["completion"]
    return {task: hits[task] / counts[task] for task in sorted(counts)} | {"all": sum(hits.values()) / len(records)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="full")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--n-test", type=int, default=256)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import datasets
    import torch
    import transformers
    from common import task_dataset
    from config import get_preset
    from run import parse_overrides
    from train_ar import train_ar
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset(args.preset, **parse_overrides(args.set))
    path = args.work / "ar"
    if not (path / "train_log.json").exists():
        train_ar(preset, args.work)
    log = json.loads((path / "train_log.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    records = task_dataset(preset, "test", args.n_test).to_list()
    with torch.no_grad():
        exact = per_task_exact(model, tokenizer, records, preset.main_budget)
    result = {"preset": preset.to_dict(), "train_seconds": log["seconds"], "steps": log["steps"],
              "final_loss": log["losses"][-1] if log["losses"] else None, "n_test": len(records), "exact": exact}
    print(json.dumps({k: v for k, v in result.items() if k != "preset"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
