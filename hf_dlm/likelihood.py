"""Likelihoods of a diffusion LM: the ELBO of a continuation given its context, and whether greedy decoding
reproduces it. lm-eval's `loglikelihood` (hf_dlm/integrations/lm_eval.py) calls this; anyone scoring text does too.

LLaDA's harness model (github.com/ML-GSAI/LLaDA eval_llada.py) is the reference for the estimators. A masked
diffusion LM has no exact likelihood, only a lower bound: for a block of L continuation tokens

    ELBO = - E_{k ~ U{1..L}} E_{M uniform, |M| = k} [ (L / k) * sum_{i in M} CE(model(context, block with M masked)_i, c_i) ]

(the 1/t weight of the diffusion loss with t = k / L). A block whose 2^L - 1 mask subsets number at most `mc_num`
is enumerated exactly (a one-token answer gets its exact log-probability); a longer one is estimated from `mc_num`
masks with the mask count k stratified over 1..L (`elbo_masks`). Bidirectional models score the whole continuation
as one block (LLaDA); `attention="causal_prefix"` models (block diffusion) score it block by block, each block given
the clean text before it, the factorisation they decode with (BD3-LM's NELBO). `greedy_matches`: the continuation is
decoded from the context one token per step, most confident first (LLaDA's check), and compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .draft_rows import IGNORE
from .noise import seeded_generator

MC_SAMPLING = ("stratified", "iid")
ROWS_PER_POOL = 64  # ELBO rows waiting for forwards, in batches: bounds memory, keeps short requests batched together


def elbo_masks(length: int, mc_num: int, sampling: str = "stratified",
               generator: torch.Generator | None = None) -> tuple[torch.BoolTensor, torch.Tensor]:
    """Masks of a block of `length` tokens and weights w such that

        sum_j w_j * sum_{i masked in mask j} CE_i

    is the negative ELBO  E_{k ~ U{1..L}} E_{M uniform, |M| = k} [ (L / k) sum_{i in M} CE_i ]  or an unbiased
    estimate of it. Returns (masks [n, length] bool, weights [n] float64).

    - Exact, when the 2^L - 1 non-empty subsets number at most `mc_num`: every subset M once, with weight
      P(k) * P(M | k) * L / k = 1 / (|M| * C(L, |M|)). No sampling error, and no more forwards than sampling.
    - Otherwise `mc_num` masks with weight L / (k * mc_num); given k, M is a uniform k-subset. `sampling`:
      "stratified" (default): k_j = 1 + (u + floor(j * L / mc_num)) mod L with one u ~ U{0..L-1}. Each k_j is
      marginally uniform, so the estimate is unbiased, and the ks are spread evenly over 1..L (each exactly
      mc_num / L times when L divides mc_num), which removes the variance between mask ratios; LLaDA's
      eval_llada.py spreads its ks the same way. "iid": every k drawn independently (plain Monte Carlo).
    """
    if length < 1:
        raise ValueError(f"A block needs at least one token, got length={length}.")
    if mc_num < 1:
        raise ValueError(f"mc_num must be >= 1, got {mc_num}.")
    if sampling not in MC_SAMPLING:
        raise ValueError(f"mc_sampling must be one of {MC_SAMPLING}, got {sampling!r}.")
    positions = torch.arange(length)
    if 2**length - 1 <= mc_num:
        subsets = torch.arange(1, 2**length)
        masks = ((subsets[:, None] >> positions) & 1).bool()
        k = masks.sum(-1)
        weights = torch.tensor([1.0 / (int(size) * math.comb(length, int(size))) for size in k], dtype=torch.float64)
        return masks, weights
    if sampling == "stratified":
        u = torch.randint(length, (1,), generator=generator)
        k = 1 + (u + torch.arange(mc_num) * length // mc_num) % length
    else:
        k = torch.randint(1, length + 1, (mc_num,), generator=generator)
    ranks = torch.rand(mc_num, length, generator=generator).argsort(-1).argsort(-1)
    masks = ranks < k[:, None]
    weights = length / (k.double() * mc_num)
    return masks, weights


def left_padded_ids(rows: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows left-padded into (input_ids, attention_mask), as `diffusion_generate` takes batches."""
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], device=device)
    attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return input_ids, attention_mask


