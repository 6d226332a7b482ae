"""The embedded gated drafter against SmolLM2's own `generate`, on the held-out prompts, in one run (issue 23).

    python benchmarks/gated_default.py                                  # 62 prompts, budget 256, batch 1
    python benchmarks/gated_default.py --draft-lengths 2 3 4 --limit 20 --batch-sizes 1 8
    python benchmarks/gated_default.py --drafter runs/gated/asset       # a drafter not (yet) shipped

SmolLM2-135M-Instruct with its gated drafter (`load_default_drafter`) decodes the held-out prompts
(examples/prompts/heldout.txt, never trained on) with `speculative_generate` at each --draft-lengths, interleaved
prompt by prompt with SmolLM2's greedy `generate` (`hf_dlm.cli.bench.run`: the same batches, settings in turn, one
untimed warm-up). Reported: tokens per forward, wall time and the speed ratio to AR, drafts kept per round and per
draft position, whether every answer equals SmolLM2's, and the cost of one forward over 2k+1 positions against one
over 1 (what drafting can buy on this CPU). `--agreement-dtype bfloat16` adds the share of answers equal to
SmolLM2's `generate` when both run in that dtype.

Writes benchmarks/results/gated_default.json (or --out) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drafter", type=Path, default=None, help="drafter directory (default: the shipped one)")
    parser.add_argument("--draft-lengths", nargs="+", type=int, default=[2, 3, 4, 6])
    parser.add_argument("--predraft-lengths", nargs="*", type=int, default=[],
                        help="draft lengths also measured with pre-drafts (a block per outcome, TiDAR)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1])
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--limit", type=int, default=None, help="first N held-out prompts")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--agreement-dtype", default=None, help="also check answers against AR in this dtype")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gated_default.json")
    args = parser.parse_args(argv)

    import torch
    from common import write_json
    from gated_drafter import forward_cost, gated_settings, measure_against_ar, round_shapes

    from hf_dlm.default import DEFAULT_DRAFTER, load_default_drafter
    from hf_dlm.evaluation import answer_autoregressive, answer_gated

    if args.threads:
        torch.set_num_threads(args.threads)
    drafter = args.drafter or DEFAULT_DRAFTER
    model, ar = load_default_drafter(args.dtype, autoregressive=True, drafter=drafter)
    tokenizer = model.tokenizer
    prompts = [p for p in (ROOT / "examples" / "prompts" / "heldout.txt").read_text().splitlines() if p.strip()]
    prompts = prompts[: args.limit]
    records = [{"prompt": p} for p in prompts]
    budget = args.max_new_tokens
    settings = gated_settings(budget, args.draft_lengths, args.predraft_lengths)
    results = measure_against_ar(settings, model, tokenizer, records, ar, args.batch_sizes, acceptance_batch=8)
    cost = forward_cost(model, round_shapes(args.draft_lengths, args.predraft_lengths), prefix=128)
    agreement = None
    if args.agreement_dtype:
        low_model, low_ar = model.to(getattr(torch, args.agreement_dtype)), ar.to(getattr(torch, args.agreement_dtype))
        k = args.draft_lengths[len(args.draft_lengths) // 2]
        mine = answer_gated(low_model, tokenizer, prompts, max_new_tokens=budget, draft_length=k, batch_size=8)
        theirs = answer_autoregressive(low_ar, tokenizer, prompts, max_new_tokens=budget, batch_size=8,
                                       eos_token_id=model.config.eos_token_id)
        agreement = {"dtype": args.agreement_dtype, "draft_length": k,
                     "same_answer": statistics.fmean(a.tokens == b.tokens for a, b in zip(mine, theirs))}
    lines = ["| batch | decoding | same answer as SmolLM2 | tokens/forward | drafts kept per round | kept per draft "
             "position | tokens/s | speed x AR |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        accept = ", ".join(f"{a:.2f}" for a in r.get("acceptance_by_position", [])) or "-"
        lines.append(f"| {r['batch_size']} | {r['setting']} | {100 * r['agree_ar']:.0f}% | {r['tokens_per_forward']:.2f}"
                     f" | {r.get('kept_per_round', float('nan')):.2f} | {accept} | {r['tokens_per_s']:.1f} | "
                     f"{r['vs_ar']:.2f}x |")
    lines += ["", "| positions in the forward (cache of 128) | ms | x one position |", "|---|---|---|"]
    lines += [f"| {q} | {ms:.1f} | {ms / cost[1]:.2f} |" for q, ms in cost.items()]
    table = "\n".join(lines) + "\n"
    write_json(args.out, {"drafter": str(drafter), "dtype": args.dtype, "prompts": len(prompts), "budget": budget,
                          "results": results, "forward_ms": cost, "agreement": agreement})
    args.out.with_suffix(".md").write_text(table)
    print(table)
    if agreement:
        print(f"{agreement['dtype']}: {100 * agreement['same_answer']:.0f}% of answers equal SmolLM2's generate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
