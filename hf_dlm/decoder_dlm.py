"""The diffusion decoder: `_Decoder`, the state and loop of one `diffusion_generate` call, with its KV cache helpers,
the `DiffusionStep` a callback sees and the `StreamRelay` that feeds transformers streamers from those steps.

Remote code: copied next to every saved checkpoint (`generation_dlm.py` imports it); imports only torch,
transformers and its siblings: `length_strategies_dlm.py` (how long each canvas is), `unmasking_dlm.py` (choosing
tokens and which masks commit), `stopping_dlm.py` (stop strings and criteria) and `settings_dlm.py`.

Unmasking (which masks to commit per step): a per-block schedule from `steps` (LLaDA) and/or a confidence
`threshold` (Fast-dLLM, github.com/NVlabs/Fast-dLLM: commit every mask whose token probability clears it, at
least one per step). Committed tokens are never remasked.

KV cache (`use_cache=True`): dLLM-Var's scheme. The cache holds the prefix (prompt + finished blocks) except its
last token, the *anchor*; each forward runs [anchor | current block | rest of the canvas] against the cache. The
anchor is re-fed so that, with the AR shift, the block's first token is scored inside the same forward (Fast-dLLM
commits it from the previous forward instead). The forward that starts a block also re-encodes the block just
finished, and that is the KV kept for it: no extra forward per block. Approximation: cached keys/values never see
tokens committed later (measured in docs/decoding.md). Exact for `attention="causal_prefix"` models (block diffusion
with a causal context), whose context never attends to anything after it; their canvas is block-causal (a block
never sees the masks after it, as in training), so every forward after the first stops at the current block's end.

Dual KV cache (`use_cache="dual"`): Fast-dLLM's DualCache (github.com/NVlabs/Fast-dLLM, `generate_with_dual_cache`).
The block's first forward is the prefix cache's [anchor | block | rest]; its keys/values of the rest (the masks after
the block) are kept too, so the cache holds [prefix | suffix]. The block's later forwards run [anchor | block] only,
with their true position ids, attending to prefix, themselves and the cached suffix. A forward then costs the block,
not the canvas: what makes `fixed` and `predict` (whose canvases reach past the block) as cheap per forward as
`grow`. Approximation on top of the prefix cache's: within a block the suffix's keys/values do not see the block's
commits (also for causal-prefix models: their canvas attends to the block). Identical to the prefix cache at every
block-start forward; measured against uncached decoding in docs/decoding.md.

`cache_refresh="full"` (Fast-dLLM's refresh) makes every block's first forward re-encode the whole sequence instead
of the block just finished. And when `predict` cuts its canvas after the first forward, the cached prompt (which
attended to the whole budget of masks) is re-encoded by the next forward, whatever the refresh.

Batches: left-padded prompts; all rows work on the same block index (a row done with its block waits without
committing, which cannot change its tokens); finished rows leave the batch and the cache.

Reading order: `DiffusionStep`, `StreamRelay`, the cache helpers, and `_Decoder`: its state, the canvas bookkeeping,
the forward (and the cache), choosing and committing tokens, per-row stopping, the loop `run`, and
`first_step_eos_probabilities` (what `predict` and calibration read).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache

from .length_strategies_dlm import LENGTH_STRATEGY_CLASSES, CanvasView, eos_probabilities, first_true
from .settings_dlm import cache_mode
from .stopping_dlm import RowStops, decided_length
from .unmasking_dlm import UNMASKING_RULE_CLASSES, apply_repetition_penalty, choose_tokens, sampling_warpers


@dataclass
class DiffusionStep:
    """What a `callback` sees after every denoising step (e.g. to show masks resolving live)."""

    step: int
    nfe: int
    block: int
    canvas: torch.LongTensor  # [batch, prompt + max_new_tokens], masks as mask_token_id, pad outside the canvas
    prompt_length: int
    finished: torch.BoolTensor  # [batch]
    canvas_length: torch.LongTensor | None = None  # [batch]: positions of each row's canvas (pad after them)
    # [batch]: the canvas each row's length bound allows (`predict`, from its first forward on); None without one
    bound: torch.LongTensor | None = None


class StreamRelay:
    """Feeds a transformers streamer from the decoder's steps (a `callback`), for one row.

    Diffusion commits tokens anywhere in the block, so a token is *final* for streaming only when every position
    before it is committed too: the decided prefix grows, and only its new tokens are `put` (each once, in order,
    the first EOS included, nothing after it). `put_draft` (when the streamer has it, as transformers'
    `TextDiffusionStreamer`) gets the rest of the canvas after the decided prefix, masks included, after every
    step: the streamer shows final text followed by the draft, as DiffusionGemma's `generate` does per block.
    """

    def __init__(self, streamer, prompt: torch.Tensor, mask_id: int, eos_ids: list[int], pad_id: int,
                 callback: Callable[[DiffusionStep], None] | None = None):
        self.streamer, self.mask_id, self.eos_ids, self.pad_id = streamer, mask_id, set(eos_ids), pad_id
        self.callback = callback
        self.sent = 0  # answer tokens already put
        self.drafts = hasattr(streamer, "put_draft")
        streamer.put(prompt.cpu())  # transformers streamers skip it with skip_prompt=True

    def decided(self, answer: list[int]) -> list[int]:
        """The final prefix of `answer`: up to the first mask, cut after the first EOS, never into the padding past
        a canvas (a row ended by a stop string). It only grows, so the scan starts where the tokens already put
        end."""
        return answer[: decided_length(answer, self.mask_id, self.eos_ids, self.pad_id, self.sent)]

    def __call__(self, step: DiffusionStep) -> None:
        if self.callback is not None:
            self.callback(step)
        answer = step.canvas[0, step.prompt_length :].tolist()
        final = self.decided(answer)
        if len(final) > self.sent:
            self.streamer.put(torch.tensor(final[self.sent :]))
            self.sent = len(final)
        if self.drafts and not (final and final[-1] in self.eos_ids):
            rest = answer[self.sent :]
            if self.pad_id not in self.eos_ids and self.pad_id in rest:
                rest = rest[: rest.index(self.pad_id)]  # past the canvas
            self.streamer.put_draft(torch.tensor(rest))

    def finish(self, answer: torch.Tensor) -> None:
        """Put what the steps did not (the output's answer, up to its first EOS), then `end()`."""
        tokens = self.decided([t for t in answer.tolist() if t != self.pad_id or t in self.eos_ids])
        if len(tokens) > self.sent:
            self.streamer.put(torch.tensor(tokens[self.sent :]))
            self.sent = len(tokens)
        self.streamer.end()


def crop_cache(cache: DynamicCache, length: int) -> None:
    """Keep the first `length` positions of `cache` (transformers 5's `crop` takes minus the excess)."""
    excess = cache.get_seq_length() - length
    if excess > 0:
        cache.crop(-excess)


def _drop_cache_span(cache: DynamicCache, start: int, end: int) -> None:
    """Remove positions [start, end) of every layer of `cache` (the dual cache cuts the current block out of the
    block-start forward's keys/values, keeping what lies before and after it)."""
    if end <= start:
        return
    for layer in cache.layers:
        if not hasattr(layer, "keys") or layer.keys is None or not getattr(layer, "is_initialized", True):
            continue
        if type(layer).__name__ != "DynamicLayer":
            raise NotImplementedError(
                f"use_cache='dual' needs full-length cache layers; this model's cache has a {type(layer).__name__} "
                f"(e.g. sliding-window attention). Use use_cache=True (the prefix cache) with it."
            )
        layer.keys = torch.cat([layer.keys[..., :start, :], layer.keys[..., end:, :]], dim=-2)
        layer.values = torch.cat([layer.values[..., :start, :], layer.values[..., end:, :]], dim=-2)


class _Decoder:
    """State of one `diffusion_generate` call. Buffers are full-batch; forwards run on the active rows only.

    `seq` [batch, prompt + budget] holds the left-padded prompts, then each row's canvas: `canvas_len[row]`
    positions of tokens and masks, pad after it. `block` is the index of the current block (the same for all
    rows). The length strategy decides `canvas_len` and when a row is done; this class does everything else.
    `config` is the call's `DiffusionGenerationConfig`, prompts are checked (`DiffusionGenerationMixin`).
    """

    def __init__(self, model, config, input_ids, attention_mask, generator, callback, stops: RowStops | None = None):
        self.model, self.config, self.generator, self.callback = model, config, generator, callback
        self.stops = stops
        batch, self.prompt_length = input_ids.shape
        self.budget = config.max_new_tokens
        self.block_length = config.block_length
        device = input_ids.device
        self.device = device
        self.mask_id = config.mask_token_id
        self.pad_id = config.pad_token_id
        self.eos_ids = torch.tensor(config.eos_token_ids, device=device)
        self.causal_prefix = getattr(model.config, "attention", "bidirectional") == "causal_prefix"
        self.decided_as_context = bool(config.decided_as_context)
        if self.decided_as_context and not self.causal_prefix:
            raise ValueError(
                "decided_as_context=True moves a block's decided prefix into the causal context of a causal-prefix "
                "model (config.attention='causal_prefix'); this model attends bidirectionally everywhere. Leave it "
                "False, or adapt with DiffusionLM.from_causal_lm(..., attention='causal_prefix')."
            )
        strategy = LENGTH_STRATEGY_CLASSES[config.length_strategy]
        self.unmasking = UNMASKING_RULE_CLASSES[config.unmasking]()
        self.warpers = sampling_warpers(config.temperature, config.top_k, config.top_p)

        width = self.prompt_length + self.budget
        self.seq = torch.full((batch, width), self.pad_id, dtype=torch.long, device=device)
        self.seq[:, : self.prompt_length] = torch.where(attention_mask.bool(), input_ids, self.pad_id)
        self.prompt_mask = attention_mask
        self.canvas_len = torch.zeros(batch, dtype=torch.long, device=device)
        self.length_strategy = strategy(CanvasView(self.seq, self.canvas_len, self.prompt_length, self.budget,
                                                   self.block_length, self.mask_id, self.eos_ids), config)
        start = torch.full_like(self.canvas_len, strategy.initial_length(self.budget, self.block_length))
        self.resize_canvas(torch.arange(batch, device=device), start)

        self.active = torch.arange(batch, device=device)
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)
        self.nfe = 0
        self.nfe_per_row = torch.zeros(batch, dtype=torch.long, device=device)
        self.block = 0
        self.step_in_block = 0
        self.step = 0
        self.history: list[torch.Tensor] = []
        self.cache_mode = cache_mode(config.use_cache)  # "prefix", "dual" or None
        if self.cache_mode == "dual" and getattr(getattr(model, "backbone", model).config, "is_causal", False):
            raise ValueError(
                "use_cache='dual' stores the keys after the current block before the block's own, and this backbone "
                "attends causally (config.is_causal=True), which reads key order as position order. Use "
                "use_cache=True (the prefix cache) with a causal backbone."
            )
        self.cache = DynamicCache() if self.cache_mode else None
        self.cached = 0  # prefix positions held by the cache (same for every active row)
        self.suffix = (0, 0)  # dual cache: the positions [start, end) held after the prefix
        self.stale = False  # the cache was encoded against a canvas that no longer exists: re-encode from 0

        # Tokens the decoder must never write: the mask itself, and a dedicated pad (it only fills after EOS).
        banned = [self.mask_id]
        if self.pad_id not in config.eos_token_ids:
            banned.append(self.pad_id)
        self.banned = torch.tensor(banned, device=device)

    # ----------------------------------------------------------------- canvas bookkeeping
    def canvas(self, rows: torch.Tensor) -> torch.LongTensor:
        """The answer region of `rows` [rows, budget] (a copy): tokens and masks, pad past each row's canvas."""
        return self.seq[rows, self.prompt_length :]

    def resize_canvas(self, rows: torch.Tensor, new_len: torch.Tensor) -> None:
        """Set the canvas length of `rows`: new positions become masks, positions past the end become pad."""
        index = torch.arange(self.budget, device=self.device)[None, :]
        canvas = self.canvas(rows)
        canvas = torch.where(index >= self.canvas_len[rows, None], self.mask_id, canvas)
        canvas = torch.where(index >= new_len[:, None], self.pad_id, canvas)
        self.seq[rows, self.prompt_length :] = canvas
        self.canvas_len[rows] = new_len

    def _set_lengths(self, rows: torch.Tensor, lengths: torch.Tensor | None) -> None:
        """Resize the canvases of those `rows` whose length a strategy hook changed."""
        if lengths is None:
            return
        changed = lengths != self.canvas_len[rows]
        if changed.any():
            self.resize_canvas(rows[changed], lengths[changed])

    def _attention(self, rows: torch.Tensor, end: int) -> torch.Tensor:
        """2D mask over positions [0, end): the prompt's padding mask, then 1 inside each row's canvas."""
        index = torch.arange(end - self.prompt_length, device=self.device)
        canvas = (index[None, :] < self.canvas_len[rows, None]).long()
        return torch.cat([self.prompt_mask[rows], canvas], dim=1)

    # ----------------------------------------------------------------- the forward
    def _forward(self, window_start: int, window_end: int) -> torch.Tensor:
        """Logits for positions [window_start, window_end) of the active rows (one NFE); with the dual cache,
        inside a block, only up to the block's end (the canvas after it is read from the cache)."""
        if self.cache_mode == "dual" and self.step_in_block > 0 and not self.stale:
            return self._forward_block_only(window_start, window_end)
        rows = self.active
        if self.cache is not None:
            if self.stale or (self.config.cache_refresh == "full" and self.step_in_block == 0):
                # Fast-dLLM's refresh: the block's first forward re-encodes the whole sequence, so every cached
                # key/value is recomputed with the tokens committed since (a full-length forward per block).
                self.cache, self.cached, self.suffix, self.stale = DynamicCache(), 0, (0, 0), False
            elif self.cache_mode == "dual":
                self._drop_suffix()  # the block starts: the canvas after it is encoded afresh below
            inputs = self.seq[rows, self.cached : window_end]
        else:
            inputs = self.seq[rows, :window_end]
        extra = {}
        if self.causal_prefix:
            # The context (prompt + finished blocks, the anchor included) attends causally, the canvas from the
            # current block on is block-causal (each block sees the context, the blocks before it and itself).
            extra["canvas_start"] = self._canvas_start(rows)
            extra["canvas_block_length"] = self.block_length
        out = self.model(
            input_ids=inputs,
            attention_mask=self._attention(rows, window_end),
            past_key_values=self.cache,
            use_cache=self.cache is not None,
            logits_to_keep=window_end - window_start,
            **extra,
        )
        self._count_forward(rows)
        if self.cache is not None:
            # Keep the prefix before the current block's anchor: [prompt | finished blocks] minus its last token.
            keep = self.block_start - 1
            if self.cache_mode == "dual":
                # Fast-dLLM's DualCache: also keep the canvas after the block, [block end, window end), as encoded
                # by this block-start forward; the cache becomes [prefix | suffix] and inner steps run the block.
                block_end = min(keep + 1 + self.block_length, window_end)
                _drop_cache_span(self.cache, keep, block_end)
                self.suffix = (block_end, window_end)
            else:
                crop_cache(self.cache, keep)
            self.cached = keep
        return self._clean(out.logits)

    def _forward_block_only(self, window_start: int, window_end: int) -> torch.Tensor:
        """Dual cache, inside a block: run [anchor | block] only, attending to the cached prefix, itself and the
        cached canvas after the block (encoded at the block start: those positions are masks that no step of this
        block changes, but their keys/values saw the block as it was then).

        The cache holds [prefix | suffix] and the block is appended after them, so the sequence order is lost:
        the block gets its true positions explicitly (RoPE and learned position embeddings are applied from
        `position_ids` when keys are written, so a key's slot in the cache does not matter) and the padding mask
        is given in cache order (a bidirectional mask means the same in any order; a causal-prefix one is built
        from `key_positions`)."""
        rows = self.active
        keep = self.cached
        suffix_start, suffix_end = self.suffix
        # Rows may have shrunk since the block start (`predict` cuts its canvas after the first forward): the part of
        # the suffix past every canvas is never attended again, so drop it (it is last in the cache).
        live_end = max(min(suffix_end, window_end), suffix_start)
        if live_end < suffix_end:
            self.cache.crop(live_end - suffix_end)
            self.suffix = (suffix_start, live_end)
            suffix_end = live_end
        block_end = min(keep + 1 + self.block_length, window_end)
        in_order = self._attention(rows, max(suffix_end, block_end))  # true order, [0, max end)
        positions = (in_order.cumsum(-1) - 1).clamp(min=0)
        order = torch.cat([
            torch.arange(keep, device=self.device),
            torch.arange(suffix_start, suffix_end, device=self.device),
            torch.arange(keep, block_end, device=self.device),
        ])
        extra = {}
        if self.causal_prefix:
            extra = {"canvas_start": self._canvas_start(rows), "key_positions": order,
                     "canvas_block_length": self.block_length}
        out = self.model(
            input_ids=self.seq[rows, keep:block_end],
            attention_mask=in_order[:, order],
            position_ids=positions[:, keep:block_end],
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=block_end - window_start,
            **extra,
        )
        self._count_forward(rows)
        self.cache.crop(-(block_end - keep))  # back to [prefix | suffix]
        return self._clean(out.logits)

    @property
    def block_start(self) -> int:
        """Sequence index of the current block's first position (the same for every row: prompts are left-padded)."""
        return self.prompt_length + self.block * self.block_length

    def _canvas_start(self, rows: torch.Tensor) -> int | torch.Tensor:
        """Where a causal-prefix model's canvas begins (an index over cached + current positions, which is the
        sequence index: the cache starts at position 0): the current block's first position or, with
        `decided_as_context`, each row's first mask in the block. The block-causal mask counts blocks from this
        start; a moved start is safe because nothing is decided before the first forward (the only one whose window
        reaches past the current block, see `advance`)."""
        block_start = self.block_start
        if not self.decided_as_context:
            return block_start
        block = self.seq[rows, block_start : block_start + self.block_length]
        decided = (block != self.mask_id).long().cumprod(-1).sum(-1)
        return block_start + decided

    def _drop_suffix(self) -> None:
        """Crop the dual cache back to its prefix (the suffix is last in it)."""
        crop_cache(self.cache, self.cached)
        self.suffix = (self.cached, self.cached)

    def _count_forward(self, rows: torch.Tensor) -> None:
        self.nfe += 1
        self.nfe_per_row[rows] += 1

    def _clean(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        logits[..., self.banned] = -torch.inf
        return logits

    # ----------------------------------------------------------------- choosing tokens
    def _sample(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens x0, their probability, and the ranking score of `unmasking`."""
        probs = logits.softmax(-1)
        x0 = choose_tokens(logits, self.warpers, self.generator)
        p_x0 = probs.gather(-1, x0[..., None]).squeeze(-1)
        return x0, p_x0, self.unmasking.score(probs, x0, p_x0, self.generator)

    def _commit(self, logits: torch.Tensor, window_start: int) -> None:
        """Commit tokens in the current block of every active row."""
        rows = self.active
        block_start = self.block_start
        # The window may end inside the block: past every active row's canvas (a `predict` bound).
        block_end = min(block_start + self.block_length, window_start + logits.shape[1])
        block_logits = logits[:, block_start - window_start : block_end - window_start]
        if self.config.repetition_penalty != 1.0:
            # Decided: the real prompt tokens, earlier blocks, and what this block has committed so far.
            decided = torch.cat(
                [self.prompt_mask[rows].bool(), self.seq[rows, self.prompt_length : block_end] != self.mask_id], dim=1
            )
            block_logits = apply_repetition_penalty(
                block_logits, self.seq[rows, :block_end], decided, self.config.repetition_penalty, self.eos_ids
            )
        x0, p_x0, score = self._sample(block_logits)
        current = self.seq[rows, block_start:block_end]
        is_mask = current == self.mask_id
        start, end = block_start - self.prompt_length, block_end - self.prompt_length  # as canvas positions
        allowed = self.length_strategy.may_commit(rows, start, end)
        if allowed is not None:
            is_mask &= allowed
        remaining = is_mask.sum(-1)

        # How many at least: the LLaDA schedule spreads a block's masks evenly over its steps (earlier steps take
        # the remainder), i.e. ceil(remaining / steps left); with only a threshold, one (Fast-dLLM).
        steps = self.config.steps_per_block
        if steps is None:
            minimum = (remaining > 0).long()
        else:
            steps_left = max(steps - self.step_in_block, 1)
            minimum = torch.div(remaining + steps_left - 1, steps_left, rounding_mode="floor")
        score = score.masked_fill(~is_mask, -torch.inf)
        rank = score.argsort(dim=-1, descending=True, stable=True).argsort(dim=-1)  # 0 = best; ties: leftmost
        commit = is_mask & (rank < minimum[:, None])
        if self.config.threshold is not None:
            commit |= is_mask & (p_x0 >= self.config.threshold)
        if self.config.defer_repeats:
            # A row's first commit never has a committing left neighbour, so every row still commits something.
            repeat = commit[:, 1:] & commit[:, :-1] & (x0[:, 1:] == x0[:, :-1])
            commit[:, 1:] &= ~repeat
        commit = self.unmasking.restrict(commit, is_mask)
        self.seq[rows, block_start:block_end] = torch.where(commit, x0, current)

    # ----------------------------------------------------------------- stopping rows
    def _update_rows(self) -> None:
        """After a commit: the length strategy says which rows are done (and grows others); done rows leave the
        batch and the cache."""
        rows = self.active
        done, lengths = self.length_strategy.after_commit(rows)
        self._set_lengths(rows, lengths)
        if self.stops is not None:
            # A stop string or criterion in a row's decided prefix ends the row: its canvas ends after the stopping
            # token (the rest becomes padding), and it leaves the batch like a row that reached EOS.
            keep = self.stops.check(rows, self.canvas(rows))
            stopped = keep >= 0
            if stopped.any():
                self.resize_canvas(rows[stopped], keep[stopped])
                done = done | stopped
        self.finished[rows[done]] = True
        if done.any():
            keep = ~done
            self.active = rows[keep]
            if self.cache is not None:
                if self.cache.get_seq_length() > 0:
                    self.cache.batch_select_indices(keep.nonzero().squeeze(-1))
                else:
                    # An empty cache (a one-token prompt is all anchor) still carries the old batch size, and
                    # transformers' batch_select_indices skips empty layers: start a fresh one instead.
                    self.cache = DynamicCache()

    def _block_done(self) -> bool:
        rows = self.active
        block_start = self.block_start
        block_end = block_start + self.block_length
        return not (self.seq[rows, block_start:block_end] == self.mask_id).any()

    # ----------------------------------------------------------------- the loop
    def run(self) -> dict:
        """Decode to the end; the fields of `DiffusionGenerateOutput`."""
        while self.active.numel():
            self.advance()
            self._report()
        return self._output()

    def advance(self) -> torch.Tensor:
        """One denoising step of the active rows: a forward, the strategy's first-step hook, commits, per-row
        stopping and growth, the block index. Returns the step's logits."""
        block_start = self.block_start
        window_end = self.prompt_length + int(self.canvas_len[self.active].max())
        if self.causal_prefix and self.step > 0:
            # A causal-prefix canvas is block-causal (as two-stream training sees it): the masks after the current
            # block change none of its logits, so only the first forward (whose logits `predict` reads over the
            # whole canvas) spans them.
            window_end = min(window_end, block_start + self.block_length)
        logits = self._forward(block_start, window_end)
        if self.step == 0:
            before = self.canvas_len.clone()
            self._set_lengths(self.active, self.length_strategy.after_first_forward(self.active, logits))
            # `predict` cut the canvas: the cached prompt was encoded attending to the whole budget of masks,
            # a canvas no later forward sees. Re-encode it with the next forward (no extra NFE; that forward
            # spans prompt + bound once). Measured: without this, cached `predict` agreed with uncached decoding
            # on 8 of 16 toy prompts, with it on 14 (see docs/decoding.md).
            self.stale = self.cache is not None and not torch.equal(before, self.canvas_len)
        self._commit(logits, block_start)
        self.step += 1
        self.step_in_block += 1
        self._update_rows()
        if self.active.numel() and self._block_done():
            self.block += 1
            self.step_in_block = 0
        return logits

    def _report(self) -> None:
        if not (self.config.output_history or self.callback):
            return
        snapshot = self.seq.clone()
        if self.config.output_history:
            self.history.append(snapshot)
        if self.callback is not None:
            bound = self.length_strategy.bounds()
            self.callback(DiffusionStep(self.step, self.nfe, self.block, snapshot, self.prompt_length,
                                        self.finished.clone(), self.canvas_len.clone(),
                                        None if bound is None else bound.clone()))

    def _output(self) -> dict:
        answer = self.seq[:, self.prompt_length :]
        index = torch.arange(self.budget, device=self.device)[None, :]
        inside = index < self.canvas_len[:, None]
        is_eos = torch.isin(answer, self.eos_ids) & inside
        ended = is_eos.any(-1)
        first_eos = first_true(is_eos, self.canvas_len)
        # After the first EOS only pad; outside the canvas only pad (LLaDA leaves EOS runs, dLLM-Var leaves tokens).
        answer = torch.where((index <= first_eos[:, None]) & inside, answer, self.pad_id)
        if (answer == self.mask_id).any():
            raise RuntimeError("diffusion_generate left a mask in the output; please report this as a bug.")
        used = int(torch.where(ended, first_eos + 1, self.canvas_len).max())
        forwards = int(self.nfe_per_row.sum())
        return dict(
            sequences=torch.cat([self.seq[:, : self.prompt_length], answer[:, :used]], dim=1),
            nfe=self.nfe,
            nfe_per_row=self.nfe_per_row,
            lengths=first_eos,
            finished=ended,
            **self.length_strategy.output_fields(),  # predict: predicted_lengths, grew, bounds, length_coverage
            history=tuple(self.history) if self.config.output_history else None,
            # as metrics.tokens_per_forward and SpeculativeOutput: answer tokens / forwards of the rows that made them
            tokens_per_forward=int(first_eos.sum()) / forwards if forwards else 0.0,
        )

    def first_step_eos_probabilities(self) -> torch.Tensor:
        """p(EOS) [batch, budget] at every canvas position of the first forward over prompt + the whole budget of masks
        (no cache): what `predict` thresholds (call it on a fresh decoder whose canvas is the budget)."""
        if int(self.canvas_len.min()) != self.budget:
            raise ValueError("first_step_eos_probabilities reads a canvas of the whole budget: use length_strategy "
                             "'predict' or 'fixed'.")
        logits = self._forward(self.prompt_length, self.prompt_length + self.budget)
        return eos_probabilities(logits, self.eos_ids)
