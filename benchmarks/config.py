"""Benchmark presets: one place for model size, data, training steps and what to measure.

`full` is what `make bench` runs (sized for <= 45 minutes on 2 CPU cores); `smoke` runs the same pipeline with tiny
numbers in well under a minute (tests/test_bench.py, `make bench-smoke`): it proves the pipeline works, its numbers
mean nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class Preset:
    name: str
    # --- model: GPT-2 shape (~0.8M parameters). positions must hold prompt (<= 98 tokens) + the largest budget.
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    positions: int = 320
    # --- data (benchmarks/tasks.py): word tokens, answers of 1-48 tokens (median 12), one example per training row, so
    # every prompt starts at position 0 as it does at decoding time (a GPT-2 has learned absolute positions).
    # `row_length` is DiffusionTrainer's max_length: the default padding="random" EOS-fills each row to a random length
    # up to it, which covers prompt (<= 98 tokens, typically <= 50) + the speed budget (96): every canvas position the
    # accuracy and speed tables read is trained. The 192 budget of the scaling table reads positions past it: it
    # measures cost.
    seed: int = 0
    n_train: int = 60_000
    n_test: int = 512
    row_length: int = 160
    # --- training: the two diffusion runs take the same number of optimizer steps, rows per step and schedule (the
    # adapted-vs-scratch comparison); the AR base has the same budget of steps and rows. Every DiffusionTrainer argument
    # not set in train_diffusion.py is the library's default (the benchmark is the defaults' regression check).
    # Sizing (an estimate: not yet run end to end on an idle machine, docs/benchmarks.md says what was run): on the
    # shared machine an AR step of 32 rows took 1.16 s of wall time at roughly a quarter of a core (~0.3 core-s) and
    # a diffusion step of 16 random-length rows 1.3 s at roughly a third (~0.4 core-s). With --parallel at one thread
    # per process: AR (~15 min) then adaptation (~10 min) in one process, the scratch control (~10 min) in the other,
    # then the measurements (~10 min for models that end their answers; far longer for ones that do not).
    ar_steps: int = 3000
    ar_rows_per_step: int = 32
    diffusion_steps: int = 1500
    diffusion_rows_per_step: int = 16
    ar_lr: float = 2e-3
    diffusion_lr: float = 1e-3
    warmup_steps: int = 100
    # --- measurement (hf_dlm.cli.bench)
    block_length: int = 8
    batch_size: int = 16
    main_budget: int = 64  # the accuracy table: holds the longest answer (48) + EOS; ~5x the median answer (12)
    speed_budget: int = 96  # the target ratios: 8x the median answer
    thresholds: tuple[float, ...] = (0.9, 0.7)  # one token per step is added to the main table
    budgets: tuple[int, ...] = (24, 48, 96, 192)  # 2x-16x the median answer
    n_accuracy: int = 256  # prompts of the accuracy tables (64 per task)
    n_speed: int = 64  # prompts of the batch-16 speed table
    n_latency: int = 32  # prompts decoded one at a time (batch 1)
    n_scaling: int = 32  # prompts per budget of the budget-scaling run
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "full": Preset("full"),
    # What this session could run on a 2-core machine shared with other jobs (docs/benchmarks.md labels its numbers as
    # such): the AR base of the learnability probe (800 steps at lr 1e-3), a quarter of the diffusion steps, and
    # few prompts per table (an under-trained model runs most answers to the budget, which makes every table slow).
    "reduced": Preset(
        "reduced", ar_steps=800, ar_lr=1e-3, warmup_steps=50, diffusion_steps=400, n_accuracy=48, n_speed=16,
        n_latency=6, n_scaling=8,
    ),
    "smoke": Preset(
        "smoke", hidden=32, layers=2, heads=2, positions=192, n_train=400, n_test=16, row_length=128,
        ar_steps=4, diffusion_steps=4, ar_rows_per_step=2, diffusion_rows_per_step=2, warmup_steps=0, block_length=8,
        batch_size=4, main_budget=16, speed_budget=16, thresholds=(0.9,), budgets=(8, 16), n_accuracy=4, n_speed=4,
        n_scaling=2, n_latency=1,
    ),
}


def get_preset(name: str, **overrides) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose from {sorted(PRESETS)}.")
    return replace(PRESETS[name], **overrides)
