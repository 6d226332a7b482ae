"""The LM head's product at the few rows a decoding forward scores: `nn.Linear` (x @ W^T) against FewRowsHead (W @ x^T).

    python benchmarks/lm_head_product.py              # SmolLM2's head shape (49152 x 576), random weights, fp32+bf16
    python benchmarks/lm_head_product.py --decode     # also: the embedded default answering, head plain vs FewRowsHead

Times both products in the same run, alternating, and writes benchmarks/results/lm_head_product.json;
`hf_dlm.modeling_dlm.FewRowsHead` quotes the result. `--decode` answers one prompt with the default model, once with
its head as plain `nn.Linear` and once as FewRowsHead (alternating, best of `--repeats`), and prints ms per forward.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from measure import machine

from hf_dlm.modeling_dlm import FewRowsHead

RESULTS = Path(__file__).resolve().parent / "results" / "lm_head_product.json"


def best_ms(fns, repeats: int) -> list[float]:
    """Best-of-`repeats` milliseconds of each function, the functions alternating (same machine load)."""
    best = [float("inf")] * len(fns)
    for fn in fns:
        fn()  # warm-up
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], 1000 * (time.perf_counter() - start))
    return best


def products(vocab: int, hidden: int, rows: list[int], repeats: int, dtype: torch.dtype) -> list[dict]:
    torch.manual_seed(0)
    plain = torch.nn.Linear(hidden, vocab, bias=False, dtype=dtype)
    few = copy.deepcopy(plain)
    few.__class__ = FewRowsHead  # what DiffusionLM.use_few_rows_head() does to a model's head
    found = []
    with torch.no_grad():
        for n in rows:
            x = torch.randn(1, n, hidden, dtype=dtype)
            linear, transposed = best_ms([lambda x=x: plain(x), lambda x=x: few(x)], repeats)
            found.append({"rows": n, "linear_ms": round(linear, 3), "few_rows_head_ms": round(transposed, 3),
                          "speedup": round(linear / transposed, 2)})
            print(f"{str(dtype):15s} rows {n:3d}  nn.Linear {linear:7.3f} ms  FewRowsHead {transposed:7.3f} ms  x{linear / transposed:.2f}",
                  flush=True)
    return found


def decode(prompt: str, max_new_tokens: int, repeats: int) -> dict:
    from hf_dlm.default import load_default
    from hf_dlm.evaluation import answer_diffusion

    model = load_default(None)  # its head is a FewRowsHead (load_default calls use_few_rows_head())
    found = {"dtype": str(model.dtype)}
    try:
        for _ in range(repeats):
            for name, enabled in (("linear", False), ("few_rows_head", True)):
                model.use_few_rows_head(enabled)
                answer = answer_diffusion(model, model.tokenizer, [prompt], max_new_tokens=max_new_tokens)[0]
                ms = 1000 * answer.seconds / answer.nfe
                found[name] = min(found.get(name, ms), ms)
                print(f"{name:14s} {len(answer.tokens)} tokens, {answer.nfe} forwards, {ms:.1f} ms / forward", flush=True)
    finally:
        model.use_few_rows_head(True)
    return found | {"speedup": round(found["linear"] / found["few_rows_head"], 2)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 64])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"],
                        help="of the product table; --decode uses the default model's dtype (load_default)")
    parser.add_argument("--decode", action="store_true")
    parser.add_argument("--prompt", default="Explain how photosynthesis works.")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = {"machine": machine() | {"blas": "mkl" if torch.backends.mkl.is_available() else "other"},
              "head": [args.vocab, args.hidden],
              "products": {d: products(args.vocab, args.hidden, args.rows, args.repeats, getattr(torch, d))
                           for d in args.dtypes}}
    if args.decode:
        result["decode_ms_per_forward"] = decode(args.prompt, args.max_new_tokens, max(2, args.repeats // 10))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
