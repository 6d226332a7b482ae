"""Training rows of gated drafters: every cut of an answer drafted in one forward.

At decoding time (`hf_dlm.drafter_dlm`) a round's masks sit after the clean tokens decided so far: for a cut at
position c, the clean context is x[:c] (the base's token x[c] is computed in the same forward, so it is not seen)
and mask j, placed at position c + j, must predict x[c + j + 1]. Training shows the model every cut of a row at
once, as the two-stream rows of block diffusion do (BD3-LM's [x_t | x_0], arXiv 2503.09573; TiDAR's all-masked
copy, arXiv 2511.08923):

    clean stream: x (causal; the base's own computation, no gradient: it is run first, under no_grad, as a KV cache)
    draft stream: for each cut c, `draft_length` masks at positions c .. c + k - 1, seeing x[:c] and their own block

Only the draft stream runs with gradients (`DiffusionTrainer` passes the clean stream's cache), so a step costs one
no-grad forward of the rows plus a forward and backward of k positions per cut. Targets: x[c + j + 1] where it is a
loss-carrying token (the answer; every token for text data), CE at every mask, uniform weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass
class DraftRows:
    """Inputs of the draft stream's forward, against the clean stream's KV cache of `clean_length` positions."""

    input_ids: torch.LongTensor  # [B, N]: the mask token (pad where a row has fewer cuts)
    position_ids: torch.LongTensor  # [B, N]
    attention_mask: torch.BoolTensor  # [B, 1, N, clean_length + N], True = may attend
    targets: torch.LongTensor  # [B, N]: the token each mask drafts, IGNORE where none

    @property
    def num_targets(self) -> int:
        return int((self.targets != IGNORE).sum())


def draft_cuts(loss_mask: torch.Tensor, length: int, max_cuts: int | None = None,
               generator: torch.Generator | None = None) -> torch.LongTensor:
    """The cuts of one row: positions c >= 1 where x[c] carries loss (the base's token of the round lies in the
    answer: the prompt's last token is always clean context) and so does x[c + 1] (the first mask has a target); at
    most `max_cuts` of them (a random subset, sorted, from `generator`)."""
    carries = loss_mask[:length].bool().cpu()
    ok = torch.zeros(length, dtype=torch.bool)
    ok[1 : length - 1] = carries[1 : length - 1] & carries[2:length]
    cuts = ok.nonzero().squeeze(-1)
    if max_cuts is not None and cuts.numel() > max_cuts:
        keep = torch.randperm(cuts.numel(), generator=generator)[:max_cuts]
        cuts = cuts[keep.sort().values]
    return cuts


def draft_rows(input_ids: torch.LongTensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, draft_length: int,
               mask_token_id: int, pad_token_id: int, pattern: str = "causal", max_cuts: int | None = None,
               generator_for: Callable[[int], torch.Generator] | None = None) -> DraftRows:
    """Build the draft stream (module docstring) of a right-padded batch.

    Args:
        input_ids / attention_mask / loss_mask: [B, L] the clean batch (1 = real token; 1 = carries loss).
        draft_length: masks per cut (the `draft_length` the model will decode with).
        pattern: "causal" (a mask sees the masks before it in its block) or "causal_prefix" (its whole block).
        max_cuts: cuts per row at most (None: every cut), chosen by `generator_for(row)`.
    """
    if attention_mask.dim() != 2:
        raise ValueError("draft rows need the 2D padding mask of the clean batch.")
    device, k = input_ids.device, draft_length
    batch, clean_length = input_ids.shape
    real = attention_mask.bool()
    per_row = []
    for row in range(batch):
        length = int(real[row].nonzero().max()) + 1 if real[row].any() else 0
        generator = generator_for(row) if (generator_for is not None and max_cuts is not None) else None
        per_row.append((length, draft_cuts(loss_mask[row], length, max_cuts, generator).to(device)))
    width = max(max(c.numel() for _, c in per_row) * k, 1)
    ids = torch.full((batch, width), pad_token_id, dtype=torch.long, device=device)
    pos = torch.zeros(batch, width, dtype=torch.long, device=device)
    targets = torch.full((batch, width), IGNORE, dtype=torch.long, device=device)
    mask = torch.zeros(batch, width, clean_length + width, dtype=torch.bool, device=device)
    offsets = torch.arange(k, device=device)
    clean_pos = torch.arange(clean_length, device=device)
    for row, (length, cuts) in enumerate(per_row):
        n = cuts.numel() * k
        if n == 0:
            continue
        cut = cuts.repeat_interleave(k)  # the cut of each draft position
        j = offsets.repeat(cuts.numel())  # its index in the block
        ids[row, :n] = mask_token_id
        pos[row, :n] = cut + j
        target_pos = cut + j + 1
        valid = target_pos < length
        valid[valid.clone()] &= loss_mask[row, target_pos[valid]].bool()
        targets[row, :n] = torch.where(valid, input_ids[row, target_pos.clamp(max=clean_length - 1)], IGNORE)
        # Clean keys before the cut (real tokens only); draft keys of the same block.
        mask[row, :n, :clean_length] = (clean_pos[None, :] < cut[:, None]) & real[row, None, :]
        same = cut[:, None] == cut[None, :]
        if pattern == "causal":
            same &= j[None, :] <= j[:, None]
        mask[row, :n, clean_length : clean_length + n] = same
    # Padding queries see themselves (no empty softmax row).
    mask[:, :, clean_length:] |= torch.eye(width, dtype=torch.bool, device=device)
    return DraftRows(ids, pos, mask[:, None], targets)


__all__ = ["IGNORE", "DraftRows", "draft_cuts", "draft_rows"]
