"""`hf-dlm distill`: self-distillation for parallel decoding (hf_dlm/distill.py), on any checkpoint.

    hf-dlm distill --model DIR --prompts prompts.txt --output_dir out --max_steps 500

1. A teacher answers every prompt: the DiffusionLM itself (`--teacher diffusion`, with the decoding flags; decode
   slowly, e.g. `--threshold none`, for its best answers), or an AR model (`--teacher base`): `--model` itself when
   it is a causal LM (it is then adapted for step 2), or `--teacher_model DIR`, the causal LM a DiffusionLM
   checkpoint was adapted from. Answers that reach the budget without EOS are dropped. The rows are written to
   <output_dir>/distillation_data.jsonl (prompt/completion; `--data_only` stops here).
2. `DiffusionTrainer` trains the model on them with semi-autoregressive block rows of `--block-length` (the block
   you decode with; default the model's generation config) and the confidence term (dParallel's certainty forcing;
   LLaDA 2.0's CAP), LoRA with `--use_peft`, and saves it to <output_dir>.

Flags are checked before torch is imported; docs/training.md ("Decoding in parallel") is the guide.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ..training_settings import DISTILLATION_ARGUMENTS, TEACHERS, check_training_settings
from .options import add_decoding_arguments, check_decoding, check_model, decoding_settings, read_prompts
from .paths import output_dir_problem


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-dlm distill",
        description="Train a diffusion LM to commit its teacher's answers in few forwards: self-distillation with "
        "block rows and the confidence term.",
    )
    group = parser.add_argument_group("model and teacher")
    group.add_argument("--model", required=True, help="a DiffusionLM checkpoint (directory or Hub id), or a causal LM "
                       "to adapt (then also the default teacher)")
    group.add_argument("--teacher", choices=TEACHERS, default="auto",
                       help="who answers: 'diffusion' (the model, with the decoding flags) or 'base' (a causal LM: "
                       "--model itself or --teacher_model). auto: base for a causal LM or with --teacher_model, "
                       "else diffusion")
    group.add_argument("--teacher_model", default=None, help="causal LM that answers for --teacher base when --model "
                       "is a DiffusionLM checkpoint (the model it was adapted from)")
    group.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                       help="weights dtype for loading and training")
    group = parser.add_argument_group("data")
    group.add_argument("--prompts", required=True, help="text file, one prompt per line")
    group.add_argument("--teacher_batch_size", type=int, default=8, help="prompts answered together")
    group.add_argument("--keep_unfinished", action="store_true",
                       help="keep answers that reach --max-new-tokens without EOS (default: dropped)")
    group.add_argument("--no-chat-template", dest="chat_template", action="store_false", default=None,
                       help="feed prompts as raw text even when the tokenizer has a chat template")
    group.add_argument("--data_only", action="store_true", help="write the distillation data and stop")
    group = parser.add_argument_group("training (DiffusionTrainingArguments fields)")
    group.add_argument("--output_dir", required=True, help="where the data, the trained model and logs go")
    group.add_argument("--overwrite_output_dir", action="store_true",
                       help="write into an --output_dir that already holds a model, replacing it (refused without)")
    group.add_argument("--max_steps", type=int, default=500, help="optimizer steps")
    group.add_argument("--learning_rate", type=float, default=1e-4)
    group.add_argument("--per_device_train_batch_size", type=int, default=8)
    group.add_argument("--gradient_accumulation_steps", type=int, default=1)
    group.add_argument("--max_length", type=int, default=1024, help="tokens per row (prompt + answer, EOS-filled)")
    group.add_argument("--block_rows", type=float, default=DISTILLATION_ARGUMENTS["block_rows"],
                       help="share of rows shown as semi-AR block rows")
    group.add_argument("--confidence_loss_weight", type=float, default=DISTILLATION_ARGUMENTS["confidence_loss_weight"],
                       help="weight of the confidence term")
    group.add_argument("--use_peft", action="store_true", help="train a LoRA adapter instead of every weight")
    group.add_argument("--lora_r", type=int, default=16)
    group.add_argument("--merge_adapter", action="store_true", help="also save the merged model to <output_dir>/merged")
    group.add_argument("--train_seed", type=int, default=0, help="seed of training (init, data order, noise); --seed is the decoding one")
    group.add_argument("--logging_steps", type=int, default=10)
    group.add_argument("--report_to", default="none", help="'none', 'tensorboard', 'wandb', ...")
    group.add_argument("--use_cpu", action="store_true", help="train on the CPU even when a GPU is present")
    # The diffusion teacher's settings. Two of them serve every teacher and the training too: --max-new-tokens is the
    # answer budget, --block-length the block of the block rows (train with the block you decode with).
    add_decoding_arguments(parser)
    return parser


def _model_type(name: str) -> str | None:
    """model_type of a local checkpoint's config.json without loading anything; None for a Hub id or GGUF dir."""
    path = Path(name).expanduser() / "config.json"
    return json.loads(path.read_text()).get("model_type") if path.is_file() else None


