"""Draft and verify on the benchmark suite: the adapted model drafts, its AR base verifies (`hf_dlm.speculative`).

Needs the trained checkpoints of `benchmarks/run.py` (stages `ar` and `adapt`; any other adapted model of the same
AR base with --drafter). One process, batch 1, every setting interleaved prompt by prompt (`hf_dlm.cli.bench.run`):
AR `generate`, the drafter decoding alone (`grow`, first threshold, KV cache) and draft and verify at each
--draft-lengths; accuracy, tokens per forward (answer tokens / forwards, drafter's + verifier's), wall time and the
ratios to AR. Draft and verify returns the AR base's greedy answers, so its accuracy is AR's (a difference would be
a bug); what it changes is the number of forwards.

    python benchmarks/run.py --preset full --stages ar adapt        # the checkpoints (~28 min on 2 cores)
    python benchmarks/speculative.py --preset full                   # ~5 min
    python benchmarks/speculative.py --preset smoke --work /tmp/smoke --out /tmp/smoke/speculative.json

Writes benchmarks/results/speculative_<preset>.{json,md} (or --out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the stage modules are siblings of this script


def markdown(tables: dict) -> str:
    lines = ["| drafter | decoding | exact % | tokens/forward | NFE/answer | ms/answer (batch 1) | speed x AR |",
             "|---|---|---|---|---|---|---|"]
    for drafter, results in tables.items():
        ar = next(r for r in results if r["method"] == "ar")
        for r in results:
            lines.append(f"| {drafter} | {r['setting']} | {100 * r['accuracy']:.1f} | {r['tokens_per_forward']:.2f} | "
                         f"{r['mean_nfe']:.1f} | {r['ms_per_answer']:.1f} | {ar['seconds'] / r['seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--work", type=Path, default=None, help="checkpoints (default benchmarks/checkpoints/<preset>)")
    parser.add_argument("--drafter", nargs="+", default=None,
                        help="adapted checkpoints to draft with (default <work>/adapt)")
    parser.add_argument("--draft-lengths", nargs="+", type=int, default=[4, 8, 16])
    parser.add_argument("--n", type=int, default=None, help="test prompts (default: the preset's n_accuracy)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch
    from common import task_dataset, write_json
    from config import get_preset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_dlm import DiffusionLM
    from hf_dlm.cli.bench import Setting, run

    torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    work = args.work or HERE / "checkpoints" / args.preset
    drafters = [Path(d) for d in args.drafter] if args.drafter else [work / "adapt"]
    for path in [work / "ar", *drafters]:
        if not (path / "config.json").is_file():
            parser.error(f"{path} holds no checkpoint: train it first (python benchmarks/run.py --preset "
                         f"{args.preset} --stages ar adapt)")
    ar = AutoModelForCausalLM.from_pretrained(work / "ar").eval()
    records = task_dataset(preset, "test").to_list()[: args.n or preset.n_accuracy]
    budget, block, threshold = preset.main_budget, preset.block_length, preset.thresholds[0]
    settings = [Setting("ar", budget, None, True, block), Setting("grow", budget, threshold, True, block)]
    settings += [Setting("speculative", budget, None, True, k) for k in args.draft_lengths]
    tables = {}
    for path in drafters:
        name = f"{path.parent.name}/{path.name}"  # e.g. full/adapt, full_conf/adapt
        tokenizer = AutoTokenizer.from_pretrained(path)
        dlm = DiffusionLM.from_pretrained(path).eval()
        results = run(settings, dlm, tokenizer, records, ar_model=ar, batch_size=1,
                      progress=lambda msg, name=name: print(f"[{name}] {msg}", file=sys.stderr, flush=True))
        for r in results:
            print(f"[{name}] {r['setting']}: exact {r['accuracy']:.3f}, {r['tokens_per_forward']:.2f} "
                  f"tokens/forward, {r['ms_per_answer']:.1f} ms/answer", file=sys.stderr, flush=True)
        tables[name] = results
    out = args.out or HERE / "results" / f"speculative_{args.preset}.json"
    write_json(out, {"preset": preset.to_dict(), "threads": args.threads, "n": len(records),
                     "drafters": [str(d) for d in drafters], "tables": tables})
    out.with_suffix(".md").write_text(markdown(tables))
    print(markdown(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
