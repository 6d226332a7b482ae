"""`hf-dlm train`: adapt or fine-tune a causal LM into a diffusion LM with `DiffusionTrainer`.

    hf-dlm train --model_name_or_path gpt2 --dataset_name data.jsonl --output_dir out --max_steps 1000

Flags are the fields of `ModelArguments`, `DataArguments` (below) and `DiffusionTrainingArguments`
(hf_dlm/training_args.py) with transformers' `TrainingArguments`: about 150 in all. `--help` shows the ones people
set, grouped; `--help-all` shows every one. Settings are validated (the dataclasses' `__post_init__`) before any
model or data is loaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

# The flags `--help` shows, by group, in this order; every other flag still works (`--help-all` lists them).
KEY_FLAGS = {
    "model": ("model_name_or_path", "gguf_file", "tokenizer_name_or_path", "model_dtype", "attention", "use_peft",
              "lora_r", "merge_adapter"),
    "data": ("dataset_name", "dataset_train_split", "dataset_test_split", "dataset_format",
             "max_length", "padding", "packing", "eos_fill"),
    "diffusion objective": ("t_min", "t_max", "anneal_steps", "eos_always_masked", "block_rows", "block_length",
                            "confidence_loss_weight"),
    "optimisation": ("output_dir", "max_steps", "num_train_epochs", "per_device_train_batch_size",
                     "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type", "warmup_steps",
                     "bf16", "seed"),
    "saving and logging": ("save_steps", "logging_steps", "report_to", "resume_from_checkpoint",
                           "overwrite_output_dir", "push_to_hub"),
}


@dataclass
class ModelArguments:
    """Which causal LM to adapt (or DiffusionLM to keep training), and LoRA."""

    model_name_or_path: str = field(
        metadata={"help": "Hub id or directory of a causal LM to adapt (gpt2, HuggingFaceTB/SmolLM2-135M, ...) or of a "
                  "DiffusionLM checkpoint to keep training."}
    )
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file inside model_name_or_path."})
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "'sdpa' or 'eager' (kernels honouring masks)."})
    model_dtype: str | None = field(default=None, metadata={"help": "Load the weights in this dtype (e.g. bfloat16)."})
    attention: str | None = field(
        default=None,
        metadata={"help": "When adapting a causal LM: 'bidirectional' (DiffuLLaMA, the default) or 'causal_prefix' "
                  "(block diffusion with a causal context; with the AR term, on by default for it, the recipe that "
                  "met its AR base in docs/benchmarks.md).", "choices": ["bidirectional", "causal_prefix"]},
    )
    use_peft: bool = field(default=False, metadata={"help": "Train a LoRA adapter instead of every weight."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (DiffuLLaMA's SFT: 16)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names to adapt; default all linear layers (LM head excluded)."}
    )
    merge_adapter: bool = field(
        default=False,
        metadata={"help": "After LoRA training, also save the merged full model to <output_dir>/merged (loads with "
                  "AutoModel.from_pretrained(..., trust_remote_code=True))."},
    )


@dataclass
class DataArguments:
    """Where the data comes from (the format and tokenisation are DiffusionTrainingArguments fields)."""

    dataset_name: str = field(
        metadata={"help": "Hub dataset id, a save_to_disk directory, or a local .txt/.json/.jsonl/.csv/.parquet file."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str | None = field(default=None, metadata={"help": "Split to evaluate on (none: no eval)."})
    dataset_streaming: bool = field(default=False, metadata={"help": "Stream the dataset (set max_steps)."})


@dataclass
class OutputArguments:
    """What may happen to an --output_dir that already holds a model."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train into an --output_dir that already holds a model (config.json, weights, an adapter or "
                  "checkpoints), replacing it; without it such a directory is refused unless "
                  "--resume_from_checkpoint continues the run saved there."},
    )


def build_parser(full: bool = False):
    """transformers' `HfArgumentParser` over the three dataclasses; unless `full`, only `KEY_FLAGS` show in the
    help, in their groups (the others are parsed all the same)."""
    from transformers import HfArgumentParser

    from ..training_args import DiffusionTrainingArguments

    parser = HfArgumentParser((ModelArguments, DataArguments, DiffusionTrainingArguments, OutputArguments))
    parser.prog = "hf-dlm train"
    parser.description = ("Adapt a causal LM (Hub id, directory, GGUF) into a diffusion LM, or keep training one, with "
                          "DiffusionTrainer. docs/training.md is the guide.")
    parser.add_argument("--help-all", action="store_true", help="list every flag, TrainingArguments' included")
    if full:
        return parser
    by_dest = {action.dest: action for action in parser._actions}
    shown = {dest for dests in KEY_FLAGS.values() for dest in dests}
    for action in parser._actions:
        if action.dest not in shown and action.dest not in ("help", "help_all"):
            action.help = argparse.SUPPRESS
    # Regroup the key flags: argparse prints groups in creation order, each with its own title.
    for group in parser._action_groups:
        group._group_actions = [a for a in group._group_actions if a.dest in ("help", "help_all")]
    for title, dests in KEY_FLAGS.items():
        group = parser.add_argument_group(title)
        group._group_actions.extend(by_dest[d] for d in dests if d in by_dest)
    parser.usage = "hf-dlm train --model_name_or_path M --dataset_name D --output_dir OUT [options]"
    parser.epilog = "More flags (about 150, transformers' TrainingArguments): hf-dlm train --help-all"
    return parser


