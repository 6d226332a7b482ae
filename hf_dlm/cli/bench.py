"""Speed and length benchmark: AR `generate` against every length strategy of `diffusion_generate`, in one run.

    hf-dlm bench --model DIR --prompts prompts.jsonl [--ar-model DIR | --ar-backbone] [--budgets 64,256,1024]
                 [--thresholds 0.9,none] [--strategies fixed,grow,predict] [--cache both] [--out bench.json]

Each JSONL line holds a `prompt` and, optionally, its reference `completion` (then exact match and length match
are reported). A table goes to stdout and everything, with per-answer records, to the JSON file.

How the numbers are made honest:
- every setting decodes the same prompts in the same batches, and settings are *interleaved* batch by batch
  (batch 1 under every setting, then batch 2, ...), so a load change on a shared machine hits all of them alike;
- ratios are computed inside one run only: against AR `generate` of the base model at the same budget, against
  `fixed` at the same budget with the same threshold and cache, and against the "traditional" fixed-length
  setting (one token per step, the whole canvas, no cache: what dLLM-Var's 30.1x is measured against);
- NFE per answer is the number of forwards the row took part in (`nfe_per_row`; finished rows leave the batch).
  For AR it is the row's tokens + its EOS (one forward each), what the row would cost alone;
- wall time is measured around the whole `generate` call (tokenisation excluded) after one untimed warm-up.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..settings_dlm import LENGTH_STRATEGIES
from .options import check_decoding, check_model, load_model
from .paths import check_output_file, write_text_atomically

if TYPE_CHECKING:
    from ..evaluation import Answer


@dataclass(frozen=True)
class Setting:
    """One way of decoding. `method` is "ar", a length strategy, "speculative" (draft and verify: the diffusion
    model drafts `block_length` tokens, the AR model verifies; `threshold` unused), "gated" (a gated drafter drafts
    `block_length` tokens and its base verifies them in the same forward) or "gated_predraft" (the same with a draft
    block for every outcome, TiDAR's pre-drafting); `threshold=None` is one token per step."""

    method: str
    budget: int
    threshold: float | None = 0.9
    use_cache: bool = True
    block_length: int = 32

    @property
    def traditional(self) -> bool:
        return self.method == "fixed" and self.threshold is None and not self.use_cache

    @property
    def name(self) -> str:
        if self.method == "ar":
            return "AR generate" + ("" if self.use_cache else " (no cache)")
        if self.method == "speculative":
            return f"draft {self.block_length} + AR verify"
        if self.method in ("gated", "gated_predraft"):
            extra = " + pre-drafts" if self.method == "gated_predraft" else ""
            return f"gated draft {self.block_length}{extra} (one forward)"
        unmask = "1 tok/step" if self.threshold is None else f"thr {self.threshold:g}"
        return f"{self.method} {unmask} {'cache' if self.use_cache else 'no cache'}"

    def key(self) -> tuple:
        return (self.method, self.budget, self.threshold, self.use_cache, self.block_length)

    def diffusion_kwargs(self) -> dict:
        """`diffusion_generate` settings. One token per step = `steps=budget`, i.e. threshold and steps off."""
        return dict(max_new_tokens=self.budget, length_strategy=self.method, block_length=self.block_length,
                    threshold=self.threshold, steps=None, use_cache=self.use_cache, temperature=0.0)


def grid(budgets: Sequence[int], thresholds: Sequence[float | None], strategies: Sequence[str] = LENGTH_STRATEGIES,
         caches: Sequence[bool] = (True, False), block_length: int = 32, ar: bool = True,
         traditional: bool = True) -> list[Setting]:
    """Every strategy x threshold x cache at every budget, plus AR and the traditional baseline per budget."""
    settings = []
    for budget in budgets:
        if ar:
            settings.append(Setting("ar", budget, None, True, block_length))
        if traditional:
            settings.append(Setting("fixed", budget, None, False, block_length))
        for method in strategies:
            for threshold in thresholds:
                for cache in caches:
                    settings.append(Setting(method, budget, threshold, cache, block_length))
    unique = {}
    for s in settings:
        unique.setdefault(s.key(), s)
    return list(unique.values())


def load_prompts(path: str | Path, limit: int | None = None) -> list[dict]:
    """JSONL records with a `prompt` (required) and a reference `completion` (optional)."""
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
                raise ValueError(f"{path}:{number}: every line needs a non-empty 'prompt' field (and optionally "
                                 f"'completion').")
            records.append(record)
    return records[:limit] if limit else records


def read_records(parser: argparse.ArgumentParser, path: str, limit: int | None) -> list[dict]:
    """`load_prompts` for the command line: a malformed or empty file is one line on stderr, before any loading."""
    try:
        records = load_prompts(path, limit)
    except json.JSONDecodeError as error:
        parser.error(f"--prompts {path}:{error.lineno}: not JSON ({error.msg}); one JSON object per line")
    except (ValueError, UnicodeDecodeError) as error:
        parser.error(f"--prompts {path}: {error}")
    except OSError as error:
        parser.error(f"cannot read --prompts {path}: {error.strerror}")
    if not records:
        parser.error(f"--prompts {path} holds no prompt: give one JSON object with a 'prompt' per line")
    return records


def causal_twin(dlm):
    """The diffusion model's backbone run causally: the same weights and shapes as an AR model, for a speed
    baseline when no AR checkpoint is at hand (its answers are not meaningful after diffusion training)."""
    backbone = copy.deepcopy(dlm.backbone)
    backbone.config.is_causal = True
    backbone.generation_config.eos_token_id = dlm.config.eos_token_id
    backbone.generation_config.pad_token_id = dlm.config.pad_token_id
    return backbone.eval()


def _decode(setting: Setting, dlm, ar_model, tokenizer, prompts: list[str]) -> list[Answer]:
    from ..evaluation import answer_autoregressive, answer_diffusion, answer_gated, answer_speculative

    if setting.method in ("gated", "gated_predraft"):
        return answer_gated(dlm, tokenizer, prompts, max_new_tokens=setting.budget, draft_length=setting.block_length,
                            batch_size=len(prompts), predraft=setting.method == "gated_predraft")
    if setting.method == "speculative":
        return answer_speculative(dlm, ar_model, tokenizer, prompts, max_new_tokens=setting.budget,
                                  draft_length=setting.block_length)
    if setting.method == "ar":
        # The diffusion model's eos ids end the AR answer too (the AR model may list fewer).
        eos = dlm.config.eos_token_id if dlm is not None else ar_model.generation_config.eos_token_id
        return answer_autoregressive(ar_model, tokenizer, prompts, max_new_tokens=setting.budget,
                                     batch_size=len(prompts), use_cache=setting.use_cache, eos_token_id=eos)
    return answer_diffusion(dlm, tokenizer, prompts, batch_size=len(prompts), **setting.diffusion_kwargs())


def run(settings: Sequence[Setting], dlm, tokenizer, records: Sequence[dict], *, ar_model=None,
        batch_size: int = 16, progress=None) -> list[dict]:
    """Decode every record under every setting, interleaved batch by batch; returns one result per setting with
    its per-answer arrays (see `summarize`)."""
    if any(s.method in ("ar", "speculative") for s in settings) and ar_model is None:
        raise ValueError("An AR or speculative setting needs ar_model (an AR checkpoint, or causal_twin(dlm) for "
                         "speed only).")
    prompts = [r["prompt"] for r in records]
    # Warm-up (untimed): the first call of a model pays for lazy initialisation that no later call pays.
    for method in {s.method if s.method in ("ar", "gated", "gated_predraft") else "fixed" for s in settings}:
        warm = Setting(method, 8, 0.9, True, min(8, settings[0].block_length))
        _decode(warm, dlm, ar_model, tokenizer, prompts[:2])
    answers: dict[tuple, list[Answer]] = {s.key(): [] for s in settings}
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        for setting in settings:
            answers[setting.key()] += _decode(setting, dlm, ar_model, tokenizer, batch)
        if progress:
            progress(f"{start + len(batch)}/{len(prompts)} prompts under {len(settings)} settings")
    references = [r.get("completion") for r in records]
    return [summarize(s, answers[s.key()], references, tokenizer) for s in settings]


def summarize(setting: Setting, answers: list[Answer], references: list[str | None], tokenizer) -> dict:
    """Metrics of one setting plus compact per-answer arrays (for plots and agreement checks). Exact / length match
    and tokens per forward are the functions behind our `evaluate` modules (`hf_dlm.metrics`)."""
    from ..metrics import answer_matches, tokens_per_forward

    n = len(answers)
    lengths = [len(a.tokens) for a in answers]
    if setting.method == "ar":
        nfe = [len(a.tokens) + int(a.ended) for a in answers]  # one forward per token, EOS included
    else:
        nfe = [a.nfe for a in answers]
    seconds = sum(a.seconds for a in answers)
    result = {
        "setting": setting.name,
        **asdict(setting),
        "n": n,
        "seconds": seconds,
        "ms_per_answer": 1000 * seconds / n,
        "mean_nfe": statistics.fmean(nfe),
        "mean_length": statistics.fmean(lengths),
        "tokens_per_s": sum(lengths) / seconds if seconds else math.nan,
        "tokens_per_forward": tokens_per_forward(lengths, nfe),
        "ended": sum(a.ended for a in answers) / n,
        "answers": [a.text for a in answers],
        "per_answer": {"length": lengths, "nfe": nfe, "seconds": [a.seconds for a in answers]},
    }
    if all(r is not None for r in references):
        targets = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in references]
        matches = answer_matches([a.tokens for a in answers], targets, tokenizer)
        correct = matches["exact"]
        result["accuracy"] = sum(correct) / n
        result["length_match"] = sum(matches["length"]) / n
        result["per_answer"]["correct"] = [int(c) for c in correct]
        result["per_answer"]["true_length"] = [len(t) for t in targets]
    if setting.method == "predict":
        predicted = [a.extra["predicted_length"] for a in answers]
        result["grew"] = sum(a.extra["grew"] for a in answers) / n
        result["per_answer"]["predicted_length"] = predicted
        if "true_length" in result["per_answer"]:
            errors = [p - t for p, t in zip(predicted, result["per_answer"]["true_length"])]
            result["predict_error"] = _error_summary(errors)
    return result


