"""Stage 1: pretrain a small GPT-2 autoregressively on the tasks, with the plain `transformers.Trainer`.

This is the "pretrained causal LM" that adaptation starts from, and the AR baseline of every speed table. It
trains on the same examples as the diffusion runs, one per row; the loss is next-token cross-entropy on completion + EOS
tokens only (prompts are random strings, nothing to learn there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from common import Stopwatch, base_tokenizer, fresh_gpt2, train_rows, write_json
from config import Preset
from transformers import Trainer, TrainingArguments


@dataclass
class CausalCollator:
    """Right-pads the rows; labels are the input ids where `loss_mask` is 1, -100 elsewhere (GPT-2 shifts them)."""

    pad_token_id: int

    def __call__(self, features):
        length = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        labels = torch.full_like(input_ids, -100)
        for row, f in enumerate(features):
            ids, loss = torch.tensor(f["input_ids"]), torch.tensor(f["loss_mask"]).bool()
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
            labels[row, : len(ids)] = torch.where(loss, ids, -100)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def training_arguments(preset: Preset, output_dir: Path, steps: int, lr: float, rows_per_step: int) -> dict:
    """Arguments shared by the AR and diffusion runs: the same optimizer, schedule shape and seed."""
    return dict(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=rows_per_step,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=min(preset.warmup_steps, max(steps - 1, 0)),
        weight_decay=0.01,
        logging_steps=max(1, steps // 20),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=preset.seed,
        remove_unused_columns=False,  # keep `loss_mask` for the collators
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )


def train_ar(preset: Preset, out: Path) -> Path:
    tokenizer = base_tokenizer()
    rows = train_rows(preset, tokenizer)
    model = fresh_gpt2(preset, len(tokenizer), tokenizer)
    args = TrainingArguments(**training_arguments(preset, out / "ar-run", preset.ar_steps, preset.ar_lr,
                                                  preset.ar_rows_per_step))
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=CausalCollator(tokenizer.pad_token_id))
    clock = Stopwatch()
    trainer.train()
    path = out / "ar"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    write_json(path / "train_log.json", {"stage": "ar", "steps": preset.ar_steps, "seconds": clock.seconds,
                                         "rows": len(rows), "losses": losses, "preset": preset.to_dict()})
    return path
