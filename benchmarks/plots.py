"""Stage 5: the figures of docs/benchmarks.md, drawn from the results JSON only (no model is loaded)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {  # one colour per method across every figure
    "ar": ("AR generate", "black", "o"),
    "fixed": ("fixed", "tab:red", "s"),
    "grow": ("grow", "tab:blue", "^"),
    "predict": ("predict", "tab:green", "v"),
    "traditional": ("traditional fixed (1 tok/step, no cache)", "tab:gray", "x"),
}
LENGTH_BINS = [1, 3, 5, 9, 13, 17, 25, 33, 41, 49]  # answer-length buckets [a, b)


def _style(result: dict) -> tuple[str, str, str]:
    if result["method"] == "fixed" and result["threshold"] is None and not result["use_cache"]:
        return STYLE["traditional"]
    return STYLE[result["method"]]


def _series(results: list[dict], method: str, threshold, cache: bool = True) -> list[dict]:
    return sorted((r for r in results if r["method"] == method and r["threshold"] == threshold
                   and r["use_cache"] == cache), key=lambda r: r["budget"])


def budget_scaling(data: dict, path: Path) -> None:
    results = data["tables"]["budgets"]["results"]
    thr = data["preset"]["thresholds"][0]
    fig, (ax_t, ax_n) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, threshold, cache in [("ar", None, True), ("fixed", thr, True), ("grow", thr, True),
                                     ("predict", thr, True), ("fixed", None, False)]:
        series = _series(results, method, threshold, cache)
        if not series:
            continue
        label, color, marker = _style(series[0])
        if method != "ar" and threshold is not None:
            label += f" (thr {threshold:g}, cache)"
        budgets = [r["budget"] for r in series]
        ax_t.plot(budgets, [r["ms_per_answer"] for r in series], marker=marker, color=color, label=label)
        ax_n.plot(budgets, [r["mean_nfe"] for r in series], marker=marker, color=color, label=label)
    for ax, ylabel in ((ax_t, "wall time per answer (ms)"), (ax_n, "forwards (NFE) per answer")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("budget (max_new_tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    n = data["tables"]["budgets"]["n"]
    ax_t.set_title(f"Cost vs budget ({n} test prompts, batch {data['tables']['budgets']['batch_size']})")
    ax_n.set_title("Fixed length pays for the budget; grow/predict do not")
    ax_n.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _binned(x: list[int], y: list[float]) -> tuple[list[float], list[float]]:
    centres, means = [], []
    for lo, hi in zip(LENGTH_BINS, LENGTH_BINS[1:]):
        ys = [v for k, v in zip(x, y) if lo <= k < hi]
        if ys:
            centres.append((lo + hi - 1) / 2)
            means.append(sum(ys) / len(ys))
    return centres, means


def length_scaling(data: dict, path: Path) -> None:
    latency = data["tables"]["latency"]["results"]
    main = data["tables"]["main"]["results"]
    thr = data["preset"]["thresholds"][0]
    fig, (ax_t, ax_n) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in latency:
        label, color, marker = _style(r)
        x, y = r["per_answer"]["true_length"], [1000 * s for s in r["per_answer"]["seconds"]]
        ax_t.scatter(x, y, s=8, color=color, alpha=0.35, marker=marker)
        ax_t.plot(*_binned(x, y), color=color, marker=marker, label=label)
    for r in main:
        if r["method"] == "ar" and r["use_cache"] or r["method"] != "ar" and r["threshold"] == thr and r["use_cache"]:
            label, color, marker = _style(r)
            ax_n.plot(*_binned(r["per_answer"]["true_length"], r["per_answer"]["nfe"]), color=color, marker=marker,
                      label=label)
    ax_t.set_title(f"Latency vs answer length (batch 1, budget {data['preset']['speed_budget']})")
    ax_t.set_ylabel("wall time per answer (ms)")
    ax_n.set_title(f"Forwards vs answer length (thr {thr:g}, cache)")
    ax_n.set_ylabel("forwards (NFE) per answer")
    for ax in (ax_t, ax_n):
        ax.set_xlabel("reference answer length (tokens)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def predict_error(data: dict, path: Path) -> None:
    main = data["tables"]["main"]["results"]
    thr = data["preset"]["thresholds"][0]
    r = next(r for r in main if r["method"] == "predict" and r["threshold"] == thr and r["use_cache"])
    errors = [p - t for p, t in zip(r["per_answer"]["predicted_length"], r["per_answer"]["true_length"])]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    lo, hi = min(errors), max(errors)
    ax.hist(errors, bins=range(lo, hi + 2), color="tab:green", align="left")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("predicted length - true length (tokens)")
    ax.set_ylabel("answers")
    ax.set_title(f"predict: length read from p(EOS) at the first step\n"
                 f"exact {100 * r['predict_error']['exact']:.0f}%, short {100 * r['predict_error']['under']:.0f}%, "
                 f"grew {100 * r['grew']:.0f}% (margin {data['preset'].get('length_margin', 8)})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accuracy_by_length(data: dict, path: Path) -> None:
    thr = data["preset"]["thresholds"][0]
    fig, ax = plt.subplots(figsize=(7, 4))
    curves = [r for r in data["tables"]["main"]["results"]
              if (r["method"] == "ar" and r["use_cache"]) or (r["threshold"] == thr and r["use_cache"])]
    scratch = [dict(r, setting=r["setting"] + " [scratch]") for r in data["tables"]["models"]["results"]
               if r["method"] == "grow"]
    for r in curves + scratch:
        label, color, marker = _style(r)
        style = "--" if r in scratch else "-"
        x, y = _binned(r["per_answer"]["true_length"], r["per_answer"]["correct"])
        ax.plot(x, [100 * v for v in y], style, color=color, marker=marker,
                label=label + (" (from scratch)" if r in scratch else ""))
    ax.set_xlabel("reference answer length (tokens)")
    ax.set_ylabel("exact match (%)")
    ax.set_title(f"Accuracy vs answer length (budget {data['preset']['main_budget']}, thr {thr:g}, cache)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


FIGURES = {
    "budget_scaling.png": budget_scaling,
    "length_scaling.png": length_scaling,
    "predict_error.png": predict_error,
    "accuracy_by_length.png": accuracy_by_length,
}


def make_plots(results_path: Path, img_dir: Path) -> list[Path]:
    data = json.loads(Path(results_path).read_text())
    img_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in FIGURES.items():
        draw(data, img_dir / name)
        paths.append(img_dir / name)
    return paths
