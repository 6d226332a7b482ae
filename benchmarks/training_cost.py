"""What does a `DiffusionTrainer` step cost against transformers' `Trainer` training the same model on the same
rows with the next-token loss? (docs/benchmarks.md, "Training cost")

Both train the suite's AR base (benchmarks/checkpoints/<preset>/ar; a fresh GPT-2 of the preset's shape if it is
absent) on the suite's rows, `--rows` per step, one thread. Settings run in interleaved rounds (AR, diffusion,
variants, AR, ...), each round `--steps` optimizer steps after `--warmup`; the table gives the median seconds per
step, its ratio to AR's, the positions each forward computes (rows x length, all forwards of the step) and the
targets (positions that carry loss), and for the diffusion settings where the time goes: the data step
(`get_batch_samples`: EOS fill, block rows), the noise, the forwards and the rest (backward, optimizer).

    python benchmarks/training_cost.py --out benchmarks/results/training_cost.json
    python benchmarks/training_cost.py --variant complementary=complementary_masks=True \\
        --variant one_block=all_blocks=False --variant causal_prefix=attention=causal_prefix,ar_loss_weight=1

`attention=causal_prefix` in a variant adapts with `DiffusionLM.from_causal_lm(..., attention="causal_prefix")`
(two-stream rows); every other field is a `DiffusionTrainingArguments` field.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DEFAULT_VARIANTS = (
    "one_forward=length_groups=1",  # the default's rows in one padded forward (before length groups)
    "one_block=all_blocks=False",  # one random block per block row (the default before all_blocks)
    "complementary=complementary_masks=True",
    "all_masked=all_masked_rows=0.25",
    "causal_prefix_ar=attention=causal_prefix,ar_loss_weight=1.0",
)


class Clock:
    """Seconds spent inside wrapped callables, per name, since the last `reset`."""

    def __init__(self):
        self.spent: dict[str, float] = {}

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - start
        return timed

    def reset(self):
        self.spent = {}


def parse_variant(text: str) -> tuple[str, dict]:
    from run import _typed

    name, _, fields = text.partition("=")
    if not fields:
        raise SystemExit(f"--variant {text!r}: write NAME=FIELD=VALUE[,FIELD=VALUE...]")
    pairs = [item.split("=", 1) for item in fields.split(",")]
    return name, {k: _typed(v) for k, v in pairs}


def build(setting: str, options: dict, preset, ar_dir: Path | None, work: Path, steps: int, rows: int, clock: Clock):
    """A trainer of `steps` steps for `setting` ("ar" or a diffusion setting with `options`) and the per-step
    records its callback fills."""
    from common import base_tokenizer, fresh_gpt2, task_dataset
    from train_ar import CausalCollator, training_arguments
    from train_diffusion import diffusion_arguments
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    from hf_dlm import DiffusionLM, DiffusionTrainer, DiffusionTrainingArguments
    from hf_dlm.data import prepare_dataset

    records: list[dict] = []
    shapes: list[tuple[int, int]] = []

    class StepTimer(TrainerCallback):
        # The Trainer fetches and collates a step's batches (get_batch_samples) before on_step_begin: a step is
        # timed from the previous step's end, so its data work counts, for AR and diffusion alike.
        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            end = time.perf_counter()
            records.append({"seconds": end - self.start, "phases": dict(clock.spent),
                            "positions": sum(b * n for b, n in shapes)})
            clock.reset()
            shapes.clear()
            self.start = end

    if ar_dir is not None and (ar_dir / "config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(ar_dir)
        causal = AutoModelForCausalLM.from_pretrained(ar_dir, attn_implementation="sdpa")
    else:
        tokenizer = base_tokenizer()
        causal = fresh_gpt2(preset, len(tokenizer), tokenizer)
    examples = task_dataset(preset, "train", n=rows * steps).remove_columns("task")  # the rows the steps see
    common = training_arguments(preset, work / setting, steps, preset.diffusion_lr, rows) | {"logging_steps": steps}
    if setting == "ar":
        model = causal
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=prepare_dataset(
                              examples, tokenizer, max_length=preset.row_length, packing=False),
                          data_collator=CausalCollator(tokenizer.pad_token_id), callbacks=[StepTimer()])
    else:
        options = dict(options)
        model = DiffusionLM.from_causal_lm(causal, tokenizer, attention=options.pop("attention", "bidirectional"))
        fields = diffusion_arguments(preset, work / setting).to_dict() | common
        fields = {k: v for k, v in fields.items() if k in DiffusionTrainingArguments.__dataclass_fields__
                  and DiffusionTrainingArguments.__dataclass_fields__[k].init}
        fields |= {"anneal_steps": 0} | options  # annealing is a schedule over steps, not a cost per step
        trainer = DiffusionTrainer(model=model, args=DiffusionTrainingArguments(**fields),
                                   train_dataset=examples,
                                   processing_class=model.tokenizer, callbacks=[StepTimer()])
        trainer.get_batch_samples = clock.wrap("data", trainer.get_batch_samples)
        noise_call = clock.wrap("noise", type(trainer.noise).__call__)
        # __call__ is looked up on the type: give this instance a subclass whose __call__ is timed.
        trainer.noise.__class__ = type("TimedNoise", (type(trainer.noise),), {"__call__": noise_call})
        trainer.compute_loss = clock.wrap("loss (noise + forwards)", trainer.compute_loss)
    model.register_forward_pre_hook(
        lambda _, args, kwargs: shapes.append(tuple((kwargs.get("input_ids") if "input_ids" in kwargs else args[0]).shape)),
        with_kwargs=True)
    return trainer, records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="full")
    parser.add_argument("--ar", type=Path, help="the AR base (default benchmarks/checkpoints/<preset>/ar)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/hf_dlm_training_cost"))
    parser.add_argument("--rows", type=int, help="rows per step (default: the preset's)")
    parser.add_argument("--steps", type=int, default=12, help="measured steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="steps per round left out of the timing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", action="append", default=None, metavar="NAME=FIELD=VALUE[,FIELD=VALUE]",
                        help="a diffusion setting beside the defaults (repeatable; default: the signal options)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch
    from common import ar_base_dir, quiet_torch, write_json
    from config import get_preset

    quiet_torch(args.threads)
    preset = get_preset(args.preset)
    ar_dir = ar_base_dir(args.ar, args.preset)
    rows = args.rows or preset.diffusion_rows_per_step
    settings = {"ar": {}, "diffusion": {}} | dict(parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS))
    measured: dict[str, list[dict]] = {name: [] for name in settings}
    clock = Clock()
    for round_ in range(args.rounds):
        for name, options in settings.items():
            torch.manual_seed(round_)
            trainer, records = build(name, options, preset, ar_dir, args.work, args.warmup + args.steps, rows, clock)
            trainer.train()
            measured[name] += records[args.warmup:]
            print(f"round {round_} {name}: {statistics.median(r['seconds'] for r in records[args.warmup:]):.3f} s/step",
                  flush=True)

    ar_seconds = statistics.median(r["seconds"] for r in measured["ar"])
    table = {}
    for name, records in measured.items():
        seconds = statistics.median(r["seconds"] for r in records)
        phases = {}
        for phase in sorted({p for r in records for p in r["phases"]}):
            phases[phase] = statistics.median(r["phases"].get(phase, 0.0) for r in records)
        table[name] = {"options": settings[name], "seconds_per_step": seconds, "ratio_to_ar": seconds / ar_seconds,
                       "seconds_per_row": seconds / rows,
                       "positions_per_step": statistics.median(r["positions"] for r in records),
                       "phases": phases}
    payload = {"preset": args.preset, "ar": str(ar_dir), "rows_per_step": rows, "steps_per_round": args.steps,
               "rounds": args.rounds, "threads": args.threads, "settings": table}
    for name, row in table.items():
        print(f"{name:>14}: {row['seconds_per_step']:.3f} s/step  {row['ratio_to_ar']:.2f}x AR  "
              f"{row['positions_per_step']:.0f} positions/step  " +
              "  ".join(f"{k} {v:.3f}" for k, v in row["phases"].items()))
    if args.out:
        write_json(args.out, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
