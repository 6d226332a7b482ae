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


def rows(paths: list[Path]) -> list[dict]:
    """One row per point and per cooldown of every result file."""
    out = []
    for path in paths:
        data = json.loads(path.read_text())
        name = path.stem.removeprefix("curve_").removesuffix("_cooldown")
        ar_seconds = data["ar_training_seconds"]
        for point in data.get("points", []):
            out.append({"run": name, "kind": "constant rate", "steps": point["steps"],
                        "multiple": point["steps"] * data["rows_per_step"] / data["ar_rows"],
                        "time": point["train_seconds"] / ar_seconds, "results": point["results"],
                        "ar": data.get("ar_exact", {}).get("all")})
        for cool in data.get("cooldowns", []):
            out.append({"run": name, "kind": f"cooldown +{cool['cooldown_steps']}",
                        "steps": cool["from_steps"] + cool["cooldown_steps"],
                        "multiple": (cool["from_steps"] + cool["cooldown_steps"]) * data["rows_per_step"]
                        / data["ar_rows"], "time": None, "results": cool["results"], "ar": data.get("ar_exact", {}).get("all")})
    return out


def table(points: list[dict]) -> str:
    lines = ["| run | schedule | steps | x AR rows | " + " | ".join(f"{m} exact % (tok/fwd)" for m in METHODS) + " |",
             "|---|---|---|---|" + "---|" * len(METHODS)]
    for p in sorted(points, key=lambda p: (p["run"], p["steps"], p["kind"])):
        cells = [f"{100 * p['results'][m]['exact']:.1f} ({p['results'][m]['tokens_per_forward']:.2f})"
                 for m in METHODS]
        lines.append(f"| {p['run']} | {p['kind']} | {p['steps']} | {p['multiple']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    runs = sorted({p["run"] for p in points})
    for ax, method in zip(axes, ("grow", "predict")):
        for index, run in enumerate(runs):
            color = f"C{index}"
            curve = sorted((p for p in points if p["run"] == run and p["kind"] == "constant rate"),
                           key=lambda p: p["steps"])
            ax.plot([p["multiple"] for p in curve], [100 * p["results"][method]["exact"] for p in curve], "o-",
                    color=color, label=f"{run}, constant rate")
            cools = [p for p in points if p["run"] == run and p["kind"] != "constant rate"]
            ax.plot([p["multiple"] for p in cools], [100 * p["results"][method]["exact"] for p in cools], "*",
                    markersize=12, color=color, label=f"{run}, after cooldown")
        ar = next((p["ar"] for p in points if p["ar"] is not None), 1.0)  # cooldown files do not hold it
        ax.axhline(100 * ar, color="black", linestyle="--", linewidth=1, label="AR base")
        ax.set_title(f"{method} (budget 64, thr 0.9, cache)")
        ax.set_xlabel("adaptation rows / the AR base's training rows")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("exact match, 128 held-out prompts (%)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
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