def resolve_resume(parser, resume: str | None, output_dir: str) -> str | None:
    """`--resume_from_checkpoint`: a checkpoint directory, or True / False (transformers' convention: True = the
    last `checkpoint-*` in --output_dir). Refused at once when there is nothing to resume from."""
    from pathlib import Path

    if resume is None or resume.strip().lower() in ("false", "no", "0", ""):
        return None
    if resume.strip().lower() in ("true", "yes", "1"):
        directory = Path(output_dir).expanduser()
        found = sorted(directory.glob("checkpoint-*"), key=_checkpoint_step) if directory.is_dir() else []
        found = [p for p in found if p.is_dir() and _checkpoint_step(p) >= 0]
        if not found:
            parser.error(f"--resume_from_checkpoint True resumes from the last checkpoint-* in --output_dir "
                         f"{output_dir}, and there is none: name a checkpoint directory, or drop the flag")
        return str(found[-1])
    if not Path(resume).expanduser().is_dir():
        parser.error(f"--resume_from_checkpoint {resume}: no such checkpoint directory (or pass True for the last "
                     f"checkpoint in --output_dir)")
    return resume


def _checkpoint_step(path) -> int:
    step = path.name.removeprefix("checkpoint-")
    return int(step) if step.isdigit() else -1


def check_paths(parser, data_args, training_args, output_args) -> str | None:
    """Before any loading: the data file exists, --output_dir may be written, the checkpoint to resume exists.
    Returns the checkpoint to resume from (None: a fresh run)."""
    from ..data import local_data_problem
    from .paths import output_dir_problem

    problem = local_data_problem(data_args.dataset_name)
    if problem:
        parser.error(f"--dataset_name {problem}")
    resume = resolve_resume(parser, training_args.resume_from_checkpoint, training_args.output_dir)
    problem = output_dir_problem(training_args.output_dir, overwrite=output_args.overwrite_output_dir,
                                 resuming=resume is not None, overwrite_flag="--overwrite_output_dir")
    if problem:
        parser.error(problem)
    return resume


def load_model(parser, model_args):
    from ..loading import load_diffusion_lm
    from .options import one_line

    try:
        return load_diffusion_lm(
            model_args.model_name_or_path,
            adapt=True,
            gguf_file=model_args.gguf_file,
            tokenizer=model_args.tokenizer_name_or_path,
            attn_implementation=model_args.attn_implementation,
            dtype=model_args.model_dtype,
            attention=model_args.attention,
        )
    except (OSError, ValueError) as error:  # ModelNotFoundError, unreadable or broken files: the message says which
        parser.error(one_line(error))


def load_datasets(parser, data_args):
    from ..data import load_training_dataset
    from .options import one_line

    load = dict(config=data_args.dataset_config, streaming=data_args.dataset_streaming)
    splits = [data_args.dataset_train_split] + ([data_args.dataset_test_split] if data_args.dataset_test_split else [])
    try:
        loaded = [load_training_dataset(data_args.dataset_name, split=split, **load) for split in splits]
    except (OSError, ValueError) as error:
        parser.error(f"--dataset_name {data_args.dataset_name}: {one_line(error)}")
    return loaded[0], (loaded[1] if len(loaded) > 1 else None)


def main(argv: list[str] | None = None) -> int:
    """`hf-dlm train`: adapt / fine-tune with DiffusionTrainer. Every DiffusionTrainingArguments field is a flag;
    `--help` lists the ones people set, `--help-all` all of them (transformers' TrainingArguments included)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help-all" in argv or not argv or "-h" in argv or "--help" in argv:
        build_parser(full="--help-all" in argv).print_help()
        return 0
    parser = build_parser(full=True)
    try:
        model_args, data_args, training_args, output_args, _ = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # __post_init__ validation: the message says what to change
        parser.error(str(error))
    resume = check_paths(parser, data_args, training_args, output_args)
    model = load_model(parser, model_args)
    train_dataset, eval_dataset = load_datasets(parser, data_args)
    peft_config = None
    if model_args.use_peft:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout,
            target_modules=model_args.lora_target_modules,
        )
    from ..trainer import DiffusionTrainer

    try:
        trainer = DiffusionTrainer(
            model=model,
            args=training_args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=model.tokenizer,
            peft_config=peft_config,
        )
    except ValueError as error:  # the data, the token ids, max_length: the message says what to change
        parser.error(str(error))
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    trainer.create_model_card(dataset=data_args.dataset_name)  # README.md: the card, with this run's arguments
    if eval_dataset is not None:
        trainer.evaluate()
    if model_args.use_peft and model_args.merge_adapter and trainer.args.should_save:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(os.path.join(training_args.output_dir, "merged"), tokenizer=model.tokenizer)
    return 0


__all__ = ["DataArguments", "KEY_FLAGS", "ModelArguments", "OutputArguments", "build_parser", "main", "resolve_resume"]
