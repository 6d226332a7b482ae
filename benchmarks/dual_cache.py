"""Issue 16 in one run: the dual KV cache and the calibrated `predict` bound, measured on a tiny model trained here.

    python benchmarks/dual_cache.py [--train-seconds 150] [--out benchmarks/results/dual_cache.json]

1. Trains a small GPT-2 shape (from scratch, DiffusionTrainer, EOS-filled rows) to sort digit strings
   ("sort 5 2 9 =" -> "2 5 9") for `--train-seconds`. Self-contained: no other benchmark module is imported.
2. Calibrates `predict` (hf_dlm.calibration: split conformal, 95%) on calibration prompts with reference answers;
   reports coverage on the held-out half and on the test prompts, and the mean slack in blocks.
3. Decodes the test prompts one at a time (batch 1, the interactive case) with fixed (budget = 8x the median answer),
   grow, predict (default rule) and predict (calibrated rule), each uncached, with the prefix cache and with the
   dual cache. Settings are interleaved per prompt (rotating order), so machine noise hits them alike. Reports wall
   time, NFE, exact-match accuracy and, per cache, the share of answers identical to the uncached ones.

Timings are ratios within this one run (2 shared CPU cores here: absolute times are noise).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TrainerCallback

from hf_dlm import DiffusionLM, DiffusionTrainer, DiffusionTrainingArguments
from hf_dlm.adapt import DEFAULT_PAD_TOKEN
from hf_dlm.calibration import (
    LengthRule,
    bound_stats,
    calibrate_length_rule,
    completion_lengths,
    first_step_eos_probabilities,
)
from hf_dlm.testing import char_tokenizer, tiny_causal_lm

CACHES = {"none": dict(use_cache=False), "prefix": dict(use_cache="prefix"), "dual": dict(use_cache="dual")}
FULL_REFRESH = {"prefix full": dict(use_cache="prefix", cache_refresh="full"),
                "dual full": dict(use_cache="dual", cache_refresh="full")}


# ----------------------------------------------------------------------------------------------- the task
def sort_example(rng: random.Random, max_digits: int) -> dict:
    n = rng.randint(1, max_digits)
    digits = [rng.randint(0, 9) for _ in range(n)]
    return {"prompt": "sort " + " ".join(map(str, digits)) + " =", "completion": " ".join(map(str, sorted(digits)))}


def examples(n: int, seed: int, max_digits: int, exclude: set[str] = frozenset()) -> list[dict]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        example = sort_example(rng, max_digits)
        if example["prompt"] not in exclude:
            out.append(example)
    return out


# ----------------------------------------------------------------------------------------------- training
class TimeLimit(TrainerCallback):
    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() - self.start > self.seconds:
            control.should_training_stop = True


def train(train_examples: list[dict], seconds: float, row_length: int, out: Path) -> tuple[DiffusionLM, dict]:
    tokenizer = char_tokenizer()
    tokenizer.add_special_tokens({"pad_token": DEFAULT_PAD_TOKEN})
    torch.manual_seed(0)
    causal = tiny_causal_lm("gpt2", vocab_size=len(tokenizer), hidden=128, layers=4, heads=4, positions=256,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = DiffusionLM.from_causal_lm(causal, tokenizer)
    args = DiffusionTrainingArguments(
        output_dir=str(out / "run"), max_steps=100_000, per_device_train_batch_size=32, learning_rate=2e-3,
        lr_scheduler_type="constant_with_warmup", warmup_steps=50, weight_decay=0.01, logging_steps=50,
        save_strategy="no", report_to=[], use_cpu=True, seed=0, remove_unused_columns=False,
        dataloader_pin_memory=False, disable_tqdm=True,
        max_length=row_length, packing=False, eos_fill=True, padding="max_length",
    )
    trainer = DiffusionTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_examples),
                               processing_class=tokenizer, callbacks=[TimeLimit(seconds)])
    start = time.perf_counter()
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    log = {"steps": trainer.state.global_step, "seconds": round(time.perf_counter() - start, 1),
           "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None}
    model.eval()
    return model, log


# ----------------------------------------------------------------------------------------------- decoding
def decode(model, tokenizer, prompt: str, settings: dict) -> dict:
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    start = time.perf_counter()
    out = model.diffusion_generate(ids, return_dict_in_generate=True, **settings)
    seconds = time.perf_counter() - start
    answer = out.sequences[0, ids.shape[1]:].tolist()
    eos = model.config.eos_token_id
    tokens = answer[: answer.index(eos)] if eos in answer else answer
    record = {"tokens": tokens, "text": tokenizer.decode(tokens, skip_special_tokens=True), "nfe": out.nfe,
              "seconds": seconds, "length": int(out.lengths[0])}
    if out.bounds is not None:
        record["bound"] = int(out.bounds[0])
        record["grew"] = bool(out.grew[0])
    return record


def measure(model, tokenizer, test: list[dict], methods: dict[str, dict], rounds: int, caches: dict) -> dict:
    """Every (method, cache) on every prompt, `rounds` times, in a rotating order; answers from round 1."""
    settings = {(m, c): dict(methods[m], **caches[c]) for m in methods for c in caches}
    keys = list(settings)
    records = {k: [] for k in keys}
    seconds = {k: 0.0 for k in keys}
    for r in range(rounds):
        for i, example in enumerate(test):
            shift = (i + r) % len(keys)
            for key in keys[shift:] + keys[:shift]:
                rec = decode(model, tokenizer, example["prompt"], settings[key])
                seconds[key] += rec["seconds"]
                if r == 0:
                    records[key].append(rec)
    summary = {}
    for (method, cache), recs in records.items():
        uncached = records[(method, "none")]
        summary[f"{method} / {cache}"] = {
            "method": method, "cache": cache,
            "seconds": round(seconds[(method, cache)] / rounds, 3),
            "nfe_mean": round(statistics.mean(r["nfe"] for r in recs), 2),
            "accuracy": round(statistics.mean(r["tokens"] == e["reference"] for r, e in zip(recs, test)), 3),
            "identical_to_uncached": round(statistics.mean(a["tokens"] == b["tokens"] for a, b in zip(recs, uncached)),
                                           3),
            "grew": round(statistics.mean(r["grew"] for r in recs), 3) if "grew" in recs[0] else None,
        }
    return summary


def measure_default(n_prompts: int, budget: int, rounds: int) -> dict:
    """The embedded default (SmolLM2-135M-Instruct + adapter, `attention="causal_prefix"`) with its shipped decoding
    settings, on the first held-out prompts of examples/prompts/heldout.txt: grow / predict / fixed x caches."""
    from hf_dlm.default import load_default
    from hf_dlm.evaluation import chat_inputs

    model = load_default().eval()
    tokenizer = model.tokenizer
    prompts = [line.strip() for line in open(Path(__file__).parents[1] / "examples/prompts/heldout.txt") if line.strip()]
    prompts = prompts[:n_prompts]
    methods = {m: dict(length_strategy=m, max_new_tokens=budget) for m in ("grow", "predict", "fixed")}
    settings = {(m, c): dict(methods[m], **CACHES[c]) for m in methods for c in CACHES}
    keys = list(settings)
    records = {k: [] for k in keys}
    seconds = {k: 0.0 for k in keys}
    for r in range(rounds):
        for i, prompt in enumerate(prompts):
            inputs = chat_inputs(tokenizer, [prompt])
            shift = (i + r) % len(keys)
            for key in keys[shift:] + keys[:shift]:
                start = time.perf_counter()
                out = model.diffusion_generate(**inputs, return_dict_in_generate=True, **settings[key])
                seconds[key] += time.perf_counter() - start
                if r == 0:
                    answer = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
                    records[key].append({"tokens": answer[: int(out.lengths[0])], "nfe": out.nfe,
                                         "length": int(out.lengths[0]), "ended": bool(out.finished[0])})
    summary = {}
    for (method, cache), recs in records.items():
        uncached = records[(method, "none")]
        summary[f"{method} / {cache}"] = {
            "seconds": round(seconds[(method, cache)] / rounds, 2),
            "nfe_mean": round(statistics.mean(r["nfe"] for r in recs), 1),
            "length_mean": round(statistics.mean(r["length"] for r in recs), 1),
            "ended": round(statistics.mean(r["ended"] for r in recs), 3),
            "identical_to_uncached": round(statistics.mean(a["tokens"] == b["tokens"] for a, b in zip(recs, uncached)),
                                           3),
            "identical_to_grow_uncached": round(statistics.mean(
                a["tokens"] == b["tokens"] for a, b in zip(recs, records[("grow", "none")])), 3),
        }
    return {"prompts": len(prompts), "budget": budget, "settings": "the shipped generation_config.json "
            "(block 3, threshold 0.7, left_to_right, defer_repeats, repetition_penalty 1.1)", "decoding": summary}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="measure this DiffusionLM checkpoint instead of training one, "
                        "e.g. benchmarks/checkpoints/reduced/adapt of `benchmarks/run.py --preset reduced`")
    parser.add_argument("--train-seconds", type=float, default=150)
    parser.add_argument("--max-digits", type=int, default=24)
    parser.add_argument("--n-test", type=int, default=48)
    parser.add_argument("--n-calibration", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=2, help="timing rounds over the test prompts")
    parser.add_argument("--block-length", type=int, default=8)
    parser.add_argument("--full-refresh", action="store_true",
                        help="also decode with cache_refresh='full' (Fast-dLLM's refresh) for both caches")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while decoding")
    parser.add_argument("--train-threads", type=int, default=2)
    parser.add_argument("--work", default="/tmp/dual_cache_bench")
    parser.add_argument("--out", default="benchmarks/results/dual_cache.json")
    parser.add_argument("--default-prompts", type=int, default=0,
                        help="also measure the embedded default on this many held-out prompts (0: skip)")
    parser.add_argument("--default-budget", type=int, default=128)
    parser.add_argument("--default-only", action="store_true", help="skip the toy model; merge into --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    if args.default_only:
        payload = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
        payload["default_model"] = measure_default(args.default_prompts, args.default_budget, args.rounds)
        payload["default_model"]["command"] = "python benchmarks/dual_cache.py " + " ".join(
            argv if argv is not None else sys.argv[1:])
        for name, row in payload["default_model"]["decoding"].items():
            print(f"{name:20s} {row}")
        Path(args.out).write_text(json.dumps(payload, indent=1) + "\n")
        return 0

    test = examples(args.n_test, seed=2, max_digits=args.max_digits)
    calibration_set = examples(args.n_calibration, seed=3, max_digits=args.max_digits, exclude={e["prompt"] for e in test})
    held = {e["prompt"] for e in test + calibration_set}
    train_set = examples(20_000, seed=1, max_digits=args.max_digits, exclude=held)
    if args.model:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
    else:
        tokenizer = char_tokenizer()
    answer_tokens = [len(tokenizer(e["completion"], add_special_tokens=False).input_ids) for e in test]
    median = int(statistics.median(answer_tokens))
    budget = 8 * median
    prompt_max = max(len(e["prompt"]) for e in test + calibration_set + train_set)
    row_length = prompt_max + budget + 8
    print(f"median answer {median} tokens -> budget {budget}; rows of {row_length}", file=sys.stderr)

    torch.set_num_threads(args.train_threads)
    if args.model:  # a trained checkpoint (its tokenizer must give digits one token each, as both of ours do)
        model = DiffusionLM.from_pretrained(args.model).eval()
        train_log = {"model": args.model}
        row_length = None
    else:
        model, train_log = train(train_set, args.train_seconds, row_length, work)
    torch.set_num_threads(args.threads)
    tokenizer = getattr(model, "tokenizer", tokenizer)
    model.generation_config.update(max_new_tokens=budget, block_length=args.block_length, threshold=0.9)
    print(f"trained: {train_log}", file=sys.stderr)

    # ---- calibration (reference completions), coverage on its held-out half and on the test prompts
    enc = tokenizer([e["prompt"] for e in calibration_set], return_tensors="pt", padding=True, padding_side="left")
    p_eos = first_step_eos_probabilities(model, enc.input_ids, enc.attention_mask, budget, batch_size=16)
    lengths = completion_lengths(tokenizer, [e["completion"] for e in calibration_set])
    calibration = calibrate_length_rule(p_eos, lengths, budget, target_coverage=0.95, seed=0)
    rule = calibration.rule
    enc_t = tokenizer([e["prompt"] for e in test], return_tensors="pt", padding=True, padding_side="left")
    p_eos_t = first_step_eos_probabilities(model, enc_t.input_ids, enc_t.attention_mask, budget, batch_size=16)
    lengths_t = completion_lengths(tokenizer, [e["completion"] for e in test])
    default_rule = LengthRule(model.generation_config.predict_threshold, model.generation_config.length_margin, 0.0)
    test_cal, test_default = (bound_stats(p_eos_t, lengths_t, r, budget) for r in (rule, default_rule))
    print(f"calibrated {rule}: held-out {calibration.held_out}, test {test_cal}; default rule on test {test_default}",
          file=sys.stderr)

    methods = {
        "fixed": dict(length_strategy="fixed"),
        "grow": dict(length_strategy="grow"),
        "predict": dict(length_strategy="predict"),
        "predict calibrated": dict(length_strategy="predict", predict_threshold=rule.predict_threshold,
                                   length_margin=rule.length_margin, length_coverage=rule.length_coverage),
    }
    for example in test:
        example["reference"] = tokenizer(example["completion"], add_special_tokens=False).input_ids
    caches = CACHES | (FULL_REFRESH if args.full_refresh else {})
    summary = measure(model, tokenizer, test, methods, args.rounds, caches)
    for name, row in summary.items():
        print(f"{name:28s} {row['seconds']:7.2f} s  nfe {row['nfe_mean']:6.2f}  acc {row['accuracy']:.3f}  "
              f"identical to uncached {row['identical_to_uncached']:.3f}  grew {row['grew']}")
    s = {k: v["seconds"] for k, v in summary.items()}
    ratios = {
        "fixed prefix / fixed dual (target >= 2)": round(s["fixed / prefix"] / s["fixed / dual"], 2),
        "predict calibrated dual / grow prefix (target <= 1.10)": round(s["predict calibrated / dual"]
                                                                        / s["grow / prefix"], 2),
        "predict calibrated dual / grow dual": round(s["predict calibrated / dual"] / s["grow / dual"], 2),
        "predict default dual / grow prefix": round(s["predict / dual"] / s["grow / prefix"], 2),
    }
    for k, v in ratios.items():
        print(f"{k}: {v}")
    payload = {
        "command": "python benchmarks/dual_cache.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "task": f"sort 1-{args.max_digits} digits; {args.n_test} test prompts, batch 1, block {args.block_length}, "
                f"threshold 0.9, budget {budget} (8x the median answer of {median} tokens)",
        "train": train_log,
        "calibration": calibration.to_json(),
        "calibration_on_test": {"calibrated": vars(test_cal), "default_rule": vars(test_default),
                                "mean_slack_blocks": round(test_cal.mean_slack / args.block_length, 2)},
        "decoding": summary,
        "ratios": ratios,
        "threads": args.threads,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
