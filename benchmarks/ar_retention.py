"""Does adaptation keep the AR base's own skill? (docs/benchmarks.md, "Adaptation signal per step")

A causal-prefix model (`DiffusionLM.from_causal_lm(..., attention="causal_prefix")`) reads its context exactly as
the causal LM does, so its clean stream *is* a causal LM: teacher-forced on held-out prompts with `canvas_start` at
the end (everything is context), its next-token argmax should stay what the AR base predicts. This script adapts the
suite's AR base with `DiffusionTrainer` for `--steps` steps, each variant from the same start, and every `--every`
steps measures on `--n-test` held-out prompts of `--task` the share of answer tokens, and of whole answers, that
the clean stream still gets right (the AR base: 100% / 100% on `sort`). The diffusion loss's gradients go through the
same weights; the AR term (`ar_loss_weight`) and the learning rate decide how much of the AR skill survives.

    python benchmarks/ar_retention.py --variant w1=ar_loss_weight=1 --variant w10=ar_loss_weight=10 \\
        --variant w1_lr3e-5=ar_loss_weight=1,lr=3e-5 --out benchmarks/results/ar_retention.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def clean_stream_accuracy(model, tokenizer, records) -> tuple[float, float]:
    """(token accuracy, whole-answer accuracy) of the clean stream's next-token argmax, teacher-forced."""
    import torch

    eos = tokenizer.eos_token_id
    right = total = whole = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for record in records:
            prompt = tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
            answer = tokenizer(" " + record["completion"], add_special_tokens=False)["input_ids"] + [eos]
            ids = torch.tensor([prompt + answer])
            logits = model(input_ids=ids, canvas_start=ids.shape[1]).logits[0, len(prompt):]  # aligned, all context
            correct = logits.argmax(-1) == torch.tensor(answer)
            right, total, whole = right + int(correct.sum()), total + len(answer), whole + bool(correct.all())
    model.train(was_training)
    return right / total, whole / len(records)


def run_variant(args, preset, ar_dir: Path, data, records, name: str, changed: dict) -> dict:
    """Adapt the AR base with `changed`, probing the clean stream every `args.every` steps."""
    from train_ar import training_arguments
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from hf_dlm import DiffusionLM, DiffusionTrainer, DiffusionTrainingArguments

    lr = float(changed.pop("lr", args.lr))
    tokenizer = AutoTokenizer.from_pretrained(ar_dir)
    model = DiffusionLM.from_causal_lm(AutoModelForCausalLM.from_pretrained(ar_dir, attn_implementation="sdpa"),
                                       tokenizer, attention="causal_prefix")
    history = [{"step": 0, **dict(zip(("token", "answer"), clean_stream_accuracy(model, tokenizer, records)))}]

    class Probe(TrainerCallback):
        def on_step_end(self, targs, state, control, **kwargs):
            if state.global_step % args.every == 0:
                token, answer = clean_stream_accuracy(model, tokenizer, records)
                history.append({"step": state.global_step, "token": token, "answer": answer})
                print(f"{name} step {state.global_step}: token {token:.4f}, answer {answer:.3f}", flush=True)

    training = DiffusionTrainingArguments(
        **training_arguments(preset, args.work / name, args.steps, lr, preset.diffusion_rows_per_step)
        | {"lr_scheduler_type": "constant_with_warmup", "save_strategy": "no", "logging_steps": args.every},
        max_length=preset.row_length, block_length=preset.block_length, anneal_steps=0, **changed)
    trainer = DiffusionTrainer(model=model, args=training, train_dataset=data, processing_class=model.tokenizer,
                               callbacks=[Probe()])
    trainer.train()
    # With the AR term the trainer logs the diffusion term apart; without it the loss is the diffusion term.
    logged = [h for h in trainer.state.log_history if "loss" in h]
    return {"changed": changed, "lr": lr, "clean_stream": history,
            "diffusion_loss": [(h["step"], h.get("diffusion_loss", h["loss"])) for h in logged]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="full")
    parser.add_argument("--ar", type=Path, help="the AR base (default benchmarks/checkpoints/<preset>/ar)")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=FIELD=VALUE,...",
                        help="DiffusionTrainingArguments fields (and lr=) changed for this variant")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--task", default="sort")
    parser.add_argument("--n-test", type=int, default=64)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ar_retention"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from common import ar_base_dir, quiet_torch, task_dataset, write_json
    from config import get_preset
    from run import _typed
    from tasks import make_split
    quiet_torch(1)
    preset = get_preset(args.preset)
    ar_dir = ar_base_dir(args.ar, args.preset)
    records = make_split("test", 16 * args.n_test, seed=0, tasks=[args.task])[: args.n_test]
    data = task_dataset(preset, "train").remove_columns("task")
    payload = {"preset": args.preset, "ar": str(ar_dir), "task": args.task, "n": len(records), "steps": args.steps,
               "schedule": "constant_with_warmup", "warmup_steps": preset.warmup_steps, "variants": {}}
    for spec in args.variant:
        name, _, fields = spec.partition("=")
        changed = {k: _typed(v) for k, v in (item.split("=", 1) for item in fields.split(",") if item)}
        payload["variants"][name] = run_variant(args, preset, ar_dir, data, records, name, changed)
        write_json(args.out, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
