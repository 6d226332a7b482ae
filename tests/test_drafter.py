"""Gated drafters (`drafter="gated_lora"`): one forward drafts and verifies, and the answer is the base's greedy one."""

import copy

import pytest
import torch
from datasets import Dataset

from hf_dlm import DiffusionLM, DiffusionTrainer, DiffusionTrainingArguments
from hf_dlm.draft_rows import IGNORE, draft_rows
from hf_dlm.testing import char_tokenizer, tiny_causal_lm
from tests.isolated import run_without_hf_dlm

PROMPTS = ["the cat sat on", "2+2=", "abc abc abc", "q"]


def gated(model_type="gpt2", attention=None, seed=0, noisy_adapter=True, **kwargs):
    """(drafter, its base as an untouched causal LM, tokenizer). The adapter gets random weights: drafts are wrong
    often, which the answer must not show."""
    torch.manual_seed(seed)
    tok = char_tokenizer()
    base = tiny_causal_lm(model_type, vocab_size=len(tok), **kwargs).eval()
    model = DiffusionLM.from_causal_lm(copy.deepcopy(base), tok, drafter="gated_lora", drafter_rank=4,
                                       attention=attention).eval()
    if noisy_adapter:
        randomise_adapter(model)
    return model, base, tok


def randomise_adapter(model, seed=1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.drafter.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)


def greedy(base, ids, max_new_tokens, eos_id):
    out = base.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                        pad_token_id=eos_id, eos_token_id=eos_id)
    answer = out[0, ids.shape[1]:].tolist()
    return answer[: answer.index(eos_id) + 1] if eos_id in answer else answer


def answers(out, prompt_width):
    return [out.sequences[i, prompt_width:].tolist()[: n] for i, n in enumerate(out.new_tokens)]


def left_padded(tok, prompts):
    tok.padding_side = "left"
    return tok(prompts, return_tensors="pt", padding=True)


# ------------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("attention", ["causal", "causal_prefix"])
@pytest.mark.parametrize("draft_length", [1, 3, 6])
@pytest.mark.parametrize("predraft", [False, True])
def test_a_batch_decodes_to_the_bases_greedy_answers_whatever_the_adapter(model_type, attention, draft_length,
                                                                           predraft):
    model, base, tok = gated(model_type, attention)
    eos = model.config.eos_token_ids[0]
    enc = left_padded(tok, PROMPTS)
    out = model.speculative_generate(enc.input_ids, enc.attention_mask, max_new_tokens=24, draft_length=draft_length,
                                     predraft=predraft)
    for prompt, got in zip(PROMPTS, answers(out, enc.input_ids.shape[1])):
        assert got == greedy(base, tok(prompt, return_tensors="pt").input_ids, 24, eos), prompt


def test_rows_stop_at_their_own_eos_and_the_rest_is_pad():
    model, base, tok = gated("llama")
    # An EOS id the base actually emits: the third token of the first prompt's greedy answer.
    first = tok(PROMPTS[0], return_tensors="pt").input_ids
    free = base.generate(first, attention_mask=torch.ones_like(first), max_new_tokens=10, do_sample=False)
    eos = free[0, first.shape[1] + 2].item()
    enc = left_padded(tok, PROMPTS)
    out = model.speculative_generate(enc.input_ids, enc.attention_mask, max_new_tokens=20, draft_length=3,
                                     eos_token_id=eos)
    assert out.new_tokens[0] <= 3
    for i, prompt in enumerate(PROMPTS):
        ref = greedy(base, tok(prompt, return_tensors="pt").input_ids, 20, eos)
        assert answers(out, enc.input_ids.shape[1])[i] == ref
        assert set(out.sequences[i, enc.input_ids.shape[1] + len(ref):].tolist()) <= {model.config.pad_token_id}


def test_a_budget_that_reaches_the_context_limit_decodes_exactly():
    model, base, tok = gated("gpt2", positions=24)
    ids = tok("abcdefgh", return_tensors="pt").input_ids
    out = model.speculative_generate(ids, max_new_tokens=24 - ids.shape[1], draft_length=6)
    assert answers(out, ids.shape[1])[0] == greedy(base, ids, 24 - ids.shape[1], model.config.eos_token_ids[0])
    with pytest.raises(ValueError, match="exceeds the model's 24 positions"):
        model.speculative_generate(ids, max_new_tokens=25 - ids.shape[1])


