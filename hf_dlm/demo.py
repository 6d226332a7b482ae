"""`hf-dlm demo` and `hf-dlm generate`.

- `hf-dlm demo`: the embedded default (SmolLM2-135M-Instruct + the shipped diffusion adapter, nothing downloaded)
  answers a few prompts; the denoising is drawn live (masks resolving into text), then each answer is set next to
  the one SmolLM2 gives autoregressively, with tokens, forward passes (NFE) and wall time.
- `hf-dlm generate [--model M] PROMPT ...`: decode prompts with any DiffusionLM checkpoint (local directory or Hub
  id; the embedded default without `--model`); every `DiffusionGenerationConfig` field is a flag; `--json` prints
  one object per prompt.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

import torch

from .evaluation import Answer, answer_autoregressive, answer_diffusion
from .generation_dlm import LENGTH_STRATEGIES, UNMASKING_RULES, DiffusionGenerationConfig

DEMO_PROMPTS = (  # from the held-out set (examples/prompts/heldout.txt): the adapter never trained on them
    "Explain the water cycle in simple terms.",
    "Write a haiku about snow.",
    "List three breakfast foods.",
    "What is the difference between a fruit and a vegetable?",
    "Give three tips for taking better photos.",
)
MASK_GLYPH = "░"


# ----------------------------------------------------------------------------------------------- arguments
def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else float(text)


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `DiffusionGenerationConfig` field. Unset flags keep the model's generation_config."""
    group = parser.add_argument_group("decoding (defaults: the model's generation_config.json)")
    S = argparse.SUPPRESS
    group.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=S, help="token budget per answer")
    group.add_argument("--strategy", "--length-strategy", dest="length_strategy", choices=LENGTH_STRATEGIES, default=S,
                       help="fixed (LLaDA), grow (dLLM-Var) or predict (length bound from p(EOS) at step 1)")
    group.add_argument("--block-length", dest="block_length", type=int, default=S)
    group.add_argument("--steps", type=int, default=S, help="denoising steps for the whole budget (LLaDA schedule)")
    group.add_argument("--threshold", type=_optional_float, default=S,
                       help="commit every mask whose probability reaches this (Fast-dLLM); 'none' disables")
    group.add_argument("--unmasking", choices=UNMASKING_RULES, default=S,
                       help="which masks to commit first (left_to_right: only extend the decided prefix)")
    group.add_argument("--defer-repeats", dest="defer_repeats", action=argparse.BooleanOptionalAction, default=S,
                       help="do not commit a token equal to its left neighbour's in the same step")
    group.add_argument("--repetition-penalty", dest="repetition_penalty", type=float, default=S,
                       help="CTRL penalty on tokens already decided (EOS exempt); 1.0 disables")
    group.add_argument("--temperature", type=float, default=S, help="0 = greedy")
    group.add_argument("--top-p", dest="top_p", type=float, default=S)
    group.add_argument("--top-k", dest="top_k", type=int, default=S)
    group.add_argument("--seed", type=int, default=S)
    group.add_argument("--predict-threshold", dest="predict_threshold", type=float, default=S)
    group.add_argument("--length-margin", dest="length_margin", type=int, default=S)
    group.add_argument("--no-cache", dest="use_cache", action="store_false", default=S, help="disable the KV cache")


def decoding_settings(args: argparse.Namespace) -> dict:
    """The decoding flags the user gave (unset ones are absent: `default=SUPPRESS`), by config field name."""
    fields = DiffusionGenerationConfig().to_dict_own()
    return {name: value for name, value in vars(args).items() if name in fields}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                        help="auto: bfloat16 on CPUs with native bfloat16 (AVX512-BF16/AMX) or GPUs, else float32")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def _dtype(name: str) -> torch.dtype:
    from .default_model import preferred_dtype

    return preferred_dtype() if name == "auto" else getattr(torch, name)


