"""Stage 6: Markdown tables from the results JSON (benchmarks/results/<preset>.md).

For the full preset the tables also replace the block between `<!-- results:start -->` and `<!-- results:end -->`
in docs/benchmarks.md, and the headline between `<!-- headline:start -->` and `<!-- headline:end -->` in README.md,
so the published numbers are always the last run's.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
README = ROOT / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
HEAD_START, HEAD_END = "<!-- headline:start -->", "<!-- headline:end -->"
PUBLISHED = ("full",)  # presets whose report replaces the docs' tables and the README's headline


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def _x(v) -> str:
    return "" if v is None else f"{v:.2f}x"


def _find(results, method, threshold, cache=True, budget=None):
    for r in results:
        if r["method"] == method and r["threshold"] == threshold and r["use_cache"] == cache and (
                budget is None or r["budget"] == budget):
            return r
    return None


def _traditional(results, budget=None):
    return _find(results, "fixed", None, False, budget)


def label(r: dict) -> str:
    if r["method"] == "fixed" and r["threshold"] is None and not r["use_cache"]:
        return "traditional fixed (1 tok/step, no cache)"
    return r["setting"]


def settings_table(results: list[dict]) -> str:
    """Every setting of a table: accuracy, NFE, tokens per forward, wall time, the three ratios."""
    has_acc = any("accuracy" in r for r in results)
    head = ["setting", "budget"] + (["exact %", "len = %"] if has_acc else []) + [
        "NFE / answer", "tokens / forward", "ms / answer", "x AR", "x fixed", "x traditional"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in results:
        cells = [label(r), str(r["budget"])]
        if has_acc:
            cells += [_pct(r.get("accuracy")), _pct(r.get("length_match"))]
        cells += [f"{r['mean_nfe']:.1f}", f"{r['tokens_per_forward']:.2f}", f"{r['ms_per_answer']:.1f}",
                  _x(r.get("speedup_vs_ar")), _x(r.get("speedup_vs_fixed")), _x(r.get("speedup_vs_traditional"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def predict_stats(r: dict) -> dict:
    """Coverage (share of rows whose bound, the length read from p(EOS) at the first step, is >= the true length),
    mean slack (bound - true length, over the covered rows), share that grew past the bound."""
    pa = r["per_answer"]
    pairs = list(zip(pa["predicted_length"], pa["true_length"]))
    covered = [p - t for p, t in pairs if p >= t]
    return {"coverage": len(covered) / len(pairs), "mean_slack": statistics.fmean(covered) if covered else None,
            "grew": r["grew"], "exact": r["predict_error"]["exact"]}


def predict_table(data: dict) -> str:
    lines = ["| table | setting | budget | bound covers the true length (%) | mean slack (tokens) | length exact (%) | "
             "grew past the bound (%) |", "|---|---|---|---|---|---|---|"]
    for name in ("main", "speed", "latency"):
        for r in data["tables"][name]["results"]:
            if r["method"] == "predict" and "predict_error" in r:
                s = predict_stats(r)
                slack = "n/a" if s["mean_slack"] is None else f"{s['mean_slack']:.2f}"
                lines.append(f"| {name} | {r['setting']} | {r['budget']} | {_pct(s['coverage'])} | {slack} | "
                             f"{_pct(s['exact'])} | {_pct(s['grew'])} |")
    return "\n".join(lines)


def _per_task(result: dict, names: list[str], key: str) -> dict:
    values = result["per_answer"][key] if key == "correct" else [
        int(a == b) for a, b in zip(result["per_answer"]["length"], result["per_answer"]["true_length"])]
    out = {}
    for task in sorted(set(names)):
        hits = [v for v, name in zip(values, names) if name == task]
        out[task] = sum(hits) / len(hits)
    return out


def task_table(data: dict) -> str:
    """Exact match and length match per task at the main budget (first threshold, cache)."""
    p = data["preset"]
    thr, budget = p["thresholds"][0], p["main_budget"]
    main, scratch = data["tables"]["main"], data["tables"]["models"]
    tasks = sorted(set(main["tasks"]))
    rows = [("AR base, `generate`", _find(main["results"], "ar", None, True, budget), main["tasks"])]
    for method in ("fixed", "grow", "predict"):
        rows.append((f"adapted, {method}", _find(main["results"], method, thr, True, budget), main["tasks"]))
    for method in ("fixed", "grow", "predict"):
        rows.append((f"from scratch, {method}", _find(scratch["results"], method, thr, True, budget),
                     scratch["tasks"]))
    head = "| model, decoder | all | " + " | ".join(tasks) + " |"
    lines = [head, "|---" * (len(tasks) + 2) + "|"]
    for text, result, names in rows:
        exact, length = _per_task(result, names, "correct"), _per_task(result, names, "length")
        cells = [f"{_pct(result['accuracy'])} / {_pct(result['length_match'])}"]
        cells += [f"{_pct(exact[t])} / {_pct(length[t])}" for t in tasks]
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def training_table(data: dict) -> str:
    lines = ["| stage | what | steps x rows | train time (s) | first / last logged loss |", "|---|---|---|---|---|"]
    what = {"ar": "GPT-2, next-token loss (plain Trainer)", "adapt": "AR weights -> diffusion (DiffusionTrainer)",
            "scratch": "random init -> diffusion (DiffusionTrainer)"}
    p = data["preset"]
    for stage, log in data["training"].items():
        if not log:
            continue
        losses = log.get("losses") or [float("nan")]
        rows = p["ar_rows_per_step"] if stage == "ar" else p["diffusion_rows_per_step"]
        lines.append(f"| {stage} | {what[stage]} | {log['steps']} x {rows} | {log['seconds']:.0f} | "
                     f"{losses[0]:.3f} / {losses[-1]:.3f} |")
    return "\n".join(lines)


def agreement_table(data: dict) -> str:
    lines = ["| strategy | budget | threshold | identical answers (%) | exact match cache / no cache (%) |",
             "|---|---|---|---|---|"]
    for row in data["tables"]["main"]["cache_agreement"]:
        threshold = "1 tok/step" if row["threshold"] is None else f"{row['threshold']:g}"
        lines.append(f"| {row['method']} | {row['budget']} | {threshold} | {_pct(row['identical'])} | "
                     f"{_pct(row.get('accuracy_cache'))} / {_pct(row.get('accuracy_no_cache'))} |")
    return "\n".join(lines)


def targets(data: dict) -> list[dict]:
    """Issue 14's targets, each with its measured number and whether it is met."""
    p = data["preset"]
    thr, budget, speed_budget = p["thresholds"][0], p["main_budget"], p["speed_budget"]
    main, models = data["tables"]["main"]["results"], data["tables"]["models"]["results"]
    speed, latency = data["tables"]["speed"]["results"], data["tables"]["latency"]["results"]
    ar = _find(main, "ar", None, True, budget)
    main_names = data["tables"]["main"]["tasks"]
    ar_tasks = _per_task(ar, main_names, "correct")
    grow, predict = _find(main, "grow", thr, True, budget), _find(main, "predict", thr, True, budget)
    best_scratch = max(r["accuracy"] for r in models)
    rows = [
        {"target": "AR base >= 90% exact on every task", "measured": ", ".join(
            f"{t} {_pct(v)}%" for t, v in ar_tasks.items()), "met": min(ar_tasks.values()) >= 0.9},
    ]
    for r in (grow, predict):
        gap = 100 * (r["accuracy"] - ar["accuracy"])
        rows.append({"target": f"adapted {r['method']} within 1 point of AR (budget {budget})",
                     "measured": f"{_pct(r['accuracy'])}% vs AR {_pct(ar['accuracy'])}% ({gap:+.1f} points)",
                     "met": gap >= -1.0})
    best_adapted = max(grow["accuracy"], predict["accuracy"], _find(main, "fixed", thr, True, budget)["accuracy"])
    rows.append({"target": "adapted > from scratch (best strategy each)",
                 "measured": f"{_pct(best_adapted)}% vs {_pct(best_scratch)}%", "met": best_adapted > best_scratch})
    for results, batch in ((speed, data["tables"]["speed"]["batch_size"]), (latency, 1)):
        g = _find(results, "grow", thr, True, speed_budget)
        rows.append({"target": f"grow faster than AR generate, batch {batch} (aim >= 2x)",
                     "measured": f"{_x(g.get('speedup_vs_ar'))} (budget {speed_budget})",
                     "met": (g.get("speedup_vs_ar") or 0) >= 2.0})
    g = _find(speed, "grow", thr, True, speed_budget)
    rows.append({"target": "grow tokens per forward >= 2", "measured": f"{g['tokens_per_forward']:.2f}",
                 "met": g["tokens_per_forward"] >= 2})
    s = predict_stats(predict)
    rows.append({"target": "predict bound covers the true length >= 95%", "measured": f"{_pct(s['coverage'])}%",
                 "met": s["coverage"] >= 0.95})
    slack = s["mean_slack"]
    rows.append({"target": f"predict mean slack <= one block ({p['block_length']})",
                 "measured": "n/a" if slack is None else f"{slack:.2f} tokens",
                 "met": slack is not None and slack <= p["block_length"]})
    for method in ("grow", "predict"):
        r = _find(speed, method, thr, True, speed_budget)
        rows.append({"target": f"{method} at 8x the median answer: >= 40x less wall time than traditional",
                     "measured": _x(r.get("speedup_vs_traditional")),
                     "met": (r.get("speedup_vs_traditional") or 0) >= 40})
        rows.append({"target": f"{method} at 8x the median answer: >= 5x less than fixed (thr {thr:g}, cache)",
                     "measured": _x(r.get("speedup_vs_fixed")), "met": (r.get("speedup_vs_fixed") or 0) >= 5})
    return rows


