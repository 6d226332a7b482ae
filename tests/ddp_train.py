"""A few DiffusionTrainer steps on a tiny model: launched by tests/test_ddp.py under torchrun (2 CPU processes, gloo)
and called in one process, to show that DDP (and FSDP, with HF_DLM_FSDP=1) reproduces the single-process run.

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_train.py OUTPUT_DIR [CONFIDENCE_LOSS_WEIGHT]
    HF_DLM_FSDP=1 python -m torch.distributed.run --nproc_per_node 2 tests/ddp_train.py OUTPUT_DIR

Each rank writes OUTPUT_DIR/rank<r>.json (logged losses, world size, a checksum of its weights); rank 0 also writes
the final weights to OUTPUT_DIR/weights.pt.
"""

import json
import os
import sys

import torch

GLOBAL_BATCH = 4  # split over the processes
STEPS = 3


def train(output_dir: str, per_device_batch: int, confidence_loss_weight: float = 0.0, fsdp: bool = False):
    from datasets import Dataset

    from hf_dlm import DiffusionLM, DiffusionTrainer, DiffusionTrainingArguments
    from hf_dlm.testing import char_tokenizer, tiny_causal_lm

    torch.manual_seed(0)
    tok = char_tokenizer()
    model = DiffusionLM.from_causal_lm(tiny_causal_lm("gpt2", vocab_size=len(tok)), tok)
    docs = [f"sort {n * 7919 % 100000}={''.join(sorted(str(n * 7919 % 100000)))}" for n in range(40)]
    args = DiffusionTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=per_device_batch, max_steps=STEPS, logging_steps=1,
        optim="sgd", learning_rate=0.5,  # SGD: the update is the gradient itself, compared exactly
        max_length=24, seed=0, report_to="none", save_strategy="no", disable_tqdm=True,
        use_cpu=True,  # on a machine without GPUs accelerate sets up DDP (gloo) only for use_cpu
        # Antithetic levels are stratified per device, so they depend on the device count; independent levels
        # make each example's noise the same in both layouts.
        antithetic=False,
        confidence_loss_weight=confidence_loss_weight,
        # FSDP (full adaptation of a model too big for one device): every parameter sharded over the processes.
        **(dict(fsdp=True, fsdp_config={"fsdp_version": 2, "reshard_after_forward": True,
                                                "auto_wrap_policy": "NO_WRAP"}) if fsdp else {}),
    )
    trainer = DiffusionTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": docs}),
                               processing_class=tok)
    trainer.train()
    losses = [[h["loss"], h.get("confidence_loss")] for h in trainer.state.log_history if "loss" in h]
    state = trainer.accelerator.get_state_dict(trainer.model) if fsdp else model.state_dict()
    return losses, {k: v.detach().clone() for k, v in state.items()}, args.world_size


def main(output_dir: str, confidence_loss_weight: float = 0.0) -> None:
    torch.set_num_threads(1)
    os.makedirs(output_dir, exist_ok=True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    losses, weights, world_size = train(output_dir, GLOBAL_BATCH // world, confidence_loss_weight,
                                        fsdp=os.environ.get("HF_DLM_FSDP") == "1")
    rank = int(os.environ.get("RANK", "0"))
    checksum = sum(w.double().sum().item() for w in weights.values())
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"losses": losses, "world_size": world_size, "checksum": checksum}, f)
    if rank == 0:
        torch.save(weights, os.path.join(output_dir, "weights.pt"))
    if torch.distributed.is_initialized():
        # Leaving gloo's threads to die with the interpreter sometimes aborts a rank at exit ("terminate called
        # without an active exception", seen in CI after training had finished): shut the group down first.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], *map(float, sys.argv[2:3]))
