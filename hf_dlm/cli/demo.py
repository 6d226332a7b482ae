"""`hf-dlm demo`: the embedded default (SmolLM2-135M-Instruct + the shipped diffusion adapter, nothing downloaded)
answers a prompt or two; the denoising is drawn live on a terminal (masks resolving into text), then each answer is
set next to the one SmolLM2 gives autoregressively, with tokens, forward passes (NFE), tokens per forward and wall
time. Off a terminal (a pipe, a log) it prints a line per stage instead of the animation.

`--gated` adds a third answer: SmolLM2 with its shipped gated drafter (`load_default_drafter`), which drafts and
verifies in one forward per round and so gives SmolLM2's own greedy answer in fewer forwards.
"""

from __future__ import annotations

import argparse
import sys
import time

from .options import (
    add_decoding_arguments,
    add_model_arguments,
    check_decoding,
    check_model,
    decoding_settings,
    progress,
)
from .options import load_model as load_model_or_exit

DEMO_PROMPTS = (  # from the held-out set (examples/prompts/heldout.txt): the adapter never trained on them
    "Explain the water cycle in simple terms.",
    "Write a haiku about snow.",
    "List three breakfast foods.",
    "What is the difference between a fruit and a vegetable?",
    "Give three tips for taking better photos.",
)
DEFAULT_PROMPT_COUNT = 2  # about a minute on 2 CPU cores, loading included
MASK_GLYPH = "░"