@dataclass
class DiffusionLikelihood:
    """The ELBO and greedy-match estimators over one `DiffusionLM` (module docstring).

    `batch_size`: rows per forward; `mc_num`, `mc_sampling`: masks per block (`elbo_masks`); `mc_seed`: the seed of
    the masks (each request's masks depend only on it and the request's tokens, not on batching or the process);
    `block_length`: tokens per ELBO block, None for the whole continuation.
    """

    model: torch.nn.Module
    batch_size: int = 8
    mc_num: int = 128
    mc_sampling: str = "stratified"
    mc_seed: int = 0
    block_length: int | None = None

    @property
    def mask_id(self) -> int:
        return self.model.config.mask_token_id

    @property
    def pad_id(self) -> int:
        return self.model.config.pad_token_id

    def _left_padded(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return left_padded_ids(rows, self.pad_id, self.model.device)

    def _blocks(self, length: int) -> list[tuple[int, int]]:
        size = self.block_length or length
        return [(start, min(start + size, length)) for start in range(0, length, size)]

    @torch.no_grad()
    def elbo(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], progress: bool = False) -> list[float]:
        """The ELBO of each continuation given its context (both token ids; the context non-empty).

        Every (request, block, mask) becomes one row `[context + blocks before | noisy block]`. Requests are taken
        longest first and their rows pooled until a few hundred forwards' worth is waiting; the pool is sorted by
        length and run `batch_size` rows per forward with left padding. So short requests share forwards, and a
        whole task's rows (millions for hellaswag at mc_num=128) are never in memory at once."""
        totals = torch.zeros(len(pairs), dtype=torch.float64)
        pool: list[tuple] = []
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        for owner in tqdm(order, disable=not progress, desc="hf_dlm ELBO"):
            pool += self._elbo_rows(owner, *pairs[owner])
            if len(pool) >= ROWS_PER_POOL * self.batch_size:
                self._score_rows(pool, totals)
                pool = []
        self._score_rows(pool, totals)
        return (-totals).tolist()

    def _elbo_rows(self, owner: int, context: Sequence[int], continuation: Sequence[int]) -> list[tuple]:
        """(owner, prefix, noisy block, targets, weight) for every block and mask of one request."""
        if not context:
            raise ValueError("Each continuation needs a non-empty context (position 0 is never predicted).")
        if self.mask_id in context or self.mask_id in continuation:
            raise ValueError(f"A request contains the mask token (id {self.mask_id}); it would be read as a "
                             f"position to fill. Remove it from the text.")
        tokens = torch.tensor(list(context) + list(continuation))
        rows = []
        for block, (start, end) in enumerate(self._blocks(len(continuation))):
            # The masks depend on the seed and the request alone: the same under any batching, rank or order.
            generator = seeded_generator(self.mc_seed, tokens.numpy().tobytes(), len(context), block)
            masks, weights = elbo_masks(end - start, self.mc_num, self.mc_sampling, generator)
            prefix = tokens[: len(context) + start]
            clean = tokens[len(context) + start : len(context) + end]
            for mask, weight in zip(masks, weights.tolist()):
                rows.append((owner, prefix, torch.where(mask, self.mask_id, clean), torch.where(mask, clean, IGNORE),
                             weight))
        return rows

    def _score_rows(self, rows: list[tuple], totals: torch.Tensor) -> None:
        """Add weight * (sum of masked cross-entropies) of every row to its owner's total."""
        rows = sorted(rows, key=lambda row: -(len(row[1]) + len(row[2])))
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            nll = self._masked_nll([torch.cat([prefix, noisy]) for _, prefix, noisy, _, _ in batch],
                                   [len(prefix) for _, prefix, _, _, _ in batch], [t for _, _, _, t, _ in batch])
            owners = torch.tensor([row[0] for row in batch])
            weights = torch.tensor([row[4] for row in batch], dtype=torch.float64)
            totals.index_add_(0, owners, nll.double().cpu() * weights)

    def _masked_nll(self, rows: list[torch.Tensor], canvas_starts: list[int],
                    targets: list[torch.Tensor]) -> torch.Tensor:
        """Sum of cross-entropies at the masked positions of each row (its last len(target) tokens): one forward."""
        device = self.model.device
        input_ids, attention_mask = self._left_padded([r.tolist() for r in rows])
        width = input_ids.shape[1]
        keep = max(len(t) for t in targets)
        # Targets right-aligned like the rows' blocks; positions outside a row's block are ignored.
        aligned = torch.full((len(rows), keep), IGNORE, dtype=torch.long)
        for i, target in enumerate(targets):
            aligned[i, keep - len(target) :] = target
        canvas_start = torch.tensor([width - len(r) + s for r, s in zip(rows, canvas_starts)], device=device)
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep,
                            canvas_start=canvas_start).logits
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), aligned.reshape(-1).to(device),
                             ignore_index=IGNORE, reduction="none")
        return ce.view(len(rows), keep).sum(-1)

    @torch.no_grad()
    def greedy_matches(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                       generation_config=None) -> list[bool]:
        """Whether greedy decoding reproduces each continuation: a canvas of len(continuation) masks after the
        context, one token per step (the most confident mask first), in the ELBO's blocks, no cache: LLaDA's
        `suffix_greedy_prediction`, run by `diffusion_generate` itself (over `generation_config`, whose decoding
        settings are all overridden, when given)."""
        matches = [True] * len(pairs)  # an empty continuation is trivially reproduced
        by_length: dict[int, list[int]] = {}
        for index, (_, continuation) in enumerate(pairs):
            if continuation:
                by_length.setdefault(len(continuation), []).append(index)
        for length, indices in by_length.items():
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                input_ids, attention_mask = self._left_padded([pairs[i][0] for i in batch])
                sequences = self.model.diffusion_generate(
                    input_ids, attention_mask, generation_config=generation_config, length_strategy="fixed",
                    max_new_tokens=length, block_length=min(self.block_length or length, length), steps=None,
                    threshold=None, unmasking="low_confidence", temperature=0.0, use_cache=False,
                    defer_repeats=False, repetition_penalty=1.0, return_dict_in_generate=False, output_history=False,
                )
                generated = sequences[:, input_ids.shape[1] :].cpu()
                # An EOS before the end leaves the rest as pad: shorter output, no match.
                generated = F.pad(generated, (0, length - generated.shape[1]), value=self.pad_id)
                for row, index in zip(generated, batch):
                    matches[index] = row.tolist() == list(pairs[index][1])
        return matches


__all__ = ["MC_SAMPLING", "DiffusionLikelihood", "elbo_masks", "left_padded_ids"]