def _device(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_model(name_or_path: str | None, dtype: torch.dtype, device: torch.device, status=None, autoregressive=False):
    """The embedded default (`name_or_path=None`) or a saved DiffusionLM (local directory or Hub id)."""
    if name_or_path is None:
        from .default_model import load_default

        loaded = load_default(dtype, autoregressive=autoregressive, status=status)
        return tuple(m.to(device) for m in loaded) if autoregressive else loaded.to(device)
    from transformers import AutoTokenizer

    from .modeling_dlm import DiffusionLM

    with (status or (lambda m: contextlib.nullcontext()))(f"Loading {name_or_path}"):
        model = DiffusionLM.from_pretrained(name_or_path, dtype=dtype).to(device).eval()
        model.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    return model


# ----------------------------------------------------------------------------------------------- generate
def generate_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hf-dlm generate",
        description="Answer prompts with a diffusion LM (variable-length decoding). Without --model: the embedded "
        "default, SmolLM2-135M-Instruct + the shipped diffusion adapter.",
    )
    parser.add_argument("prompts", nargs="*", help="prompts; '-' or none (with piped input) reads stdin, one per line")
    parser.add_argument("--model", default=None, help="DiffusionLM checkpoint directory or Hub id")
    parser.add_argument("--file", default=None, help="read prompts from this file, one per line")
    parser.add_argument("--json", action="store_true", help="one JSON object per prompt on stdout")
    parser.add_argument("--no-chat-template", dest="chat_template", action="store_false", default=None,
                        help="feed prompts as raw text even when the tokenizer has a chat template")
    parser.add_argument("--batch-size", type=int, default=1, help="prompts decoded together (left padded)")
    add_model_arguments(parser)
    add_decoding_arguments(parser)
    args = parser.parse_args(argv)

    prompts = read_prompts(args.prompts, args.file, parser)
    if args.threads:
        torch.set_num_threads(args.threads)
    status = _stderr_status() if not args.json else None
    model = load_model(args.model, _dtype(args.dtype), _device(args.device), status=status)
    settings = decoding_settings(args)
    try:
        answers = answer_diffusion(model, model.tokenizer, prompts, batch_size=args.batch_size,
                                   chat_template=args.chat_template, **settings)
    except ValueError as error:  # invalid settings: the decoder's message says what to change
        parser.error(str(error))
    for answer in answers:
        if args.json:
            print(json.dumps(_json_record(answer), ensure_ascii=False), flush=True)
        else:
            if len(answers) > 1:
                print(f"### {answer.prompt}")
            print(answer.text)
            print(f"[{len(answer.tokens)} tokens{'' if answer.ended else ', budget reached'}, {answer.nfe} forwards, "
                  f"{answer.seconds:.2f} s]", file=sys.stderr, flush=True)
    return 0


