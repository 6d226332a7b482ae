"""One forward that drafts and verifies, on the benchmark suite: a gated drafter of the suite's AR base (issue 23).

Needs the AR checkpoint of `benchmarks/run.py` (stage `ar`). Two stages:

  train    `DiffusionLM.from_causal_lm(ar, tokenizer, drafter="gated_lora")` trained by `DiffusionTrainer` on the
           suite's training examples (the AR base answers them as the references do, 99.2% exact: they are its own
           answers) -> <work>/gated
  measure  one process, settings interleaved batch by batch (`hf_dlm.cli.bench.run`): AR `generate` and the
           gated drafter at each --draft-lengths, at each --batch-sizes; exact %, tokens per forward, wall time and
           the ratio to AR, accepted drafts per draft position, and whether every answer equals AR's. Also the cost
           of one forward over 2k+1 positions against one over 1 position (the bound on what drafting can buy here).

    python benchmarks/run.py --preset full --stages ar                        # the AR base (~18 min on 2 cores)
    python benchmarks/gated_drafter.py --preset full                          # train (~13 min) + measure
    python benchmarks/gated_drafter.py --preset smoke --work /tmp/smoke --out /tmp/smoke/gated.json

Writes benchmarks/results/gated_<preset>.{json,md} (or --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the stage modules are siblings of this script


def train(preset, work: Path, steps: int, rows_per_step: int, draft_length: int, rank: int, lr: float,
          draft_cuts: int | None, more: bool = False) -> Path:
    from common import Stopwatch, task_dataset, write_json
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_dlm import DiffusionLM, DiffusionTrainer, DiffusionTrainingArguments

    previous = None
    if more:  # continue the saved drafter: its adapter, rank and attention; the log gains these steps
        model = DiffusionLM.from_pretrained(work / "gated")
        tokenizer = AutoTokenizer.from_pretrained(work / "gated")
        previous = json.loads((work / "gated" / "train_log.json").read_text())
    else:
        causal = AutoModelForCausalLM.from_pretrained(work / "ar", attn_implementation="sdpa")
        tokenizer = AutoTokenizer.from_pretrained(work / "ar")
        model = DiffusionLM.from_causal_lm(causal, tokenizer, drafter="gated_lora", drafter_rank=rank)
    args = DiffusionTrainingArguments(
        output_dir=str(work / "gated-run"), max_steps=steps, per_device_train_batch_size=rows_per_step,
        learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=min(50, steps // 10), weight_decay=0.0,
        max_length=preset.row_length, draft_length=draft_length, draft_cuts=draft_cuts, logging_steps=25, save_strategy="no",
        report_to=[], use_cpu=True, seed=preset.seed, dataloader_num_workers=0,
    )
    trainer = DiffusionTrainer(model=model, args=args, train_dataset=task_dataset(preset, "train").remove_columns("task"),
                               processing_class=tokenizer)
    clock = Stopwatch()
    trainer.train()
    path = work / "gated"
    model.save_pretrained(path)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    log = {"stage": "gated", "steps": steps, "rows_per_step": rows_per_step, "seconds": clock.seconds,
           "losses": losses, "draft_length": draft_length, "rank": model.config.drafter_rank, "learning_rate": lr,
           "draft_cuts": draft_cuts}
    if previous is not None:
        log["runs"] = previous.get("runs", [previous]) + [dict(log)]
        log["steps"] = sum(run["steps"] for run in log["runs"])
        log["seconds"] = sum(run["seconds"] for run in log["runs"])
    write_json(path / "train_log.json", log)
    return path


def acceptance_by_position(answers, draft_length: int) -> list[float]:
    """Share of rounds whose j-th draft was kept, j = 1..k (rounds with at least j drafts proposed are not known
    per round here, so this counts rounds with drafts: a kept count >= j means the j-th was kept)."""
    kept = [a for answer in answers for a in answer.extra["accepted"]]
    if not kept:
        return [0.0] * draft_length
    return [sum(a >= j for a in kept) / len(kept) for j in range(1, draft_length + 1)]


def gated_settings(budget: int, draft_lengths, predraft_lengths, ar_block: int = 1) -> list:
    """AR `generate`, then the gated drafter at each draft length, with and without pre-drafts."""
    from hf_dlm.cli.bench import Setting

    return ([Setting("ar", budget, None, True, ar_block)]
            + [Setting("gated", budget, None, True, k) for k in draft_lengths]
            + [Setting("gated_predraft", budget, None, True, k) for k in predraft_lengths])


def measure_against_ar(settings, model, tokenizer, records, ar, batch_sizes, acceptance_batch: int = 16) -> list[dict]:
    """Every setting at every batch size, interleaved batch by batch (`hf_dlm.cli.bench.run`), with the ratio to AR
    (`vs_ar`: AR seconds / these), the share of answers equal to AR's (`agree_ar`), and, from an untimed pass that
    keeps each round's counts, the drafts kept by position and per round."""
    from hf_dlm.cli.bench import run
    from hf_dlm.evaluation import answer_gated

    results = []
    for batch_size in batch_sizes:
        measured = run(settings, model, tokenizer, records, ar_model=ar, batch_size=batch_size,
                       progress=lambda msg, b=batch_size: print(f"[batch {b}] {msg}", file=sys.stderr, flush=True))
        base = next(r for r in measured if r["method"] == "ar")
        for r in measured:
            r["batch_size"] = batch_size
            r["vs_ar"] = base["seconds"] / r["seconds"]
            r["agree_ar"] = statistics.fmean(a == b for a, b in zip(r["answers"], base["answers"]))
            print(f"[batch {batch_size}] {r['setting']}: {r.get('accuracy', float('nan')):.3f} exact, same as AR "
                  f"{r['agree_ar']:.3f}, {r['tokens_per_forward']:.2f} tokens/forward, {r['vs_ar']:.2f}x AR",
                  file=sys.stderr, flush=True)
        results += measured
    prompts = [r["prompt"] for r in records]
    budget = settings[0].budget
    for r in results:
        if r["method"] in ("gated", "gated_predraft"):
            answers = answer_gated(model, tokenizer, prompts, max_new_tokens=budget, draft_length=r["block_length"],
                                   batch_size=acceptance_batch, predraft=r["method"] == "gated_predraft")
            r["acceptance_by_position"] = acceptance_by_position(answers, r["block_length"])
            kept = [a for answer in answers for a in answer.extra["accepted"]]
            r["kept_per_round"] = statistics.fmean(kept) if kept else 0.0
    return results