def targets_table(data: dict) -> str:
    lines = ["| target (issue 14) | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |" for t in targets(data)]
    return "\n".join(lines)


def headline_table(data: dict) -> str:
    """The README's table: the speed budget (8x the median answer), batch 16 and batch 1, accuracy at the main
    budget."""
    p = data["preset"]
    thr, budget, speed_budget = p["thresholds"][0], p["main_budget"], p["speed_budget"]
    main, speed, latency = (data["tables"][k]["results"] for k in ("main", "speed", "latency"))
    b = data["tables"]["speed"]["batch_size"]
    lines = [f"| decoder (thr {thr:g}, KV cache unless said) | exact % (budget {budget}) | NFE / answer | "
             f"tokens / forward | ms / answer, batch {b} | ms / answer, batch 1 | vs AR (b{b} / b1) | "
             f"vs traditional (b{b} / b1) |", "|---|---|---|---|---|---|---|---|"]
    rows = [("AR `generate` (base model)", "ar", None, True), ("traditional fixed (1 tok/step, no cache)", "fixed",
            None, False), ("fixed (LLaDA)", "fixed", thr, True), ("**grow** (dLLM-Var)", "grow", thr, True),
            ("**predict**", "predict", thr, True)]
    for text, method, threshold, cache in rows:
        m = _find(main, method, threshold, cache, budget)
        s, b1 = _find(speed, method, threshold, cache, speed_budget), _find(latency, method, threshold, cache,
                                                                           speed_budget)
        lines.append(f"| {text} | {_pct(m['accuracy'])} | {s['mean_nfe']:.1f} | {s['tokens_per_forward']:.2f} | "
                     f"{s['ms_per_answer']:.1f} | {b1['ms_per_answer']:.1f} | "
                     f"{_x(s.get('speedup_vs_ar')) or '1x'} / {_x(b1.get('speedup_vs_ar')) or '1x'} | "
                     f"{_x(s.get('speedup_vs_traditional')) or '1x'} / {_x(b1.get('speedup_vs_traditional')) or '1x'} |")
    return "\n".join(lines)


