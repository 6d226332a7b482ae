"""DiffusionTrainer: the objective on a real Trainer run, LoRA, accumulation, resume, evaluation, CLI."""

import json
import math
import random

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from transformers import AutoModel

from hf_dlm import DiffusionTrainer, DiffusionTrainingArguments
from hf_dlm.cli.train import main as cli_main
from hf_dlm.noise import confidence_loss, diffusion_loss
from hf_dlm.testing import char_tokenizer, tiny_causal_lm
from tests.conftest import make_dlm


def sort_task(n, seed=0):
    """Toy SFT task: sort a few digits (answers of 2-6 tokens)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 6)))
        rows.append({"prompt": f"sort {digits}=", "completion": "".join(sorted(digits))})
    return Dataset.from_list(rows)


def as_text(ds):
    return Dataset.from_dict({"text": [r["prompt"] + r["completion"] for r in ds]})


def training_args(tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, disable_tqdm=True, save_strategy="no",
        logging_steps=1, per_device_train_batch_size=8, learning_rate=3e-3, max_steps=4, seed=0, max_length=32,
    )
    return DiffusionTrainingArguments(**(defaults | kwargs))


def losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def record_forward_inputs(model):
    seen = []
    model.register_forward_pre_hook(lambda _, args, kwargs: seen.append(kwargs), with_kwargs=True)
    return seen


def test_loss_is_finite_and_decreases_and_eval_reports_the_elbo(tmp_path):
    model, tok = make_dlm()
    data = as_text(sort_task(400))
    trainer = DiffusionTrainer(model=model, args=training_args(tmp_path, max_steps=40, max_length=48),
                               train_dataset=data, eval_dataset=data.select(range(64)), processing_class=tok)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    curve = losses(trainer)
    assert all(torch.isfinite(torch.tensor(curve)))
    assert sum(curve[-5:]) / 5 < 0.8 * sum(curve[:5]) / 5
    assert after["eval_loss"] < before["eval_loss"]
    assert after["eval_ppl_bound"] == pytest.approx(torch.tensor(after["eval_loss"]).exp().item())


def test_causal_prefix_model_trains_on_two_stream_rows_and_learns_the_task(tmp_path):
    """Block diffusion with a causal context (attention="causal_prefix"): the loss falls, the eval ELBO falls, and
    the trained model answers in digits and ends with `grow` (prompt/completion rows, EOS fill cut after the EOS block)."""
    model, tok = make_dlm(attention="causal_prefix", seed=2)
    data = sort_task(600)
    args = training_args(tmp_path, max_steps=150, max_length=24, block_length=4, learning_rate=3e-3,
                         lr_scheduler_type="constant")
    trainer = DiffusionTrainer(model=model, args=args, train_dataset=data, eval_dataset=data.select(range(32)),
                               processing_class=tok)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    curve = losses(trainer)
    assert sum(curve[-10:]) / 10 < 0.6 * sum(curve[:10]) / 10
    assert after["eval_loss"] < 0.7 * before["eval_loss"]
    prompts = [r["prompt"] for r in sort_task(16, seed=9)]
    inputs = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    out = model.eval().diffusion_generate(**inputs, max_new_tokens=8, block_length=4, length_strategy="grow",
                                          threshold=None, return_dict_in_generate=True)
    assert out.finished.float().mean() >= 0.9
    answers = tok.batch_decode(out.sequences[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert all(a and a.isdigit() for a in answers), answers  # the answer alphabet, then EOS


def test_causal_prefix_rejects_block_rows_and_annealing(tmp_path):
    model, tok = make_dlm(attention="causal_prefix")
    for bad in (dict(block_rows=0.5), dict(anneal_steps=10)):
        with pytest.raises(ValueError, match="causal_prefix"):
            DiffusionTrainer(model=model, args=training_args(tmp_path, **bad), train_dataset=sort_task(8),
                             processing_class=tok)


def test_eval_loss_is_token_weighted_and_independent_of_the_eval_batch_size(tmp_path):
    model, tok = make_dlm()
    data = sort_task(24)
    results = []
    for batch_size in (1, 5, 24):
        args = training_args(tmp_path, per_device_eval_batch_size=batch_size, padding="max_length", max_length=16)
        results.append(DiffusionTrainer(model=model, args=args, eval_dataset=data, processing_class=tok).evaluate())
    assert results[0]["eval_loss"] == pytest.approx(results[1]["eval_loss"]) == pytest.approx(results[2]["eval_loss"])


def test_prompt_tokens_are_never_masked_and_eos_are_always_masked(tmp_path):
    model, tok = make_dlm()
    mask_id, eos = model.config.mask_token_id, tok.eos_token_id
    seen = record_forward_inputs(model)
    args = training_args(tmp_path, max_steps=6, eos_always_masked=True, t_min=0.1, t_max=0.9, length_groups=1,
                         all_blocks=False)
    data = Dataset.from_list([{"prompt": f"sort {d}=", "completion": "".join(sorted(d))} for d in ("9321", "87", "465")])
    DiffusionTrainer(model=model, args=args, train_dataset=data, processing_class=tok).train()
    prompt_length = len("sort 9321=")  # every prompt here is this long or shorter, and starts the row
    assert len(seen) == 6
    for call in seen:
        ids = call["input_ids"]
        assert not (ids[:, :7] == mask_id).any()  # "sort dd" is a prompt prefix in every row
        assert not (ids == eos).any()  # answer ends and the EOS fill behind them: all masked
        assert (ids[:, prompt_length:] == mask_id).any()


def test_by_default_prompt_completion_rows_are_eos_filled_to_random_lengths_up_to_max_length(tmp_path):
    """The defaults must train every canvas size the three length strategies read: long EOS-filled canvases
    (`fixed`, `predict`'s first step, up to max_length) and rows ending soon after their answer (`grow`)."""
    model, tok = make_dlm()
    seen = record_forward_inputs(model)
    # block_rows=0: the canvas view alone (block rows, on by default, cut rows after their block: tested below).
    args = training_args(tmp_path, max_steps=12, max_length=24, t_min=0.999, per_device_train_batch_size=8,
                         block_rows=0.0)
    assert args.padding == "random"
    DiffusionTrainer(model=model, args=args, train_dataset=sort_task(96), processing_class=tok).train()
    lengths = [int(n) for call in seen for n in call["attention_mask"].sum(-1)]
    assert max(lengths) == 24 and min(lengths) <= 14  # whole rows and rows cut right after a short answer
    assert len(set(lengths)) >= 8  # the lengths in between too
    assert all(call["input_ids"].shape[1] <= 24 for call in seen)


def test_block_rows_default_to_half_for_answers_on_bidirectional_models_and_off_elsewhere(tmp_path):
    """block_rows=None: semi-AR block rows (grow's view) for prompt/completion data on a bidirectional model; none for
    text (no answer to grow) and for causal_prefix models (their two-stream rows hold every block already)."""
    model, tok = make_dlm()
    assert DiffusionTrainingArguments(output_dir=str(tmp_path)).block_rows is None

    def resolved(model, dataset, **kwargs):
        return DiffusionTrainer(model=model, args=training_args(tmp_path, **kwargs), train_dataset=dataset,
                                processing_class=tok).block_rows

    assert resolved(model, sort_task(8)) == 0.5
    assert resolved(model, as_text(sort_task(8))) == 0.0
    assert resolved(model, sort_task(8), block_rows=0.0) == 0.0 and resolved(model, sort_task(8), block_rows=0.2) == 0.2
    assert resolved(make_dlm(attention="causal_prefix")[0], sort_task(8)) == 0.0
    # and the default really shows block rows: some rows end in the middle of an answer (no EOS after their block)
    seen = record_forward_inputs(model)
    DiffusionTrainer(model=model, args=training_args(tmp_path, max_steps=6, max_length=24, t_min=0.999,
                                                     per_device_train_batch_size=8, block_length=2, all_blocks=False),
                     train_dataset=sort_task(48), processing_class=tok).train()
    eos = tok.eos_token_id
    rows = [ids[: int(n)] for call in seen for ids, n in zip(call["input_ids"], call["attention_mask"].sum(-1))]
    assert any(not (row == eos).any() for row in rows)


def test_attention_anneals_from_causal_to_bidirectional_over_the_steps(tmp_path):
    model, tok = make_dlm()
    seen = record_forward_inputs(model)
    trainer = DiffusionTrainer(model=model, args=training_args(tmp_path, max_steps=4, anneal_steps=3, length_groups=1,
                                                                 all_blocks=False),
                               train_dataset=sort_task(32), processing_class=tok)
    trainer.train()
    dims = [call["attention_mask"].dim() for call in seen]
    assert dims == [4, 4, 2, 2]  # ratio 1/3, 2/3, then 1: the plain mask, i.e. full attention
    first = seen[0]["attention_mask"]
    causal = torch.ones(first.shape[-1], first.shape[-1], dtype=torch.bool).tril()
    assert first[:, 0][:, causal].float().mean() > first[:, 0][:, ~causal].float().mean()


@pytest.mark.parametrize(("block_rows", "attention", "confidence"),
                         [(0.0, "bidirectional", 0.0), (0.5, "bidirectional", 0.0), (0.0, "causal_prefix", 0.0),
                          (0.5, "bidirectional", 1.0), (0.0, "causal_prefix", 1.0)])
def test_gradient_accumulation_gives_the_same_loss_and_update(tmp_path, block_rows, attention, confidence):
    """Batch 8 x 1 step, 2 x 4 and 4 x 2 accumulation: same masks (noise seeded per example), same loss (the
    normaliser counts the whole accumulated batch), hence the same SGD update. With block rows too: their choice
    is seeded per example like the noise; with the two-stream rows of causal-prefix models; and with the
    confidence term on (divided by the same whole-batch count), whose logged value is the same too."""
    data = sort_task(8)
    results = []
    for batch, accumulation in ((8, 1), (2, 4), (4, 2)):
        model, tok = make_dlm(seed=1, attention=attention)
        start = {k: v.clone() for k, v in model.named_parameters()}
        args = training_args(
            tmp_path, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, max_steps=1,
            optim="sgd", learning_rate=1.0, lr_scheduler_type="constant", max_grad_norm=0.0, padding="max_length",
            max_length=16, block_rows=block_rows, block_length=2, confidence_loss_weight=confidence,
        )
        trainer = DiffusionTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
        trainer.train()
        update = torch.cat([(start[k] - v).flatten() for k, v in model.named_parameters()])
        logged = [h.get("confidence_loss") for h in trainer.state.log_history if "loss" in h]
        results.append((losses(trainer)[0], update, logged[0]))
    (loss, update, term), *others = results
    assert update.abs().max() > 1e-3
    assert (term is None) == (confidence == 0)
    if confidence:
        assert term > 0
    for other_loss, other_update, other_term in others:
        assert other_loss == pytest.approx(loss, rel=1e-5)
        assert torch.allclose(other_update, update, atol=1e-6)
        assert other_term == (None if term is None else pytest.approx(term, rel=1e-5))


def first_batch(trainer):
    return trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))