def test_pre_drafts_are_what_the_block_of_that_outcome_would_draft_alone():
    # Pre-drafting (TiDAR) puts one mask block per outcome in the forward; block a must draft exactly what a round
    # whose drafts were cut to a would: the blocks must not see each other, nor the drafts after their outcome.
    model, _, tok = gated("llama")
    mask = model.config.mask_token_id
    ids = tok("the cat sat", return_tensors="pt").input_ids
    specs = tok("xyz", return_tensors="pt").input_ids[0].tolist()
    k = 2
    from hf_dlm.drafter_dlm import _Batch

    with torch.no_grad():
        for kept in range(len(specs) + 1):
            alone = torch.cat([ids, torch.tensor([specs[:kept] + [mask] * k])], 1)
            expected = model(input_ids=alone, shift_logits=False).logits[0, -k:]
            # One forward with every block, built the way the decoder builds a round: the prompt minus its last
            # token in the cache, the last token pending, three drafts to check.
            batch = _Batch(model, ids, torch.ones_like(ids), [0], 0, 30, k, predraft=True)
            batch.first = None
            prefix = ids[:, :-1]
            model(input_ids=prefix, cache=batch.cache, use_cache=True)
            batch.slots = torch.ones_like(prefix)
            batch.answers[0] = [ids[0, -1].item()]
            batch.lengths = [ids.shape[1]]
            batch.specs = [specs]
            inputs, real, pos, attention, lead, blocks, outcome = batch._round_inputs(k)
            got = model(input_ids=inputs, attention_mask=attention, position_ids=pos, cache=batch.cache,
                        use_cache=True, shift_logits=False).logits[0, lead + kept * k : lead + kept * k + k]
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_with_pre_drafts_no_round_after_the_first_goes_without_drafts():
    model, base, tok = gated("gpt2")
    enc = left_padded(tok, PROMPTS)
    out = model.speculative_generate(enc.input_ids, enc.attention_mask, max_new_tokens=20, draft_length=3,
                                     predraft=True)
    cold = model.speculative_generate(enc.input_ids, enc.attention_mask, max_new_tokens=20, draft_length=3)
    for i in range(len(PROMPTS)):
        rounds_with_drafts = len(out.accepted[i])
        # Every round checks drafts but the first and one whose budget leaves no room for any.
        assert rounds_with_drafts >= out.verify_forwards[i] - 2
        assert len(cold.accepted[i]) < cold.verify_forwards[i] - 2  # without them, rejections cost a cold round


def test_when_every_draft_is_right_a_forward_yields_draft_length_plus_one_tokens():
    # A base whose head prefers one token whatever the input: greedy repeats it, and so do the masks' drafts.
    model, base, tok = gated("gpt2", noisy_adapter=False)
    favourite = tok.convert_tokens_to_ids("z")
    for m in (model.backbone, base):
        m.lm_head.bias = torch.nn.Parameter(torch.zeros(m.lm_head.out_features))
        with torch.no_grad():
            m.lm_head.bias[favourite] = 100.0
    enc = left_padded(tok, PROMPTS[:2])
    out = model.speculative_generate(enc.input_ids, enc.attention_mask, max_new_tokens=21, draft_length=4)
    assert answers(out, enc.input_ids.shape[1]) == [[favourite] * 21] * 2
    # Round 1 gives 1 token + 4 drafts; then 5 tokens a forward: 1 + 5 + 5 + 5 + 5 = 21 in 5 forwards.
    assert out.verify_forwards == [5, 5] and out.nfe == 5
    assert out.accepted == [[4, 4, 4, 4]] * 2 and out.acceptance_rate == 1.0
    assert out.tokens_per_forward == pytest.approx(21 / 5)


