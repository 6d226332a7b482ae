"""The masked-diffusion objective (hf_dlm.noise): what gets masked, with which weight, and which attention."""

import math

import pytest
import torch

from hf_dlm.noise import (
    DiffusionNoise,
    anneal_ratio,
    antithetic_t,
    confidence_loss,
    diffusion_loss,
    maskable_positions,
)
from tests.conftest import make_dlm

MASK, EOS = 99, 0


def rows(batch=4, length=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (batch, length), generator=g)
    return ids, torch.ones_like(ids), torch.ones_like(ids)


def test_prompt_padding_and_position_zero_are_never_masked():
    ids, attention, loss_mask = rows(8, 40)
    loss_mask[:, :10] = 0  # prompt
    attention[:, 30:] = 0  # padding
    noise = DiffusionNoise(mask_token_id=MASK)
    for step in range(20):
        noisy = noise(ids, attention, loss_mask, step=step, t=torch.full((8,), 1.0))
        assert not noisy.masked[:, :10].any() and not noisy.masked[:, 30:].any()
        assert (noisy.input_ids[:, :10] == ids[:, :10]).all()
        assert noisy.masked[:, 10:30].all()  # t = 1 masks every maskable token
    assert not maskable_positions(torch.ones(2, 5))[:, 0].any()


def test_each_maskable_token_is_masked_with_probability_t_and_weighted_one_over_t():
    ids, attention, loss_mask = rows(1, 4000)
    noisy = DiffusionNoise(mask_token_id=MASK)(ids, attention, loss_mask, step=0, t=torch.tensor([0.3]))
    assert abs(noisy.masked.float()[:, 1:].mean().item() - 0.3) < 0.03
    assert torch.allclose(noisy.loss_weight[noisy.masked], torch.tensor(1 / 0.3))
    assert (noisy.loss_weight[~noisy.masked] == 0).all()
    assert (noisy.input_ids[noisy.masked] == MASK).all() and (noisy.input_ids[~noisy.masked] == ids[~noisy.masked]).all()


def test_levels_stay_in_the_configured_range():
    ids, attention, loss_mask = rows(64, 8)
    noisy = DiffusionNoise(mask_token_id=MASK, t_min=0.1, t_max=0.9)(ids, attention, loss_mask, step=3)
    assert noisy.t.min() >= 0.1 and noisy.t.max() <= 0.9 and noisy.t.std() > 0.1


def test_eos_always_masked_masks_every_loss_carrying_eos_with_weight_one():
    ids, attention, loss_mask = rows(4, 30)
    ids[:, 5] = EOS  # inside the prompt: stays visible
    ids[:, 20:] = EOS  # answer end + EOS fill
    loss_mask[:, :8] = 0
    noise = DiffusionNoise(mask_token_id=MASK, eos_token_ids=(EOS,), eos_always_masked=True)
    noisy = noise(ids, attention, loss_mask, step=0, t=torch.full((4,), 1e-3))
    assert noisy.masked[:, 20:].all() and (noisy.loss_weight[:, 20:] == 1).all()
    assert not noisy.masked[:, 5].any()
    plain = DiffusionNoise(mask_token_id=MASK)(ids, attention, loss_mask, step=0, t=torch.full((4,), 1e-3))
    assert not plain.masked[:, 20:].all()


def test_noise_of_an_example_does_not_depend_on_its_batch_or_padding():
    """What makes accumulation and DDP exact: the same example gets the same masks alone or in a padded batch."""
    ids, attention, loss_mask = rows(3, 20)
    noise = DiffusionNoise(mask_token_id=MASK, anneal_steps=100)
    alone = noise(ids[1:2, :12], attention[1:2, :12], loss_mask[1:2, :12], step=7)
    attention[1, 12:] = 0
    together = noise(ids, attention, loss_mask, step=7)
    assert together.t[1] == alone.t[0]
    assert torch.equal(together.masked[1, :12], alone.masked[0])
    assert torch.equal(together.attention_mask[1, 0, :12, :12], alone.attention_mask[0, 0])
    other_step = noise(ids, attention, loss_mask, step=8)
    assert not torch.equal(other_step.masked, together.masked)


def test_evaluation_noise_is_a_fixed_stream():
    ids, attention, loss_mask = rows()
    noise = DiffusionNoise(mask_token_id=MASK, seed=5)
    a, b = noise(ids, attention, loss_mask, step=None), noise(ids, attention, loss_mask, step=None)
    assert torch.equal(a.masked, b.masked) and torch.equal(a.t, b.t)
    assert not torch.equal(a.masked, DiffusionNoise(mask_token_id=MASK, seed=6)(ids, attention, loss_mask).masked)


def test_antithetic_levels_cover_the_range_evenly():
    t = antithetic_t(8, 0.37, 0.1, 0.9).sort().values
    gaps = t.diff()
    assert torch.allclose(gaps, torch.full_like(gaps, 0.1), atol=1e-6)
    assert t.min() >= 0.1 and t.max() <= 0.9
    noise = DiffusionNoise(mask_token_id=MASK)
    assert torch.equal(noise.antithetic_t(4, step=2), noise.antithetic_t(4, step=2))
    assert not torch.equal(noise.antithetic_t(4, step=2), noise.antithetic_t(4, step=3))