def test_confidence_weight_zero_leaves_the_loss_bit_identical(tmp_path):
    """Weight 0 computes exactly the diffusion loss (same operations, no extra term); the term, switched on, adds
    weight x (the entropies of the masked positions predicted right) / the same count."""
    model, tok = make_dlm(seed=4)
    with torch.no_grad():  # a model that gets some masked positions right, so that the term is not empty
        model.backbone.lm_head.weight.mul_(20)
    data = sort_task(16)
    off = DiffusionTrainer(model=model, args=training_args(tmp_path), train_dataset=data, processing_class=tok)
    inputs = first_batch(off)
    noisy = off.noise(inputs["input_ids"], inputs["attention_mask"], inputs["loss_mask"], 0, None)
    logits = model(input_ids=noisy.input_ids, attention_mask=noisy.attention_mask).logits
    plain = diffusion_loss(logits, inputs["input_ids"], noisy.loss_weight) / noisy.maskable.sum()
    term = confidence_loss(logits, inputs["input_ids"], noisy.loss_weight) / noisy.maskable.sum()
    assert torch.equal(off.compute_loss(model, inputs), plain)
    on = DiffusionTrainer(model=model, args=training_args(tmp_path, confidence_loss_weight=0.5), train_dataset=data,
                          processing_class=tok)
    assert term > 0
    assert on.compute_loss(model, first_batch(on)).item() == pytest.approx((plain + 0.5 * term).item(), rel=1e-6)


