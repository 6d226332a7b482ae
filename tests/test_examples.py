"""The helpers of the example scripts that produce the numbers in docs/ (the scripts themselves need SmolLM2)."""

import importlib.util
import time
from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from hf_dlm.evaluation import Answer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parse_variant_reads_typed_settings():
    evaluate = load_example("evaluate_default")
    assert evaluate.parse_variant("grow:threshold=0.7,block_length=8,unmasking=left_to_right,top_k=None") == {
        "length_strategy": "grow", "threshold": 0.7, "block_length": 8, "unmasking": "left_to_right", "top_k": None}
    assert evaluate.parse_variant("autoregressive:repetition_penalty=1.1,do_sample=false") == {
        "length_strategy": "autoregressive", "repetition_penalty": 1.1, "do_sample": False}
    with pytest.raises(SystemExit, match="key=value"):
        evaluate.parse_variant("grow:threshold")


def test_samples_page_labels_autoregressive_variants_as_autoregressive(tmp_path):
    evaluate = load_example("evaluate_default")
    answer = Answer(prompt="Hi", text="Hello.", tokens=[1, 2], ended=True, nfe=3, seconds=0.1)
    names = ["autoregressive", "grow", "autoregressive:repetition_penalty=1.1"]
    page = tmp_path / "samples.md"
    evaluate.write_samples_page(page, ["Hi"], {n: [answer] for n in names})
    labels = [line for line in page.read_text().splitlines() if line.startswith("**")]
    assert labels[0].startswith("**autoregressive (SmolLM2 `generate`)**")
    assert labels[1].startswith("**diffusion, `grow`**")
    assert labels[2].startswith("**autoregressive (SmolLM2 `generate`), `repetition_penalty=1.1`**")


def test_time_cap_stops_training_after_the_step_that_crosses_it(tmp_path):
    recipe = load_example("build_default_adapter")
    cap = recipe.TimeCap(minutes=1.0)
    args, state = TrainingArguments(output_dir=str(tmp_path), report_to=[]), TrainerState()
    control = TrainerControl()
    cap.on_train_begin(args, state, control)
    assert not cap.on_step_end(args, state, control).should_training_stop
    cap.started = time.time() - 61  # as if the run began 61 s ago
    assert cap.on_step_end(args, state, control).should_training_stop
