"""`hf-dlm generate [--model M] PROMPT ...`: answer prompts with any DiffusionLM checkpoint (a local directory or a
Hub id; the embedded default without `--model`). Every decoding setting is a flag; `--json` prints one object per
prompt (`predicted_length` and `grew` appear only with `--strategy predict`).
"""

from __future__ import annotations

import argparse
import json
import sys

from .options import (
    add_decoding_arguments,
    add_model_arguments,
    check_decoding,
    check_model,
    decoding_settings,
    load_model,
    progress,
    read_prompts,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-dlm generate",
        description="Answer prompts with a diffusion LM (variable-length decoding). Without --model: the embedded "
        "default, SmolLM2-135M-Instruct + the shipped diffusion adapter.",
    )
    parser.add_argument("prompts", nargs="*", help="prompts; '-' or none (with piped input) reads stdin, one per line")
    parser.add_argument("--file", default=None, help="read prompts from this file, one per line")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per prompt on stdout (prompt, text, tokens, nfe, tokens_per_forward, "
                        "seconds, ended; predicted_length and grew with --strategy predict)")
    parser.add_argument("--no-chat-template", dest="chat_template", action="store_false", default=None,
                        help="feed prompts as raw text even when the tokenizer has a chat template")
    parser.add_argument("--batch-size", type=int, default=1, help="prompts decoded together (left padded)")
    add_model_arguments(parser, "the embedded SmolLM2 diffusion model")
    add_decoding_arguments(parser)
    return parser


def json_record(answer) -> dict:
    return {"prompt": answer.prompt, "text": answer.text, "tokens": len(answer.tokens), "nfe": answer.nfe,
            "tokens_per_forward": round(len(answer.tokens) / max(answer.nfe, 1), 3),
            "seconds": round(answer.seconds, 4), "ended": answer.ended, **answer.extra}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    settings = decoding_settings(args)
    check_model(parser, args.model)
    check_decoding(parser, args.model, settings)
    prompts = read_prompts(parser, args.prompts, args.file)

    from ..evaluation import answer_diffusion

    model = load_model(parser, args.model, args.dtype, args.device, args.threads, status=progress)
    try:
        answers = answer_diffusion(model, model.tokenizer, prompts, batch_size=args.batch_size,
                                   chat_template=args.chat_template, **settings)
    except ValueError as error:  # e.g. a prompt longer than the model's context: the message says what to change
        parser.error(str(error))
    for answer in answers:
        if args.json:
            print(json.dumps(json_record(answer), ensure_ascii=False), flush=True)
        else:
            if len(answers) > 1:
                print(f"### {answer.prompt}")
            print(answer.text, flush=True)
            print(f"[{len(answer.tokens)} tokens{'' if answer.ended else ', budget reached'}, {answer.nfe} forwards "
                  f"({len(answer.tokens) / max(answer.nfe, 1):.2f} tokens/forward), {answer.seconds:.2f} s]",
                  file=sys.stderr, flush=True)
    return 0


__all__ = ["build_parser", "json_record", "main"]