def round_shapes(draft_lengths, predraft_lengths) -> dict[int, int]:
    """{positions in a round's forward: masks among them}: one position (an AR step), 2k+1 (k drafts + k masks after
    the pending token), (k+1)^2 with pre-drafts (k+1 blocks of k masks)."""
    shapes = {1: 0}
    shapes.update({2 * k + 1: k for k in draft_lengths})
    shapes.update({(k + 1) ** 2: k * (k + 1) for k in predraft_lengths})
    return dict(sorted(shapes.items()))


def forward_cost(model, shapes: dict[int, int], prefix: int = 64, repeats: int = 20) -> dict:
    """Milliseconds of one forward of q new positions (the last `shapes[q]` of them masks, so the gated adapter runs
    as in a round) against a cache of `prefix` positions, for each q."""
    import torch
    from transformers.cache_utils import DynamicCache

    longest = max(shapes)
    ids = torch.randint(0, model.config.drafter_base_vocab_size or 100, (1, prefix + longest))
    result = {}
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)  # warm-up: lazy initialisation is paid once, untimed
        for _ in range(2):
            for q, masks in shapes.items():  # interleaved rounds: load changes hit every q alike
                new = ids[:, prefix : prefix + q].clone()
                if masks:
                    new[:, -masks:] = model.config.mask_token_id
                times = []
                for _ in range(repeats):
                    cache = DynamicCache()
                    model(input_ids=ids[:, :prefix], cache=cache, use_cache=True, logits_to_keep=1)
                    start = time.perf_counter()
                    model(input_ids=new, cache=cache, use_cache=True, shift_logits=False)
                    times.append(time.perf_counter() - start)
                result.setdefault(q, []).append(statistics.median(times) * 1000)
    return {q: min(v) for q, v in result.items()}


