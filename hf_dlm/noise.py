"""The masked-diffusion objective: noise levels, masking, loss weights and attention annealing.

Symbols follow MDLM (Sahoo et al. 2024, "Simple and Effective Masked Diffusion Language Models",
github.com/kuleshov-group/mdlm) with the linear schedule alpha_t = 1 - t that LLaDA and DiffuLLaMA use:

    t ~ U[t_min, t_max]                         one noise level per sequence
    x_t: each maskable token replaced by [MASK] with probability t
    L(x) = sum over masked i of -log p_theta(x_i | x_t) / t

With t ~ U(0, 1], E[L(x)] upper-bounds -log p(x_maskable | x_rest) (the continuous-time ELBO). Normalisation
(projects differ: LLaDA, DiffuLLaMA, dLLM-Var each normalise their own way): we divide the sum over a batch by the number of *maskable* tokens in it
(loss-carrying tokens, masked or not), which is LLaDA's unbiased per-token ELBO scale (github.com/ML-GSAI/LLaDA:
/ (B * L) in pretraining, / answer length in SFT), not DiffuLLaMA's / #masked (biased towards small t). The
trainer passes the count of the whole accumulated, all-device batch, so gradient accumulation and DDP are exact.

Variants:
- `t_min`/`t_max`: MDLM's eps (1e-3, also DiffuLLaMA's `sampling_eps`); dLLM-Var (github.com/maomaocun/dLLM-Var)
  trains with t in [0.1, 0.9].
- antithetic t (MDLM): t_i = t_min + (t_max - t_min) * ((u + i) / n mod 1) spreads a batch's levels evenly,
  lowering the variance of the loss.
- `eos_always_masked` (dLLM-Var): every loss-carrying EOS is masked whatever t, so the model always has to say
  where the text ends. Such a token is masked with probability 1, so its importance weight is 1, not 1/t.
- attention annealing (DiffuGPT, github.com/HKUNLP/DiffuLLaMA): during the first `anneal_steps` optimizer steps
  the attention mask is causal OR Bernoulli(min(1, (step + 1) / anneal_steps)): each future position becomes
  visible with a growing probability, easing the AR weights into bidirectional attention.
- all-masked rows (TiDAR, arXiv 2511.08923): a share of rows (`all_masked_share`) gets t = 1, every maskable
  token masked: the first forward of every block and every canvas.
- complementary masks (Fast-dLLM v2, arXiv 2509.26328): `complement` turns a noised batch into the batch masked
  where it was not (t' = 1 - t), so a row and its complement supervise every maskable token exactly once.
- confidence-aware training (LLaDA 2.0's CAP, arXiv 2512.15745; dParallel's certainty forcing,
  github.com/czg1225/dParallel): `confidence_loss` adds the entropy of the model's distribution at the masked
  positions it already predicts correctly (argmax == target). Minimising it sharpens the predictions that are right,
  so that more of them clear a decoding threshold in the same forward; wrong predictions are left to the CE alone
  (sharpening them would entrench the error). The trainer divides it by the same count as the CE.

Reproducible noise: the randomness of one example (its t, which tokens are masked, its annealed attention) comes
from a generator seeded by (seed, optimizer step, the example's tokens). It does not depend on how the examples
are split into micro-batches, devices or padding, so batch 8 x 1 and 2 x 4 accumulation see the same masks and a
resumed run repeats the original one. (Identical examples in one step get identical noise.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F

from .training_settings import check_training_settings

ELBO_T_MIN = 1e-3  # MDLM / DiffuLLaMA eps: t = 0 would give weight 1/t = inf to nothing masked


def maskable_positions(loss_mask: torch.Tensor) -> torch.Tensor:
    """Positions that may be noised and carry loss: `loss_mask` minus position 0.

    With the AR shift (`config.shift_logits`) position 0 is never predicted: it has no hidden state before it.
    """
    maskable = loss_mask.bool().clone()
    maskable[:, 0] = False
    return maskable


def anneal_ratio(step: int, anneal_steps: int) -> float:
    """DiffuGPT's share of future positions visible at optimizer `step`: min(1, (step + 1) / anneal_steps)."""
    if anneal_steps <= 1:
        return 1.0
    return min(1.0, (step + 1) / anneal_steps)


def antithetic_t(n: int, u: float, t_min: float, t_max: float) -> torch.Tensor:
    """MDLM's low-discrepancy levels for n sequences: one uniform u shifted by i / n (mod 1), scaled to the range."""
    strata = (u + torch.arange(n, dtype=torch.float64) / n) % 1.0
    return (t_min + (t_max - t_min) * strata).float()


