"""The learning curves (benchmarks/learning_curve.py) as one plot and one Markdown table (docs/benchmarks.md,
"Learning curve"): exact match of `grow` and `predict` against adaptation wall time, as a multiple of the AR base's
own training time, for each run; its cooldowns as separate markers; the AR base's exact match as a line.

    python benchmarks/curve_report.py benchmarks/results/curve_defaults.json \\
        benchmarks/results/curve_defaults_cooldown.json ... --plot docs/img/learning_curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METHODS = ("fixed", "grow", "predict")
STANDARD = "thr 0.9, low_confidence"  # the suite's decoding (make bench): runs decoded so carry no label in the plot


def decoding_label(decoding: dict) -> str:
    """The decoding settings beyond the curve's common ones (budget, block, cache), short."""
    threshold = decoding.get("threshold")
    label = ("one token per step" if threshold is None else f"thr {threshold}") + ", " + decoding.get(
        "unmasking", "low_confidence")
    return label + (", decided as context" if decoding.get("decided_as_context") else "")


def rows(paths: list[Path]) -> list[dict]:
    """One row per point, per cooldown and per extra decode (`--decode-from`) of every result file (the files of one
    run share its name: curve_<run>.json, curve_<run>_cooldown.json, curve_<run>_decodes.json)."""
    out = []
    for path in paths:
        data = json.loads(path.read_text())
        name = path.stem.removeprefix("curve_").removesuffix("_cooldown").removesuffix("_decodes")
        ar_seconds = data["ar_training_seconds"]
        ar = data.get("ar_exact", {}).get("all")
        decoding = decoding_label(data.get("decoding", {}))

        def row(kind: str, steps: int, results: dict, label: str, time=None, name=name, ar=ar, data=data) -> dict:
            return {"run": name, "kind": kind, "steps": steps, "decoding": label, "results": results, "ar": ar,
                    "multiple": steps * data["rows_per_step"] / data["ar_rows"], "time": time}

        for point in data.get("points", []):
            out.append(row("constant rate", point["steps"], point["results"], decoding,
                           point["train_seconds"] / ar_seconds))
        for cool in data.get("cooldowns", []):
            out.append(row(f"cooldown +{cool['cooldown_steps']}", cool["from_steps"] + cool["cooldown_steps"],
                           cool["results"], decoding_label(cool.get("decoding", data.get("decoding", {})))))
        for decode in data.get("decodes", []):
            kind = f"cooldown +{decode['cooldown_steps']}" if decode["cooldown_steps"] else "constant rate"
            out.append(row(kind, decode["steps"], decode["results"], decoding_label(decode["decoding"])))
    # A later decode of the same weights with the same settings replaces the earlier numbers (a decoder fix since:
    # the causal-prefix runs' fixed/predict were re-decoded after the block-causal canvas); the row says so.
    latest: dict[tuple, dict] = {}
    for entry in out:
        key = (entry["run"], entry["kind"].removesuffix(" (re-decoded)"), entry["steps"], entry["decoding"])
        if key in latest and accuracy(latest[key]) != accuracy(entry):
            entry = {**entry, "kind": key[1] + " (re-decoded)", "time": latest[key]["time"]}
        latest[key] = entry
    return list(latest.values())


def accuracy(entry: dict) -> list:
    """What a row reports (not its timing): exact match and tokens per forward of each strategy."""
    return [(entry["results"][m]["exact"], entry["results"][m]["tokens_per_forward"]) for m in METHODS]


def table(points: list[dict]) -> str:
    lines = ["| run | schedule | steps | x AR rows | decoding | "
             + " | ".join(f"{m} exact % (tok/fwd)" for m in METHODS) + " |",
             "|---|---|---|---|---|" + "---|" * len(METHODS)]
    for p in sorted(points, key=lambda p: (p["run"], p["steps"], p["kind"], p["decoding"])):
        cells = [f"{100 * p['results'][m]['exact']:.1f} ({p['results'][m]['tokens_per_forward']:.2f})"
                 for m in METHODS]
        lines.append(f"| {p['run']} | {p['kind']} | {p['steps']} | {p['multiple']:.2f} | {p['decoding']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 6), sharey=True)
    # The cooldowns only: what stopping at each point gives, the numbers to compare (the constant-rate snapshots move
    # by 10-15 points from one point to the next; they are in the table).
    cooled = [p for p in points if p["kind"].startswith("cooldown")]
    series = sorted({(p["run"], p["decoding"]) for p in cooled})
    markers = "o*sD^vP"
    for ax, method in zip(axes, ("grow", "predict")):
        for index, (run, decoding) in enumerate(series):
            mine = sorted((p for p in cooled if (p["run"], p["decoding"]) == (run, decoding)), key=lambda p: p["steps"])
            label = run if decoding == STANDARD else f"{run} [{decoding}]"
            ax.plot([p["multiple"] for p in mine], [100 * p["results"][method]["exact"] for p in mine],
                    marker=markers[index // 10 % len(markers)], linestyle="-", color=f"C{index % 10}", label=label)
        ar = next((p["ar"] for p in points if p["ar"] is not None), 1.0)  # cooldown files do not hold it
        ax.axhline(100 * ar, color="black", linestyle="--", linewidth=1, label="AR base")
        ax.set_title(f"{method} after a cooldown (budget 64, block 8, cache)")
        ax.set_xlabel("adaptation rows / the AR base's training rows")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("exact match, 128 held-out prompts (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=2)
    fig.tight_layout(rect=(0, 0.22, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    points = rows(args.results)
    print(table(points))
    if args.plot:
        plot(points, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