def read_prompts(positional: list[str], file: str | None, parser: argparse.ArgumentParser) -> list[str]:
    prompts = [p for p in positional if p != "-"]
    if file is not None:
        with open(file) as handle:
            prompts += [line.rstrip("\n") for line in handle if line.strip()]
    if "-" in positional or (not positional and file is None and not sys.stdin.isatty()):
        prompts += [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not prompts:
        parser.error("no prompt: pass PROMPT arguments, --file FILE, or pipe prompts on stdin (one per line)")
    return prompts


def _json_record(answer: Answer) -> dict:
    return {"prompt": answer.prompt, "text": answer.text, "tokens": len(answer.tokens), "nfe": answer.nfe,
            "seconds": round(answer.seconds, 4), "ended": answer.ended, **answer.extra}


def _stderr_status():
    """Loading stages as rich spinners on stderr (plain lines when stderr is not a terminal)."""
    from rich.console import Console

    console = Console(stderr=True)
    return lambda message: console.status(message + "...")


# ----------------------------------------------------------------------------------------------- demo
class LiveCanvas:
    """The `diffusion_generate` callback of the demo: redraws row 0's canvas after every step, masks as
    `MASK_GLYPH`, tokens committed in the last step highlighted, with a progress bar of committed tokens."""

    def __init__(self, tokenizer, mask_id: int, eos_ids: list[int], pad_id: int, live, title: str, delay: float = 0.0):
        self.tokenizer, self.mask_id, self.eos_ids, self.pad_id = tokenizer, mask_id, set(eos_ids), pad_id
        self.live, self.title, self.delay = live, title, delay
        self.previous: list[int] | None = None
        self.pieces: dict[int, str] = {}
        self.started = time.perf_counter()
        self.overhead = 0.0  # seconds spent drawing, subtracted from the measured decoding time

    def piece(self, token: int) -> str:
        if token not in self.pieces:
            self.pieces[token] = self.tokenizer.decode([token])
        return self.pieces[token]

    def __call__(self, step) -> None:
        start = time.perf_counter()
        canvas = step.canvas[0, step.prompt_length :].tolist()
        self.live.update(self.render(canvas, step))
        self.previous = canvas
        if self.delay:
            time.sleep(self.delay)
        self.overhead += time.perf_counter() - start

    def render(self, canvas: list[int], step):
        from rich.console import Group
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        text, committed, length = Text(), 0, 0
        for i, token in enumerate(canvas):
            if token == self.pad_id and token not in self.eos_ids:
                break  # outside the canvas
            length += 1
            if token in self.eos_ids:
                text.append(" ⏎", style="bold magenta")
                committed += 1
                break
            if token == self.mask_id:
                text.append(MASK_GLYPH, style="grey50")
                continue
            committed += 1
            fresh = self.previous is not None and i < len(self.previous) and self.previous[i] == self.mask_id
            text.append(self.piece(token), style="bold green" if fresh else None)
        elapsed = time.perf_counter() - self.started - self.overhead
        status = Table.grid(padding=(0, 1))
        status.add_row(ProgressBar(total=max(length, 1), completed=committed, width=30),
                       Text(f"{committed}/{length} positions decided  step {step.step}  NFE {step.nfe}  "
                            f"block {step.block + 1}  {elapsed:.1f} s", style="cyan"))
        return Group(Panel(text, title=self.title, title_align="left", border_style="blue"), status)


def demo_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hf-dlm demo",
        description="Watch SmolLM2-135M-Instruct answer by masked diffusion with variable length (the embedded "
        "default: nothing is downloaded), next to the same model answering autoregressively.",
    )
    parser.add_argument("--prompt", action="append", default=None, help="a prompt (repeat for several); default: "
                        "five built-in held-out prompts")
    parser.add_argument("--model", default=None, help="a DiffusionLM checkpoint instead of the embedded default "
                        "(then no autoregressive comparison)")
    parser.add_argument("--no-live", dest="live", action="store_false", help="no animation (scripts, CI, logs)")
    parser.add_argument("--no-ar", dest="ar", action="store_false", help="skip the autoregressive comparison")
    parser.add_argument("--step-delay", type=float, default=0.0, help="pause after each drawn step (seconds; "
                        "not counted in the timings)")
    add_model_arguments(parser)
    add_decoding_arguments(parser)
    args = parser.parse_args(argv)

    from rich.console import Console

    console = Console()
    live = args.live and console.is_terminal
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = args.prompt or list(DEMO_PROMPTS)
    dtype, device = _dtype(args.dtype), _device(args.device)
    console.rule("[bold]hf_dlm demo: a diffusion language model with variable-length decoding")
    with_ar = args.ar and args.model is None
    started = time.perf_counter()
    loaded = load_model(args.model, dtype, device, status=lambda m: console.status(m + "..."), autoregressive=with_ar)
    model, ar_model = loaded if with_ar else (loaded, None)
    tokenizer = model.tokenizer
    settings = decoding_settings(args)
    config = model.generation_config
    shown = {k: settings.get(k, getattr(config, k)) for k in ("length_strategy", "max_new_tokens", "block_length",
                                                             "threshold", "use_cache")}
    console.print(f"Loaded in {time.perf_counter() - started:.1f} s ({str(dtype).removeprefix('torch.')}, {device}). "
                  f"Decoding: " + ", ".join(f"{k}={v}" for k, v in shown.items()))

    rows = []
    for number, prompt in enumerate(prompts, 1):
        console.print()
        console.rule(f"[bold]{number}/{len(prompts)}  {prompt}", align="left")
        diffusion = _demo_diffusion(model, tokenizer, prompt, settings, live, console, args.step_delay)
        if not live:
            console.print(f"[bold blue]diffusion:[/] {diffusion.text}")
        ar = None
        if ar_model is not None:
            with console.status("autoregressive answer (one token per forward)..."):
                ar = answer_autoregressive(ar_model, tokenizer, [prompt], max_new_tokens=shown["max_new_tokens"])[0]
        console.print(side_by_side(prompt, diffusion, ar, shown["length_strategy"]))
        rows.append((diffusion, ar))
    console.print()
    console.print(totals_table(rows, shown["length_strategy"]))
    return 0


