# The README's commands install what they need; these targets assume the environment exists.
.PHONY: test test-fast bench bench-smoke lint

test:
	pytest -q

test-fast:
	pytest -q -m "not slow"

lint:
	ruff check .

# The whole benchmark pipeline (AR pretraining, adaptation, from-scratch control, measurements, plots, report).
bench:
	python benchmarks/run.py --preset full --parallel

bench-smoke:
	python benchmarks/run.py --preset smoke --work /tmp/hf_dlm_bench_smoke --results /tmp/hf_dlm_bench_smoke/results.json
