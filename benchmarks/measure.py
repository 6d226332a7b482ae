"""Stage 4: every measurement of docs/benchmarks.md, each table from one `hf_dlm.cli.bench.run` (one process, settings
interleaved batch by batch), written to one JSON file.

Tables (prompts are the first n of the test split, so smaller tables are subsets of larger ones):
- `models`:  the from-scratch control at the main budget (fixed / grow / predict, first threshold, cache): accuracy.
- `main`:    the adapted model and AR generate at the main budget: every strategy x {thresholds, one token per step}
             x {cache, no cache}, and the traditional setting: accuracy, NFE, ratios.
- `speed`:   batch 16 at `speed_budget` (8x the median answer): AR, traditional, fixed / grow / predict at the first
             threshold with and without cache: the target ratios.
- `latency`: the same settings at batch size 1 (one user).
- `budgets`: AR, traditional and fixed / grow / predict (first threshold, cache) across budgets of 2x-16x the median.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import torch
import transformers
from common import task_dataset, write_json
from config import Preset
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_dlm import DiffusionLM
from hf_dlm.cli.bench import Setting, add_ratios, cache_agreement, grid, run


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python":
            platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


def timed_table(name: str, settings: list[Setting], dlm, tokenizer, records, ar_model, batch_size: int) -> dict:
    """One table: decode, add ratios and cache agreement, note the machine's load before and after (other jobs
    on a shared machine slow every setting of the table alike, since settings are interleaved)."""
    load_before = os.getloadavg()
    start = time.perf_counter()
    results = run(settings, dlm, tokenizer, records, ar_model=ar_model, batch_size=batch_size,
                  progress=lambda msg: print(f"[{name}] {msg}", file=sys.stderr, flush=True))
    table = {"name": name, "n": len(records), "batch_size": batch_size, "results": add_ratios(results),
             "cache_agreement": cache_agreement(results), "seconds": time.perf_counter() - start,
             "load_before": load_before, "load_after": os.getloadavg()}
    print(f"[{name}] done in {table['seconds']:.0f}s", file=sys.stderr, flush=True)
    return table


def measure(preset: Preset, out: Path, results_path: Path) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(out / "adapt")
    adapted = DiffusionLM.from_pretrained(out / "adapt").eval()
    scratch = DiffusionLM.from_pretrained(out / "scratch").eval()
    ar = AutoModelForCausalLM.from_pretrained(out / "ar").eval()
    test = task_dataset(preset, "test").to_list()
    block, budget = preset.block_length, preset.main_budget
    thr = preset.thresholds[0]
    best = [Setting(m, budget, thr, True, block) for m in ("fixed", "grow", "predict")]
    tables = {}

    def table(name, settings, records, dlm=adapted, ar_model=ar, batch_size=preset.batch_size):
        tables[name] = timed_table(name, settings, dlm, tokenizer, records, ar_model, batch_size)
        tables[name]["tasks"] = [x["task"] for x in records]

    many = test[: preset.n_accuracy]
    table("models", best, many, dlm=scratch, ar_model=None)
    unmask = (*preset.thresholds, None)  # None: one token per step
    table("main", grid([budget], unmask, block_length=block), many)
    speed = grid([preset.speed_budget], [thr], block_length=block)
    table("speed", speed, test[: preset.n_speed])
    table("latency", speed, test[: preset.n_latency], batch_size=1)
    table("budgets", grid(preset.budgets, [thr], caches=(True,), block_length=block), test[: preset.n_scaling])

    payload = {"preset": preset.to_dict(), "machine": machine(), "tables": tables,
               "training": {stage: _train_log(out / stage) for stage in ("ar", "adapt", "scratch")}}
    write_json(results_path, payload)
    return payload


def _train_log(path: Path) -> dict:
    import json

    log = path / "train_log.json"
    return json.loads(log.read_text()) if log.exists() else {}
