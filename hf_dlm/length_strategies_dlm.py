"""The length strategies of `diffusion_generate`: how long each row's canvas is and when a row is done.

Remote code: copied next to every saved checkpoint (`decoder_dlm.py` and `generation_dlm.py` import it); imports
only torch and `settings_dlm.py`.

One small class per strategy (docs/decoding.md has worked examples):
- `fixed`   `FixedLength`, LLaDA (github.com/ML-GSAI/LLaDA, generate.py): a canvas of `max_new_tokens` masks
            decoded in semi-autoregressive blocks; the tail fills with EOS. The baseline: its cost follows the budget.
- `grow`    `GrowLength`, dLLM-Var (github.com/maomaocun/dLLM-Var): the canvas starts as one block; a row whose
            canvas is fully decoded without an EOS gets another block; a row stops at its first EOS.
- `predict` `PredictLength`, a length bound read at the first step (this project's proposal; cf. DAEDAL): the first
            forward runs over prompt + `max_new_tokens` masks; p(EOS) at every position gives an upper bound on the
            answer's length; later steps run on that shorter canvas; a row that outgrows its bound continues as `grow`.

A strategy sees the decoding through a `CanvasView` (the answer region of every row and its length, read-only) and
answers through the return values of its hooks: the decoder, not the strategy, writes the canvas. So this file
knows nothing of the decoder, and the decoder knows strategies only by their hooks.
`LENGTH_STRATEGY_CLASSES` maps the names of `settings_dlm.LENGTH_STRATEGIES` to the classes; a plug-in strategy is one
class and one entry there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from .settings_dlm import LENGTH_STRATEGIES


@dataclass(frozen=True)
class CanvasView:
    """What a length strategy may read of the decoding. `seq` and `lengths` are the decoder's own buffers (full batch,
    updated in place), so the view is always current; a strategy never writes them."""

    seq: torch.LongTensor  # [batch, prompt + budget]: left-padded prompts, then each row's canvas
    lengths: torch.LongTensor  # [batch]: canvas length of every row (positions past it are pad)
    prompt_length: int
    budget: int  # max_new_tokens
    block_length: int
    mask_id: int
    eos_ids: torch.LongTensor

    def canvas(self, rows: torch.Tensor) -> torch.LongTensor:
        """The answer region of `rows` [rows, budget] (a copy): tokens and masks, pad past each row's canvas."""
        return self.seq[rows, self.prompt_length :]


class LengthStrategy(ABC):
    """How long each row's canvas is and when a row is done: the part of decoding that `fixed`, `grow` and
    `predict` do differently. Everything else (forwards, the cache, choosing and committing tokens) is the decoder's.

    The decoder makes one instance per `diffusion_generate` call with a `CanvasView` and the call's
    `DiffusionGenerationConfig`, and calls the hooks in this order:

    1. `initial_length(budget, block_length)`, once (a class method: the web demo draws the first canvas with it
       before any forward): every row's canvas starts as this many masks.
    2. `after_first_forward(rows, logits)`, once, with the first forward's logits over the whole canvas; returns the
       new canvas lengths of `rows`, or None to keep them.
    3. Every step: `may_commit(rows, start, end)` before committing masks in the current block, then
       `after_commit(rows)`, which says which rows are done and the canvas lengths of `rows` from now on.
    4. `bounds()` (what a `DiffusionStep` reports) and `output_fields()`, the strategy's own fields of
       `DiffusionGenerateOutput`.

    `name` is the `length_strategy` value of a built-in strategy. `rows` are the indices of the active rows (finished rows have left the batch); positions are canvas positions
    (0 = the first answer token).
    """

    name: str = ""

    def __init__(self, view: CanvasView, config):
        self.view, self.config = view, config

    @classmethod
    @abstractmethod
    def initial_length(cls, budget: int, block_length: int) -> int:
        """Canvas length (masks) of every row before the first forward, at most `budget`."""

    def after_first_forward(self, rows: torch.Tensor, logits: torch.Tensor) -> torch.LongTensor | None:
        """Read the first forward's logits [rows, canvas, vocab] (the canvas from position 0) before any commit;
        return the canvas lengths of `rows` from now on. Default: nothing to read (only `predict` looks)."""
        return None

    def may_commit(self, rows: torch.Tensor, start: int, end: int) -> torch.BoolTensor | None:
        """Which positions in [start, end) of the current block may commit this step, [rows, end - start];
        None: every mask may."""
        return None

    @abstractmethod
    def after_commit(self, rows: torch.Tensor) -> tuple[torch.BoolTensor, torch.LongTensor | None]:
        """After this step's commits: which of `rows` are done [rows], and the canvas lengths of `rows` from now on
        [rows] (None: unchanged)."""

    def bounds(self) -> torch.LongTensor | None:
        """The canvas length each row's bound allows [batch] once the first forward has set it; None without one."""
        return None

    def output_fields(self) -> dict:
        """Fields of `DiffusionGenerateOutput` this strategy fills (e.g. `predicted_lengths`)."""
        return {}


class FixedLength(LengthStrategy):
    """LLaDA: the canvas is the whole budget, decoded block by block; the tail fills with EOS (stripped from the
    output). A row is done when no mask is left."""

    name = "fixed"

    @classmethod
    def initial_length(cls, budget: int, block_length: int) -> int:
        return budget

    def after_commit(self, rows: torch.Tensor) -> tuple[torch.BoolTensor, None]:
        view = self.view
        return ~(view.canvas(rows) == view.mask_id).any(-1), None


