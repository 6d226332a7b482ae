"""Where a forward's time goes: the embedded default's `diffusion_generate` next to SmolLM2's AR `generate`.

    python benchmarks/profile_default.py [--prompt TEXT] [--max-new-tokens 128]

Answers one prompt with both (twice, to warm up), prints seconds per forward of each, then a cProfile of one
answer each: docs/quality.md quotes the linear layers' share (a product over the anchor + block rows against one).
"""

import argparse
import cProfile
import pstats

from hf_dlm.default import load_default
from hf_dlm.evaluation import answer_autoregressive, answer_diffusion


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", default="Explain how photosynthesis works.")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--top", type=int, default=15, help="rows of each profile")
    args = parser.parse_args(argv)
    model, ar_model = load_default(None, autoregressive=True)
    tokenizer = model.tokenizer
    runs = {
        "diffusion": lambda: answer_diffusion(model, tokenizer, [args.prompt], max_new_tokens=args.max_new_tokens)[0],
        "autoregressive": lambda: answer_autoregressive(ar_model, tokenizer, [args.prompt],
                                                        max_new_tokens=args.max_new_tokens)[0],
    }
    for _ in range(2):
        for name, run in runs.items():
            a = run()
            print(f"{name:15s} {len(a.tokens)} tokens, {a.nfe} forwards, {a.seconds:.2f} s, "
                  f"{1000 * a.seconds / a.nfe:.1f} ms / forward")
    for name, run in runs.items():
        print(f"\n=== {name}")
        profile = cProfile.Profile()
        profile.runcall(run)
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