def check(parser: argparse.ArgumentParser, args: argparse.Namespace, settings: dict) -> None:
    """Every flag, the model paths and the prompt file, before torch is imported."""
    for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "teacher_batch_size",
                 "lora_r", "logging_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    try:
        check_training_settings({name: getattr(args, name) for name in ("max_length", "block_rows",
                                                                        "confidence_loss_weight")})
    except ValueError as error:  # the message names the flag and says what to change
        parser.error(str(error))
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        parser.error(f"--learning_rate must be > 0, got {args.learning_rate}")
    if args.merge_adapter and not args.use_peft:
        parser.error("--merge_adapter merges a LoRA adapter: add --use_peft (or drop --merge_adapter)")
    check_model(parser, args.model)
    problem = output_dir_problem(args.output_dir, overwrite=args.overwrite_output_dir, resuming=False,
                                 overwrite_flag="--overwrite_output_dir")
    if problem:
        parser.error(problem)
    if args.teacher_model is not None:
        check_model(parser, args.teacher_model)
        if args.teacher == "diffusion":
            parser.error("--teacher_model is the AR teacher: use it with --teacher base (or auto), not diffusion")
    is_diffusion = _model_type(args.model)
    if args.teacher == "diffusion" and is_diffusion not in (None, "diffusion_lm"):
        parser.error(f"{args.model} is a causal LM ({is_diffusion!r}): it answers as the AR teacher "
                     f"(--teacher base); --teacher diffusion needs a DiffusionLM checkpoint")
    if args.teacher == "base" and is_diffusion == "diffusion_lm" and args.teacher_model is None:
        parser.error(f"{args.model} is a DiffusionLM checkpoint: --teacher base needs --teacher_model DIR, the causal "
                     f"LM it was adapted from")
    check_decoding(parser, args.model if is_diffusion == "diffusion_lm" else None, settings)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = decoding_settings(args)
    check(parser, args, settings)
    prompts = read_prompts(parser, [], args.prompts, flag="--prompts")

    import torch
    from transformers import AutoConfig

    from ..configuration_dlm import DiffusionLMConfig
    from ..distill import build_distillation_dataset
    from ..loading import ModelNotFoundError, load_autoregressive_lm, load_diffusion_lm
    from ..trainer import DiffusionTrainer
    from ..training_args import DiffusionTrainingArguments
    from .options import progress

    dtype = getattr(torch, args.dtype)
    try:
        with progress(f"Loading {args.model}"):
            is_diffusion = AutoConfig.from_pretrained(args.model).model_type == DiffusionLMConfig.model_type
            model = load_diffusion_lm(args.model, adapt=True, dtype=dtype)
        teacher = args.teacher
        if teacher == "auto":
            teacher = "base" if (args.teacher_model or not is_diffusion) else "diffusion"
        if teacher == "diffusion" and not is_diffusion:
            parser.error(f"{args.model} is a causal LM: it answers as the AR teacher (--teacher base)")
        teacher_model = model
        if teacher == "base":
            if is_diffusion and args.teacher_model is None:
                parser.error("--teacher base with a DiffusionLM checkpoint needs --teacher_model DIR")
            source = args.teacher_model or args.model
            with progress(f"Loading the AR teacher {source}"):
                teacher_model = load_autoregressive_lm(source, "--teacher base", dtype=dtype)
    except (ModelNotFoundError, OSError, ValueError) as error:
        parser.error(str(error))

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    budget = settings.pop("max_new_tokens", None) or model.generation_config.max_new_tokens
    generate_kwargs = settings if teacher == "diffusion" else {}
    with progress(f"Answering {len(prompts)} prompts ({teacher} teacher)"):
        try:
            data = build_distillation_dataset(
                teacher_model, model.tokenizer, prompts, teacher=teacher, max_new_tokens=budget,
                batch_size=args.teacher_batch_size, chat_template=args.chat_template,
                keep_unfinished=args.keep_unfinished, **generate_kwargs,
            )
        except ValueError as error:
            parser.error(str(error))
    data.to_json(str(output_dir / "distillation_data.jsonl"))
    print(f"{len(data)} of {len(prompts)} answers kept -> {output_dir / 'distillation_data.jsonl'}", file=sys.stderr)
    if args.data_only:
        return 0
    if teacher_model is not model:
        del teacher_model

    block_length = settings.get("block_length") or model.generation_config.block_length
    training_args = DiffusionTrainingArguments(
        output_dir=str(output_dir), max_steps=args.max_steps, learning_rate=args.learning_rate,
        per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps, max_length=args.max_length,
        block_length=block_length, block_rows=args.block_rows, confidence_loss_weight=args.confidence_loss_weight,
        all_blocks=DISTILLATION_ARGUMENTS["all_blocks"],
        seed=args.train_seed, logging_steps=args.logging_steps, report_to=args.report_to, use_cpu=args.use_cpu,
        save_strategy="no",
    )
    peft_config = None
    if args.use_peft:
        from peft import LoraConfig

        peft_config = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r)
    trainer = DiffusionTrainer(model=model, args=training_args, train_dataset=data, processing_class=model.tokenizer,
                               peft_config=peft_config)
    trainer.train()
    trainer.save_model()
    if args.use_peft and args.merge_adapter and trainer.args.should_save:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(output_dir / "merged"), tokenizer=model.tokenizer)
    return 0


__all__ = ["build_parser", "check", "main"]