def _error_summary(errors: list[int]) -> dict:
    """Quantiles of predicted - true length, with the share predicted exactly and the share too short."""
    from ..evaluation import quantiles

    return quantiles(errors) | {"exact": sum(e == 0 for e in errors) / len(errors),
                                "under": sum(e < 0 for e in errors) / len(errors)}


def gated_grid(parser, args, budgets: Sequence[int], ar: bool) -> list[Setting]:
    """The settings of a gated drafter: AR (when given) and `gated` at every --draft-lengths, per budget. The
    diffusion flags are refused rather than ignored."""
    defaults = build_parser().parse_args(["--model", "m", "--prompts", "p"])
    changed = [f"--{name.replace('_', '-')}" for name in ("strategies", "thresholds", "cache", "block_length")
               if getattr(args, name) != getattr(defaults, name)]
    if changed:
        parser.error(f"{args.model} is a gated drafter (one forward drafts and verifies): {', '.join(changed)} do "
                     f"not apply; use --budgets and --draft-lengths.")
    try:
        lengths = _ints(args.draft_lengths)
    except ValueError as error:
        parser.error(f"--draft-lengths: {error}")
    if any(k < 1 for k in lengths):
        parser.error(f"--draft-lengths must be >= 1, got {args.draft_lengths}")
    settings = []
    for budget in budgets:
        if ar:
            settings.append(Setting("ar", budget, None, True, args.block_length))
        settings += [Setting("gated", budget, None, True, k) for k in lengths]
    return settings


