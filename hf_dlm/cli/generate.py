"""`hf-dlm generate [--model M] PROMPT ...`: answer prompts with any DiffusionLM checkpoint (a local directory or a
Hub id; the embedded default without `--model`). Every decoding setting is a flag; `--json` prints one object per
prompt (`predicted_length` and `grew` appear only with `--strategy predict`).

`--verify` decodes by draft and verify (`hf_dlm.speculative`): the diffusion model drafts `--draft-length` tokens,
its AR base (SmolLM2 for the embedded default, else `--verifier`) verifies them in one forward and keeps its own
greedy answer.

`--gated` decodes with a gated drafter (`hf_dlm.drafter_dlm`): one forward per round drafts `--draft-length` tokens
and verifies the previous round's, the answer is the base's greedy one (SmolLM2 with its shipped drafter by
default; a `--model` that is a gated drafter checkpoint always decodes this way).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
    group = parser.add_argument_group("draft and verify (the answer is the AR base's greedy answer)")
    group.add_argument("--verify", action="store_true",
                       help="draft with the diffusion model, verify with its AR base (SmolLM2 for the embedded "
                       "default, --verifier for --model)")
    group.add_argument("--verifier", default=None, metavar="CAUSAL_LM",
                       help="the causal LM --model was adapted from (directory or Hub id); implies --verify")
    group.add_argument("--draft-length", type=int, default=None,
                       help="tokens drafted per round with --verify or --gated (4)")
    group.add_argument("--gated", action="store_true",
                       help="one forward per round drafts and verifies (a gated drafter: SmolLM2's shipped one by "
                       "default, or a --model saved with drafter='gated_lora'); the answer is the base's greedy one")
    return parser


def check_verify(parser: argparse.ArgumentParser, args, settings: dict) -> None:
    """Draft and verify takes no diffusion decoding setting but the budget: refuse the others, and a custom model
    without the causal LM to verify with."""
    args.verify = args.verify or args.verifier is not None
    if args.verify and args.gated:
        parser.error("--gated drafts and verifies with one model in one forward; --verify uses two models: pick one.")
    if not (args.verify or args.gated):
        if args.draft_length is not None:
            parser.error("--draft-length applies to draft and verify: add --gated or --verify (or --verifier "
                         "CAUSAL_LM).")
        return
    args.draft_length = 4 if args.draft_length is None else args.draft_length
    if args.draft_length < 1:
        parser.error(f"--draft-length must be >= 1, got {args.draft_length}")
    ignored = sorted(set(settings) - {"max_new_tokens"})
    if ignored:
        flag = "--gated" if args.gated else "--verify"
        parser.error(f"{flag} decodes by draft and verify (the AR base's greedy answer): the diffusion decoding "
                     f"settings {', '.join(ignored)} do not apply; drop them.")
    if args.gated:
        return
    if args.verifier is None and args.model is not None:
        parser.error("--verify needs the causal LM that --model was adapted from: --verifier DIRECTORY_OR_HUB_ID "
                     "(only the embedded default knows its own base).")
    if args.verifier is not None:
        check_model(parser, args.verifier)


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
    check_verify(parser, args, settings)
    prompts = read_prompts(parser, args.prompts, args.file)

    from ..evaluation import answer_diffusion, answer_gated, answer_speculative

    own_base = args.verify and args.verifier is None  # the embedded default and SmolLM2
    loaded = load_model(parser, args.model, args.dtype, args.device, args.threads, status=progress,
                        autoregressive=own_base, gated=args.gated)
    model, verifier = loaded if own_base else (loaded, None)
    if args.gated and getattr(model, "drafter", None) is None:
        parser.error(f"--gated needs a gated drafter; {args.model} is a diffusion model (no drafter). Drop --gated, "
                     f"or adapt with DiffusionLM.from_causal_lm(..., drafter='gated_lora') and train it.")
    gated = getattr(model, "drafter", None) is not None
    if gated and not args.gated:
        check_verify(parser, argparse.Namespace(**{**vars(args), "gated": True}), settings)
    if args.verifier is not None:
        verifier = load_causal_lm(parser, args.verifier, model)
    try:
        if gated:
            answers = answer_gated(model, model.tokenizer, prompts, draft_length=args.draft_length or 4,
                                   batch_size=args.batch_size, chat_template=args.chat_template, **settings)
        elif verifier is not None:
            answers = answer_speculative(model, verifier, model.tokenizer, prompts, draft_length=args.draft_length,
                                         chat_template=args.chat_template, **settings)
        else:
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


def load_causal_lm(parser: argparse.ArgumentParser, name_or_path: str, model):
    """The verifier of `--verifier CAUSAL_LM`, in the diffusion model's dtype and device."""
    from ..loading import explain_load_error, load_autoregressive_lm

    with progress(f"Loading the verifier {name_or_path}"):
        try:
            return load_autoregressive_lm(name_or_path, "--verifier", dtype=model.dtype).to(model.device).eval()
        except (OSError, ValueError) as error:
            if Path(name_or_path).expanduser().is_dir():
                first = str(error).splitlines()[0] if str(error) else type(error).__name__
                parser.error(f"{name_or_path} does not load as a causal LM ({first}). --verify takes the AR model "
                             f"the diffusion model was adapted from (an ...ForCausalLM checkpoint).")
            parser.error(str(explain_load_error(name_or_path, error)))


__all__ = ["build_parser", "json_record", "main"]