def _demo_diffusion(model, tokenizer, prompt, settings, live: bool, console, delay: float) -> Answer:
    if not live:
        return answer_diffusion(model, tokenizer, [prompt], **settings)[0]
    from rich.live import Live

    strategy = settings.get("length_strategy", model.generation_config.length_strategy)
    with Live(console=console, refresh_per_second=20, transient=False) as screen:
        drawer = LiveCanvas(tokenizer, model.config.mask_token_id, model.config.eos_token_ids,
                            model.config.pad_token_id, screen, f"diffusion ({strategy})", delay)
        answer = answer_diffusion(model, tokenizer, [prompt], callback=drawer, **settings)[0]
    answer.seconds -= drawer.overhead
    return answer


def _speed(answer: Answer) -> str:
    return f"{len(answer.tokens) / answer.seconds:.1f}" if answer.seconds > 0 else "-"


def side_by_side(prompt: str, diffusion: Answer, ar: Answer | None, strategy: str):
    from rich.table import Table

    table = Table(show_lines=True, expand=True, title_justify="left")
    table.add_column("", style="bold", no_wrap=True)
    if ar is not None:
        table.add_column("autoregressive (SmolLM2)", ratio=1)
    table.add_column(f"diffusion ({strategy})", ratio=1)
    cells = [a for a in (ar, diffusion) if a is not None]
    table.add_row("answer", *[a.text for a in cells])
    table.add_row("tokens", *[f"{len(a.tokens)}{'' if a.ended else ' (budget)'}" for a in cells])
    table.add_row("forwards (NFE)", *[str(a.nfe) for a in cells])
    table.add_row("wall time", *[f"{a.seconds:.2f} s" for a in cells])
    table.add_row("tokens/s", *[_speed(a) for a in cells])
    return table


def totals_table(rows: list[tuple[Answer, Answer | None]], strategy: str):
    from rich.table import Table

    table = Table(title="All prompts", title_justify="left")
    for name in ("decoder", "tokens", "forwards (NFE)", "tokens / forward", "wall time", "tokens/s"):
        table.add_column(name, justify="left" if name == "decoder" else "right")
    for name, answers in ((f"diffusion ({strategy})", [d for d, _ in rows]), ("autoregressive", [a for _, a in rows])):
        if any(a is None for a in answers):
            continue
        tokens = sum(len(a.tokens) for a in answers)
        nfe = sum(a.nfe for a in answers)
        seconds = sum(a.seconds for a in answers)
        table.add_row(name, str(tokens), str(nfe), f"{tokens / max(nfe, 1):.2f}", f"{seconds:.2f} s",
                      f"{tokens / seconds:.1f}" if seconds else "-")
    return table


__all__ = ["DEMO_PROMPTS", "LiveCanvas", "add_decoding_arguments", "demo_main", "generate_main", "load_model"]