# ------------------------------------------------------------------------------------------------- gating
def test_the_adapter_never_changes_a_clean_positions_logits():
    model, base, tok = gated("llama", noisy_adapter=False)
    mask = model.config.mask_token_id
    ids = tok("the cat", return_tensors="pt").input_ids
    ids = torch.cat([ids, torch.full((1, 3), mask)], 1)
    clean = ids.shape[1] - 3
    with torch.no_grad():
        before = model(input_ids=ids, shift_logits=False).logits
        randomise_adapter(model, seed=7)
        after = model(input_ids=ids, shift_logits=False).logits
        reference = base(input_ids=ids[:, :clean]).logits
    assert torch.equal(before[:, :clean], after[:, :clean])
    torch.testing.assert_close(after[:, :clean, : reference.shape[-1]], reference, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before[:, clean:], after[:, clean:])


def test_only_the_adapter_trains():
    model, _, _ = gated(noisy_adapter=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("drafter.") for n in trainable)
    assert "drafter.mask_embedding" in trainable


# ------------------------------------------------------------------------------------------------- training
def test_draft_rows_put_k_masks_after_every_cut_of_the_answer():
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 0]])
    real = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    loss = torch.tensor([[0, 0, 0, 1, 1, 1, 0]])  # answer = 8 9 10
    rows = draft_rows(ids, real, loss, draft_length=2, mask_token_id=99, pad_token_id=0)
    # cuts: c with x[c] and x[c+1] in the answer -> c = 3, 4
    assert rows.input_ids.tolist() == [[99, 99, 99, 99]]
    assert rows.position_ids.tolist() == [[3, 4, 4, 5]]
    assert rows.targets.tolist() == [[9, 10, 10, IGNORE]]
    mask = rows.attention_mask[0, 0]
    assert mask[0, :7].tolist() == [True, True, True, False, False, False, False]  # cut 3 sees x[:3]
    assert mask[2, :7].tolist() == [True, True, True, True, False, False, False]  # cut 4 sees x[:4]
    assert mask[:, 7:].tolist() == [[True, False, False, False], [True, True, False, False],
                                    [False, False, True, False], [False, False, True, True]]


def test_training_on_the_bases_own_answers_raises_acceptance(tmp_path):
    model, _, tok = gated("gpt2", noisy_adapter=False)
    prompts = [f"{a}{b}{c}" for a in "abcd" for b in "efgh" for c in "ij"]
    enc = left_padded(tok, prompts)
    before = model.speculative_generate(enc.input_ids, enc.attention_mask, max_new_tokens=16, draft_length=3)
    data = Dataset.from_list([
        {"prompt": p, "completion": tok.decode(a)} for p, a in zip(prompts, answers(before, enc.input_ids.shape[1]))
    ])
    args = DiffusionTrainingArguments(output_dir=str(tmp_path), max_steps=40, per_device_train_batch_size=8,
                                      learning_rate=1e-2, warmup_steps=0, report_to=[], max_length=48,
                                      save_strategy="no", draft_length=3, logging_steps=40)
    DiffusionTrainer(model=model, args=args, train_dataset=data, processing_class=tok).train()
    after = model.speculative_generate(enc.input_ids, enc.attention_mask, max_new_tokens=16, draft_length=3)
    assert answers(after, enc.input_ids.shape[1]) == answers(before, enc.input_ids.shape[1])
    assert after.acceptance_rate > before.acceptance_rate + 0.3
    assert after.nfe < before.nfe


def test_the_trainer_refuses_settings_that_do_not_apply_to_drafters(tmp_path):
    from peft import LoraConfig

    model, _, tok = gated(noisy_adapter=False)
    data = Dataset.from_list([{"prompt": "ab", "completion": "cd"}])
    with pytest.raises(ValueError, match="trains its own adapter"):
        DiffusionTrainer(model=model, args=DiffusionTrainingArguments(output_dir=str(tmp_path), report_to=[]),
                         train_dataset=data, peft_config=LoraConfig(r=4))
    with pytest.raises(ValueError, match="confidence_loss_weight"):
        DiffusionTrainer(model=model, train_dataset=data, args=DiffusionTrainingArguments(
            output_dir=str(tmp_path), report_to=[], confidence_loss_weight=1.0))


# ------------------------------------------------------------------------------------------------- the API
def test_from_causal_lm_refuses_loading_arguments_with_a_model_instance():
    tok = char_tokenizer()
    with pytest.raises(TypeError, match=r"\['revision'\] with a model instance"):
        DiffusionLM.from_causal_lm(tiny_causal_lm(vocab_size=len(tok)), tok, revision="main")
    with pytest.raises(ValueError, match="drafter must be None or one of"):
        DiffusionLM.from_causal_lm(tiny_causal_lm(vocab_size=len(tok)), char_tokenizer(), drafter="medusa")


