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


def test_continuing_an_adapter_refuses_an_attention_it_was_not_trained_with(tmp_path):
    """--init-adapter reads the adapter's diffusion_config.json before SmolLM2 or the data are loaded."""
    build = load_example("build_default_adapter")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "diffusion_config.json").write_text('{"attention": "causal_prefix"}')
    with pytest.raises(SystemExit, match="--attention causal_prefix"):
        build.main(["train", "--work-dir", str(tmp_path), "--init-adapter", str(adapter), "--attention", "bidirectional"])


def test_the_data_stage_resumes_without_answering_a_prompt_twice(tmp_path, monkeypatch):
    """A data run stopped by its time cap keeps its answers; the next run answers only the (prompt, pass) pairs left.
    SmolLM2 is replaced by stubs: what is tested is the bookkeeping of answers.jsonl."""
    import torch
    import transformers

    import hf_dlm.default.smollm2 as smollm2
    import hf_dlm.evaluation as evaluation

    build = load_example("build_default_adapter")
    (tmp_path / "prompts.txt").write_text("Name a colour.\nSay hi.\nCount to three.\n")
    monkeypatch.setattr(build, "PROMPTS", tmp_path / "prompts.txt")
    asked = []

    def fake_answers(model, tokenizer, batch, **kwargs):
        asked.extend(batch)
        return [Answer(prompt=p, text="ok", tokens=[1, 2], nfe=2, seconds=0.1, ended=True) for p in batch]

    class Model:
        def eval(self):
            return self

    monkeypatch.setattr(smollm2, "find_smollm2_gguf", lambda: (str(tmp_path), "model.gguf"))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: None)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: Model())
    monkeypatch.setattr(evaluation, "answer_autoregressive", fake_answers)
    monkeypatch.setattr(evaluation, "chat_inputs", lambda tokenizer, prompts: {"input_ids": torch.zeros(1, 3)})
    work = tmp_path / "work"
    work.mkdir()
    (work / "answers.jsonl").write_text(
        '{"prompt": "Say hi.", "answer": "hi", "kind": "greedy", "length": 1, "ended": true, "degenerate": false}\n')
    build.main(["data", "--work-dir", str(work), "--samples", "0", "--dtype", "float32"])
    assert sorted(asked) == ["Count to three.", "Name a colour."]
    assert len((work / "answers.jsonl").read_text().splitlines()) == 3
    assert len((work / "train.jsonl").read_text().splitlines()) == 3
