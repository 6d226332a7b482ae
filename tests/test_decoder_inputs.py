"""The decoders' input checks as properties (issue 25): over prompt ids (dtype, values, hostile ids at real and at
padded positions, an empty batch), attention masks (dtype, padding, values other than 0/1, all-zero rows, a wrong
shape) and settings, every invalid input to `diffusion_generate` and `speculative_generate` is a `ValueError` whose
message names the problem (never a crash inside torch), and every valid one decodes.

An oracle computes from the very tensors passed which rules they break (`violations`); with one broken rule the
message must say which. Run with `--hypothesis-show-statistics` to see how many cases were valid and invalid."""

import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hf_dlm import DiffusionLM
from hf_dlm.speculative import speculative_generate
from hf_dlm.testing import char_tokenizer, tiny_causal_lm
from tests.conftest import make_dlm

# Each test decodes 80 cases in a few seconds on the tiny models.
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
IDS_DTYPES = {"long": torch.long, "int32": torch.int32, "float": torch.float32, "double": torch.float64,
              "bool": torch.bool}
MASK_DTYPES = {"none": None, "long": torch.long, "int32": torch.int32, "float": torch.float32, "bool": torch.bool}


@pytest.fixture(scope="module")
def diffusion():
    model, _ = make_dlm()
    return model.eval()


@pytest.fixture(scope="module")
def pair():
    """A drafter and its verifier: the drafter's vocabulary is the verifier's + its mask and pad tokens."""
    torch.manual_seed(0)
    tok = char_tokenizer()
    verifier = tiny_causal_lm("gpt2", vocab_size=len(tok)).eval()
    drafter = DiffusionLM.from_causal_lm(tiny_causal_lm("gpt2", vocab_size=len(tok)), tok).eval()
    return drafter, verifier


def choose(draw, clean: bool, valid: list, invalid: list):
    """One of `valid`, or (unless `clean`) of `valid + invalid`: half the cases draw only valid choices, so that
    a good share decodes, and the other half mixes faults freely, so that faults meet each other too."""
    return draw(st.sampled_from(valid if clean else valid + invalid))


@st.composite
def prompts(draw, ordinary: int):
    """(ids rows, length, mask rows, mask width, ids dtype, mask dtype); ids of real tokens are ordinary ones
    (< `ordinary`) unless a hostile one ("vocab": the first id past the embedding, "mask": the mask token, -1,
    10,000) is placed, at a real position or at the first, often a padded one."""
    clean = draw(st.booleans())
    batch, length = choose(draw, clean, [1, 2, 3], [0]), draw(st.integers(1, 5))
    rows = [draw(st.lists(st.integers(0, ordinary - 1), min_size=length, max_size=length)) for _ in range(batch)]
    pads = [draw(st.integers(0, length - 1)) for _ in range(batch)]  # leading pads; each row keeps a real token
    mask = [[0] * p + [1] * (length - p) for p in pads]
    shape = choose(draw, clean, ["left_padded"], ["zero_row", "right_padded", "odd_value", "short"])
    if batch:
        if shape == "zero_row":
            mask[0] = [0] * length
        elif shape == "right_padded":
            mask[0] = [1] * (length - 1) + [0]
        elif shape == "odd_value":
            mask[0][-1] = draw(st.sampled_from([2, -1, 0.5]))
    width = length - 1 if shape == "short" else length
    mask = [row[length - width:] for row in mask]
    hostile = choose(draw, clean, [None], [-1, "vocab", "mask", 10_000])
    where = draw(st.sampled_from(["real", "first"]))  # the last column is always real; the first often padding
    if batch and hostile is not None:
        rows[0][-1 if where == "real" else 0] = hostile
    ids_dtype = choose(draw, clean, ["long", "int32"], ["float", "double", "bool"])
    mask_dtype = draw(st.sampled_from(["long", "none", "int32", "float", "bool"]))  # any dtype of 0/1 is fine
    if mask_dtype == "none" and shape != "left_padded":
        mask_dtype = "long"  # a shape that needs a mask keeps one
    if shape == "odd_value" and batch and mask[0][-1] == 0.5:
        mask_dtype = "float"  # 0.5 survives only as a float
    return rows, length, mask, width, ids_dtype, mask_dtype


@st.composite
def diffusion_settings(draw):
    clean = draw(st.booleans())
    return {"temperature": choose(draw, clean, [0.0, 0.7], [math.nan, math.inf, -0.5]),
            "repetition_penalty": choose(draw, clean, [1.0, 1.3], [math.inf, 0.0]),
            "eos_token_id": choose(draw, clean, [None, 0, [0, 5]], [-1, 60]),
            "max_new_tokens": choose(draw, clean, [4], [0])}


@st.composite
def speculative_settings(draw):
    clean = draw(st.booleans())
    return {"eos_token_id": choose(draw, clean, [None, 0, [0, 3]], [-1, 58]),
            "max_new_tokens": choose(draw, clean, [4], [0]), "draft_length": choose(draw, clean, [1, 3], [0])}


