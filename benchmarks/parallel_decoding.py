"""Tokens per forward: does confidence training or self-distillation make an adapted model decode in parallel?

One run, one process, every ratio measured inside it (2 shared CPU cores: absolute timings are noisy):

1. AR base: a ~0.8M-parameter GPT-2 (char tokenizer) trained autoregressively on digit sorting
   (`sort:4930=` -> `0349`, 4-12 digits).
2. Three adaptations of that AR model with `DiffusionTrainer`, the same steps, rows per step and schedule:
   (a) `baseline`: the diffusion loss on the ground-truth answers (half the rows semi-AR block rows);
   (b) `confidence`: (a) + the confidence term (`confidence_loss_weight`, LLaDA 2.0's CAP);
   (c) `distill`: the AR base's own greedy answers to the same training prompts as targets
       (`hf_dlm.distill.build_distillation_dataset`, d3LLM's pseudo-trajectories from the AR teacher), every row a
       block row, the confidence term on (dParallel's certainty-forcing recipe, `DISTILLATION_ARGUMENTS`);
   (d) `self_distill` (not in the default set; needs `baseline`): the same with run (a)'s own answers as targets,
       decoded slowly (`grow`, one token per step: its best), as dParallel distils a model from its own trajectories.
3. Held-out prompts decoded at batch 1 with `length_strategy="grow"` at thresholds 0.9 and 0.7, by draft and verify
   (`hf_dlm.speculative`: the model drafts 8 tokens, the AR base keeps its own greedy answer; forwards = drafter's +
   verifier's) and by the AR base with `generate`, the settings interleaved prompt by prompt: exact match, tokens
   per forward, NFE, wall time and its ratio to AR `generate`.

    python benchmarks/parallel_decoding.py                  # ~20 minutes on 2 shared cores
    python benchmarks/parallel_decoding.py --preset smoke   # seconds: proves the pipeline, numbers mean nothing

Writes benchmarks/results/parallel_decoding.{json,md} (or --out DIR).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from datasets import Dataset

from hf_dlm import DiffusionLM, DiffusionTrainer, DiffusionTrainingArguments
from hf_dlm.adapt import DEFAULT_PAD_TOKEN
from hf_dlm.distill import DISTILLATION_ARGUMENTS, build_distillation_dataset
from hf_dlm.evaluation import answer_autoregressive, answer_diffusion, answer_speculative, summarize
from hf_dlm.testing import char_tokenizer, tiny_causal_lm


@dataclass(frozen=True)
class Preset:
    min_digits: int = 4
    max_digits: int = 12
    n_train: int = 8000  # the prompt pool every run trains on (ground truth or the AR base's answers)
    n_test: int = 150
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    ar_steps: int = 1000
    ar_lr: float = 2e-3
    diffusion_steps: int = 600
    diffusion_lr: float = 1e-3
    rows_per_step: int = 32
    row_length: int = 48  # prompt (<= 18) + answer (<= 12) + EOS, EOS-filled: covers grow's canvas (prompt + 24)
    block_length: int = 8  # training block rows and decoding blocks
    baseline_block_rows: float = 0.5
    confidence_loss_weight: float = 1.0
    strong_confidence_loss_weight: float = 3.0  # run `confidence_strong` (not in the default set of runs)
    thresholds: tuple[float, ...] = (0.9, 0.7)
    draft_lengths: tuple[int, ...] = (8,)  # draft and verify: each model drafts, the AR base verifies
    max_new_tokens: int = 24
    seed: int = 0
    keep_unfinished: bool = False  # the smoke preset's untrained AR base never ends an answer


PRESETS = {
    "full": Preset(),
    "smoke": Preset(n_train=64, n_test=6, hidden=32, layers=1, heads=2, ar_steps=3, diffusion_steps=2,
                    rows_per_step=8, thresholds=(0.9,), keep_unfinished=True),
}
RUNS = ("baseline", "confidence", "distill", "confidence_strong", "self_distill")
DEFAULT_RUNS = RUNS[:3]


# ----------------------------------------------------------------------------------------------- data
def example(rng: random.Random, preset: Preset) -> tuple[str, str]:
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(preset.min_digits, preset.max_digits)))
    return f"sort:{digits}=", "".join(sorted(digits))


def splits(preset: Preset) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    rng = random.Random(preset.seed)
    train = [example(rng, preset) for _ in range(preset.n_train)]
    seen = {p for p, _ in train}
    test = []
    while len(test) < preset.n_test:
        item = example(rng, preset)
        if item[0] not in seen:
            test.append(item)
            seen.add(item[0])
    return train, test


def tokenizer():
    tok = char_tokenizer()
    tok.add_special_tokens({"pad_token": DEFAULT_PAD_TOKEN})  # shared by the AR and the diffusion models
    return tok


# ----------------------------------------------------------------------------------------------- training
def train_ar(preset: Preset, tok, train) -> tuple[torch.nn.Module, dict]:
    """Next-token CE on answer + EOS (prompts are random digits: nothing to learn there), AdamW, cosine."""
    torch.manual_seed(preset.seed)
    model = tiny_causal_lm("gpt2", vocab_size=len(tok), hidden=preset.hidden, layers=preset.layers,
                           heads=preset.heads, positions=preset.row_length + 8,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model.config.pad_token_id = model.generation_config.pad_token_id = tok.pad_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=preset.ar_lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / preset.ar_steps)))
    rng = random.Random(preset.seed + 1)
    encoded = [(tok(p).input_ids, tok(c).input_ids + [tok.eos_token_id]) for p, c in train]
    tokens, start = 0, time.perf_counter()
    model.train()
    for step in range(preset.ar_steps):
        batch = [encoded[rng.randrange(len(encoded))] for _ in range(preset.rows_per_step)]
        width = max(len(p) + len(c) for p, c in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full_like(ids, -100)
        attention = torch.zeros_like(ids)
        for row, (p, c) in enumerate(batch):
            ids[row, : len(p) + len(c)] = torch.tensor(p + c)
            labels[row, len(p) : len(p) + len(c)] = torch.tensor(c)
            attention[row, : len(p) + len(c)] = 1
        tokens += int(attention.sum())
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if (step + 1) % 100 == 0:
            print(f"AR step {step + 1}: loss {loss.item():.3f}, {time.perf_counter() - start:.0f} s", file=sys.stderr,
                  flush=True)
    return model.eval(), {"steps": preset.ar_steps, "minutes": (time.perf_counter() - start) / 60,
                          "tokens_seen": tokens, "final_loss": loss.item()}


def train_diffusion(preset: Preset, ar_model, tok, data: Dataset, out: Path, **objective) -> tuple[DiffusionLM, dict]:
    model = DiffusionLM.from_causal_lm(copy.deepcopy(ar_model), copy.deepcopy(tok))
    args = DiffusionTrainingArguments(
        output_dir=str(out), max_steps=preset.diffusion_steps, per_device_train_batch_size=preset.rows_per_step,
        learning_rate=preset.diffusion_lr, lr_scheduler_type="cosine", warmup_steps=50, weight_decay=0.01,
        logging_steps=max(1, preset.diffusion_steps // 20), save_strategy="no", report_to=[], use_cpu=True,
        seed=preset.seed, disable_tqdm=True, dataloader_pin_memory=False, include_num_input_tokens_seen="all",
        max_length=preset.row_length, padding="max_length", block_length=preset.block_length,
        anneal_steps=preset.diffusion_steps // 10, **objective,
    )
    trainer = DiffusionTrainer(model=model, args=args, train_dataset=data, processing_class=model.tokenizer)
    start = time.perf_counter()
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    return model.eval(), {
        "steps": preset.diffusion_steps, "minutes": (time.perf_counter() - start) / 60,
        "tokens_seen": trainer.state.num_input_tokens_seen, "objective": objective,
        "final_loss": logs[-1]["loss"] if logs else None,
        "final_confidence_loss": logs[-1].get("confidence_loss") if logs else None,
    }


# ----------------------------------------------------------------------------------------------- measuring
def score(answers, test) -> dict:
    summary = summarize(answers)
    exact = sum(a.text == c and a.ended for a, (_, c) in zip(answers, test)) / len(test)
    return {"exact": exact, "tokens_per_forward": summary["tokens_per_forward"], "nfe_mean": summary["nfe_mean"],
            "ended": summary["ended_share"], "seconds": summary["seconds_total"]}


def measure(models: dict, ar_model, tok, test, preset: Preset) -> list[dict]:
    """Every setting answers every prompt at batch 1, interleaved prompt by prompt (AR, then each model and
    threshold), so that a change in the machine's load hits all settings alike: on shared cores the AR time alone
    varied 2x between two runs measured one setting after the other."""
    prompts = [p for p, _ in test]
    settings = [("AR base", "generate (greedy, KV cache)", None, None)] + [
        (name, f"grow, threshold {threshold}", model,
         dict(length_strategy="grow", threshold=threshold, block_length=preset.block_length,
              max_new_tokens=preset.max_new_tokens))
        for name, model in models.items() for threshold in preset.thresholds
    ] + [
        (name, f"draft {k} + AR verify", model, {"draft_length": k, "speculative": True})
        for name, model in models.items() for k in preset.draft_lengths
    ]

    def answer(model, decoding, batch):
        if model is None:
            return answer_autoregressive(ar_model, tok, batch, max_new_tokens=preset.max_new_tokens,
                                         chat_template=False)
        if decoding.get("speculative"):
            return answer_speculative(model, ar_model, model.tokenizer, batch, chat_template=False,
                                      max_new_tokens=preset.max_new_tokens, draft_length=decoding["draft_length"])
        return answer_diffusion(model, model.tokenizer, batch, chat_template=False, **decoding)

    for _, _, model, decoding in settings:  # warm-up: no timed call pays a one-off cost
        answer(model, decoding, prompts[:2])
    answers = [[] for _ in settings]
    for prompt in prompts:
        for k, (_, _, model, decoding) in enumerate(settings):
            answers[k] += answer(model, decoding, [prompt])
    rows = []
    for (name, label, _, _), got in zip(settings, answers):
        rows.append({"model": name, "decoding": label, **score(got, test)})
        rows[-1]["x_ar_time"] = rows[0]["seconds"] / rows[-1]["seconds"]
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict], costs: dict) -> str:
    lines = ["| model | decoding | exact % | tokens/forward | NFE/answer | ended % | wall s | speed x AR |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['decoding']} | {100 * r['exact']:.1f} | {r['tokens_per_forward']:.2f} | "
                     f"{r['nfe_mean']:.1f} | {100 * r['ended']:.1f} | {r['seconds']:.2f} | {r['x_ar_time']:.2f} |")
    lines += ["", "| stage | steps | minutes | tokens seen |", "|---|---|---|---|"]
    for name, c in costs.items():
        lines.append(f"| {name} | {c.get('steps', '')} | {c['minutes']:.1f} | {c.get('tokens_seen', '')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--out", default="benchmarks/results", help="directory of parallel_decoding.{json,md}")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(DEFAULT_RUNS))
    parser.add_argument("--name", default=None, help="file stem of the results (default: parallel_decoding[_PRESET])")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="override preset fields (tuples: comma-separated, e.g. draft_lengths=4,8)")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    for item in args.set:
        name, value = item.split("=", 1)
        current = getattr(preset, name)
        if isinstance(current, tuple):
            kind = type(current[0]) if current else str
            preset = replace(preset, **{name: tuple(kind(v) for v in value.split(",") if v)})
        else:
            preset = replace(preset, **{name: type(current)(value)})
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    work = Path("runs") / "parallel_decoding"
    started = time.perf_counter()
    tok = tokenizer()
    train, test = splits(preset)
    ar_model, ar_cost = train_ar(preset, tok, train)
    costs = {"AR base": ar_cost}
    quick = answer_autoregressive(ar_model, tok, [p for p, _ in test], max_new_tokens=preset.max_new_tokens,
                                  batch_size=64, chat_template=False)
    print(f"AR trained: {ar_cost}, exact {score(quick, test)['exact']:.3f}", file=sys.stderr, flush=True)
    ground_truth = Dataset.from_list([{"prompt": p, "completion": c} for p, c in train])
    models = {}
    for run in args.runs:
        if run == "baseline":
            data, objective = ground_truth, {"block_rows": preset.baseline_block_rows}
        elif run in ("confidence", "confidence_strong"):
            data = ground_truth
            weight = preset.confidence_loss_weight if run == "confidence" else preset.strong_confidence_loss_weight
            objective = {"block_rows": preset.baseline_block_rows, "confidence_loss_weight": weight}
        else:  # distillation: a teacher's answers to the training prompts are the targets
            if run == "distill":
                teacher, settings = ar_model, {"teacher": "base", "max_new_tokens": preset.max_digits + 4}
            elif "baseline" in models:  # self_distill: the baseline diffusion model, one token per step
                teacher, settings = models["baseline"], {
                    "teacher": "diffusion", "max_new_tokens": preset.max_new_tokens, "length_strategy": "grow",
                    "threshold": None, "block_length": preset.block_length}
            else:
                parser.error("--runs self_distill needs baseline before it: its teacher is the baseline model")
            clock = time.perf_counter()
            data = build_distillation_dataset(teacher, tok, [p for p, _ in train], batch_size=256,
                                              chat_template=False, keep_unfinished=preset.keep_unfinished, **settings)
            truth = dict(train)
            agree = sum(c == truth[p] for p, c in zip(data["prompt"], data["completion"])) / len(train)
            costs[f"{run}: teacher answers"] = {"minutes": (time.perf_counter() - clock) / 60,
                                                "answers": len(data), "ground_truth_agreement": agree}
            objective = dict(DISTILLATION_ARGUMENTS) | {"confidence_loss_weight": preset.confidence_loss_weight}
        models[run], costs[run] = train_diffusion(preset, ar_model, tok, data, work / run, **objective)
        print(f"{run} trained: {costs[run]}", file=sys.stderr, flush=True)
    rows = measure(models, ar_model, tok, test, preset)
    result = {"preset": asdict(preset), "threads": args.threads, "rows": rows, "training": costs,
              "total_minutes": (time.perf_counter() - started) / 60}
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or ("parallel_decoding" if args.preset == "full" else f"parallel_decoding_{args.preset}")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(rows, costs))
    print(markdown(rows, costs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