def test_a_gated_drafter_refuses_diffusion_decoding_and_generate_drafts():
    model, base, tok = gated()
    ids = tok("abc", return_tensors="pt").input_ids
    with pytest.raises(ValueError, match="speculative_generate"):
        model.diffusion_generate(ids, max_new_tokens=8)
    sequences = model.generate(ids, max_new_tokens=8)
    assert sequences[0, ids.shape[1]:].tolist()[:8] == greedy(base, ids, 8, model.config.eos_token_ids[0])[:8]
    with pytest.raises(ValueError, match="sampling is not supported"):
        model.generate(ids, max_new_tokens=8, do_sample=True)


def test_speculative_generate_refuses_bad_input():
    model, _, tok = gated()
    ids = tok("abc", return_tensors="pt").input_ids
    for kwargs, message in [
        (dict(draft_length=0), "draft_length must be an integer >= 1"),
        (dict(max_new_tokens=0), "max_new_tokens must be an integer >= 1"),
        (dict(eos_token_id=10**6), "eos_token_id must be one or more token ids"),
    ]:
        with pytest.raises(ValueError, match=message):
            model.speculative_generate(ids, **kwargs)
    with pytest.raises(ValueError, match="non-empty 2D"):
        model.speculative_generate(ids[:0])
    with pytest.raises(ValueError, match="integer token ids"):
        model.speculative_generate(ids.float())
    with pytest.raises(ValueError, match="mask token"):
        model.speculative_generate(torch.tensor([[1, model.config.mask_token_id]]))
    with pytest.raises(ValueError, match="left padded"):
        model.speculative_generate(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1, 0]]))
    plain = DiffusionLM.from_causal_lm(tiny_causal_lm(vocab_size=len(char_tokenizer())), char_tokenizer())
    with pytest.raises(ValueError, match="only on a gated drafter"):
        plain.speculative_generate(ids)


def test_a_saved_drafter_loads_back_and_as_remote_code_without_hf_dlm(tmp_path):
    model, _, tok = gated("llama")
    enc = left_padded(tok, PROMPTS)
    expected = model.speculative_generate(enc.input_ids, enc.attention_mask, max_new_tokens=12, draft_length=3)
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "drafter_dlm.py").is_file()
    loaded = DiffusionLM.from_pretrained(tmp_path / "ckpt").eval()
    for name, p in model.drafter.state_dict().items():
        assert torch.equal(p, loaded.drafter.state_dict()[name]), name
    again = loaded.speculative_generate(enc.input_ids, enc.attention_mask, max_new_tokens=12, draft_length=3)
    assert torch.equal(again.sequences, expected.sequences) and again.accepted == expected.accepted
    script = f"""
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
        assert model.config.drafter == "gated_lora"
        out = model.speculative_generate(torch.tensor({enc.input_ids.tolist()}),
                                         torch.tensor({enc.attention_mask.tolist()}), max_new_tokens=12, draft_length=3)
        assert out.sequences.tolist() == {expected.sequences.tolist()}, out.sequences.tolist()
        assert out.accepted == {expected.accepted}
        print("ok")
    """
    assert "ok" in run_without_hf_dlm(script, cwd=str(tmp_path)).stdout


@pytest.mark.parametrize("rows", [
    [{"text": "abcabcabc abcabc"}, {"text": "the cat sat on the mat"}],
    [{"messages": [{"role": "user", "content": "ab"}, {"role": "assistant", "content": "cdcdcd"}]}] * 2,
])
def test_drafters_train_on_text_and_messages_data(tmp_path, rows):
    model, _, tok = gated(noisy_adapter=False)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant: {% endif %}")
    before = {n: p.clone() for n, p in model.drafter.named_parameters()}
    args = DiffusionTrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2,
                                      report_to=[], max_length=32, save_strategy="no", draft_length=2,
                                      logging_steps=1, learning_rate=1e-2)
    trainer = DiffusionTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(p, before[n]) for n, p in model.drafter.named_parameters())