def tensors(case, vocab: int, mask_id: int):
    """The case as the tensors a caller would pass ("vocab": the first id past the embedding, "mask": its mask
    token id)."""
    rows, length, mask, width, ids_dtype, mask_dtype = case
    concrete = [[{"vocab": vocab, "mask": mask_id}.get(t, t) for t in row] for row in rows]
    ids = torch.tensor(concrete, dtype=torch.long).reshape(len(rows), length).to(IDS_DTYPES[ids_dtype])
    if MASK_DTYPES[mask_dtype] is None:
        return ids, None
    attention = torch.tensor(mask, dtype=torch.float32).reshape(len(rows), width)
    return ids, attention.to(MASK_DTYPES[mask_dtype])


def violations(ids: torch.Tensor, mask, id_limit: int, mask_id: int | None) -> list[str]:
    """The rules the prompt tensors break, as the phrase each message must contain."""
    broken = []
    if ids.dtype in (torch.float32, torch.float64, torch.bool):
        broken.append("integer token ids")
    if ids.shape[0] == 0:
        broken.append("batch is empty")
    if broken:
        return broken
    as_mask = torch.ones_like(ids, dtype=torch.float64) if mask is None else mask.to(torch.float64)
    if as_mask.shape != ids.shape:
        return ["must match input_ids"]
    if ((as_mask != 0) & (as_mask != 1)).any():
        return ["must hold only 0"]
    if (as_mask.sum(-1) == 0).any():
        broken.append("no real token")
    elif (as_mask[:, :-1] > as_mask[:, 1:]).any():
        broken.append("left padded")
    real = ids.long()[as_mask.bool()]
    if ((real < 0) | (real >= id_limit)).any():
        broken.append("outside the")
    if mask_id is not None and (real == mask_id).any():
        broken.append("mask token")
    return broken


def real_positions(ids, mask) -> torch.Tensor:
    """Where the prompt has real tokens (padding comes back as the pad id, whatever was there)."""
    return torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()


def expect(decode, broken: list[str]):
    if not broken:
        event("valid: decodes")
        return decode()
    event(f"invalid: {' + '.join(broken)}")
    with pytest.raises(ValueError) as caught:  # anything else (IndexError, RuntimeError) fails the test
        decode()
    message = str(caught.value)
    assert len(message) > 20, message  # a sentence, not a bare value
    if len(broken) == 1:
        assert broken[0] in message, (broken, message)
    return None


@FAST
@given(case=prompts(ordinary=58), setting=diffusion_settings())
def test_diffusion_generate_refuses_every_invalid_input_and_decodes_every_valid_one(diffusion, case, setting):
    vocab, mask_id = diffusion.get_input_embeddings().num_embeddings, diffusion.config.mask_token_id
    ids, mask = tensors(case, vocab, mask_id)
    broken = violations(ids, mask, vocab, mask_id)
    if not (setting["temperature"] >= 0 and math.isfinite(setting["temperature"])):
        broken.append("temperature")
    if not (setting["repetition_penalty"] > 0 and math.isfinite(setting["repetition_penalty"])):
        broken.append("repetition_penalty")
    if setting["eos_token_id"] in (-1, 60):
        broken.append("eos_token_id")
    if setting["max_new_tokens"] < 1:
        broken.append("max_new_tokens")
    out = expect(lambda: diffusion.diffusion_generate(ids, mask, block_length=4, seed=0, **setting), broken)
    if out is not None:
        assert out.shape[0] == ids.shape[0] and ids.shape[1] < out.shape[1] <= ids.shape[1] + setting["max_new_tokens"]
        real = real_positions(ids, mask)
        assert torch.equal(out[:, : ids.shape[1]][real], ids.long()[real])  # the prompt's tokens come back as given
        assert not (out == mask_id).any()  # every mask filled


@FAST
@given(case=prompts(ordinary=58), setting=speculative_settings())
def test_speculative_generate_refuses_every_invalid_input_and_decodes_every_valid_one(pair, case, setting):
    drafter, verifier = pair
    verifier_vocab = verifier.get_input_embeddings().num_embeddings
    ids, mask = tensors(case, drafter.get_input_embeddings().num_embeddings, drafter.config.mask_token_id)
    broken = violations(ids, mask, verifier_vocab, None)  # the mask token is past the verifier's vocabulary
    if setting["eos_token_id"] in (-1, 58):
        broken.append("eos_token_id")
    if setting["max_new_tokens"] < 1:
        broken.append("max_new_tokens")
    if setting["draft_length"] < 1:
        broken.append("draft_length")
    out = expect(lambda: speculative_generate(drafter, verifier, ids, mask, **setting), broken)
    if out is not None:
        sequences = out.sequences
        assert sequences.shape[0] == ids.shape[0] and sequences.shape[1] <= ids.shape[1] + setting["max_new_tokens"]
        real = real_positions(ids, mask)
        assert torch.equal(sequences[:, : ids.shape[1]][real], ids.long()[real])
        answer = sequences[:, ids.shape[1]:]  # tokens the verifier can say, and the pad after a row's EOS
        assert ((answer < verifier_vocab) | (answer == drafter.config.pad_token_id)).all()
