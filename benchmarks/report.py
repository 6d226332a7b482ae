"""Stage 6: Markdown tables from the results JSON (benchmarks/results/<preset>.md).

For the full preset the tables also replace the block between `<!-- results:start -->` and `<!-- results:end -->`
in docs/benchmarks.md, so the published numbers are always the last run's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hf_dlm.cli.bench import format_table

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def _find(results, method, threshold, cache=True, budget=None):
    for r in results:
        if r["method"] == method and r["threshold"] == threshold and r["use_cache"] == cache and (
                budget is None or r["budget"] == budget):
            return r
    return None


def headline(data: dict) -> list[dict]:
    """The target ratios at the main budget (issue 5), each with the table it comes from."""
    p = data["preset"]
    thr, budget = p["thresholds"][0], p["main_budget"]
    trad = data["tables"]["traditional"]["results"]
    main = data["tables"]["main"]["results"]
    rows = []
    for method in ("grow", "predict"):
        t = _find(trad, method, thr, True, budget)
        m = _find(main, method, thr, True, budget)
        fixed, ar = _find(main, "fixed", thr, True, budget), _find(main, "ar", None, True, budget)
        rows.append({
            "method": method,
            "vs_traditional": t.get("speedup_vs_traditional"),
            "vs_fixed": m.get("speedup_vs_fixed"),
            "vs_ar": m.get("speedup_vs_ar"),
            "accuracy": m.get("accuracy"),
            "accuracy_fixed": fixed.get("accuracy"),
            "accuracy_ar": ar.get("accuracy"),
        })
    return rows


def training_table(data: dict) -> str:
    lines = ["| stage | what | steps | rows per step (tokens per row) | train time (s) | first / last logged loss |",
             "|---|---|---|---|---|---|"]
    what = {"ar": "GPT-2, next-token loss (plain Trainer)", "adapt": "AR weights -> diffusion (DiffusionTrainer)",
            "scratch": "random init -> diffusion (DiffusionTrainer)"}
    p = data["preset"]
    for stage, log in data["training"].items():
        if not log:
            continue
        losses = log.get("losses") or [float("nan")]
        rows = (f"{p['ar_rows_per_step']} (one example, ~60)" if stage == "ar"
                else f"{p['diffusion_rows_per_step']} (one example, EOS-filled to {p['row_length']})")
        lines.append(f"| {stage} | {what[stage]} | {log['steps']} | {rows} | "
                     f"{log['seconds']:.0f} | {losses[0]:.3f} / {losses[-1]:.3f} |")
    return "\n".join(lines)


def models_table(data: dict) -> str:
    p = data["preset"]
    thr, budget = p["thresholds"][0], p["main_budget"]
    main = data["tables"]["main"]["results"]
    scratch = data["tables"]["models"]["results"]
    lines = ["| model | decoding | exact match (%) | length match (%) |", "|---|---|---|---|"]
    ar = _find(main, "ar", None, True, budget)
    lines.append(f"| AR base (GPT-2) | greedy `generate` | {_pct(ar['accuracy'])} | {_pct(ar['length_match'])} |")
    for method in ("fixed", "grow", "predict"):
        a, s = _find(main, method, thr, True, budget), _find(scratch, method, thr, True, budget)
        lines.append(f"| adapted from AR | {method}, thr {thr:g}, cache | {_pct(a['accuracy'])} | "
                     f"{_pct(a['length_match'])} |")
        lines.append(f"| diffusion from scratch | {method}, thr {thr:g}, cache | {_pct(s['accuracy'])} | "
                     f"{_pct(s['length_match'])} |")
    return "\n".join(lines)


def task_table(data: dict) -> str:
    """Exact match per task at the main budget (threshold, cache): which tasks the small models learnt at all."""
    p = data["preset"]
    thr, budget = p["thresholds"][0], p["main_budget"]
    main, scratch = data["tables"]["main"], data["tables"]["models"]
    tasks = sorted(set(main["tasks"]))
    rows = [("AR base, `generate`", _find(main["results"], "ar", None, True, budget), main["tasks"])]
    for method in ("fixed", "grow", "predict"):
        rows.append((f"adapted, {method}", _find(main["results"], method, thr, True, budget), main["tasks"]))
    rows.append(("from scratch, grow", _find(scratch["results"], "grow", thr, True, budget), scratch["tasks"]))
    lines = ["| model, decoder | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for label, result, names in rows:
        correct = result["per_answer"]["correct"]
        cells = []
        for task in tasks:
            hits = [c for c, name in zip(correct, names) if name == task]
            cells.append(_pct(sum(hits) / len(hits)) if hits else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def agreement_table(data: dict) -> str:
    lines = ["| strategy | budget | threshold | identical answers (%) | exact match cache / no cache (%) |",
             "|---|---|---|---|---|"]
    for row in data["tables"]["main"]["cache_agreement"]:
        lines.append(f"| {row['method']} | {row['budget']} | {row['threshold']} | {_pct(row['identical'])} | "
                     f"{_pct(row.get('accuracy_cache'))} / {_pct(row.get('accuracy_no_cache'))} |")
    return "\n".join(lines)


def predict_table(data: dict) -> str:
    lines = ["| setting | predicted - true: median [p10, p90] | exact | too short | grew past the bound |",
             "|---|---|---|---|---|"]
    for r in data["tables"]["main"]["results"]:
        if r["method"] == "predict" and "predict_error" in r:
            e = r["predict_error"]
            lines.append(f"| {r['setting']} | {e['median']:+g} [{e['p10']:+d}, {e['p90']:+d}] | {_pct(e['exact'])} | "
                         f"{_pct(e['under'])} | {_pct(r['grew'])} |")
    return "\n".join(lines)


def _table_header(data: dict, name: str) -> str:
    t = data["tables"][name]
    load = f"load average {t['load_before'][0]:.1f} -> {t['load_after'][0]:.1f}"
    return f"*{t['n']} test prompts, batch {t['batch_size']}, {t['seconds']:.0f} s for the table, {load}.*"


def render(data: dict, img_dir: Path | None = None) -> str:
    m = data["machine"]
    parts = [
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"transformers {m['transformers']}, Python {m['python']}. Preset `{data['preset']['name']}`.",
        "### Training", training_table(data),
        "### Adapted vs from scratch (same steps, same data)", _table_header(data, "models"), models_table(data),
        f"### Exact match (%) per task, budget {data['preset']['main_budget']}", task_table(data),
        f"### All settings at budget {data['preset']['main_budget']}", _table_header(data, "main"),
        format_table(data["tables"]["main"]["results"]),
        "### Cached vs uncached decoding", agreement_table(data),
        "### Length prediction (`predict`)", predict_table(data),
        "### Against traditional fixed-length decoding", _table_header(data, "traditional"),
        format_table(data["tables"]["traditional"]["results"]),
        "### Scaling with the budget", _table_header(data, "budgets"),
        format_table(data["tables"]["budgets"]["results"]),
        "### Batch size 1", _table_header(data, "latency"),
        format_table(data["tables"]["latency"]["results"]),
    ]
    if img_dir is not None and DOC.parent in Path(img_dir).resolve().parents:
        rel = os.path.relpath(Path(img_dir).resolve(), DOC.parent)
        parts += [f"![{name}]({rel}/{name}.png)" for name in
                  ("budget_scaling", "length_scaling", "accuracy_by_length", "predict_error")]
    return "\n\n".join(parts) + "\n"


def write_report(results_path: Path, report_path: Path, img_dir: Path | None = None) -> str:
    data = json.loads(Path(results_path).read_text())
    text = render(data, img_dir)
    report_path.write_text(text)
    if data["preset"]["name"] == "full" and DOC.exists():
        doc = DOC.read_text()
        if START in doc and END in doc:
            head, rest = doc.split(START, 1)
            DOC.write_text(head + START + "\n" + text + END + rest.split(END, 1)[1])
    return text