def add_ratios(results: list[dict]) -> list[dict]:
    """Speed-ups (baseline seconds / these seconds, > 1 = faster) and NFE reductions, within this run:
    `vs_ar` (AR generate with cache, same budget), `vs_fixed` (fixed, same budget, threshold and cache),
    `vs_traditional` (fixed, one token per step, no cache, same budget)."""
    by_key = {(r["method"], r["budget"], r["threshold"], r["use_cache"], r["block_length"]): r for r in results}

    def find(method, budget, threshold, cache, block):
        return by_key.get((method, budget, threshold, cache, block))

    for r in results:
        b, block = r["budget"], r["block_length"]
        any_ar = next((x for x in results if x["method"] == "ar" and x["budget"] == b and x["use_cache"]), None)
        baselines = {
            "ar": find("ar", b, None, True, block) or any_ar,  # a gated setting's block is its draft length
            "fixed": find("fixed", b, r["threshold"], r["use_cache"], block) if r["method"] != "ar" else None,
            "traditional": find("fixed", b, None, False, block),
        }
        for name, base in baselines.items():
            if base is not None and base is not r and r["seconds"] > 0:
                r[f"speedup_vs_{name}"] = base["seconds"] / r["seconds"]
                r[f"nfe_ratio_vs_{name}"] = base["mean_nfe"] / r["mean_nfe"]
            else:
                r.pop(f"speedup_vs_{name}", None)
    return results