# ----------------------------------------------------------------------------------------------- demo
class LiveCanvas:
    """The demo's live view, a transformers streamer (`put` / `put_draft` / `end`, see
    `decoder_dlm.StreamRelay`): after every step it redraws the answer's final text followed by the undecided
    draft, masks as `MASK_GLYPH`, tokens committed in the last step highlighted, with a progress bar of decided
    positions. The same path a web app takes with `TextIteratorStreamer`."""

    def __init__(self, tokenizer, mask_id: int, eos_ids: list[int], live, title: str, delay: float = 0.0):
        self.tokenizer, self.mask_id, self.eos_ids = tokenizer, mask_id, set(eos_ids)
        self.live, self.title, self.delay = live, title, delay
        self.final: list[int] = []
        self.draft: list[int] = []
        self.previous: list[int] = []
        self.prompt_seen = False
        self.steps = 0
        self.pieces: dict[int, str] = {}
        self.started = time.perf_counter()
        self.overhead = 0.0  # seconds spent drawing, subtracted from the measured decoding time

    def piece(self, token: int) -> str:
        if token not in self.pieces:
            self.pieces[token] = self.tokenizer.decode([token])
        return self.pieces[token]

    def put(self, value) -> None:
        if not self.prompt_seen:  # the streamer protocol starts with the prompt
            self.prompt_seen = True
            return
        self.final += value.tolist()
        self.draft = self.draft[len(value) :]
        if self.final and self.final[-1] in self.eos_ids:
            self._draw()

    def put_draft(self, value) -> None:
        self.draft = value.tolist()
        self.steps += 1
        self._draw()

    def end(self) -> None:
        self.draft = []
        self._draw()

    def _draw(self) -> None:
        start = time.perf_counter()
        canvas = self.final + self.draft
        self.live.update(self.render(canvas))
        self.previous = canvas
        if self.delay:
            time.sleep(self.delay)
        self.overhead += time.perf_counter() - start

    def render(self, canvas: list[int]):
        from rich.console import Group
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        text, committed, length = Text(), 0, 0
        for i, token in enumerate(canvas):
            length += 1
            if token in self.eos_ids:
                text.append(" \u23ce", style="bold magenta")
                committed += 1
                break
            if token == self.mask_id:
                text.append(MASK_GLYPH, style="grey50")
                continue
            committed += 1
            fresh = i < len(self.previous) and self.previous[i] == self.mask_id
            text.append(self.piece(token), style="bold green" if fresh else None)
        elapsed = time.perf_counter() - self.started - self.overhead
        status = Table.grid(padding=(0, 1))
        status.add_row(ProgressBar(total=max(length, 1), completed=committed, width=30),
                       Text(f"{committed}/{length} positions decided  {len(self.final)} final  step {self.steps}  "
                            f"{elapsed:.1f} s", style="cyan"))
        return Group(Panel(text, title=self.title, title_align="left", border_style="blue"), status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-dlm demo",
        description="Watch SmolLM2-135M-Instruct answer by masked diffusion with variable length (the embedded "
        "default: nothing is downloaded), next to the same model answering autoregressively.",
    )
    parser.add_argument("--prompt", action="append", default=None,
                        help="a prompt of your own (repeat for several)")
    parser.add_argument("--prompts", dest="count", type=int, default=DEFAULT_PROMPT_COUNT,
                        help=f"how many built-in held-out prompts to answer (1-{len(DEMO_PROMPTS)}, default "
                        f"{DEFAULT_PROMPT_COUNT}); ignored with --prompt")
    parser.add_argument("--no-live", dest="live", action="store_false", help="no animation (scripts, CI, logs)")
    parser.add_argument("--no-ar", dest="ar", action="store_false", help="skip the autoregressive comparison")
    parser.add_argument("--step-delay", type=float, default=0.0, help="pause after each drawn step (seconds; "
                        "not counted in the timings)")
    parser.add_argument("--gated", action="store_true",
                        help="also answer with SmolLM2's gated drafter (one forward drafts and verifies; SmolLM2's "
                        "own greedy answer)")
    parser.add_argument("--draft-length", type=int, default=4, help="tokens drafted per forward with --gated (4)")
    add_model_arguments(parser, "the embedded SmolLM2 diffusion model (then with the AR comparison)")
    add_decoding_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.count <= len(DEMO_PROMPTS):
        parser.error(f"--prompts must be between 1 and {len(DEMO_PROMPTS)}, got {args.count}")
    if args.prompt is not None and any(not p.strip() for p in args.prompt):
        parser.error("a --prompt is empty: give some text to answer.")
    if args.step_delay < 0:
        parser.error(f"--step-delay must be >= 0, got {args.step_delay}")
    if args.draft_length < 1:
        parser.error(f"--draft-length must be >= 1, got {args.draft_length}")
    if args.gated and args.model is not None:
        parser.error("--gated adds the embedded SmolLM2 gated drafter; for a drafter checkpoint of your own use "
                     "hf-dlm generate --model DIR --gated.")
    settings = decoding_settings(args)
    check_model(parser, args.model)
    check_decoding(parser, args.model, settings)
    prompts = args.prompt or list(DEMO_PROMPTS[: args.count])

    from rich.console import Console

    from ..evaluation import answer_autoregressive, answer_gated

    console = Console()
    live = args.live and console.is_terminal
    console.rule("[bold]hf_dlm demo: a diffusion language model with variable-length decoding")
    with_ar = args.ar and args.model is None
    started = time.perf_counter()
    loaded = load_model_or_exit(parser, args.model, args.dtype, args.device, args.threads, status=progress,
                                autoregressive=with_ar)
    model, ar_model = loaded if with_ar else (loaded, None)
    drafter = None
    if args.gated:
        drafter = load_model_or_exit(parser, None, args.dtype, args.device, args.threads, status=progress, gated=True)
    tokenizer = model.tokenizer
    config = model.generation_config
    shown = {k: settings.get(k, getattr(config, k)) for k in ("length_strategy", "max_new_tokens", "block_length",
                                                             "threshold", "use_cache")}
    console.print(f"Loaded in {time.perf_counter() - started:.1f} s ({str(model.dtype).removeprefix('torch.')}, "
                  f"{model.device}). Decoding: " + ", ".join(f"{k}={v}" for k, v in shown.items()))

    rows = []
    for number, prompt in enumerate(prompts, 1):
        console.print()
        console.rule(f"[bold]{number}/{len(prompts)}  {prompt}", align="left")
        diffusion = _demo_diffusion(model, tokenizer, prompt, settings, live, console, args.step_delay)
        if not live:
            console.print(f"[bold blue]diffusion:[/] {diffusion.text}")
        columns = []
        if ar_model is not None:
            with progress("autoregressive answer (one token per forward)"):
                ar = answer_autoregressive(ar_model, tokenizer, [prompt], max_new_tokens=shown["max_new_tokens"])[0]
            columns.append(("autoregressive (SmolLM2)", ar))
        columns.append((f"diffusion ({shown['length_strategy']})", diffusion))
        if drafter is not None:
            with progress(f"gated drafter answer (drafts {args.draft_length} per forward, SmolLM2 verifies)"):
                gated = answer_gated(drafter, tokenizer, [prompt], max_new_tokens=shown["max_new_tokens"],
                                     draft_length=args.draft_length)[0]
            columns.append((f"gated drafter (draft {args.draft_length}, SmolLM2's answer)", gated))
        console.print(side_by_side(columns))
        rows.append(columns)
    console.print()
    console.print(totals_table(rows))
    if args.prompt is None and args.count < len(DEMO_PROMPTS):
        print(f"More prompts: hf-dlm demo --prompts {len(DEMO_PROMPTS)}, or --prompt 'your own'.", file=sys.stderr)
    return 0


