"""Print how each length strategy fills its canvas, step by step, on the oracle backbone of the test suite
(a model that knows the answer `abcdefghij` exactly), so the mechanics are visible without a trained model.

    python examples/trace_strategies.py

Legend: `_` mask, `E` EOS, `.` outside the canvas (pad), letters = committed answer tokens.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.oracle import EOS, MASK, PAD, batch, oracle_model  # noqa: E402


def symbol(token: int) -> str:
    return {MASK: "_", EOS: "E", PAD: "."}.get(token, chr(ord("a") + token - 10))


def main() -> None:
    model = oracle_model({4: list(range(10, 20))})  # prompt [4, 5] -> answer of 10 tokens
    ids, mask = batch([[4, 5]])
    runs = [
        ("fixed", dict(threshold=None)),
        ("grow", dict(threshold=None)),
        ("predict", dict(threshold=None, length_margin=2)),
        ("grow", dict(threshold=0.9)),
    ]
    for strategy, settings in runs:
        out = model.diffusion_generate(ids, mask, max_new_tokens=24, block_length=4, length_strategy=strategy,
                                       return_dict_in_generate=True, output_history=True, **settings)
        extra = f", predicted length {out.predicted_lengths.item()}" if out.predicted_lengths is not None else ""
        print(f"{strategy} {settings}: nfe={out.nfe}{extra}")
        for step, canvas in enumerate(out.history, 1):
            print(f"  step {step:2d}  " + "".join(symbol(t) for t in canvas[0, ids.shape[1]:].tolist()))
        print()


if __name__ == "__main__":
    main()