def cache_agreement(results: list[dict]) -> list[dict]:
    """Share of identical answers between cached and uncached decoding of the same setting (the cache is an
    approximation under bidirectional attention: cached keys never see tokens committed later)."""
    rows = []
    by_key = {(r["method"], r["budget"], r["threshold"], r["block_length"], r["use_cache"]): r for r in results}
    for (method, budget, threshold, block, cache), r in by_key.items():
        other = by_key.get((method, budget, threshold, block, False))
        if method == "ar" or not cache or other is None:
            continue
        same = sum(a == b for a, b in zip(r["answers"], other["answers"])) / len(r["answers"])
        row = {"method": method, "budget": budget, "threshold": threshold, "block_length": block, "identical": same}
        if "accuracy" in r:
            row["accuracy_cache"], row["accuracy_no_cache"] = r["accuracy"], other["accuracy"]
        rows.append(row)
    return rows


def format_table(results: list[dict]) -> str:
    """A plain-text (also valid Markdown) table of the headline columns."""
    has_acc = any("accuracy" in r for r in results)
    head = ["setting", "budget", "n"] + (["exact", "len ="] if has_acc else []) + [
        "NFE/ans", "ms/ans", "tok/s", "x AR", "x fixed", "x trad"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]

    def ratio(r, name):
        v = r.get(f"speedup_vs_{name}")
        return "" if v is None else f"{v:.2f}"

    for r in results:
        cells = [r["setting"], str(r["budget"]), str(r["n"])]
        if has_acc:
            cells += [_pct(r.get("accuracy")), _pct(r.get("length_match"))]
        cells += [f"{r['mean_nfe']:.1f}", f"{r['ms_per_answer']:.1f}", f"{r['tokens_per_s']:.0f}",
                  ratio(r, "ar"), ratio(r, "fixed"), ratio(r, "traditional")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(v):
    return "" if v is None else f"{100 * v:.1f}"


def _floats(text: str) -> list[float | None]:
    return [None if t.strip().lower() in ("none", "1tok", "") else float(t) for t in text.split(",")]


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hf-dlm bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="DiffusionLM checkpoint (directory or Hub id).")
    p.add_argument("--prompts", required=True, help="JSONL file: one {'prompt': ..., 'completion'?: ...} per line.")
    p.add_argument("--ar-model", help="AR checkpoint to compare with (e.g. the causal LM the model was adapted from).")
    p.add_argument("--ar-backbone", action="store_true",
                   help="No AR checkpoint: time the diffusion model's own backbone run causally (speed only).")
    p.add_argument("--budgets", default="64,256", help="Comma-separated max_new_tokens values.")
    p.add_argument("--thresholds", default="0.9,none", help="Confidence thresholds; 'none' = one token per step.")
    p.add_argument("--strategies", default=",".join(LENGTH_STRATEGIES))
    p.add_argument("--cache", choices=("on", "off", "both"), default="both")
    p.add_argument("--block-length", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, help="Use only the first N prompts.")
    p.add_argument("--no-traditional", action="store_true",
                   help="Skip the traditional baseline (one token per step, full canvas, no cache): slow at big budgets.")
    p.add_argument("--draft-lengths", default="2,4",
                   help="Gated drafters (a --model saved with drafter='gated_lora'): drafts per forward to measure, "
                   "comma-separated; the diffusion settings (strategies, thresholds, cache, block) do not apply.")
    p.add_argument("--out", default="bench.json", help="Where to write the JSON results.")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        budgets, thresholds = _ints(args.budgets), _floats(args.thresholds)
    except ValueError as error:
        parser.error(f"--budgets / --thresholds: {error}")
    strategies = args.strategies.split(",")
    unknown = sorted(set(strategies) - set(LENGTH_STRATEGIES))
    if unknown:
        parser.error(f"--strategies: unknown {unknown}; choose from {','.join(LENGTH_STRATEGIES)}")
    for budget in budgets:
        for threshold in thresholds:
            check_decoding(parser, args.model, {"max_new_tokens": budget, "threshold": threshold,
                                                "block_length": args.block_length})
    check_model(parser, args.model)
    if args.ar_model:
        check_model(parser, args.ar_model)
    if not Path(args.prompts).is_file():
        parser.error(f"--prompts {args.prompts}: no such file")
    records = read_records(parser, args.prompts, args.limit)
    check_output_file(parser, "--out", args.out)  # before the run: an unwritable --out would lose it at the end
    for name in ("batch_size", "block_length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")

    import torch

    from ..loading import load_autoregressive_lm

    dlm = load_model(parser, args.model).eval()
    tokenizer = dlm.tokenizer
    ar_model = None
    if args.ar_model:
        try:
            ar_model = load_autoregressive_lm(args.ar_model, "--ar-model").eval()
        except ValueError as error:
            parser.error(str(error))
    elif args.ar_backbone:
        ar_model = causal_twin(dlm)
    caches = {"on": (True,), "off": (False,), "both": (True, False)}[args.cache]
    if getattr(dlm, "drafter", None) is not None:
        settings = gated_grid(parser, args, budgets, ar_model is not None)
    else:
        settings = grid(budgets, thresholds, strategies, caches,
                        args.block_length, ar=ar_model is not None, traditional=not args.no_traditional)
    results = add_ratios(run(settings, dlm, tokenizer, records, ar_model=ar_model, batch_size=args.batch_size,
                             progress=lambda msg: print(msg, file=sys.stderr)))
    print(format_table(results))
    agreement = cache_agreement(results)
    for row in agreement:
        print(f"cache agreement {row['method']} budget {row['budget']} thr {row['threshold']}: "
              f"{100 * row['identical']:.1f}% identical answers")
    payload = {"model": args.model, "ar_model": args.ar_model or ("backbone (causal)" if args.ar_backbone else None),
               "prompts": args.prompts, "n": len(records), "batch_size": args.batch_size, "torch_threads":
               torch.get_num_threads(), "results": results, "cache_agreement": agreement}
    write_text_atomically(args.out, json.dumps(payload, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


__all__ = ["Setting", "add_ratios", "cache_agreement", "causal_twin", "main", "format_table", "grid",
           "load_prompts", "run", "summarize"]
