"""HTML for the web demo: the canvas of an answer while it is decoded, the finished answer with its figures, and
the messages the page shows. Standard library only (the unit tests call it without torch or a browser).

The canvas is row 0 of `DiffusionStep.canvas` after the prompt: masks are `mask_token_id`, positions outside the
canvas are pad (the `grow` canvas starts one block long; the `predict` canvas shrinks to its bound,
`DiffusionStep.bound`, after the first forward). Each position is one <span>: `m` a mask, `t` a committed token
(`new` if committed by the last step), `eos` the end; `blk` marks the block being denoised (semi-autoregressive
decoding, LLaDA).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MASK_GLYPH = "░"  # as in the terminal demo (cli/demo.py)
EOS_GLYPH = "⏎"


@dataclass(frozen=True)
class Snapshot:
    """The answer region of row 0 after a denoising step (step 0: the canvas before the first forward)."""

    step: int
    nfe: int
    block: int
    canvas: list[int]  # [budget]: token ids, masks as mask_token_id, pad outside the canvas
    seconds: float  # since decoding began
    finished: bool = False  # the row has ended (its EOS is committed)
    bound: int | None = None  # predict: the canvas length the first forward set (None before it, other strategies)


def initial_canvas(length: int, budget: int, mask_id: int, pad_id: int) -> list[int]:
    """The canvas `diffusion_generate` starts from: `length` masks (the strategy's, as
    `length_strategies_dlm.initial_canvas_length` tells), pad up to the budget. Shown at once, before the first
    forward returns."""
    return [mask_id] * length + [pad_id] * (budget - length)


def canvas_length(canvas: Sequence[int], pad_id: int, eos_ids: Sequence[int]) -> int:
    """Positions inside the canvas: up to the first pad. Where the pad is also an EOS id (SmolLM2's tokenizer pads
    with <|im_end|>), the canvas edge and a committed EOS look alike: the canvas is then taken to end after its
    last position that is not an EOS id (a mask or a token)."""
    if pad_id in eos_ids:
        return 1 + max((i for i, token in enumerate(canvas) if token not in eos_ids), default=-1)
    for i, token in enumerate(canvas):
        if token == pad_id:
            return i
    return len(canvas)


class CanvasRenderer:
    """Renders the snapshots of one answer; keeps the previous canvas to mark what the last step committed."""

    def __init__(self, piece: Callable[[int], str], *, mask_id: int, eos_ids: Sequence[int], pad_id: int,
                 block_length: int, strategy: str, budget: int):
        self.piece, self.mask_id, self.eos_ids, self.pad_id = piece, mask_id, set(eos_ids), pad_id
        self.block_length, self.strategy, self.budget = block_length, strategy, budget
        self.previous: list[int] | None = None
        self.bound: int | None = None
        self.last: Snapshot | None = None

    def render(self, snapshot: Snapshot, state: str = "decoding") -> str:
        canvas = snapshot.canvas
        length = canvas_length(canvas, self.pad_id, self.eos_ids)
        self.bound = snapshot.bound if snapshot.bound is not None else self.bound
        block_start = snapshot.block * self.block_length
        spans, decided, shown = [], 0, length
        for i, token in enumerate(canvas[:length]):
            block = " blk" if block_start <= i < block_start + self.block_length and state == "decoding" else ""
            if token == self.mask_id:
                spans.append(f'<span class="m{block}">{MASK_GLYPH}</span>')
                continue
            decided += 1
            fresh = self.previous is not None and i < len(self.previous) and self.previous[i] == self.mask_id
            if token in self.eos_ids:
                spans.append(f'<span class="eos{" new" if fresh else ""}{block}" title="end of answer">{EOS_GLYPH}'
                             f'</span>')
                shown = i + 1
                break
            spans.append(f'<span class="t{" new" if fresh else ""}{block}">{html.escape(self.piece(token))}</span>')
        if shown < length:
            spans.append(f'<span class="rest">(+{length - shown} positions after the end)</span>')
        elif self.pad_id in self.eos_ids and (snapshot.finished or state == "done") and length < len(canvas):
            spans.append('<span class="eos" title="end of answer">' + EOS_GLYPH + "</span>")  # the EOS after the text
        self.previous, self.last = canvas, snapshot
        figures = [f"step {snapshot.step}", f"forwards {snapshot.nfe}", f"block {snapshot.block + 1}",
                   f"{decided}/{length} positions decided"]
        if self.bound is not None:
            figures.append(f"predicted bound {self.bound} of {self.budget}")
        elif self.strategy == "predict" and snapshot.step == 0:
            figures.append(f"bound: read from p(EOS) by the first forward (budget {self.budget})")
        figures.append(f"{snapshot.seconds:.2f} s")
        return (f'<div class="dlm-canvas" data-state="{state}" data-step="{snapshot.step}" data-nfe="{snapshot.nfe}" '
                f'data-length="{length}"><div class="dlm-head">{" · ".join(figures)}</div>'
                f'<div class="dlm-tokens">{"".join(spans)}</div></div>')


def figures_table(figures: dict[str, str]) -> str:
    """Per-answer figures as a two-row table; each value cell carries `data-figure=<name>` for tests."""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in figures)
    cells = "".join(f'<td data-figure="{html.escape(name)}">{html.escape(value)}</td>'
                    for name, value in figures.items())
    return f'<table class="dlm-figures"><tr>{head}</tr><tr>{cells}</tr></table>'


def answer_figures(tokens: int, ended: bool, nfe: int, seconds: float, predicted_length: int | None = None,
                   bound: int | None = None, grew: bool | None = None) -> dict[str, str]:
    """tokens, forwards, tokens per forward, seconds, tokens/s (and for `predict` the bound) of one answer."""
    figures = {
        "tokens": f"{tokens}" + ("" if ended else " (budget, no end)"),
        "forwards": str(nfe),
        "tokens / forward": f"{tokens / max(nfe, 1):.2f}",
        "seconds": f"{seconds:.2f}",
        "tokens / s": f"{tokens / seconds:.1f}" if seconds > 0 else "-",
    }
    if predicted_length is not None:
        bound_text = f"{bound}" if bound is not None else "?"
        figures["predicted bound"] = (f"{bound_text} (length {predicted_length} + margin)"
                                      + ("; grew past it" if grew else ""))
    return figures


def answer_html(title: str, text: str, figures: dict[str, str], canvas: str = "", state: str = "done") -> str:
    """A finished answer: its text, its figures, and (diffusion) the last canvas folded away."""
    body = html.escape(text) if text.strip() else '<span class="dlm-empty">(empty answer)</span>'
    folded = f"<details><summary>final canvas</summary>{canvas}</details>" if canvas else ""
    return (f'<div class="dlm-answer" data-state="{state}"><div class="dlm-title">{html.escape(title)}</div>'
            f'<div class="dlm-text">{body}</div>{figures_table(figures)}{folded}</div>')


def panel_html(title: str, body: str, state: str) -> str:
    """A panel with a title and a body of HTML (a live canvas, a note)."""
    return (f'<div class="dlm-answer" data-state="{state}"><div class="dlm-title">{html.escape(title)}</div>'
            f"{body}</div>")


def message_html(text: str, kind: str = "error") -> str:
    """A line for the page: `error` (what to change) or `info`."""
    return f'<div class="dlm-msg dlm-{kind}" data-kind="{kind}">{html.escape(text)}</div>'


CSS = """
.dlm-canvas, .dlm-answer { font-size: 15px; line-height: 1.7; }
.dlm-head { color: #555; font-size: 13px; margin-bottom: 4px; font-variant-numeric: tabular-nums; }
.dlm-tokens, .dlm-text { white-space: pre-wrap; word-break: break-word; }
.dlm-tokens .m { color: #9aa3b5; }
.dlm-tokens .t.new, .dlm-tokens .eos.new { color: #0a7a2f; font-weight: 600; }
.dlm-tokens .blk { background: #e7efff; }
.dlm-tokens .eos { color: #a0249c; font-weight: 600; }
.dlm-tokens .rest { color: #999; font-size: 12px; }
.dlm-title { font-weight: 600; margin-bottom: 4px; }
.dlm-figures { margin-top: 8px; border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
.dlm-figures th, .dlm-figures td { border: 1px solid #ddd; padding: 2px 8px; text-align: right; }
.dlm-figures th { background: #f5f5f5; font-weight: 500; }
.dlm-msg { padding: 6px 10px; border-radius: 6px; }
.dlm-error { background: #fde8e8; color: #8a1010; }
.dlm-info { background: #eef4ff; color: #1d3d7a; }
.dlm-empty { color: #999; }
.dlm-note { color: #666; font-size: 14px; }
"""

__all__ = ["CSS", "CanvasRenderer", "EOS_GLYPH", "MASK_GLYPH", "Snapshot", "answer_figures", "canvas_length", "answer_html",
           "figures_table", "initial_canvas", "message_html", "panel_html"]
