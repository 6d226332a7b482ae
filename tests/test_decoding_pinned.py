"""Decoding outputs are pinned to the token: the same tiny models, prompts and settings give exactly the token ids,
forwards and lengths recorded in `pinned_decoding.json` (greedy and seeded sampling, every length strategy, every
cache mode, every unmasking rule). A refactor of the decoder must keep them bit-identical.

A deliberate change of decoding rewrites the record: `python -m tests.test_decoding_pinned` (then say why in the
commit)."""

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import make_dlm

RECORD = Path(__file__).with_name("pinned_decoding.json")
PROMPTS = ["the cat sat", "2+2="]
COMMON = dict(max_new_tokens=12, block_length=4, threshold=None, steps=6, predict_threshold=0.02, length_margin=1)
# name -> (backbone, attention, settings over COMMON)
CASES = {
    "fixed": ("gpt2", "bidirectional", dict(length_strategy="fixed", use_cache=False)),
    "grow": ("gpt2", "bidirectional", dict(length_strategy="grow", use_cache=False)),
    "predict": ("gpt2", "bidirectional", dict(length_strategy="predict", use_cache=False)),
    "fixed-prefix-cache": ("gpt2", "bidirectional", dict(length_strategy="fixed", use_cache=True)),
    "grow-prefix-cache": ("llama", "bidirectional", dict(length_strategy="grow", use_cache=True)),
    "predict-prefix-cache": ("gpt2", "bidirectional", dict(length_strategy="predict", use_cache=True)),
    "fixed-dual-cache": ("qwen2", "bidirectional", dict(length_strategy="fixed", use_cache="dual")),
    "predict-dual-cache": ("gpt2", "bidirectional", dict(length_strategy="predict", use_cache="dual")),
    "grow-full-refresh": ("gpt2", "bidirectional", dict(length_strategy="grow", use_cache=True, cache_refresh="full")),
    "causal-prefix-cache": ("llama", "causal_prefix", dict(length_strategy="predict", use_cache=True)),
    "threshold": ("gpt2", "bidirectional", dict(length_strategy="grow", steps=None, threshold=0.05)),
    "margin": ("gpt2", "bidirectional", dict(length_strategy="fixed", unmasking="margin")),
    "entropy": ("gpt2", "bidirectional", dict(length_strategy="fixed", unmasking="entropy")),
    "random": ("gpt2", "bidirectional", dict(length_strategy="fixed", unmasking="random", seed=3)),
    "left-to-right": ("gpt2", "bidirectional", dict(length_strategy="grow", unmasking="left_to_right",
                                                     steps=None, threshold=0.05)),
    "defer-repeats": ("gpt2", "bidirectional", dict(length_strategy="fixed", defer_repeats=True)),
    "repetition-penalty": ("gpt2", "bidirectional", dict(length_strategy="predict", repetition_penalty=1.5)),
    "sampled": ("gpt2", "bidirectional", dict(length_strategy="fixed", temperature=0.8, seed=7)),
    "sampled-top-k": ("llama", "bidirectional", dict(length_strategy="grow", temperature=1.2, top_k=5, seed=11)),
    "sampled-top-p": ("gpt2", "bidirectional", dict(length_strategy="predict", temperature=1.0, top_p=0.3,
                                                     seed=5, use_cache="dual")),
    "sampled-top-k-top-p-penalty": ("qwen2", "bidirectional", dict(length_strategy="fixed", temperature=0.7, top_k=8,
                                                                   top_p=0.6, repetition_penalty=1.3, seed=2)),
}


def decode(name: str) -> dict:
    backbone, attention, settings = CASES[name]
    model, tok = make_dlm(backbone, attention=attention)
    tok.padding_side = "left"
    inputs = tok(PROMPTS, return_tensors="pt", padding=True)
    out = model.diffusion_generate(inputs.input_ids, inputs.attention_mask, return_dict_in_generate=True,
                                   **(COMMON | settings))
    record = {"sequences": out.sequences.tolist(), "nfe": out.nfe, "nfe_per_row": out.nfe_per_row.tolist(),
              "lengths": out.lengths.tolist()}
    if out.predicted_lengths is not None:
        record |= {"predicted_lengths": out.predicted_lengths.tolist(), "bounds": out.bounds.tolist(),
                   "grew": out.grew.tolist()}
    return record


@pytest.mark.parametrize("name", sorted(CASES))
def test_decoding_gives_the_pinned_tokens(name):
    assert decode(name) == json.loads(RECORD.read_text())[name]


def test_the_pinned_cases_exercise_what_they_name():
    """The record is not degenerate: predict cuts some canvas below the budget, sampling differs from greedy."""
    record = json.loads(RECORD.read_text())
    assert any(bound < COMMON["max_new_tokens"] for bound in record["predict"]["bounds"])
    assert record["sampled"]["sequences"] != record["fixed"]["sequences"]
    assert record["margin"]["sequences"] != record["fixed"]["sequences"]


if __name__ == "__main__":
    torch.set_num_threads(1)
    RECORD.write_text(json.dumps({name: decode(name) for name in CASES}, indent=1) + "\n")
    print(f"wrote {RECORD}")
