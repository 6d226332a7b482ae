"""DDP: DiffusionTrainer runs unchanged under torchrun, and two processes reproduce one process on the same batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.ddp_train import GLOBAL_BATCH, STEPS, train

SCRIPT = Path(__file__).with_name("ddp_train.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ddp
@pytest.mark.parametrize("sharding, confidence_loss_weight", [("ddp", 0.0), ("ddp", 1.0), ("fsdp", 0.0)])
def test_two_gloo_processes_train_like_one_process_with_the_whole_batch(tmp_path, sharding, confidence_loss_weight):
    """DDP replicates the model; FSDP (FSDP2 `full_shard` through the Trainer's `fsdp_config`) shards every
    parameter over the two processes: either way the run must equal one process with the whole batch. With the
    confidence term on too: it is divided by the all-device count like the CE, and its logged value is the average
    over processes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               HF_DLM_FSDP="1" if sharding == "fsdp" else "0")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(SCRIPT), str(tmp_path), str(confidence_loss_weight),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # gradients were synchronised (FSDP: gathered weights)
    assert ranks[0]["losses"] == ranks[1]["losses"] and len(ranks[0]["losses"]) == STEPS

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        losses, weights, world_size = train(str(tmp_path / "single"), GLOBAL_BATCH, confidence_loss_weight)
    finally:
        torch.set_num_threads(threads)
    assert world_size == 1
    # The loss normaliser counts every process's tokens, so the two halves add up to the whole batch's loss.
    # (each entry: [loss, confidence_loss], the latter None with the term off)
    assert [entry[1] is None for entry in losses] == [confidence_loss_weight == 0] * STEPS
    assert confidence_loss_weight == 0 or max(entry[1] for entry in losses) > 0  # the term is not empty
    flat = [value for entry in losses for value in entry if value is not None]
    assert [value for entry in ranks[0]["losses"] for value in entry if value is not None] == pytest.approx(flat, rel=1e-5)
    ddp_weights = torch.load(tmp_path / "weights.pt")
    for name, value in weights.items():
        assert torch.allclose(ddp_weights[name], value, atol=1e-6), name
