"""Calibrated length bounds for `predict` (hf_dlm/calibration.py, `hf-dlm calibrate`): on a synthetic model whose
first-step p(EOS) is known, the fitted rule covers the true length with the target probability on prompts it never
saw, where the uncalibrated default does not."""

import json

import pytest
import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from hf_dlm import DiffusionLM
from hf_dlm.calibration import (
    LengthRule,
    bound_stats,
    calibrate_length_rule,
    first_step_eos_probabilities,
    fit_length_rule,
    write_length_rule,
)
from hf_dlm.configuration_dlm import DiffusionLMConfig
from hf_dlm.modeling_dlm import CACHE_NAME
from hf_dlm.testing import tiny_config
from tests.test_cli import heavy_modules, run_cli

VOCAB, EOS, PAD, MASK, ANSWER = 12, 1, 2, 3, 10
PROMPT_TOKENS, PROMPT_LENGTH = 6, 4  # a prompt: 4 tokens among ids 4..9, its index written in base 6
BUDGET = 64


def prompt_ids(index: int) -> list[int]:
    return [4 + (index // PROMPT_TOKENS**k) % PROMPT_TOKENS for k in range(PROMPT_LENGTH)]


def prompt_index(tokens) -> int:
    return sum((int(t) - 4) * PROMPT_TOKENS**k for k, t in enumerate(tokens))


class EosBeliefBackbone(nn.Module):
    """A backbone whose first-step p(EOS) at canvas position j of prompt i is `p_eos[i, j]` exactly (EOS against
    one answer token, every other token far below; mask and pad are banned by the decoder), and which, once the
    canvas is no longer all masks, writes prompt i's true answer: `lengths[i]` answer tokens, then EOS."""

    def __init__(self, p_eos: torch.Tensor, lengths: torch.Tensor):
        super().__init__()
        self.logit_eos = torch.logit(p_eos.clamp(1e-6, 1 - 1e-6))
        self.lengths = lengths
        self.embed = nn.Embedding(VOCAB, 1)
        self.config = tiny_config("gpt2", VOCAB, hidden=8, layers=1, heads=1)
        self.config._attn_implementation = "sdpa"

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return None

    def forward(self, input_ids, attention_mask, position_ids, use_cache=False, logits_to_keep=0, **kwargs):
        if kwargs.get(CACHE_NAME) is not None and kwargs[CACHE_NAME].get_seq_length() > 0:
            raise NotImplementedError("EosBeliefBackbone has no KV cache: decode with use_cache=False")
        batch, q = input_ids.shape
        logits = torch.full((batch, q, VOCAB), -1e4)
        for b in range(batch):
            real = input_ids[b][attention_mask[b].bool()]
            i = prompt_index(real[:PROMPT_LENGTH])
            first_step = bool((real[PROMPT_LENGTH:] == MASK).all())
            j = (position_ids[b] + 1 - PROMPT_LENGTH).clamp(0, BUDGET - 1)  # AR shift: position p scores p + 1
            if first_step:
                logits[b, :, ANSWER] = 0.0
                logits[b, :, EOS] = self.logit_eos[i, j]
            else:
                ends = j >= self.lengths[i]
                logits[b, :, ANSWER] = torch.where(ends, -1e4, 20.0)
                logits[b, :, EOS] = torch.where(ends, 20.0, -1e4)
        keep = logits_to_keep if logits_to_keep else q
        return CausalLMOutputWithPast(logits=logits[:, -keep:])


def belief_model(p_eos, lengths) -> DiffusionLM:
    config = DiffusionLMConfig(backbone_config=tiny_config("gpt2", VOCAB, hidden=8, layers=1, heads=1),
                               mask_token_id=MASK, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=EOS)
    model = DiffusionLM(config)
    model.backbone = EosBeliefBackbone(p_eos, lengths)
    return model.eval()


def length_world(prompts: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """True lengths L_i ~ Poisson(mu_i), mu_i uniform in [4, 40]; the model's belief p(EOS at j) = P(L <= j) under
    Poisson(mu_i * exp(e_i)), e_i ~ N(0, 0.25^2): a noisy estimate of each prompt's length distribution."""
    g = torch.Generator().manual_seed(seed)
    mu = 4 + 36 * torch.rand(prompts, generator=g)
    lengths = torch.poisson(mu, generator=g).long().clamp(1, BUDGET - 2)
    believed = mu * torch.exp(0.25 * torch.randn(prompts, generator=g))
    j = torch.arange(BUDGET, dtype=torch.float)
    cdf = torch.distributions.Poisson(believed[:, None]).log_prob(j[None, :]).exp().cumsum(-1)
    return cdf.clamp(max=1.0), lengths


def inputs(indices) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([prompt_ids(int(i)) for i in indices])
    return ids, torch.ones_like(ids)


# ----------------------------------------------------------------------------------------------- the fit
def test_the_decoders_first_step_p_eos_is_read_exactly():
    p_eos, lengths = length_world(20, seed=1)
    model = belief_model(p_eos, lengths)
    read = first_step_eos_probabilities(model, *inputs(range(20)), max_new_tokens=BUDGET, batch_size=7)
    torch.testing.assert_close(read, p_eos.clamp(1e-6, 1 - 1e-6), rtol=1e-4, atol=1e-5)


def test_calibration_reaches_its_coverage_on_prompts_it_never_saw():
    """Calibrate on 800 prompts (400 fit, 400 held out), then measure on 2000 fresh prompts of the same world. The
    conformal margin guarantees 95% in expectation; one draw of 200 certifying prompts moves it by about +-0.015,
    hence 0.935 here. The uncalibrated default (0.5, 8) covers far less, so the check can fail."""
    p_eos, lengths = length_world(2800, seed=0)
    calibration = calibrate_length_rule(p_eos[:800], lengths[:800], BUDGET, target_coverage=0.95, seed=0)
    fresh = bound_stats(p_eos[800:], lengths[800:], calibration.rule, BUDGET)
    default = bound_stats(p_eos[800:], lengths[800:], LengthRule(0.5, 8, 0.95), BUDGET)
    assert fresh.coverage >= 0.935, fresh
    assert calibration.held_out.coverage >= 0.9, calibration
    assert default.coverage < 0.9, default
    assert calibration.rule.length_coverage == 0.95
    # Not the trivial cover (the whole budget): the bound stays well inside it.
    assert fresh.mean_bound < 0.8 * BUDGET, fresh


def test_a_higher_target_buys_coverage_with_slack():
    p_eos, lengths = length_world(2400, seed=3)
    stats = []
    for target in (0.5, 0.8, 0.95):
        rule = calibrate_length_rule(p_eos[:400], lengths[:400], BUDGET, target_coverage=target).rule
        stats.append(bound_stats(p_eos[400:], lengths[400:], rule, BUDGET))
    assert [round(s.coverage, 2) for s in stats] == sorted(round(s.coverage, 2) for s in stats)
    assert stats[0].coverage < 0.65 < stats[1].coverage < 0.9 < stats[2].coverage
    assert stats[0].mean_bound < stats[2].mean_bound


def test_too_few_prompts_for_the_coverage_are_refused():
    p_eos, lengths = length_world(37, seed=0)
    with pytest.raises(ValueError, match="cannot certify 95% coverage: the fit needs at least 38"):
        fit_length_rule(p_eos, lengths, BUDGET, 0.95)
    fit_length_rule(*length_world(38, seed=0), BUDGET, 0.95)


# ----------------------------------------------------------------------------------------------- in the decoder
def test_predict_reports_the_calibrated_bound_and_coverage(tmp_path):
    p_eos, lengths = length_world(416, seed=5)
    model = belief_model(p_eos, lengths)
    rule = calibrate_length_rule(p_eos[:400], lengths[:400], BUDGET).rule
    model.generation_config.update(**rule.settings(), max_new_tokens=BUDGET, use_cache=False)
    out = model.diffusion_generate(*inputs(range(400, 416)), return_dict_in_generate=True, block_length=8)
    reached = p_eos[400:416] >= rule.predict_threshold
    first = torch.where(reached.any(-1), reached.float().argmax(-1), BUDGET)
    expected = (first + 1 + rule.length_margin).clamp(max=BUDGET)
    assert out.bounds.tolist() == expected.tolist()
    assert out.length_coverage == 0.95
    covered = out.bounds > out.lengths  # (the first step commits from the belief, so lengths may differ from L)
    assert covered.any() and not covered.all()
    assert torch.equal(out.grew, ~covered)


def test_the_rule_is_written_into_generation_config_json(tmp_path):
    p_eos, lengths = length_world(4, seed=0)
    model = belief_model(p_eos, lengths)
    model.generation_config.save_pretrained(tmp_path)
    write_length_rule(tmp_path, LengthRule(0.3, 5, 0.9))
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert (saved["predict_threshold"], saved["length_margin"], saved["length_coverage"]) == (0.3, 5, 0.9)
    assert saved["mask_token_id"] == MASK  # the other fields are kept
    from hf_dlm import DiffusionGenerationConfig

    assert DiffusionGenerationConfig.from_pretrained(tmp_path).length_coverage == 0.9
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        write_length_rule(tmp_path / "nowhere", LengthRule(0.3, 5, 0.9))


# ----------------------------------------------------------------------------------------------- the command
@pytest.mark.parametrize("argv, says", [
    (["--model", "/no/such/dir", "--prompts", "p.jsonl"], "no such directory"),
    (["--model", ".", "--prompts", "p.jsonl", "--target-coverage", "1.5"], "--target-coverage must be in (0, 1)"),
    (["--model", ".", "--prompts", "p.jsonl", "--reference", "best"], "invalid choice"),
])
def test_calibrate_refuses_bad_arguments_before_torch(argv, says):
    result = run_cli("calibrate", *argv)
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert heavy_modules(result) == ""


def test_calibrate_refuses_prompts_without_completions_and_too_few_prompts(tmp_path):
    (tmp_path / "generation_config.json").write_text("{}")
    bare = tmp_path / "bare.jsonl"
    bare.write_text('{"prompt": "sort: 3 1 2 ="}\n' * 50)
    result = run_cli("calibrate", "--model", str(tmp_path), "--prompts", str(bare))
    assert result.returncode == 2 and "or use --reference grow" in result.stderr
    few = tmp_path / "few.jsonl"
    few.write_text('{"prompt": "a", "completion": "b"}\n' * 75)
    result = run_cli("calibrate", "--model", str(tmp_path), "--prompts", str(few))
    assert result.returncode == 2 and "too few for 95% coverage" in result.stderr
    assert heavy_modules(result) == ""


@pytest.mark.parametrize("reference", ["completion", "grow"])
def test_calibrate_writes_the_rule_into_a_checkpoint(tmp_path, reference):
    from hf_dlm.cli import main as cli_main
    from tests.conftest import make_dlm

    model, tok = make_dlm("gpt2")
    model.generation_config.max_new_tokens = 16
    model.generation_config.block_length = 8
    model.save_pretrained(tmp_path / "ckpt")
    lines = [json.dumps({"prompt": f"sort: {i % 7} {i % 3} =", "completion": " ".join(str(d) for d in range(i % 9))})
             for i in range(80)]
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    args = ["calibrate", "--model", str(tmp_path / "ckpt"), "--prompts", str(tmp_path / "p.jsonl"),
            "--reference", reference, "--target-coverage", "0.9", "--out", str(tmp_path / "cal.json"),
            "--no-chat-template", "--dtype", "float32"]
    assert cli_main(args) == 0
    saved = json.loads((tmp_path / "ckpt" / "generation_config.json").read_text())
    report = json.loads((tmp_path / "cal.json").read_text())
    assert saved["length_coverage"] == 0.9
    assert (saved["predict_threshold"], saved["length_margin"]) == (report["rule"]["predict_threshold"],
                                                                    report["rule"]["length_margin"])
    assert report["fit"]["prompts"] == report["held_out"]["prompts"] == 40
    assert report["fit"]["coverage"] >= 0.9