def _demo_diffusion(model, tokenizer, prompt, settings, live: bool, console, delay: float):
    from ..evaluation import answer_diffusion

    if not live:
        with progress("diffusion answer"):
            return answer_diffusion(model, tokenizer, [prompt], **settings)[0]
    from rich.live import Live

    strategy = settings.get("length_strategy", model.generation_config.length_strategy)
    with Live(console=console, refresh_per_second=20, transient=False) as screen:
        drawer = LiveCanvas(tokenizer, model.config.mask_token_id, model.config.eos_token_ids, screen,
                            f"diffusion ({strategy})", delay)
        answer = answer_diffusion(model, tokenizer, [prompt], streamer=drawer, **settings)[0]
    answer.seconds -= drawer.overhead
    return answer


def _speed(answer) -> str:
    return f"{len(answer.tokens) / answer.seconds:.1f}" if answer.seconds > 0 else "-"


def side_by_side(columns: list[tuple]):
    """One prompt's answers, a column per decoder: `columns` = [(title, Answer), ...]."""
    from rich.table import Table

    table = Table(show_lines=True, expand=True, title_justify="left")
    table.add_column("", style="bold", no_wrap=True)
    for title, _ in columns:
        table.add_column(title, ratio=1)
    cells = [answer for _, answer in columns]
    table.add_row("answer", *[a.text for a in cells])
    table.add_row("tokens", *[f"{len(a.tokens)}{'' if a.ended else ' (budget)'}" for a in cells])
    table.add_row("forwards (NFE)", *[str(a.nfe) for a in cells])
    table.add_row("tokens / forward", *[f"{len(a.tokens) / max(a.nfe, 1):.2f}" for a in cells])
    table.add_row("wall time", *[f"{a.seconds:.2f} s" for a in cells])
    table.add_row("tokens/s", *[_speed(a) for a in cells])
    return table


def totals_table(rows: list[list[tuple]]):
    """Totals per decoder over every prompt: `rows` = one `side_by_side` column list per prompt."""
    from rich.table import Table

    table = Table(title="All prompts", title_justify="left")
    for name in ("decoder", "tokens", "forwards (NFE)", "tokens / forward", "wall time", "tokens/s"):
        table.add_column(name, justify="left" if name == "decoder" else "right")
    for index, (name, _) in enumerate(rows[0]):
        answers = [columns[index][1] for columns in rows]
        tokens = sum(len(a.tokens) for a in answers)
        nfe = sum(a.nfe for a in answers)
        seconds = sum(a.seconds for a in answers)
        table.add_row(name, str(tokens), str(nfe), f"{tokens / max(nfe, 1):.2f}", f"{seconds:.2f} s",
                      f"{tokens / seconds:.1f}" if seconds else "-")
    return table


__all__ = ["DEMO_PROMPTS", "LiveCanvas", "build_parser", "main", "side_by_side", "totals_table"]
