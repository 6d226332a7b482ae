"""The benchmark pipeline, end to end: `python benchmarks/run.py --preset full` (what `make bench` runs).

Stages, in order (each skipped when its output exists, unless --force):
  ar       pretrain a small GPT-2 autoregressively on the tasks (plain transformers.Trainer)   -> <work>/ar
  adapt    adapt it into a diffusion LM with DiffusionTrainer                                   -> <work>/adapt
  scratch  the control: the same GPT-2 shape trained as a diffusion LM from scratch, same steps -> <work>/scratch
  measure  every table (hf_dlm.cli.bench)                                       -> benchmarks/results/<preset>.json
  plots    PNG figures                                                      -> docs/img/ (full) or <work>/img
  report   the Markdown tables                                              -> benchmarks/results/<preset>.md

    python benchmarks/run.py --preset smoke --work /tmp/smoke      # the whole pipeline in seconds (CI)
    python benchmarks/run.py --preset full --stages measure plots  # re-measure the trained models
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the stage modules are siblings of this script

STAGES = ("ar", "adapt", "scratch", "measure", "plots", "report")


def _typed(text: str):
    """'0.5' -> 0.5, '3' -> 3, 'true' -> True, 'none' -> None, anything else stays a string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def parse_overrides(items: list[str]) -> dict:
    """`["diffusion_steps=7500", "ar_lr=3e-3"]` -> typed values, by the type of the preset field's default."""
    from dataclasses import fields

    from config import Preset

    types = {f.name: type(f.default) for f in fields(Preset) if f.name not in ("name", "extra")}
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {sorted(types)}")
        kind = types[key]
        try:
            if key == "tasks":
                overrides[key] = tuple(value.split(","))
            elif key == "diffusion_args":  # diffusion_args=block_rows=0.5,eos_always_masked=true
                pairs = [pair.split("=", 1) for pair in value.split(",") if pair]
                if any(len(pair) != 2 for pair in pairs):
                    raise ValueError(value)
                overrides[key] = tuple((name, _typed(text)) for name, text in pairs)
            elif kind is tuple:
                overrides[key] = tuple(int(v) if v.lstrip("-").isdigit() else float(v) for v in value.split(","))
            else:
                overrides[key] = kind(value)
        except ValueError:
            raise SystemExit(f"--set {item!r}: {value!r} is not a valid {kind.__name__} for {key}") from None
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="full", help="full | smoke (benchmarks/config.py)")
    parser.add_argument("--work", type=Path, help="checkpoints directory (default benchmarks/checkpoints/<preset>)")
    parser.add_argument("--results", type=Path, help="results JSON (default benchmarks/results/<preset>.json)")
    parser.add_argument("--img", type=Path, help="plot directory (default docs/img for full, <work>/img otherwise)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--force", action="store_true", help="rerun stages whose output already exists")
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="override preset fields, e.g. --set diffusion_steps=7500 (needs --work; results and plots "
                        "then default to that directory, so the published full run is never overwritten)")
    parser.add_argument("--threads", type=int, help="torch threads of this process (default: torch's choice)")
    parser.add_argument("--parallel", action="store_true",
                        help="train the from-scratch control in a second process (one thread each) while the AR base "
                        "and then the adaptation train: the control is independent of both, and two small models use "
                        "two cores better than one model uses both")
    args = parser.parse_args(argv)

    import datasets
    import transformers
    from config import get_preset

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    overrides = parse_overrides(args.set)
    if overrides and args.work is None:
        parser.error("--set needs --work (a directory for the modified run's checkpoints and results)")
    preset = get_preset(args.preset, **overrides, **({"extra": {"overrides": args.set}} if overrides else {}))
    work = args.work or HERE / "checkpoints" / preset.name
    results = args.results or (work / "results.json" if overrides else HERE / "results" / f"{preset.name}.json")
    img = args.img or (HERE.parent / "docs" / "img" if preset.name == "full" and not overrides
                       else work / "img")
    work.mkdir(parents=True, exist_ok=True)

    def needed(stage: str, output: Path) -> bool:
        if stage not in args.stages:
            return False
        if output.exists() and not args.force:
            print(f"== {stage}: {output} exists, skipped (--force reruns it)", flush=True)
            return False
        print(f"== {stage} -> {output}", flush=True)
        return True

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    side, threads = None, torch.get_num_threads()
    if args.parallel and needed("scratch", work / "scratch" / "train_log.json"):
        command = [sys.executable, __file__, "--preset", preset.name, "--work", str(work), "--stages", "scratch",
                   "--threads", "1"] + (["--force"] if args.force else []) + (["--set", *args.set] if args.set else [])
        side = subprocess.Popen(command)
        torch.set_num_threads(1)
    if needed("ar", work / "ar" / "train_log.json"):
        from train_ar import train_ar

        train_ar(preset, work)
    for init in ("adapt", "scratch"):
        if init == "scratch" and side is not None:
            # The control trained in its own process alongside the AR base and the adaptation.
            if side.wait() != 0:
                raise SystemExit(f"the scratch stage failed (exit {side.returncode}); its output is above")
            torch.set_num_threads(threads)
            continue
        if needed(init, work / init / "train_log.json"):
            from train_diffusion import train_diffusion

            train_diffusion(preset, work, init)
    if needed("measure", results):
        from measure import measure

        measure(preset, work, results)
    if "plots" in args.stages:
        from plots import make_plots

        print(f"== plots -> {img}", flush=True)
        make_plots(results, img)
    if "report" in args.stages:
        from report import write_report

        report = results.with_suffix(".md")
        print(f"== report -> {report}", flush=True)
        write_report(results, report, img)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
