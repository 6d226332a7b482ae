"""Training signal per forward (issue 24): complementary masks, all-masked rows, every block in one forward for
bidirectional models, and the AR term of causal-prefix models. Each option is checked against what it claims,
and the gradient-accumulation invariance of the trainer is kept with it on."""

import pytest
import torch

from hf_dlm import DiffusionTrainer
from hf_dlm.noise import DiffusionNoise, complement, diffusion_loss, stack_noisy
from hf_dlm.two_stream import two_stream_rows
from tests.conftest import make_dlm
from tests.test_trainer import first_batch, losses, sort_task, training_args


def a_batch(lengths=(17, 12, 9), answer_starts=(5, 4, 3), vocab=30, seed=0):
    torch.manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    attention = torch.zeros_like(ids)
    loss_mask = torch.zeros_like(ids)
    for row, (n, start) in enumerate(zip(lengths, answer_starts)):
        ids[row, :n] = torch.randint(1, vocab, (n,))
        attention[row, :n] = 1
        loss_mask[row, start:n] = 1
    return ids, attention, loss_mask


@pytest.mark.parametrize("eos_always_masked", [False, True])
def test_a_row_and_its_complement_supervise_every_maskable_token_exactly_once(eos_always_masked):
    ids, attention, loss_mask = a_batch()
    ids[:, -1] = 2  # an EOS in the longest row's answer
    noise = DiffusionNoise(mask_token_id=99, seed=1, eos_token_ids=(2,), eos_always_masked=eos_always_masked)
    for step in range(20):
        noisy = noise(ids, attention, loss_mask, step)
        other = complement(noisy, ids, 99)
        assert not (noisy.masked & other.masked).any()
        assert torch.equal(noisy.masked | other.masked, noisy.maskable)  # every maskable token exactly once
        assert torch.equal(other.input_ids == 99, other.masked)
        assert torch.equal(other.input_ids[~other.masked], ids[~other.masked])
        # weights: 1/t' on the complement's masks with t' = 1 - t (bounded below by t_min)
        expected = other.masked.float() / (1 - noisy.t).clamp(min=noise.t_min)[:, None]
        assert torch.allclose(other.loss_weight, expected)
    both = stack_noisy(noisy, other)
    assert both.input_ids.shape[0] == 2 * ids.shape[0]


def test_all_masked_rows_mask_every_maskable_token_with_weight_one_and_share_zero_changes_nothing():
    ids, attention, loss_mask = a_batch(lengths=(17,) * 40, answer_starts=(5,) * 40, seed=2)
    plain = DiffusionNoise(mask_token_id=99, seed=1)(ids, attention, loss_mask, 3)
    off = DiffusionNoise(mask_token_id=99, seed=1, all_masked_share=0.0)(ids, attention, loss_mask, 3)
    assert torch.equal(plain.input_ids, off.input_ids) and torch.equal(plain.loss_weight, off.loss_weight)
    every = DiffusionNoise(mask_token_id=99, seed=1, all_masked_share=1.0)(ids, attention, loss_mask, 3)
    assert torch.equal(every.masked, every.maskable) and torch.equal(every.t, torch.ones(40))
    assert torch.equal(every.loss_weight, every.maskable.float())
    half = DiffusionNoise(mask_token_id=99, seed=1, all_masked_share=0.5)(ids, attention, loss_mask, 3)
    full_rows = (half.t == 1.0)
    assert 5 < int(full_rows.sum()) < 35
    kept = ~full_rows  # the other rows keep exactly their own noise
    assert torch.equal(half.input_ids[kept], plain.input_ids[kept])
    with pytest.raises(ValueError, match="all_masked_rows is a share"):
        DiffusionNoise(mask_token_id=99, all_masked_share=1.5)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_block_causal_two_stream_rows_give_each_block_the_loss_of_its_one_block_row(model_type):
    """all_blocks: one forward over every block equals, block by block, the row that shows block k alone: the
    prompt and blocks < k clean with a block-causal context, block k noised, nothing after it."""
    model, _ = make_dlm(model_type, seed=3)
    model.eval()
    block = 4
    ids, attention, loss_mask = a_batch(seed=4)
    noisy = DiffusionNoise(mask_token_id=model.config.mask_token_id, seed=3)(ids, attention, loss_mask, step=0)
    assert noisy.masked.any()
    rows = two_stream_rows(ids, noisy.input_ids, attention, loss_mask, noisy.loss_weight, block, "block_causal")
    with torch.no_grad():
        logits = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask, position_ids=rows.position_ids,
                       logits_to_keep=rows.noisy_length).logits
        per_token = torch.nn.functional.cross_entropy(logits.flatten(0, 1), rows.targets.flatten(), reduction="none")
        per_token = (per_token * rows.loss_weight.flatten()).view_as(rows.targets)
        for row in range(ids.shape[0]):
            n = int(attention[row].sum())
            start = int(loss_mask[row].nonzero()[0])
            offset = 0  # where block k's run [anchor, block] starts in the row's noisy stream
            for block_start in range(start, n, block):
                block_end = min(block_start + block, n)
                view = torch.cat([ids[row, :block_start], noisy.input_ids[row, block_start:block_end]])[None]
                position = torch.arange(block_end)
                group = torch.where(position < start, 0, (position - start) // block + 1)
                mask = group[None, :] <= group[:, None]  # block-causal: own block and every block before
                mask[block_start:, :] = True  # the noised block sees the context and all of itself
                alone = model(input_ids=view, attention_mask=mask[None, None]).logits[0]
                expected = diffusion_loss(alone[block_start:block_end], ids[row, block_start:block_end],
                                          noisy.loss_weight[row, block_start:block_end])
                run = block_end - block_start + 1
                got = per_token[row, offset : offset + run].sum()
                assert got == pytest.approx(expected.item(), rel=1e-4, abs=1e-5), (row, block_start)
                offset += run


def test_the_ar_term_of_causal_prefix_rows_is_the_causal_lms_next_token_loss(tmp_path):
    model, tok = make_dlm("llama", seed=5, attention="causal_prefix")
    data = sort_task(16)
    plain = DiffusionTrainer(model=model, args=training_args(tmp_path, block_length=2, ar_loss_weight=0.0),
                             train_dataset=data, processing_class=tok)
    inputs = first_batch(plain)
    inputs = plain._cut_after_eos_block(inputs)
    base = plain.compute_loss(model, inputs)
    with_ar = DiffusionTrainer(model=model, args=training_args(tmp_path, block_length=2, ar_loss_weight=0.5),
                               train_dataset=data, processing_class=tok)
    maskable = inputs["loss_mask"].bool() & inputs["attention_mask"].bool()
    maskable[:, 0] = False
    with torch.no_grad():
        length = inputs["input_ids"].shape[1]
        causal = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                       canvas_start=length).logits  # no canvas: the causal LM over the whole row
        ce = torch.nn.functional.cross_entropy(causal[maskable].float(), inputs["input_ids"][maskable],
                                               reduction="sum")
        got = with_ar.compute_loss(model, inputs)
    assert (got - base).item() == pytest.approx((0.5 * ce / maskable.sum()).item(), rel=1e-4)


