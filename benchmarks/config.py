"""Benchmark presets: one place for model size, data, training steps and what to measure.

`full` is what `make bench` runs (sized for ~45 minutes on 2 CPU cores); `smoke` runs the same pipeline with tiny
numbers in well under a minute (tests/test_bench.py, `make bench-smoke`): it proves the pipeline works, its numbers
mean nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class Preset:
    name: str
    # --- model: GPT-2 shape. positions must hold prompt (<= 70 chars) + the largest budget (1024).
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    positions: int = 1152
    # --- data (benchmarks/tasks.py): one example per training row, so every prompt starts at position 0 as it does at
    # decoding time (a GPT-2 has learned absolute positions: on rows packed with several examples, a 900-step probe of
    # the AR base learnt nothing, 0/96 exact; one example per row, 2500 steps: 24%). The diffusion rows are EOS-filled
    # to `row_length` (LLaDA's SFT padding), which covers prompt (<= 69 tokens) + the main budget (128): every canvas
    # position the accuracy tables read is trained. Budgets beyond it (the scaling table's 256-1024) read position
    # embeddings no run trained: they measure cost, and fixed-length accuracy there means nothing (docs/benchmarks.md
    # says so next to the numbers).
    seed: int = 0
    n_train: int = 150_000
    n_test: int = 512
    row_length: int = 208
    # --- training: the two diffusion runs take the same number of optimizer steps, rows per step and schedule (the
    # adapted-vs-scratch comparison); the AR base has its own budget. Sized for the ~45-minute budget of `make bench`
    # on 2 CPU cores, not for convergence: the tasks are learnt partly (sorting and short answers well, reversal and
    # addition poorly), the same data for every model compared.
    ar_steps: int = 2500
    ar_rows_per_step: int = 32
    diffusion_steps: int = 2500
    diffusion_rows_per_step: int = 16  # EOS-filled rows are ~3x longer than the AR rows (208 tokens against ~60)
    ar_lr: float = 1e-3
    diffusion_lr: float = 1e-3
    warmup_steps: int = 50
    # --- measurement (hf_dlm.cli.bench)
    block_length: int = 16
    batch_size: int = 16
    main_budget: int = 128  # the accuracy table; ~5x the mean answer (24 tokens), ~8x the median (17)
    thresholds: tuple[float, ...] = (0.9, 0.7)
    budgets: tuple[int, ...] = (64, 128, 256, 512, 1024)
    n_accuracy: int = 192  # prompts of the accuracy tables (every cheap setting)
    n_speed: int = 32  # prompts of the table against traditional fixed-length decoding (one token per step)
    n_scaling: int = 16  # prompts per budget of the budget-scaling run
    traditional_budgets: tuple[int, ...] = (64, 128, 256)  # one token per step at 1024 would take ~an hour here
    n_latency: int = 24  # prompts decoded one at a time (batch 1) for the answer-length scaling
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "full": Preset("full"),
    "smoke": Preset(
        "smoke", hidden=32, layers=2, heads=2, positions=192, n_train=400, n_test=16, row_length=192,
        ar_steps=4, diffusion_steps=4, ar_rows_per_step=2, diffusion_rows_per_step=2, warmup_steps=0, block_length=8, batch_size=8,
        main_budget=64, thresholds=(0.9,), budgets=(32, 64), n_accuracy=8, n_speed=4, n_scaling=4,
        traditional_budgets=(32,), n_latency=4,
    ),
}


def get_preset(name: str, **overrides) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose from {sorted(PRESETS)}.")
    return replace(PRESETS[name], **overrides)
