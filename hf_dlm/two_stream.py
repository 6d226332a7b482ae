"""Training rows of `attention="causal_prefix"` models: every block of an answer in one forward.

At decoding time a causal-prefix model sees, for block k of an answer: the context (prompt + blocks < k) clean
and causal, then block k partly masked, attending to the context and to itself. Training one block per row would
waste the rest of the answer, so we use the two-stream layout of block diffusion (BD3-LM, Arriola et al. 2025,
github.com/kuleshov-group/bd3lms; Fast-dLLM v2 adapts Qwen2.5 this way): one row holds

    [ clean stream: prompt + answer, causal        | noisy stream: for each block k, anchor_k + noisy block k ]

- the clean stream is the causal LM's forward over the clean text (it supplies the context of every block);
- block k's noisy tokens attend to the clean tokens before block k's anchor, to the anchor, and to each other;
- the anchor of block k is a copy of the clean token just before the block (position block_start - 1). It sees
  what that token sees causally, so its hidden state is the clean one's; with the AR shift it scores block k's
  first token, which keeps every noisy stream a contiguous `[anchor, block]` run and lets `DiffusionLM.forward`
  align the logits as usual. Anchors are never masked and carry no loss.

Position ids are the tokens' own positions in both streams. The answer's blocks start at its first loss-carrying
token, as `diffusion_generate`'s blocks start at the first generated position. Only the blocks up to the one
holding the answer's first EOS are kept (`cut_after_eos_block`): `grow` never decodes past it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .noise import maskable_positions


def cut_after_eos_block(batch: dict[str, torch.Tensor], block_length: int, eos_token_ids: Sequence[int],
                        pad_token_id: int) -> dict[str, torch.Tensor]:
    """Cut each right-padded row after the block holding its answer's first loss-carrying EOS (blocks of
    `block_length` from the first loss-carrying token). What follows is padding: not attended, no loss.

    Counting the loss-carrying tokens after this cut keeps the loss normaliser equal to what the model is
    trained on (the EOS fill beyond that block would otherwise count without ever being seen)."""
    if block_length < 1:
        raise ValueError(f"block_length must be >= 1, got {block_length}.")
    input_ids, attention_mask, loss_mask = (batch[k].clone() for k in ("input_ids", "attention_mask", "loss_mask"))
    eos = torch.tensor(list(eos_token_ids), device=input_ids.device)
    maskable = maskable_positions(loss_mask) & attention_mask.bool()
    for row in range(input_ids.shape[0]):
        loss_at = maskable[row].nonzero().squeeze(-1)
        if loss_at.numel() == 0:
            continue
        start = int(loss_at[0])
        ends = (torch.isin(input_ids[row, start:], eos) & maskable[row, start:]).nonzero()
        if ends.numel() == 0:
            continue
        cut = start + (int(ends[0]) // block_length + 1) * block_length
        input_ids[row, cut:] = pad_token_id
        attention_mask[row, cut:] = 0
        loss_mask[row, cut:] = 0
    return {**batch, "input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}


@dataclass
class TwoStreamRows:
    """Inputs of one forward over two-stream rows; the last `noisy_length` positions are the noisy streams."""

    input_ids: torch.LongTensor  # [B, C + N]
    position_ids: torch.LongTensor  # [B, C + N]
    attention_mask: torch.BoolTensor  # [B, 1, C + N, C + N], True = may attend
    targets: torch.LongTensor  # [B, N] clean tokens of the noisy streams
    loss_weight: torch.Tensor  # [B, N] 1/t on masked tokens, 0 on anchors, unmasked tokens and padding
    noisy_length: int


def _cat(parts: list[torch.Tensor], dtype: torch.dtype, device) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype, device=device)


CONTEXTS = ("causal", "block_causal")


def two_stream_rows(clean_ids: torch.LongTensor, noisy_ids: torch.LongTensor, attention_mask: torch.Tensor,
                    loss_mask: torch.Tensor, loss_weight: torch.Tensor, block_length: int,
                    context: str = "causal") -> TwoStreamRows:
    """Build two-stream rows (module docstring) from a right-padded batch and its noised copy.

    Args:
        clean_ids / noisy_ids: [B, L] the clean batch and x_t (`DiffusionNoise` output), same layout.
        attention_mask: [B, L] 2D padding mask (1 = real token).
        loss_mask: [B, L] loss-carrying tokens; block k of a row spans block_length tokens from its first one.
        loss_weight: [B, L] the noise's weights (1/t on masked positions).
        block_length: tokens per block, the block length the model will decode with.
        context: how the clean stream attends. "causal" (causal-prefix models: the causal LM's own attention);
            "block_causal" (bidirectional models, `DiffusionTrainingArguments.all_blocks`): the prompt sees all of
            itself and each answer block sees the prompt, the blocks before it and itself, as block diffusion's
            x_0 stream (BD3-LM) and as a semi-AR decoder's prefix cache holds finished blocks. Block k's noisy
            tokens then see exactly the context a one-block row of block k would show them.
    """
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}.")
    if attention_mask.dim() != 2:
        raise ValueError("two-stream rows need the 2D padding mask (attention annealing is for bidirectional models).")
    device = clean_ids.device
    real = attention_mask.bool()
    maskable = maskable_positions(loss_mask) & real
    rows = []
    for row in range(clean_ids.shape[0]):
        length = int(real[row].nonzero().max()) + 1 if real[row].any() else 0
        loss_at = maskable[row, :length].nonzero().squeeze(-1)
        start = int(loss_at[0]) if loss_at.numel() else length
        ids, pos, group, anchor = [], [], [], []
        for block_start in range(start, length, block_length):
            block_end = min(block_start + block_length, length)
            ids.append(clean_ids[row, block_start - 1 : block_start])
            ids.append(noisy_ids[row, block_start:block_end])
            span = torch.arange(block_start - 1, block_end, device=device)
            pos.append(span)
            group.append(torch.full_like(span, block_start))
            anchor.append(span == block_start - 1)
        rows.append((length, _cat(ids, torch.long, device), _cat(pos, torch.long, device),
                     _cat(group, torch.long, device), _cat(anchor, torch.bool, device), start))

    clean_len = max(r[0] for r in rows)
    noisy_len = max(max(r[1].numel() for r in rows), 1)
    batch, total = len(rows), clean_len + noisy_len
    input_ids = torch.full((batch, total), int(clean_ids[0, 0]), dtype=torch.long, device=device)
    position_ids = torch.zeros(batch, total, dtype=torch.long, device=device)
    targets = torch.zeros(batch, noisy_len, dtype=torch.long, device=device)
    weights = torch.zeros(batch, noisy_len, dtype=loss_weight.dtype, device=device)
    mask = torch.zeros(batch, total, total, dtype=torch.bool, device=device)
    clean_pos = torch.arange(clean_len, device=device)
    for row, (length, ids, pos, group, anchor, start) in enumerate(rows):
        n = ids.numel()
        input_ids[row, :clean_len] = clean_ids[row, :clean_len]
        position_ids[row, :clean_len] = clean_pos
        input_ids[row, clean_len : clean_len + n] = ids
        position_ids[row, clean_len : clean_len + n] = pos
        targets[row, :n] = clean_ids[row, pos]
        weights[row, :n] = torch.where(anchor, 0.0, loss_weight[row, pos])
        clean_real = clean_pos < length
        if context == "causal":  # clean stream: the causal LM's attention over the real tokens
            mask[row, :clean_len, :clean_len] = (clean_pos[None, :] <= clean_pos[:, None]) & clean_real[None, :]
        else:  # block-causal: the prompt is block 0, answer block j is block j + 1
            clean_block = torch.where(clean_pos < start, 0, (clean_pos - start) // block_length + 1)
            mask[row, :clean_len, :clean_len] = (clean_block[None, :] <= clean_block[:, None]) & clean_real[None, :]
        # Noisy stream: the clean context before the anchor, then the own block (the anchor only itself).
        block_anchor = group - 1  # position of the block's anchor
        mask[row, clean_len : clean_len + n, :clean_len] = (clean_pos[None, :] < block_anchor[:, None]) & clean_real[None, :]
        same_block = group[:, None] == group[None, :]
        own = torch.eye(n, dtype=torch.bool, device=device)
        mask[row, clean_len : clean_len + n, clean_len : clean_len + n] = torch.where(anchor[:, None], own, same_block)
    mask |= torch.eye(total, dtype=torch.bool, device=device)  # padding queries see themselves (no empty softmax)
    return TwoStreamRows(input_ids, position_ids, mask[:, None], targets, weights, noisy_len)


__all__ = ["CONTEXTS", "TwoStreamRows", "cut_after_eos_block", "two_stream_rows"]
