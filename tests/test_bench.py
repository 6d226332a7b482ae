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
    methods = {row["method"] for table in data["tables"].values() for row in table.get("results", [])}
    assert {"fixed", "grow", "predict"} <= methods
    assert list((tmp_path / "img").glob("*.png"))
    assert results.with_suffix(".md").read_text().strip()
