"""Stage 4: every measurement of docs/benchmarks.md, each table from one `hf_dlm.cli.bench.run` (one process, settings
interleaved batch by batch), written to one JSON file.

Tables (prompts are the first n of the test split, so smaller tables are subsets of larger ones):
- `models`:      adapted vs from-scratch diffusion (and the AR base) at the main budget: accuracy.
- `main`:        the adapted model, AR generate and fixed / grow / predict x thresholds x cache at the main budget.
- `traditional`: against the traditional fixed-length setting (one token per step, full canvas, no cache).
- `budgets`:     AR, fixed, grow, predict (threshold 0.9, cache) and traditional across budgets: the scaling.
- `latency`:     batch size 1 (one user), for the wall time against answer length.
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
    main = grid([budget], preset.thresholds, block_length=block, traditional=False)
    main.insert(1, Setting("ar", budget, None, False, block))
    table("main", main, many)
    one_token = [Setting(m, b, None, True, block) for b in preset.traditional_budgets for m in ("fixed", "grow", "predict")]
    table("traditional", grid(preset.traditional_budgets, [thr], caches=(True,), block_length=block) + one_token,
          test[: preset.n_speed])
    scaling = grid(preset.budgets, [thr], caches=(True,), block_length=block, traditional=False)
    scaling += [Setting("fixed", b, None, False, block) for b in preset.traditional_budgets]
    table("budgets", scaling, test[: preset.n_scaling])
    table("latency", best + [Setting("ar", budget, None, True, block)], test[: preset.n_latency], batch_size=1)

    payload = {"preset": preset.to_dict(), "machine": machine(), "tables": tables,
               "training": {stage: _train_log(out / stage) for stage in ("ar", "adapt", "scratch")}}
    write_json(results_path, payload)
    return payload


def _train_log(path: Path) -> dict:
    import json

    log = path / "train_log.json"
    return json.loads(log.read_text()) if log.exists() else {}