def test_confidence_term_is_logged_and_makes_right_predictions_confident(tmp_path):
    """Same model, data and masks with and without the term: the logged loss of the first step is the diffusion
    loss plus weight x confidence_loss; after training, the masked positions the model gets right are predicted
    with lower entropy than without the term."""
    data = sort_task(400)
    runs = {}
    for weight in (0.0, 2.0):
        model, tok = make_dlm(seed=5)
        args = training_args(tmp_path, max_steps=60, max_length=24, confidence_loss_weight=weight,
                             lr_scheduler_type="constant")
        trainer = DiffusionTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
        trainer.train()
        runs[weight] = (trainer, [h for h in trainer.state.log_history if "loss" in h])
    plain, confident = runs[0.0][1], runs[2.0][1]
    assert "confidence_loss" not in plain[0] and confident[0]["confidence_loss"] > 0
    assert confident[0]["loss"] - 2.0 * confident[0]["confidence_loss"] == pytest.approx(plain[0]["loss"], rel=1e-4)

    def right_entropy(trainer):
        inputs = first_batch(trainer)
        noisy = trainer.eval_noise(inputs["input_ids"], inputs["attention_mask"], inputs["loss_mask"], step=None)
        with torch.no_grad():
            logits = trainer.model.eval()(input_ids=noisy.input_ids, attention_mask=noisy.attention_mask).logits
        masked = noisy.loss_weight > 0
        right = logits[masked].argmax(-1) == inputs["input_ids"][masked]
        return (confidence_loss(logits, inputs["input_ids"], noisy.loss_weight) / right.sum()).item()

    assert right_entropy(runs[2.0][0]) < 0.8 * right_entropy(runs[0.0][0])