def test_normalisation_gives_the_unbiased_per_token_elbo():
    """A model that knows nothing (uniform logits) must score log V per token: E[1{masked} / t] = 1. Dividing by the
    number of *masked* tokens instead (DiffuLLaMA) would give log V * E[1/t], about 7 log V for t_min = 1e-3."""
    vocab = 50
    ids, attention, loss_mask = rows(2000, 16)
    noisy = DiffusionNoise(mask_token_id=MASK)(ids, attention, loss_mask, step=0)
    loss = diffusion_loss(torch.zeros(*ids.shape, vocab), ids, noisy.loss_weight) / noisy.maskable.sum()
    assert loss.item() == pytest.approx(math.log(vocab), rel=0.1)


def test_diffusion_loss_is_the_weighted_cross_entropy_of_masked_positions():
    logits = torch.randn(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    weight = torch.zeros(2, 5)
    weight[0, 2], weight[1, 4] = 2.0, 0.5
    expected = 2.0 * torch.nn.functional.cross_entropy(logits[0, 2], targets[0, 2]) + 0.5 * torch.nn.functional.cross_entropy(
        logits[1, 4], targets[1, 4]
    )
    assert torch.allclose(diffusion_loss(logits, targets, weight), expected)


def test_confidence_loss_is_the_entropy_of_the_masked_positions_predicted_right():
    """By hand, in nats. Position 1: p = (1/2, 1/4, 1/4), right: H = 1.5 ln 2. Position 2: p = (1/5, 3/5, 1/5), argmax 1
    but target 0: wrong, left out. Position 3: the same logits as position 1 but not masked (weight 0): left out.
    Position 4: p = (1/8, 1/8, 3/4), right, weight 1/t = 5 (the term ignores it): H = 2.25 ln 2 - 0.75 ln 3."""
    ln2, ln3, ln6 = math.log(2), math.log(3), math.log(6)
    logits = torch.tensor([[[9.0, 0, 0], [ln2, 0, 0], [0, ln3, 0], [ln2, 0, 0], [0, 0, ln6]]], requires_grad=True)
    targets = torch.tensor([[0, 0, 0, 0, 2]])
    weight = torch.tensor([[0.0, 2.0, 2.0, 0.0, 5.0]])
    value = confidence_loss(logits, targets, weight)
    assert value.item() == pytest.approx(1.5 * ln2 + 2.25 * ln2 - 0.75 * ln3, rel=1e-6)
    value.backward()
    grad = logits.grad[0]
    assert grad[[0, 2, 3]].abs().max() == 0  # unmasked or wrong: no gradient from the term
    assert grad[1, 0] < 0  # descent (minus the gradient) raises the right token's logit: sharper
    assert confidence_loss(torch.zeros(1, 3, 4), torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3)).item() == 0


def test_annealing_mask_goes_from_causal_to_full():
    assert anneal_ratio(0, 0) == anneal_ratio(0, 1) == 1.0
    assert anneal_ratio(0, 10) == 0.1 and anneal_ratio(9, 10) == 1.0
    ids, attention, loss_mask = rows(8, 48)
    attention[0, 40:] = 0
    noise = DiffusionNoise(mask_token_id=MASK, anneal_steps=10)
    causal = torch.ones(48, 48, dtype=torch.bool).tril()
    future = ~causal
    shares = []
    for step in range(9):
        mask = noise(ids, attention, loss_mask, step=step).attention_mask
        assert mask.shape == (8, 1, 48, 48) and mask.dtype == torch.bool
        assert mask[1:, 0][:, causal].all()  # the past is always visible
        assert not mask[0, 0, :40, 40:].any()  # padding never is
        shares.append(mask[1:, 0][:, future].float().mean().item())
    assert shares == sorted(shares) and shares[0] == pytest.approx(0.1, abs=0.03) and shares[-1] > 0.85
    done = noise(ids, attention, loss_mask, step=9).attention_mask
    assert done.dim() == 2  # ratio 1: the plain padding mask, i.e. full bidirectional attention
    assert DiffusionNoise(mask_token_id=MASK)(ids, attention, loss_mask, step=0).attention_mask.dim() == 2


def test_the_model_honours_the_annealed_mask():
    """At the start of annealing the model is causal (a later token cannot change earlier logits); afterwards a
    later token changes the first position's prediction."""
    model, tok = make_dlm()
    ids = torch.randint(1, 40, (1, 12))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 40 + 1
    ones = torch.ones_like(ids)
    noise = DiffusionNoise(mask_token_id=model.config.mask_token_id, anneal_steps=10**9)
    with torch.no_grad():
        start = [model(input_ids=x, attention_mask=noise(x, ones, ones, step=0).attention_mask).logits for x in (ids, changed)]
        full = [model(input_ids=x, attention_mask=ones).logits for x in (ids, changed)]
    assert torch.allclose(start[0][0, :-1], start[1][0, :-1], atol=1e-5)
    assert not torch.allclose(full[0][0, 1], full[1][0, 1], atol=1e-4)


def test_invalid_settings_say_what_to_change():
    with pytest.raises(ValueError, match="t_min"):
        DiffusionNoise(mask_token_id=MASK, t_min=0.0)
    with pytest.raises(ValueError, match="anneal_steps"):
        DiffusionNoise(mask_token_id=MASK, anneal_steps=-1)
    with pytest.raises(ValueError, match="eos_token_ids"):
        DiffusionNoise(mask_token_id=MASK, eos_always_masked=True)