def test_the_ar_term_is_on_by_default_for_causal_prefix_models_only(tmp_path):
    """ar_loss_weight=None: DEFAULT_AR_LOSS_WEIGHT where there is a causal context to keep, 0 on bidirectional
    models (where an explicit weight is refused); an explicit value is kept."""
    from hf_dlm.training_args import DEFAULT_AR_LOSS_WEIGHT

    data = sort_task(16)
    model, tok = make_dlm("llama", seed=5, attention="causal_prefix")
    trainer = DiffusionTrainer(model=model, args=training_args(tmp_path, block_length=2), train_dataset=data,
                               processing_class=tok)
    assert trainer.ar_loss_weight == DEFAULT_AR_LOSS_WEIGHT == 10.0
    inputs = trainer._cut_after_eos_block(first_batch(trainer))
    explicit = DiffusionTrainer(model=model, args=training_args(tmp_path, block_length=2, ar_loss_weight=0.0),
                                train_dataset=data, processing_class=tok)
    assert explicit.ar_loss_weight == 0.0
    with torch.no_grad():
        assert trainer.compute_loss(model, inputs) > explicit.compute_loss(model, inputs)  # the AR term is added
    model, tok = make_dlm("llama", seed=5)
    bidirectional = DiffusionTrainer(model=model, args=training_args(tmp_path), train_dataset=data,
                                     processing_class=tok)
    assert bidirectional.ar_loss_weight == 0.0


@pytest.mark.parametrize("option", [dict(complementary_masks=True), dict(all_masked_rows=0.5),
                                    dict(all_blocks=True, block_rows=0.5),
                                    dict(all_blocks=True, block_rows=0.5, complementary_masks=True)])
def test_gradient_accumulation_is_exact_with_each_option(tmp_path, option):
    data = sort_task(8)
    results = []
    for batch, accumulation in ((8, 1), (2, 4)):
        model, tok = make_dlm(seed=1)
        start = {k: v.clone() for k, v in model.named_parameters()}
        args = training_args(
            tmp_path, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, max_steps=1,
            optim="sgd", learning_rate=1.0, lr_scheduler_type="constant", max_grad_norm=0.0, padding="max_length",
            max_length=16, block_length=2, **option,
        )
        trainer = DiffusionTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
        trainer.train()
        update = torch.cat([(start[k] - v).flatten() for k, v in model.named_parameters()])
        results.append((losses(trainer)[0], update))
    (loss, update), (other_loss, other_update) = results
    assert update.abs().max() > 1e-3
    assert other_loss == pytest.approx(loss, rel=1e-5)
    assert torch.allclose(other_update, update, atol=1e-6)