def cost_table(data: dict) -> str:
    """Where the time goes: wall time per answer = forwards per answer x time per forward. Against AR, a decoder wins
    when its tokens per forward outweigh its extra cost per forward (a block against the cache instead of one token,
    and the decoder's bookkeeping)."""
    p = data["preset"]
    thr, budget = p["thresholds"][0], p["speed_budget"]
    lines = ["| batch | decoder | answer tokens | NFE / answer | tokens / forward | ms / forward | ms / answer | "
             "vs AR |", "|---|---|---|---|---|---|---|---|"]
    for name in ("speed", "latency"):
        t = data["tables"][name]
        for method, threshold, cache in (("ar", None, True), ("fixed", thr, True), ("grow", thr, True),
                                         ("predict", thr, True)):
            r = _find(t["results"], method, threshold, cache, budget)
            if r is None:
                continue
            per_forward = r["ms_per_answer"] / r["mean_nfe"] if r["mean_nfe"] else float("nan")
            lines.append(f"| {t['batch_size']} | {label(r)} | {r['mean_length']:.1f} | {r['mean_nfe']:.1f} | "
                         f"{r['tokens_per_forward']:.2f} | {per_forward:.2f} | {r['ms_per_answer']:.1f} | "
                         f"{_x(r.get('speedup_vs_ar')) or '1x'} |")
    return "\n".join(lines)