class GrowLength(LengthStrategy):
    """dLLM-Var: the canvas starts as one block; a row fully decoded without an EOS gets another block (up to the
    budget); a row is done once it has an EOS with no mask before it, or fills the budget."""

    name = "grow"

    @classmethod
    def initial_length(cls, budget: int, block_length: int) -> int:
        return min(block_length, budget)

    def may_commit(self, rows: torch.Tensor, start: int, end: int) -> torch.BoolTensor:
        # Positions after a row's first committed EOS are discarded from the answer: never spend a commit there
        # (a model trained with EOS fill is most confident about exactly those positions).
        canvas = self.view.canvas(rows)[:, :end]
        first_eos = first_true(torch.isin(canvas, self.view.eos_ids), end)
        position = torch.arange(start, end, device=canvas.device)
        return position[None, :] < first_eos[:, None]

    def after_commit(self, rows: torch.Tensor) -> tuple[torch.BoolTensor, torch.LongTensor]:
        view = self.view
        canvas = view.canvas(rows)
        canvas_len = view.lengths[rows]
        index = torch.arange(view.budget, device=canvas.device)
        is_eos = torch.isin(canvas, view.eos_ids) & (index[None, :] < canvas_len[:, None])
        is_mask = canvas == view.mask_id
        first_eos = first_true(is_eos, view.budget)
        masks_before_eos = (is_mask & (index[None, :] < first_eos[:, None])).any(-1)
        all_decoded = ~is_mask.any(-1)
        done = (is_eos.any(-1) & ~masks_before_eos) | (all_decoded & (canvas_len >= view.budget))
        grow = all_decoded & ~done
        return done, torch.where(grow, (canvas_len + view.block_length).clamp(max=view.budget), canvas_len)


class PredictLength(GrowLength):
    """A length bound from the first step (this project's proposal; cf. DAEDAL): the first forward sees the whole
    budget as masks; with EOS-filled training targets, p(EOS) at canvas position j estimates P(length <= j), so the
    first position where it reaches `predict_threshold` is the predicted length. The canvas is cut to predicted + 1
    (the EOS) + `length_margin` (at most the budget); a row that fills it without an EOS grows as in `GrowLength`."""

    name = "predict"

    def __init__(self, view: CanvasView, config):
        super().__init__(view, config)
        self.predicted_lengths: torch.LongTensor | None = None
        self.bound: torch.LongTensor | None = None

    @classmethod
    def initial_length(cls, budget: int, block_length: int) -> int:
        return budget

    def after_first_forward(self, rows: torch.Tensor, logits: torch.Tensor) -> torch.LongTensor:
        first = predicted_lengths(eos_probabilities(logits, self.view.eos_ids), self.config.predict_threshold)
        self.predicted_lengths = first.clone()
        self.bound = length_bound(first, self.config.length_margin, self.view.budget)
        return self.bound

    def bounds(self) -> torch.LongTensor | None:
        return self.bound

    def output_fields(self) -> dict:
        return {"predicted_lengths": self.predicted_lengths, "grew": self.view.lengths > self.bound,
                "bounds": self.bound, "length_coverage": self.config.length_coverage}


def first_true(flags: torch.Tensor, default: int | torch.Tensor) -> torch.LongTensor:
    """Index of the first True along the last dim of `flags` [rows, n]; `default` for rows without one."""
    default = torch.as_tensor(default, device=flags.device).expand(flags.shape[0])
    return torch.where(flags.any(-1), flags.float().argmax(-1), default)


def eos_probabilities(logits: torch.Tensor, eos_ids: torch.Tensor) -> torch.Tensor:
    """p(EOS) [rows, canvas] from the first forward's logits [rows, canvas, vocab] (any of the EOS ids)."""
    return logits.softmax(-1)[..., eos_ids].sum(-1)


def predicted_lengths(p_eos: torch.Tensor, predict_threshold: float) -> torch.LongTensor:
    """`predict`'s length: the first canvas position whose p(EOS) reaches the threshold; the canvas length if none."""
    return first_true(p_eos >= predict_threshold, p_eos.shape[-1])


def length_bound(predicted: torch.Tensor, length_margin: int, budget: int) -> torch.LongTensor:
    """`predict`'s canvas: predicted length + 1 (the EOS) + margin, at most the budget."""
    return (predicted + 1 + length_margin).clamp(max=budget)


# `length_strategy` name -> class. The built-in names are settings_dlm.LENGTH_STRATEGIES (what the CLI offers; a name
# there without a class here fails at import). DiffusionGenerationConfig.validate accepts every name here, so a plug-in
# strategy is a class and an entry.
_BUILT_IN = {cls.name: cls for cls in (FixedLength, GrowLength, PredictLength)}
LENGTH_STRATEGY_CLASSES: dict[str, type[LengthStrategy]] = {name: _BUILT_IN[name] for name in LENGTH_STRATEGIES}


def initial_canvas_length(length_strategy: str, budget: int, block_length: int) -> int:
    """How many masks every canvas of `length_strategy` (a registered name) starts with, before any forward."""
    return LENGTH_STRATEGY_CLASSES[length_strategy].initial_length(budget, block_length)


__all__ = [
    "LENGTH_STRATEGY_CLASSES",
    "CanvasView",
    "FixedLength",
    "GrowLength",
    "LengthStrategy",
    "PredictLength",
    "eos_probabilities",
    "first_true",
    "initial_canvas_length",
    "length_bound",
    "predicted_lengths",
]
