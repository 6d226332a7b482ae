"""The recipe of the embedded gated drafter: SmolLM2-135M-Instruct drafts for itself in one forward per round.

    python examples/build_default_adapter.py data --work-dir runs/gated --samples 0   # 1. SmolLM2's greedy answers
    python examples/build_gated_drafter.py train --work-dir runs/gated                 # 2. train the drafter on them
    python examples/build_gated_drafter.py train --work-dir runs/gated --train-minutes 45 --asset-dir runs/gated/asset

A gated drafter (`DiffusionLM.from_causal_lm(..., drafter="gated_lora")`, `hf_dlm.drafter_dlm`) keeps every SmolLM2
weight frozen and adds a low-rank adapter that acts only at mask positions. Its answers are SmolLM2's greedy ones
by construction; training decides only how many drafts a round keeps. Draft acceptance is what counts, so the data
are SmolLM2's *own greedy answers* to the training prompts (examples/prompts/train.txt, the data stage of
examples/build_default_adapter.py with `--samples 0`): the drafter learns to say what the verifier will say
(the cheap reproductions of I-DLM that trained on reference text reached 0.34 acceptance per position,
RESEARCH.md section 11). Every greedy answer is used, also those cut by the budget or looping: the base does that
too, and drafting it is what is asked.

Training: `DiffusionTrainer`'s drafter mode (draft rows: every cut of the answer gets `--draft-length` masks, CE at
the masks; the clean rows run first as a no-grad KV cache). Output: the drafter's weights only (`drafter.*`, a few
MB), its settings and a training log, in hf_dlm/default/assets/gated_drafter/ (`load_default_drafter` rebuilds it
on the GGUF base).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
WORK = ROOT / "runs" / "gated"
ASSET = ROOT / "hf_dlm" / "default" / "assets" / "gated_drafter"


def greedy_messages(work: Path, heldout: set[str]) -> list[dict]:
    """answers.jsonl (the data stage) -> chat rows of every greedy answer, shuffled; held-out prompts never used."""
    records = [json.loads(line) for line in open(work / "answers.jsonl")]
    rows = [
        {"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["answer"]}]}
        for r in records if r["kind"] == "greedy" and r["answer"].strip() and r["prompt"] not in heldout
    ]
    random.Random(0).shuffle(rows)
    return rows


def train(args) -> None:
    from build_default_adapter import TimeCap
    from datasets import Dataset
    from safetensors.torch import save_file

    from hf_dlm import DiffusionTrainer, DiffusionTrainingArguments
    from hf_dlm.default.smollm2 import load_smollm2_diffusion

    torch.manual_seed(args.seed)
    heldout = {p for p in (ROOT / "examples" / "prompts" / "heldout.txt").read_text().splitlines() if p.strip()}
    rows = greedy_messages(args.work_dir, heldout)
    if args.max_examples:
        rows = rows[: args.max_examples]
    model = load_smollm2_diffusion(drafter="gated_lora", drafter_rank=args.rank, attention=args.attention,
                                   dtype=torch.float32)
    training_args = DiffusionTrainingArguments(
        output_dir=str(args.work_dir / "trainer"),
        max_length=args.max_length,
        draft_length=args.draft_length,
        draft_cuts=args.draft_cuts,
        train_sampling_strategy="group_by_length",  # rows of similar length: little padding in the clean stream
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.accumulation,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=args.warmup_steps,
        weight_decay=0.0,
        use_cpu=not torch.cuda.is_available(),
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        seed=args.seed,
    )
    trainer = DiffusionTrainer(model=model, args=training_args, train_dataset=Dataset.from_list(rows),
                               processing_class=model.tokenizer)
    if args.train_minutes:
        trainer.add_callback(TimeCap(args.train_minutes))
    started = time.time()
    result = trainer.train()
    minutes = (time.time() - started) / 60
    print(f"trained {result.global_step} steps in {minutes:.1f} min, final loss {result.training_loss:.3f}", flush=True)

    asset = args.asset_dir
    asset.mkdir(parents=True, exist_ok=True)
    weights = {f"drafter.{k}": v.detach().to(torch.bfloat16).contiguous() for k, v in model.drafter.state_dict().items()}
    save_file(weights, str(asset / "drafter.safetensors"), metadata={"format": "pt"})
    settings = {"drafter": "gated_lora", "drafter_rank": args.rank, "attention": args.attention,
                "draft_length": args.draft_length}
    (asset / "drafter_config.json").write_text(json.dumps(settings, indent=1) + "\n")
    tokens = sum(len(model.tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"])
                 for r in rows)
    log = {"steps": result.global_step, "minutes": round(minutes, 1), "training_loss": result.training_loss,
           "examples": len(rows), "example_tokens": tokens,
           "rows_seen": result.global_step * args.batch_size * args.accumulation,
           "args": {k: str(v) for k, v in vars(args).items()},
           "loss_history": [h for h in trainer.state.log_history if "loss" in h]}
    (asset / "training_log.json").write_text(json.dumps(log, indent=1))
    print(f"drafter -> {asset}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["train"])
    parser.add_argument("--work-dir", type=Path, default=WORK, help="holds answers.jsonl from the data stage")
    parser.add_argument("--asset-dir", type=Path, default=ASSET, help="where the drafter's weights are written")
    parser.add_argument("--rank", type=int, default=32, help="rank of the gated adapter")
    parser.add_argument("--attention", choices=["causal", "causal_prefix"], default="causal",
                        help="attention among the masks of a draft block (causal: I-DLM)")
    parser.add_argument("--draft-length", type=int, default=4, help="masks per cut (the decoding draft_length)")
    parser.add_argument("--draft-cuts", type=int, default=64, help="cuts per row at most (random subset)")
    parser.add_argument("--max-length", type=int, default=320, help="tokens per row (prompt + answer)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--accumulation", type=int, default=2)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--train-minutes", type=float, default=None, help="time cap (the adapter is still written)")
    parser.add_argument("--max-examples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train(args)


if __name__ == "__main__":
    main()
