"""Quality and speed of the embedded default model on the held-out prompts, next to SmolLM2 decoding autoregressively.

    python examples/evaluate_default.py                       # every strategy, budget 256, writes runs/quality/
    python examples/evaluate_default.py --strategies predict --limit 10 --max-new-tokens 128
    python examples/evaluate_default.py --strategies grow grow:threshold=0.7 grow:block_length=8,threshold=0.5
    python examples/evaluate_default.py --strategies grow grow:repetition_penalty=1.2 \
        autoregressive:repetition_penalty=1.2      # an AR variant: `generate` with these settings

For every held-out prompt (examples/prompts/heldout.txt, never seen in training) the script runs, back to back so
that both see the same machine load: SmolLM2-135M-Instruct's greedy `generate` (the AR baseline) and the diffusion
model's `diffusion_generate` with each length strategy (greedy, threshold and block length from the adapter's
generation_config.json unless given). A strategy may carry its own settings, `name:key=value,...` (any
`diffusion_generate` setting), so decoder variants are compared in one run against the same AR answers;
`autoregressive:key=value,...` adds an AR variant (`generate` settings; speed ratios stay against plain AR), and
`speculative:draft_length=4` draft and verify (`hf_dlm.speculative`: diffusion drafts, SmolLM2 keeps its own greedy
answer). Then,
with hf_dlm.evaluation:

- generative perplexity of every answer under SmolLM2 itself in float32, conditioned on the prompt (EOS scored);
- distinct-1/2 over all answers, per-answer distinct-4, share of degenerate (looping) answers;
- share of answers that end with EOS within the budget, length distribution;
- NFE, tokens per forward, wall time and tokens/s (batch size 1: the interactive case).

Writes runs/quality/results.json (every answer and every number) and docs/quality_samples.md (side-by-side
answers); docs/quality.md quotes the numbers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from hf_dlm.default import load_default
from hf_dlm.default.smollm2 import find_smollm2_gguf
from hf_dlm.evaluation import (
    answer_autoregressive,
    answer_diffusion,
    answer_speculative,
    generative_perplexity,
    summarize,
)

ROOT = Path(__file__).resolve().parent.parent
HELDOUT = ROOT / "examples" / "prompts" / "heldout.txt"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", nargs="+", default=["predict", "grow", "fixed"],
                        help="length strategies, each optionally with settings: grow:threshold=0.7,block_length=8")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--block-length", type=int, default=None)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--limit", type=int, default=None, help="first N held-out prompts only")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CPUs with AVX512-BF16, else float32")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--adapter", default=None, help="adapter directory (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "quality")
    parser.add_argument("--samples-page", type=Path, default=ROOT / "docs" / "quality_samples.md")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    kwargs = {"adapter": args.adapter} if args.adapter else {}
    model, ar_model = load_default(args.dtype, autoregressive=True, **kwargs)
    tokenizer = model.tokenizer
    prompts = [p for p in HELDOUT.read_text().splitlines() if p.strip()][: args.limit]
    settings = {"max_new_tokens": args.max_new_tokens}
    if args.block_length:
        settings["block_length"] = args.block_length
    if args.threshold:
        settings["threshold"] = args.threshold

    answers = {"autoregressive": []} | {s: [] for s in args.strategies}
    started = time.time()
    for i, prompt in enumerate(prompts, 1):
        answers["autoregressive"] += answer_autoregressive(ar_model, tokenizer, [prompt], max_new_tokens=args.max_new_tokens)
        for strategy in args.strategies:
            variant = parse_variant(strategy)
            kind = variant.pop("length_strategy")
            if kind == "autoregressive":  # an AR variant: `generate` with these settings
                answers[strategy] += answer_autoregressive(ar_model, tokenizer, [prompt],
                                                           max_new_tokens=args.max_new_tokens, **variant)
            elif kind == "speculative":  # draft by diffusion, verify with SmolLM2: SmolLM2's greedy answer
                answers[strategy] += answer_speculative(model, ar_model, tokenizer, [prompt],
                                                        max_new_tokens=args.max_new_tokens, **variant)
            else:
                answers[strategy] += answer_diffusion(model, tokenizer, [prompt],
                                                      **settings | variant | {"length_strategy": kind})
        line = "  ".join(f"{k} {len(v[-1].tokens)}t/{v[-1].nfe}f/{v[-1].seconds:.1f}s" for k, v in answers.items())
        print(f"[{i}/{len(prompts)} {time.time() - started:.0f}s] {line}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)  # the answers are saved before scoring: nothing is lost
    (args.out / "answers.json").write_text(json.dumps({k: [a.to_json() for a in v] for k, v in answers.items()}))
    # Perplexity in float32 whatever the decoding dtype: a fresh float32 copy of SmolLM2 (a GGUF-loaded model
    # counts as quantized for transformers and refuses .float()).
    directory, name = find_smollm2_gguf()
    scorer = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32).eval()
    results = {"settings": settings | {"dtype": str(model.dtype), "threads": torch.get_num_threads(),
                                       "generation_config": model.generation_config.to_dict_own(),
                                       "prompts": len(prompts)},
               "summary": {}, "answers": {}}
    for name, found in answers.items():
        summary = summarize(found)
        ppl = generative_perplexity(scorer, tokenizer, found)
        summary |= {"gen_ppl": ppl["ppl"], "gen_ppl_median": ppl["median_ppl"]}
        results["summary"][name] = summary
        results["answers"][name] = [a.to_json() | {"nll": n} for a, n in zip(found, ppl["nll_per_answer"])]
    ar = results["summary"]["autoregressive"]
    for name, s in results["summary"].items():
        print(f"{name:15s} gen-PPL {s['gen_ppl']:6.2f} (median {s['gen_ppl_median']:.2f})  ended {s['ended_share']:.0%}  "
              f"degenerate {s['degenerate_share']:.0%}  distinct-2 {s['distinct_2']:.2f}  length median "
              f"{s['length']['median']}  NFE {s['nfe_mean']:.1f}  tok/fwd {s['tokens_per_forward']:.2f}  "
              f"{s['tokens_per_second']:.1f} tok/s  {s['seconds_total']:.0f}s  speed x{s['tokens_per_second'] / ar['tokens_per_second']:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    write_samples_page(args.samples_page, prompts, answers)
    print(f"-> {args.out / 'results.json'}, {args.samples_page}")


def parse_variant(variant: str) -> dict:
    """"grow:threshold=0.7,block_length=8" -> {"length_strategy": "grow", "threshold": 0.7, "block_length": 8}."""
    strategy, _, rest = variant.partition(":")
    settings = {"length_strategy": strategy}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--strategies {variant!r}: settings are key=value pairs separated by commas")
        is_json = value[:1].isdigit() or value[:1] == "-" or value in ("true", "false")  # else a bare string
        settings[key] = None if value == "None" else json.loads(value) if is_json else value
    return settings


def write_samples_page(path: Path, prompts, answers) -> None:
    names = list(answers)
    lines = ["# Side-by-side samples: held-out prompts", "",
             "Generated by `python examples/evaluate_default.py` (see [quality.md](quality.md)). Every prompt is from",
             "examples/prompts/heldout.txt, never used in training. Greedy decoding; *tokens / forwards / seconds* "
             "under each answer; (budget) marks an answer that did not end within the budget.", ""]
    for i, prompt in enumerate(prompts):
        lines += [f"## {i + 1}. {prompt}", ""]
        for name in names:
            a = answers[name][i]
            if name == "autoregressive":
                label = "autoregressive (SmolLM2 `generate`)"
            elif name.startswith("autoregressive:"):
                label = f"autoregressive (SmolLM2 `generate`), `{name.partition(':')[2]}`"
            elif name.split(":")[0] == "speculative":
                label = f"draft and verify (diffusion drafts, SmolLM2 verifies), `{name}`"
            else:
                label = f"diffusion, `{name}`"
            text = a.text.strip().replace("\n", "\n> ") or "*(empty)*"
            lines += [f"**{label}**: {len(a.tokens)} tokens / {a.nfe} forwards / {a.seconds:.2f} s"
                      f"{'' if a.ended else ' (budget)'}", "", f"> {text}", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