def test_confidence_term_trains_with_lora(tmp_path):
    model, tok = make_dlm(seed=3)
    trainer = DiffusionTrainer(
        model=model, args=training_args(tmp_path, max_steps=3, confidence_loss_weight=1.0), train_dataset=sort_task(48),
        processing_class=tok, peft_config=LoraConfig(r=4, lora_alpha=8),
    )
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 3 and all(math.isfinite(h["confidence_loss"]) and h["confidence_loss"] >= 0 for h in logged)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A LoRA run on tiny GPT-2 (Conv1D layers, tied embeddings), its saved adapter, and the untouched base."""
    tmp_path = tmp_path_factory.mktemp("lora")
    model, tok = make_dlm(seed=3)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = DiffusionTrainer(
        model=model, args=training_args(tmp_path, max_steps=6, learning_rate=1e-2), train_dataset=sort_task(48),
        processing_class=tok, peft_config=LoraConfig(r=4, lora_alpha=8),
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "adapter"))
    return trainer, base, tmp_path


def test_lora_trains_only_the_adapter_and_the_mask_row(lora_run):
    trainer, base, _ = lora_run
    peft_model = trainer.model
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "trainable_tokens_delta" in n for n in trainable)
    adapted = {n.split(".base_layer")[0].split(".lora_")[0] for n in trainable if "lora_" in n}
    assert {"c_attn", "c_proj", "c_fc"} <= {n.rsplit(".", 1)[-1] for n in adapted}  # GPT-2's Conv1D layers
    assert not any("lm_head" in n for n in adapted)
    merged = peft_model.merge_and_unload()
    mask_id = merged.config.mask_token_id
    embedding = merged.get_input_embeddings().weight
    old = base["backbone.transformer.wte.weight"]
    changed_rows = (embedding != old).any(-1).nonzero().flatten().tolist()
    assert changed_rows == [mask_id]
    for name, value in merged.state_dict().items():
        if "wte" not in name and "lm_head" not in name and name in base and "attn" not in name and "mlp" not in name:
            assert torch.equal(value, base[name]), name  # layer norms, position embeddings: frozen


def test_lora_on_llama_targets_every_linear_layer_but_the_head():
    from hf_dlm.trainer import apply_peft

    model, _ = make_dlm("llama")
    peft_model = apply_peft(model, LoraConfig(r=2))
    adapted = {n.rsplit(".", 1)[-1] for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_adapter_reloads_onto_the_base_and_merges_into_a_remote_code_checkpoint(lora_run, tmp_path):
    trainer, _, run_dir = lora_run
    trained = trainer.model.eval()
    ids = torch.tensor([[5, 6, 7, trained.config.mask_token_id, trained.config.mask_token_id, 9]])
    with torch.no_grad():
        expected = trained(input_ids=ids).logits
    fresh_base, tok = make_dlm(seed=3)  # the same adaptation of the same causal LM
    reloaded = PeftModel.from_pretrained(fresh_base, str(run_dir / "adapter")).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, expected, atol=1e-5)
    merged = reloaded.merge_and_unload()
    merged.save_pretrained(str(tmp_path / "merged"), tokenizer=tok)
    loaded = AutoModel.from_pretrained(str(tmp_path / "merged"), trust_remote_code=True).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, expected, atol=1e-5)


def test_resume_from_checkpoint_repeats_the_same_losses(tmp_path):
    data = as_text(sort_task(200))
    kwargs = dict(max_steps=6, save_strategy="steps", save_steps=3, gradient_accumulation_steps=2, anneal_steps=5,
                  per_device_train_batch_size=4)

    def run(resume=None):
        model, tok = make_dlm(seed=2)
        trainer = DiffusionTrainer(model=model, args=training_args(tmp_path, **kwargs), train_dataset=data,
                                   processing_class=tok)
        trainer.train(resume_from_checkpoint=resume)
        return losses(trainer)

    full = run()
    resumed = run(str(tmp_path / "out" / "checkpoint-3"))  # its log starts with the checkpoint's 3 entries
    assert len(full) == len(resumed) == 6
    assert resumed[3:] == pytest.approx(full[3:], rel=1e-5)


def test_sample_callback_decodes_prompts_during_training(tmp_path):
    model, tok = make_dlm()
    args = training_args(tmp_path, max_steps=2, sample_prompts=["sort 31=", "sort 9="], sample_steps=1,
                         sample_max_new_tokens=8)
    DiffusionTrainer(model=model, args=args, train_dataset=sort_task(16), processing_class=tok).train()
    lines = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [(s["step"], s["prompt"]) for s in lines] == [(1, "sort 31="), (1, "sort 9="), (2, "sort 31="), (2, "sort 9=")]
    assert all(isinstance(s["completion"], str) for s in lines)


def test_streaming_datasets_train(tmp_path):
    model, tok = make_dlm()
    stream = as_text(sort_task(64)).to_iterable_dataset()
    trainer = DiffusionTrainer(model=model, args=training_args(tmp_path, max_steps=3), train_dataset=stream,
                               processing_class=tok)
    trainer.train()
    assert len(losses(trainer)) == 3


def local_causal_lm_and_data(tmp_path, model_type: str):
    """A tiny causal LM and its tokenizer saved in <tmp>/ar, and a JSONL of sort examples: what `hf-dlm train` reads."""
    torch.manual_seed(0)
    tok = char_tokenizer()
    tiny_causal_lm(model_type, vocab_size=len(tok)).save_pretrained(tmp_path / "ar")
    tok.save_pretrained(tmp_path / "ar")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sort_task(16)))
    return tok, data


def test_cli_adapts_a_local_causal_lm_with_lora_and_saves_a_merged_checkpoint(tmp_path):
    tok, data = local_causal_lm_and_data(tmp_path, "gpt2")
    out = tmp_path / "run"
    code = cli_main([
        "--model_name_or_path", str(tmp_path / "ar"), "--dataset_name", str(data), "--output_dir", str(out),
        "--use_peft", "--lora_r", "4", "--merge_adapter", "--max_steps", "2", "--max_length", "24",
        "--per_device_train_batch_size", "4", "--report_to", "none", "--use_cpu", "--disable_tqdm", "true",
        "--eos_always_masked", "--t_min", "0.1", "--t_max", "0.9",
    ])
    assert code == 0
    assert (out / "adapter_config.json").exists()
    merged = AutoModel.from_pretrained(str(out / "merged"), trust_remote_code=True)
    assert merged.config.mask_token_id == len(tok)


def test_cli_adapts_with_a_causal_context_and_refuses_another_attention_for_a_checkpoint(tmp_path, capsys):
    """`--attention causal_prefix`: the recipe of docs/benchmarks.md from the command line (the AR term on by default);
    a DiffusionLM checkpoint keeps its own attention and refuses another with a message."""
    _, data = local_causal_lm_and_data(tmp_path, "llama")
    common = ["--dataset_name", str(data), "--max_steps", "2", "--max_length", "24", "--block_length", "4",
              "--per_device_train_batch_size", "4", "--report_to", "none", "--use_cpu", "--disable_tqdm", "true"]
    out = tmp_path / "run"
    assert cli_main(["--model_name_or_path", str(tmp_path / "ar"), "--output_dir", str(out), "--attention",
                     "causal_prefix", *common]) == 0
    model = AutoModel.from_pretrained(str(out), trust_remote_code=True)
    assert model.config.attention == "causal_prefix"
    with pytest.raises(SystemExit):  # argparse's error: the checkpoint is causal-prefix already
        cli_main(["--model_name_or_path", str(out), "--output_dir", str(tmp_path / "again"), "--attention",
                  "bidirectional", *common])
    assert "attention='causal_prefix'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"t_min": 0.0}, "t_min"),
        ({"t_min": 0.5, "t_max": 0.4}, "t_min"),
        ({"anneal_steps": -1}, "anneal_steps"),
        ({"dataset_format": "chat"}, "dataset_format"),
        ({"padding": "max_length", "max_length": None}, "max_length"),
        ({"max_length": 1}, "max_length"),
        ({"sample_steps": 0}, "sample_steps"),
        ({"block_rows": 1.5}, "block_rows"),
        ({"block_length": 0}, "block_length"),
        ({"confidence_loss_weight": -0.1}, "confidence_loss_weight"),
        ({"confidence_loss_weight": float("nan")}, "confidence_loss_weight"),
    ],
)
def test_invalid_arguments_say_what_to_change(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        training_args(tmp_path, **kwargs)


def test_the_trainer_needs_a_diffusion_model_and_its_arguments(tmp_path):
    from transformers import TrainingArguments

    model, tok = make_dlm()
    with pytest.raises(TypeError, match="DiffusionTrainingArguments"):
        DiffusionTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path)), processing_class=tok)
    with pytest.raises(ValueError, match="from_causal_lm"):
        DiffusionTrainer(model=model.backbone, args=training_args(tmp_path), processing_class=tok)
