"""Self-distillation data (hf_dlm.distill): a teacher's answers as prompt/completion rows, from a causal LM, from the
AR base inside a LoRA-adapted DiffusionLM, or from the DiffusionLM itself; and a DiffusionTrainer run on them."""

import json
import random

import pytest
import torch
from peft import LoraConfig

from hf_dlm import DiffusionLM, DiffusionTrainer, DiffusionTrainingArguments
from hf_dlm.distill import DISTILLATION_ARGUMENTS, autoregressive_base, build_distillation_dataset
from hf_dlm.testing import char_tokenizer, tiny_causal_lm
from hf_dlm.trainer import apply_peft


def sort_example(rng):
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 5)))
    return f"sort {digits}=", "".join(sorted(digits))


@pytest.fixture(scope="module")
def causal_lm():
    """A tiny GPT-2 that has learnt (mostly) to sort 2-5 digits and stop: 120 AR steps, a few seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = char_tokenizer()
    model = tiny_causal_lm("gpt2", vocab_size=len(tok))
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(120):
        rows = [sort_example(rng) for _ in range(32)]
        ids = [tok(p).input_ids + tok(c).input_ids + [tok.eos_token_id] for p, c in rows]
        width = max(map(len, ids))
        x = torch.zeros(len(ids), width, dtype=torch.long)
        labels = torch.full_like(x, -100)
        attention = torch.zeros_like(x)
        for i, (row, (prompt, _)) in enumerate(zip(ids, rows)):
            x[i, : len(row)], attention[i, : len(row)] = torch.tensor(row), 1
            start = len(tok(prompt).input_ids)
            labels[i, start : len(row)] = torch.tensor(row[start:])
        model(input_ids=x, attention_mask=attention, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    torch.set_num_threads(threads)
    return model.eval(), tok


def prompts(n=12, seed=7):
    rng = random.Random(seed)
    return [sort_example(rng)[0] for _ in range(n)]


def greedy_answers(model, tok, texts, max_new_tokens):
    """(text, ended) of each prompt by plain `generate`, one prompt at a time: the reference."""
    out = []
    for text in texts:
        ids = tok(text, return_tensors="pt").input_ids
        new = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.eos_token_id)
        new = new[0, ids.shape[1] :].tolist()
        ended = tok.eos_token_id in new
        out.append((tok.decode(new[: new.index(tok.eos_token_id)] if ended else new), ended))
    return out


def test_a_causal_lm_teacher_gives_its_greedy_answers_and_drops_the_unfinished(causal_lm):
    model, tok = causal_lm
    texts = prompts()
    # A budget of 4 tokens: answers of up to 3 digits end (digits + EOS), longer ones are cut.
    reference = greedy_answers(model, tok, texts, 4)
    data = build_distillation_dataset(model, tok, texts, max_new_tokens=4, batch_size=5)
    assert data.column_names == ["prompt", "completion"]
    expected = [{"prompt": p, "completion": text} for p, (text, ended) in zip(texts, reference) if ended]
    assert 0 < len(expected) < len(texts)
    assert data.to_list() == expected
    kept_all = build_distillation_dataset(model, tok, texts, max_new_tokens=4, keep_unfinished=True)
    assert kept_all["completion"] == [text for text, _ in reference]


def test_the_base_of_a_lora_adapted_model_answers_like_the_causal_lm_it_came_from(causal_lm):
    model, tok = causal_lm
    import copy

    dlm_tok = copy.deepcopy(tok)
    dlm = DiffusionLM.from_causal_lm(copy.deepcopy(model), dlm_tok)
    torch.manual_seed(1)
    # init_lora_weights=False: random A and B, so the adapter really changes the model while it is on.
    peft_model = apply_peft(dlm, LoraConfig(r=4, init_lora_weights=False))
    texts = prompts(8, seed=3)
    expected = build_distillation_dataset(model, tok, texts, max_new_tokens=8)
    ids = dlm_tok(texts[0], return_tensors="pt").input_ids
    with torch.no_grad():
        before = peft_model(input_ids=ids).logits
    data = build_distillation_dataset(peft_model, dlm_tok, texts, teacher="base", max_new_tokens=8)
    assert data.to_list() == expected.to_list()
    with torch.no_grad():  # adapter on and attention bidirectional again afterwards
        assert torch.equal(peft_model(input_ids=ids).logits, before)
    assert peft_model.get_base_model().backbone.config.is_causal is False
    with autoregressive_base(peft_model) as base, torch.no_grad():
        assert torch.allclose(base(input_ids=ids).logits[..., : len(tok)], model(input_ids=ids).logits, atol=1e-5)


def test_a_diffusion_teacher_gives_its_diffusion_generate_answers(causal_lm):
    model, tok = causal_lm
    import copy

    dlm_tok = copy.deepcopy(tok)
    dlm = DiffusionLM.from_causal_lm(copy.deepcopy(model), dlm_tok).eval()
    texts = prompts(6, seed=5)
    settings = dict(length_strategy="fixed", block_length=4, threshold=None)
    data = build_distillation_dataset(dlm, dlm_tok, texts, max_new_tokens=8, keep_unfinished=True, batch_size=1,
                                      **settings)
    completions = []
    for text in texts:
        ids = dlm_tok(text, return_tensors="pt").input_ids
        new = dlm.diffusion_generate(ids, max_new_tokens=8, **settings)[0, ids.shape[1] :].tolist()
        new = new[: new.index(tok.eos_token_id)] if tok.eos_token_id in new else new
        completions.append(dlm_tok.decode(new, skip_special_tokens=True))
    assert data["prompt"] == texts and data["completion"] == completions


def test_a_chat_tokenizer_gives_conversational_rows_the_trainer_reads(causal_lm, tmp_path):
    model, tok = causal_lm
    import copy

    chat_tok = copy.deepcopy(tok)
    chat_tok.chat_template = (
        "{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}{% if m['role'] == 'assistant' %}"
        "{{ eos_token }}{% endif %}{% endfor %}{% if add_generation_prompt %}a:{% endif %}"
    )
    data = build_distillation_dataset(model, chat_tok, prompts(6), max_new_tokens=8, keep_unfinished=True)
    row = data[0]
    assert row["prompt"] == [{"role": "user", "content": prompts(6)[0]}]
    assert row["completion"][0]["role"] == "assistant"


def test_distillation_trains_with_block_rows_and_the_confidence_term(causal_lm, tmp_path):
    model, tok = causal_lm
    import copy

    dlm_tok = copy.deepcopy(tok)
    dlm = DiffusionLM.from_causal_lm(copy.deepcopy(model), dlm_tok)
    data = build_distillation_dataset(model, tok, prompts(32, seed=11), max_new_tokens=8)
    args = DiffusionTrainingArguments(
        output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, disable_tqdm=True, save_strategy="no",
        logging_steps=1, per_device_train_batch_size=8, max_steps=3, max_length=24, block_length=4,
        **DISTILLATION_ARGUMENTS,
    )
    seen = []
    dlm.register_forward_pre_hook(lambda _, a, kw: seen.append(kw["input_ids"]), with_kwargs=True)
    trainer = DiffusionTrainer(model=dlm, args=args, train_dataset=data, processing_class=dlm_tok)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 3 and all(h["confidence_loss"] >= 0 for h in logged)
    # Block rows: every row is cut after its noised block (prompt <= 11 tokens, answer + EOS <= 6: block 0 or 1).
    pad = dlm.config.pad_token_id
    assert all((ids[:, 19:] == pad).all() for ids in seen)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"teacher": "oracle"}, "teacher must be"),
        ({"teacher": "diffusion"}, "needs a DiffusionLM"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_bad_requests_say_what_to_change(causal_lm, kwargs, message):
    model, tok = causal_lm
    with pytest.raises(ValueError, match=message):
        build_distillation_dataset(model, tok, prompts(2), **kwargs)


def test_empty_prompts_no_ended_answer_and_a_merged_model_as_base_are_refused(causal_lm):
    model, tok = causal_lm
    with pytest.raises(ValueError, match="No prompts"):
        build_distillation_dataset(model, tok, [])
    with pytest.raises(ValueError, match="non-empty"):
        build_distillation_dataset(model, tok, ["sort 12=", " "])
    with pytest.raises(ValueError, match="keep_unfinished"):
        build_distillation_dataset(model, tok, ["sort 98765="], max_new_tokens=1)
    dlm = DiffusionLM.from_causal_lm(tiny_causal_lm("gpt2", vocab_size=len(tok)), char_tokenizer())
    with pytest.raises(ValueError, match="causal LM it was adapted from"):
        build_distillation_dataset(dlm, dlm.tokenizer, ["sort 12="], teacher="base")


# ------------------------------------------------------------------------------------------- hf-dlm distill
def saved_causal_lm(causal_lm, directory):
    model, tok = causal_lm
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def test_the_distill_command_answers_with_the_causal_lm_then_trains_the_adapted_model(causal_lm, tmp_path):
    from transformers import AutoModel

    from hf_dlm.cli import main as cli_main

    source = saved_causal_lm(causal_lm, tmp_path / "ar")
    (tmp_path / "prompts.txt").write_text("\n".join(prompts(16, seed=2)) + "\n")
    out = tmp_path / "out"
    code = cli_main(["distill", "--model", str(source), "--prompts", str(tmp_path / "prompts.txt"), "--output_dir",
                     str(out), "--max-new-tokens", "8", "--max_steps", "2", "--per_device_train_batch_size", "4",
                     "--max_length", "24", "--block-length", "4", "--use_peft", "--lora_r", "2", "--merge_adapter",
                     "--use_cpu", "--logging_steps", "1"])
    assert code == 0
    rows = [json.loads(line) for line in (out / "distillation_data.jsonl").read_text().splitlines()]
    model, tok = causal_lm
    expected = build_distillation_dataset(model, tok, prompts(16, seed=2), max_new_tokens=8).to_list()
    assert rows == expected and rows
    assert (out / "adapter_config.json").exists()
    merged = AutoModel.from_pretrained(str(out / "merged"), trust_remote_code=True)
    assert merged.config.mask_token_id == len(tok)


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--confidence_loss_weight", "-1"], "confidence_loss_weight"),
        (["--block_rows", "2"], "block_rows"),
        (["--max_steps", "0"], "max_steps"),
        (["--merge_adapter"], "--use_peft"),
        (["--teacher", "diffusion"], "causal LM"),
        (["--threshold", "3"], "threshold"),
    ],
)
def test_the_distill_command_refuses_bad_flags_before_importing_torch(causal_lm, tmp_path, extra, says):
    from tests.test_cli import heavy_modules, run_cli

    source = saved_causal_lm(causal_lm, tmp_path / "ar")
    (tmp_path / "p.txt").write_text("sort 12=\n")
    result = run_cli("distill", "--model", str(source), "--prompts", str(tmp_path / "p.txt"), "--output_dir",
                     str(tmp_path / "o"), *extra)
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert heavy_modules(result) == ""


def test_the_distill_command_needs_the_ar_teacher_of_a_diffusion_checkpoint(tmp_path):
    from tests.test_cli import heavy_modules, run_cli

    dlm = DiffusionLM.from_causal_lm(tiny_causal_lm("gpt2", vocab_size=len(char_tokenizer())), char_tokenizer())
    dlm.save_pretrained(str(tmp_path / "dlm"))
    (tmp_path / "p.txt").write_text("sort 12=\n")
    common = ["distill", "--model", str(tmp_path / "dlm"), "--output_dir", str(tmp_path / "o")]
    result = run_cli(*common, "--prompts", str(tmp_path / "p.txt"), "--teacher", "base")
    assert result.returncode == 2 and "--teacher_model" in result.stderr and heavy_modules(result) == ""
    result = run_cli(*common, "--prompts", str(tmp_path / "missing.txt"))
    assert result.returncode == 2 and "cannot read" in result.stderr and heavy_modules(result) == ""
    from hf_dlm.cli import main as cli_main

    code = cli_main([*common, "--prompts", str(tmp_path / "p.txt"), "--max-new-tokens", "4", "--threshold", "none",
                     "--keep_unfinished", "--data_only"])  # the DiffusionLM answers itself (auto: diffusion)
    rows = [json.loads(line) for line in (tmp_path / "o" / "distillation_data.jsonl").read_text().splitlines()]
    assert code == 0 and [r["prompt"] for r in rows] == ["sort 12="] and len(rows[0]["completion"]) <= 4
    assert not (tmp_path / "o" / "model.safetensors").exists()  # --data_only: no training
    help_text = run_cli("distill", "--help")
    assert help_text.returncode == 0 and "--confidence_loss_weight" in help_text.stdout
    assert heavy_modules(help_text) == ""