def _table_header(data: dict, name: str) -> str:
    t = data["tables"][name]
    load = f"load average {t['load_before'][0]:.1f} -> {t['load_after'][0]:.1f}"
    return f"*{t['n']} test prompts, batch {t['batch_size']}, {t['seconds']:.0f} s for the table, {load}.*"


def render(data: dict, img_dir: Path | None = None) -> str:
    m, p = data["machine"], data["preset"]
    parts = [
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"transformers {m['transformers']}, Python {m['python']}. Preset `{p['name']}`"
        + (f" with overrides {p['extra']}" if p.get("extra") else "") + ".",
        "### Targets", targets_table(data),
        f"### Headline: speed at budget {p['speed_budget']} (8x the median answer), accuracy at budget "
        f"{p['main_budget']}", headline_table(data),
        "### Training", training_table(data),
        f"### Exact match / length match (%) per task, budget {p['main_budget']}, thr {p['thresholds'][0]:g}, cache",
        _table_header(data, "main"), task_table(data),
        f"### Every setting at budget {p['main_budget']} (adapted model)", _table_header(data, "main"),
        settings_table(data["tables"]["main"]["results"]),
        "### From-scratch control", _table_header(data, "models"), settings_table(data["tables"]["models"]["results"]),
        f"### Speed at budget {p['speed_budget']}, batch {data['tables']['speed']['batch_size']}",
        _table_header(data, "speed"), settings_table(data["tables"]["speed"]["results"]),
        f"### Speed at budget {p['speed_budget']}, batch 1", _table_header(data, "latency"),
        settings_table(data["tables"]["latency"]["results"]),
        f"### Where the time goes (budget {p['speed_budget']}, thr {p['thresholds'][0]:g}, cache)", cost_table(data),
        "### Length prediction (`predict`)", predict_table(data),
        "### Cached vs uncached decoding", agreement_table(data),
        "### Scaling with the budget (2x-16x the median answer)", _table_header(data, "budgets"),
        settings_table(data["tables"]["budgets"]["results"]),
    ]
    if img_dir is not None and DOC.parent in Path(img_dir).resolve().parents:
        rel = os.path.relpath(Path(img_dir).resolve(), DOC.parent)
        parts += [f"![{name}]({rel}/{name}.png)" for name in
                  ("budget_scaling", "length_scaling", "accuracy_by_length", "predict_error")]
    return "\n\n".join(parts) + "\n"


def _replace_between(path: Path, start: str, end: str, text: str) -> None:
    if not path.exists():
        return
    doc = path.read_text()
    if start in doc and end in doc:
        head, rest = doc.split(start, 1)
        path.write_text(head + start + "\n" + text + end + rest.split(end, 1)[1])


def write_report(results_path: Path, report_path: Path, img_dir: Path | None = None) -> str:
    data = json.loads(Path(results_path).read_text())
    text = render(data, img_dir)
    report_path.write_text(text)
    if data["preset"]["name"] in PUBLISHED and not data["preset"].get("extra"):
        _replace_between(DOC, START, END, text)
        _replace_between(README, HEAD_START, HEAD_END, headline_table(data) + "\n")
    return text