def markdown(results: list[dict], cost: dict) -> str:
    lines = ["| batch | decoding | exact % | same answer as AR | tokens/forward | kept per draft position | "
             "ms/answer | speed x AR |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        accept = ", ".join(f"{a:.2f}" for a in r.get("acceptance_by_position", [])) or "-"
        lines.append(f"| {r['batch_size']} | {r['setting']} | {100 * r['accuracy']:.1f} | {100 * r['agree_ar']:.1f}% | "
                     f"{r['tokens_per_forward']:.2f} | {accept} | {r['ms_per_answer']:.1f} | {r['vs_ar']:.2f}x |")
    one = cost[1]
    lines += ["", "| positions in the forward (cache of 64) | ms | x one position |", "|---|---|---|"]
    lines += [f"| {q} | {ms:.2f} | {ms / one:.2f} |" for q, ms in cost.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--work", type=Path, default=None, help="checkpoints (default benchmarks/checkpoints/<preset>)")
    parser.add_argument("--stages", nargs="+", choices=["train", "measure"], default=["train", "measure"])
    parser.add_argument("--force", action="store_true", help="train again even if <work>/gated exists")
    parser.add_argument("--more", action="store_true",
                        help="train the saved <work>/gated drafter for --train-steps more steps (a new schedule)")
    parser.add_argument("--train-steps", type=int, default=None, help="default: 800 (the preset's diffusion_steps for "
                        "presets other than full)")
    parser.add_argument("--rows-per-step", type=int, default=None, help="default: the preset's diffusion rows")
    parser.add_argument("--train-draft-length", type=int, default=4)
    parser.add_argument("--train-draft-cuts", type=int, default=24,
                        help="cuts per training row (a random subset; each costs --train-draft-length positions)")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--draft-lengths", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--predraft-lengths", nargs="*", type=int, default=[],
                        help="draft lengths also measured with pre-drafts (a block per outcome, TiDAR)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--n", type=int, default=None, help="test prompts (default: the preset's n_accuracy)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch
    from common import task_dataset, write_json
    from config import get_preset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_dlm import DiffusionLM

    torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    work = args.work or HERE / "checkpoints" / args.preset
    if not (work / "ar" / "config.json").is_file():
        parser.error(f"{work / 'ar'} holds no checkpoint: python benchmarks/run.py --preset {args.preset} --stages ar")
    gated = work / "gated"
    if "train" in args.stages and (args.force or args.more or not (gated / "config.json").is_file()):
        default_steps = 800 if args.preset == "full" else preset.diffusion_steps
        train(preset, work, args.train_steps or default_steps,
              args.rows_per_step or preset.diffusion_rows_per_step, args.train_draft_length, args.rank,
              args.learning_rate, args.train_draft_cuts, more=args.more and (gated / "config.json").is_file())
    if "measure" not in args.stages:
        return 0
    ar = AutoModelForCausalLM.from_pretrained(work / "ar").eval()
    tokenizer = AutoTokenizer.from_pretrained(gated)
    model = DiffusionLM.from_pretrained(gated).eval()
    records = task_dataset(preset, "test").to_list()[: args.n or preset.n_accuracy]
    settings = gated_settings(preset.main_budget, args.draft_lengths, args.predraft_lengths, preset.block_length)
    results = measure_against_ar(settings, model, tokenizer, records, ar, args.batch_sizes)
    cost = forward_cost(model, round_shapes(args.draft_lengths, args.predraft_lengths))
    out = args.out or HERE / "results" / f"gated_{args.preset}.json"
    table = markdown(results, cost)
    write_json(out, {"preset": preset.to_dict(), "results": results, "forward_ms": cost,
                     "train_log": str(gated / "train_log.json")})
    out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