def test_complementary_masks_double_the_rows_and_the_normaliser(tmp_path):
    model, tok = make_dlm(seed=2)
    data = sort_task(16)
    trainer = DiffusionTrainer(model=model, args=training_args(tmp_path, complementary_masks=True, length_groups=1,
                                                             all_blocks=False),
                               train_dataset=data, processing_class=tok)
    from tests.test_trainer import record_forward_inputs

    seen = record_forward_inputs(model)
    trainer.train()
    assert seen[0]["input_ids"].shape[0] == 16  # 8 rows and their complements
    assert all(torch.isfinite(torch.tensor(losses(trainer))))


@pytest.mark.parametrize(("attention", "option", "message"), [
    ("bidirectional", dict(ar_loss_weight=1.0), "only attention='causal_prefix'"),
    ("causal_prefix", dict(all_blocks=True), "already train every block"),
])
def test_options_where_they_mean_nothing_are_refused(tmp_path, attention, option, message):
    model, tok = make_dlm(attention=attention)
    with pytest.raises(ValueError, match=message):
        DiffusionTrainer(model=model, args=training_args(tmp_path, **option), train_dataset=sort_task(4),
                         processing_class=tok)


def test_length_groups_cut_the_padded_positions_and_keep_the_loss(tmp_path):
    """Rows of similar length share a forward: fewer positions computed, the same loss (rounding aside), and the
    split is the cheapest one (checked against every split of a small batch)."""
    import itertools

    from hf_dlm.trainer import length_groups

    lengths = [3, 9, 4, 16, 15, 5, 2, 10]
    mask = torch.zeros(len(lengths), 16, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    everyone = torch.ones(len(lengths), dtype=torch.bool)
    for groups in (1, 2, 3):
        split = length_groups(mask, everyone, groups)
        assert torch.equal(torch.stack(split).sum(0), torch.ones(len(lengths), dtype=torch.long))  # a partition
        cost = sum(int(g.sum()) * max(n for n, x in zip(lengths, g) if x) for g in split)
        ordered = sorted(lengths)
        best = min(sum((b - a) * ordered[b - 1] for a, b in zip((0, *cuts), (*cuts, len(ordered))))
                   for cuts in itertools.combinations(range(1, len(ordered)), groups - 1))
        assert cost == best
    assert length_groups(mask, torch.zeros(len(lengths), dtype=torch.bool), 4) == []

    model, tok = make_dlm(seed=6)
    data = sort_task(16)
    results = {}
    for groups in (1, 4):
        trainer = DiffusionTrainer(model=model, args=training_args(tmp_path, length_groups=groups, all_blocks=False),
                                   train_dataset=data, processing_class=tok)
        from tests.test_trainer import record_forward_inputs

        inputs = first_batch(trainer)
        inputs = trainer.get_batch_samples(iter([inputs]), 1, inputs["input_ids"].device)[0][0]
        seen = record_forward_inputs(model)
        with torch.no_grad():
            loss = trainer.compute_loss(model, inputs)
        results[groups] = (loss.item(), sum(call["input_ids"].numel() for call in seen), len(seen))
        model._forward_pre_hooks.clear()
    assert results[4][0] == pytest.approx(results[1][0], rel=1e-5)
    assert results[1][2] == 1 and results[4][2] > 1
    assert results[4][1] < results[1][1]


def test_block_rows_show_every_block_by_default_and_train_under_annealing(tmp_path):
    """all_blocks=None: on where block rows are (bidirectional, answer data), off for text data; with attention
    annealing the canvas rows get the annealed 4D masks and the two-stream rows their block-causal one."""
    model, tok = make_dlm(seed=7)
    trainer = DiffusionTrainer(model=model, args=training_args(tmp_path, block_length=2), train_dataset=sort_task(8),
                               processing_class=tok)
    assert trainer.block_rows == 0.5 and trainer.all_blocks
    off = DiffusionTrainer(model=model, args=training_args(tmp_path, block_length=2, all_blocks=False),
                           train_dataset=sort_task(8), processing_class=tok)
    assert not off.all_blocks
    from tests.test_trainer import as_text, record_forward_inputs

    text = DiffusionTrainer(model=model, args=training_args(tmp_path), train_dataset=as_text(sort_task(8)),
                            processing_class=tok)
    assert text.block_rows == 0 and not text.all_blocks
    seen = record_forward_inputs(model)
    annealed = DiffusionTrainer(model=model, args=training_args(tmp_path, block_length=2, anneal_steps=10,
                                                                 max_steps=2, block_rows=1.0),
                                train_dataset=sort_task(16), processing_class=tok)
    annealed.train()
    assert all(torch.isfinite(torch.tensor(losses(annealed))))
    assert any("position_ids" in call and call.get("position_ids") is not None for call in seen)  # two-stream