def seeded_generator(*parts: int | bytes) -> torch.Generator:
    """A CPU generator seeded by a stable hash of `parts` (Python's `hash` is salted per process)."""
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(part if isinstance(part, bytes) else int(part).to_bytes(8, "little", signed=True))
    return torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") & (2**63 - 1))


def diffusion_loss(logits: torch.Tensor, targets: torch.Tensor, loss_weight: torch.Tensor) -> torch.Tensor:
    """sum_i loss_weight_i * CE(logits_i, targets_i) over positions with a non-zero weight (the masked ones).

    `logits` are aligned to positions (`DiffusionLM.forward`). Cross-entropy runs in float32 and only on the
    masked positions, so unmasked positions cost nothing beyond the forward.
    """
    selected = loss_weight > 0
    ce = F.cross_entropy(logits[selected].float(), targets[selected], reduction="none")
    return (ce * loss_weight[selected]).sum()


def confidence_loss(logits: torch.Tensor, targets: torch.Tensor, loss_weight: torch.Tensor) -> torch.Tensor:
    """sum_i H(p_theta(. | x_t)_i) over masked positions (`loss_weight > 0`) whose argmax is the target.

    H(p) = -sum_v p_v log p_v, in nats, in float32. The positions are chosen without gradient (argmax); the
    gradient flows through the entropy only. Unweighted by 1/t: the term is a regulariser, not part of the ELBO,
    and the views that matter for parallel decoding are the heavily masked ones (a block's first forwards), which
    hold most masked positions anyway.
    """
    selected = loss_weight > 0
    chosen = logits[selected].float()
    correct = chosen.detach().argmax(-1) == targets[selected]
    log_p = F.log_softmax(chosen[correct], dim=-1)
    return -(log_p.exp() * log_p).sum()


@dataclass
class NoisyBatch:
    """A batch after the forward (noising) process."""

    input_ids: torch.LongTensor  # x_t: masked positions hold the mask token
    attention_mask: torch.Tensor  # the 2D padding mask, or a 4D bool [B, 1, L, L] mask while annealing
    masked: torch.BoolTensor  # positions replaced by [MASK]
    loss_weight: torch.Tensor  # 1 / t on masked positions (1 on forced EOS), 0 elsewhere
    maskable: torch.BoolTensor  # positions that could be masked: the normalisation counts these
    t: torch.Tensor  # [B] noise level of each sequence


