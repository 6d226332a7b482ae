"""The benchmark pipeline in its smoke form (tiny steps): every stage runs and writes its outputs. Its numbers mean
nothing; `make bench` produces the real ones."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_pipeline_runs_end_to_end(tmp_path):
    results = tmp_path / "results.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--preset", "smoke", "--work", str(tmp_path / "work"),
         "--results", str(results), "--img", str(tmp_path / "img")],
        check=True, cwd=ROOT, timeout=600,
    )
    data = json.loads(results.read_text())
    assert set(data["tables"]) == {"models", "main", "speed", "latency", "budgets"}
    methods = {row["method"] for table in data["tables"].values() for row in table.get("results", [])}
    assert {"fixed", "grow", "predict", "ar"} <= methods
    main = data["tables"]["main"]["results"]
    assert {(r["threshold"], r["use_cache"]) for r in main if r["method"] == "grow"} == {
        (0.9, True), (0.9, False), (None, True), (None, False)}  # thresholds and one token per step, cache on/off
    assert data["tables"]["latency"]["batch_size"] == 1
    assert len(list((tmp_path / "img").glob("*.png"))) == 4
    report = results.with_suffix(".md").read_text()
    assert "### Targets" in report and "bound covers the true length" in report

    # Draft and verify on the same checkpoints: the AR base's answers, whatever the (untrained) drafter proposes.
    spec = tmp_path / "speculative.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speculative.py"), "--preset", "smoke", "--work",
         str(tmp_path / "work"), "--draft-lengths", "2", "5", "--out", str(spec)],
        check=True, cwd=ROOT, timeout=600,
    )
    rows = json.loads(spec.read_text())["tables"]["work/adapt"]
    ar = next(r for r in rows if r["method"] == "ar")
    drafts = [r for r in rows if r["method"] == "speculative"]
    assert [r["block_length"] for r in drafts] == [2, 5]
    for r in drafts:
        assert r["answers"] == ar["answers"] and r["accuracy"] == ar["accuracy"]
        assert r["setting"] == f"draft {r['block_length']} + AR verify"
    assert "draft 5 + AR verify" in spec.with_suffix(".md").read_text()

    # A gated drafter of the same AR base, trained a few steps, then one forward per round: AR's answers again.
    gated = tmp_path / "gated.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gated_drafter.py"), "--preset", "smoke", "--work",
         str(tmp_path / "work"), "--train-steps", "3", "--draft-lengths", "2", "--predraft-lengths", "2",
         "--batch-sizes", "1", "4", "--out", str(gated)],
        check=True, cwd=ROOT, timeout=600,
    )
    measured = json.loads(gated.read_text())
    assert (tmp_path / "work" / "gated" / "config.json").is_file()
    for batch in (1, 4):
        rows = [r for r in measured["results"] if r["batch_size"] == batch]
        ar = next(r for r in rows if r["method"] == "ar")
        assert {r["method"] for r in rows} == {"ar", "gated", "gated_predraft"}
        assert all(r["answers"] == ar["answers"] and r["agree_ar"] == 1.0 for r in rows)
    assert set(measured["forward_ms"]) == {"1", "5", "9"}

    # Issue 24's scripts on the same AR base: a two-point learning curve (block diffusion with a causal context and the
    # AR term, the recipe of the curve's best runs), a cooldown from its first point kept on disk, that model decoded
    # again with the decided prefix as context, the report over all of it; then the training cost table (AR Trainer
    # beside DiffusionTrainer settings).
    curve = tmp_path / "curve.json"
    ar = str(tmp_path / "work" / "ar")
    base = [sys.executable, str(ROOT / "benchmarks" / "learning_curve.py"), "--preset", "smoke", "--ar", ar,
            "--work", str(tmp_path / "curve"), "--n-test", "2", "--anneal-steps", "0", "--attention", "causal_prefix",
            "--arg", "ar_loss_weight=10"]
    subprocess.run([*base, "--points", "0.5,1", "--out", str(curve)], check=True, cwd=ROOT, timeout=600)
    points = json.loads(curve.read_text())["points"]
    assert [p["steps"] for p in points] == [2, 4]
    assert set(points[0]["results"]) == {"fixed", "grow", "predict"}
    cooled = tmp_path / "cooldown.json"
    subprocess.run([*base, "--cooldown-from", str(tmp_path / "curve" / "run" / "checkpoint-2"), "--cooldown-steps",
                    "1", "--keep-cooldown", "--out", str(cooled)], check=True, cwd=ROOT, timeout=600)
    assert json.loads(cooled.read_text())["cooldowns"][0]["from_steps"] == 2
    subprocess.run([*base, "--decode-from", str(tmp_path / "curve" / "cooldown-2-1"), "--unmasking", "left_to_right",
                    "--decided-as-context", "--out", str(cooled)], check=True, cwd=ROOT, timeout=600)
    decode = json.loads(cooled.read_text())["decodes"][0]
    assert (decode["steps"], decode["cooldown_steps"], decode["decoding"]["decided_as_context"]) == (3, 1, True)
    report = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "curve_report.py"), str(curve), str(cooled),
                             "--plot", str(tmp_path / "curve.png")], check=True, cwd=ROOT, timeout=600,
                            capture_output=True, text=True).stdout
    assert "left_to_right, decided as context" in report and (tmp_path / "curve.png").exists()
    # The causal-prefix preset's adaptation stage on the same AR base: its attention, AR term and decoding reach the
    # saved model (the tables take their other settings from its generation config).
    code = ("import sys; from pathlib import Path; sys.path.insert(0, 'benchmarks'); from config import get_preset; "
            "from train_diffusion import train_diffusion; "
            "p = get_preset('causal_prefix', **{k: getattr(get_preset('smoke'), k) for k in ('hidden', 'layers', "
            "'heads', 'positions', 'n_train', 'n_test', 'row_length', 'ar_rows_per_step', 'diffusion_rows_per_step', "
            "'warmup_steps')}, diffusion_steps=2); "
            f"train_diffusion(p, Path({str(tmp_path / 'work')!r}), 'adapt')")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=600)
    adapted = tmp_path / "work" / "adapt"
    assert json.loads((adapted / "config.json").read_text())["attention"] == "causal_prefix"
    saved = json.loads((adapted / "generation_config.json").read_text())
    assert saved["decided_as_context"] is True and saved["unmasking"] == "left_to_right"
    retention = tmp_path / "retention.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ar_retention.py"), "--preset", "smoke", "--ar", ar,
                    "--work", str(tmp_path / "retention"), "--steps", "2", "--every", "1", "--n-test", "2",
                    "--variant", "w10=ar_loss_weight=10", "--variant", "w0=ar_loss_weight=0,lr=1e-5",
                    "--out", str(retention)], check=True, cwd=ROOT, timeout=600)
    variants = json.loads(retention.read_text())["variants"]
    assert [h["step"] for h in variants["w10"]["clean_stream"]] == [0, 1, 2] and variants["w0"]["lr"] == 1e-5
    assert variants["w0"]["diffusion_loss"]  # logged with or without the AR term
    cost = tmp_path / "cost.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "training_cost.py"), "--preset", "smoke", "--ar", ar,
                    "--work", str(tmp_path / "cost"), "--steps", "1", "--warmup", "1", "--rounds", "1",
                    "--variant", "one_block=all_blocks=False", "--out", str(cost)], check=True, cwd=ROOT, timeout=600)
    settings = json.loads(cost.read_text())["settings"]
    assert set(settings) == {"ar", "diffusion", "one_block"} and settings["ar"]["ratio_to_ar"] == 1.0


def test_predict_coverage_counts_bounds_at_or_above_the_true_length(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from report import predict_stats

    result = {"grew": 0.25, "predict_error": {"exact": 0.25},
              "per_answer": {"predicted_length": [3, 5, 9, 2], "true_length": [3, 4, 5, 6]}}
    stats = predict_stats(result)
    assert stats["coverage"] == 0.75 and stats["mean_slack"] == (0 + 1 + 4) / 3


def test_preset_overrides_are_typed_and_checked(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from run import parse_overrides

    assert parse_overrides(["diffusion_steps=7500", "ar_lr=3e-3", "thresholds=0.9,0.5", "budgets=64,128"]) == {
        "diffusion_steps": 7500, "ar_lr": 0.003, "thresholds": (0.9, 0.5), "budgets": (64, 128)}
    assert parse_overrides(["tasks=sort,copy", "diffusion_args=block_rows=0,eos_always_masked=true,t_min=0.1"]) == {
        "tasks": ("sort", "copy"),
        "diffusion_args": (("block_rows", 0), ("eos_always_masked", True), ("t_min", 0.1))}
    for bad, says in ((["bogus=1"], "FIELD=VALUE"), (["diffusion_steps"], "FIELD=VALUE"), (["extra=1"], "FIELD=VALUE"),
                      (["ar_steps=many"], "not a valid int"), (["diffusion_args=block_rows"], "diffusion_args")):
        try:
            parse_overrides(bad)
        except SystemExit as error:
            assert says in str(error)
        else:
            raise AssertionError(f"{bad} was accepted")