@dataclass
class DiffusionNoise:
    """The forward process of masked diffusion with the options of MDLM, LLaDA, DiffuGPT and dLLM-Var.

    Call it on a clean batch (right- or left-padded) to get the noised batch and the loss weights.
    """

    mask_token_id: int
    t_min: float = ELBO_T_MIN
    t_max: float = 1.0
    eos_token_ids: tuple[int, ...] = field(default_factory=tuple)
    eos_always_masked: bool = False
    anneal_steps: int = 0
    seed: int = 0
    all_masked_share: float = 0.0

    def __post_init__(self):
        check_training_settings({"t_min": self.t_min, "t_max": self.t_max, "anneal_steps": self.anneal_steps,
                                 "eos_always_masked": self.eos_always_masked, "eos_token_ids": self.eos_token_ids,
                                 "all_masked_rows": self.all_masked_share})
        self.eos_token_ids = tuple(int(i) for i in self.eos_token_ids)

    def antithetic_t(self, n: int, step: int, rank: int = 0) -> torch.Tensor:
        """Stratified levels for the n sequences one device processes in one optimizer step (all micro-batches)."""
        u = torch.rand(1, generator=seeded_generator(self.seed, step, rank, b"antithetic"), dtype=torch.float64)
        return antithetic_t(n, u.item(), self.t_min, self.t_max)

    def __call__(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        loss_mask: torch.Tensor,
        step: int | None = None,
        t: torch.Tensor | None = None,
    ) -> NoisyBatch:
        """Noise a clean batch.

        Args:
            input_ids / attention_mask / loss_mask: [B, L]; `loss_mask` marks the tokens that may be noised and
                carry loss (the prompt and padding are 0).
            step: the optimizer step (seeds the noise and sets the annealing ratio); `None` for evaluation, which
                uses a fixed stream and full attention.
            t: [B] noise levels to use instead of each example's own draw (antithetic batches).
        """
        batch, length = input_ids.shape
        device = input_ids.device
        real = attention_mask.bool()
        maskable = maskable_positions(loss_mask) & real
        ratio = 1.0 if step is None else anneal_ratio(step, self.anneal_steps)
        own_t = torch.empty(batch)
        all_masked = torch.zeros(batch, dtype=torch.bool)
        uniforms = torch.ones(batch, length)  # 1.0 never falls below t: padding is never masked
        visible = torch.zeros(batch, length, length, dtype=torch.bool) if ratio < 1.0 else None

        ids_cpu, real_cpu, maskable_cpu = input_ids.cpu(), real.cpu(), maskable.cpu()
        for row in range(batch):
            # Only the real tokens seed and receive the draws, so padding (batch layout) cannot change them.
            tokens = ids_cpu[row][real_cpu[row]]
            generator = seeded_generator(
                self.seed,
                -1 if step is None else step,
                tokens.numpy().tobytes(),
                maskable_cpu[row][real_cpu[row]].numpy().tobytes(),
            )
            n = tokens.numel()
            own_t[row] = self.t_min + (self.t_max - self.t_min) * torch.rand(1, generator=generator)
            uniforms[row, real_cpu[row]] = torch.rand(n, generator=generator)
            if visible is not None:
                index = real_cpu[row].nonzero().squeeze(-1)
                sub = torch.rand(n, n, generator=generator) < ratio
                sub |= torch.ones(n, n, dtype=torch.bool).tril()
                visible[row, index[:, None], index[None, :]] = sub
            if self.all_masked_share > 0 and step is not None:  # drawn last: the draws above stay as they were
                all_masked[row] = torch.rand(1, generator=generator).item() < self.all_masked_share

        t = own_t if t is None else t.detach().float().cpu()
        # TiDAR's all-masked rows: t = 1 masks every maskable token (weight 1/t = 1), the view of a block's first
        # forward, and the drafting view that its ablation found best.
        t = torch.where(all_masked, torch.ones_like(t), t)
        masked = maskable & (uniforms.to(device) < t.to(device)[:, None])
        loss_weight = masked.float() / t.to(device)[:, None]
        if self.eos_always_masked:
            is_eos = torch.isin(input_ids, torch.tensor(self.eos_token_ids, device=device)) & maskable
            masked |= is_eos
            loss_weight = torch.where(is_eos, torch.ones_like(loss_weight), loss_weight)
        noisy_ids = input_ids.masked_fill(masked, self.mask_token_id)

        if visible is None:
            attention = attention_mask
        else:
            # Every row attends to itself so that no padding row is empty (softmax over nothing gives NaN).
            visible |= torch.eye(length, dtype=torch.bool)
            attention = visible.to(device)[:, None]
        return NoisyBatch(noisy_ids, attention, masked, loss_weight, maskable, t.to(device))


def complement(noisy: NoisyBatch, input_ids: torch.LongTensor, mask_token_id: int, t_min: float = ELBO_T_MIN
               ) -> NoisyBatch:
    """The complementary view of a noised batch (Fast-dLLM v2, arXiv 2509.26328): mask exactly the maskable tokens
    `noisy` left visible. Its noise level is t' = 1 - t (a maskable token is in the complement with probability
    1 - t), clamped to `t_min` so that the 1/t' weight stays bounded when t = 1; a token masked for sure (a forced
    EOS, weight 1) is visible in the complement. Row i and its complement together carry every maskable token's
    loss exactly once."""
    masked = noisy.maskable & ~noisy.masked
    t = (1.0 - noisy.t).clamp(min=t_min)
    loss_weight = masked.float() / t[:, None]
    return NoisyBatch(input_ids.masked_fill(masked, mask_token_id), noisy.attention_mask, masked, loss_weight,
                      noisy.maskable, t)


def stack_noisy(first: NoisyBatch, second: NoisyBatch) -> NoisyBatch:
    """Two noised batches of the same length as one (rows of `first`, then `second`)."""
    return NoisyBatch(*(torch.cat([getattr(first, f.name), getattr(second, f.name)]) for f in fields(NoisyBatch)))


__all__ = [
    "ELBO_T_MIN",
    "DiffusionNoise",
    "NoisyBatch",
    "anneal_ratio",
    "antithetic_t",
    "complement",
    "confidence_loss",
    "diffusion_loss",
    "maskable_positions",
    "seeded_generator",
    "stack_noisy",
]
