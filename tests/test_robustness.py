"""Nothing lost, nothing crashes (issue 25): bad and hostile inputs get a clear error that says what to change, one
line and exit code 2 on the command line, and no command destroys work (a model in --output_dir, a result file
that cannot be written after an hour's run). One table per surface."""

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from hf_dlm import DiffusionLM
from hf_dlm.cli import main as cli_main
from hf_dlm.speculative import speculative_generate
from hf_dlm.testing import char_tokenizer, tiny_causal_lm
from tests.cli_probe import heavy_modules, run_cli
from tests.conftest import make_dlm


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved tiny DiffusionLM (gpt2, 512 positions) with its tokenizer."""
    path = tmp_path_factory.mktemp("ckpt")
    model, tok = make_dlm()
    model.save_pretrained(path, tokenizer=tok)
    return path


def copy_of(checkpoint, tmp_path, change=None):
    target = tmp_path / "model"
    shutil.copytree(checkpoint, target)
    if change:
        change(target)
    return target


def cli_error(capsys, argv) -> str:
    """Run `hf-dlm ARGV` in process; it must exit with code 2 (argparse's usage error: one line, no traceback)."""
    with pytest.raises(SystemExit) as exit:
        cli_main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# --------------------------------------------------------------------------------- data loss: hf-dlm train
def edit_json(path, **changes):
    data = json.loads(path.read_text())
    for key, value in changes.items():
        target = data
        *parents, last = key.split(".")
        for parent in parents:
            target = target[parent]
        target[last] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "case, says",
    [
        ("train_into_itself", "already holds a model"),
        ("output_dir_holds_a_model", "already holds a model"),
        ("output_dir_is_a_file", "is a file, not a directory"),
        ("resume_true_without_checkpoint", "there is none"),
        ("resume_missing_directory", "no such checkpoint directory"),
        ("missing_local_data", "nope.jsonl: no such file or directory"),
        ("empty_data_file", "is empty"),
        ("no_rows_left", "none has a token to learn from"),
        ("a_none_text", "row 1: 'text' is None"),
        ("a_none_completion", "row 0: 'completion' is None"),
        ("max_length_past_positions", "more than the model's 512 positions"),
    ],
)
def test_train_refuses_what_would_lose_work_or_crash(checkpoint, tmp_path, capsys, case, says):
    model = copy_of(checkpoint, tmp_path)
    before = (model / "model.safetensors").read_bytes()
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "abc abc"}\n')
    out = tmp_path / "out"
    extra = []
    if case == "train_into_itself":
        out = model
    elif case == "output_dir_holds_a_model":
        shutil.copytree(checkpoint, out)
    elif case == "output_dir_is_a_file":
        out.write_text("not a directory")
    elif case == "resume_true_without_checkpoint":
        out.mkdir()
        extra = ["--resume_from_checkpoint", "True"]
    elif case == "resume_missing_directory":
        extra = ["--resume_from_checkpoint", str(tmp_path / "checkpoint-9")]
    elif case == "missing_local_data":
        data = Path("nope.jsonl")
    elif case == "empty_data_file":
        data.write_text("")
    elif case == "no_rows_left":
        data.write_text('{"prompt": "abcdefgh", "completion": "x"}\n')
        extra = ["--max_length", "4"]
    elif case == "a_none_text":
        data.write_text('{"text": "abc"}\n{"text": null}\n')
    elif case == "a_none_completion":
        data.write_text('{"prompt": "ab", "completion": null}\n')
    elif case == "max_length_past_positions":
        extra = ["--max_length", "1024"]
    argv = ["train", "--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", str(out),
            "--max_steps", "1", "--report_to", "none", "--use_cpu", "--max_length", "16", *extra]
    assert says in cli_error(capsys, argv)
    assert (model / "model.safetensors").read_bytes() == before


def test_an_output_dir_with_a_model_is_written_only_when_asked(checkpoint, tmp_path):
    from hf_dlm.cli.paths import output_dir_problem

    assert output_dir_problem(str(checkpoint), overwrite=False, resuming=False, overwrite_flag="--x")
    assert output_dir_problem(str(checkpoint), overwrite=True, resuming=False, overwrite_flag="--x") is None
    assert output_dir_problem(str(checkpoint), overwrite=False, resuming=True, overwrite_flag="--x") is None
    (tmp_path / "logs").mkdir()  # a directory without a model (e.g. logs only) is fine
    assert output_dir_problem(str(tmp_path), overwrite=False, resuming=False, overwrite_flag="--x") is None
    assert output_dir_problem(str(tmp_path / "new" / "deeper"), overwrite=False, resuming=False,
                              overwrite_flag="--x") is None


def test_resume_true_means_the_last_checkpoint_in_output_dir(tmp_path):
    import argparse

    from hf_dlm.cli.train import resolve_resume

    for step in (2, 10, 9):
        (tmp_path / f"checkpoint-{step}").mkdir()
    parser = argparse.ArgumentParser()
    assert resolve_resume(parser, "True", str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert resolve_resume(parser, "false", str(tmp_path)) is None
    assert resolve_resume(parser, None, str(tmp_path)) is None


def test_train_overwrite_output_dir_is_a_flag():
    from hf_dlm.cli.train import build_parser

    parsed = build_parser(full=True).parse_args_into_dataclasses(
        args=["--model_name_or_path", "m", "--dataset_name", "d", "--output_dir", "o", "--overwrite_output_dir"])
    assert parsed[3].overwrite_output_dir is True


# --------------------------------------------------------------------------------- result files
@pytest.mark.parametrize(
    "argv, says",
    [
        (["bench", "--model", "x", "--prompts", "{prompts}", "--out", "/no/such/dir/x.json"], "does not exist"),
        (["bench", "--model", "x", "--prompts", "{prompts}", "--out", "{tmp}"], "is a directory"),
        (["bench", "--model", "x", "--prompts", "{empty}"], "holds no prompt"),
        (["bench", "--model", "x", "--prompts", "{malformed}"], "not JSON"),
        (["calibrate", "--model", "{ckpt}", "--prompts", "{prompts}", "--out", "{tmp}"], "is a directory"),
        (["calibrate", "--model", "{ckpt}", "--prompts", "{prompts}", "--out", "/no/such/dir/c.json"],
         "does not exist"),
        (["calibrate", "--model", "{ckpt}", "--prompts", "{prompts}", "--threads", "-1"], "--threads must be >= 1"),
        (["generate", "--file", "{binary}", "Hi"], "is not UTF-8 text"),
        (["serve", "--device", "garbage"], "--device 'garbage' is not a device"),
        (["distill", "--model", "{ckpt}", "--prompts", "{empty}", "--output_dir", "{tmp}/o"],
         "empty.jsonl holds no prompt: give a text file"),
        (["distill", "--model", "{ckpt}", "--prompts", "{prompts}", "--output_dir", "{ckpt}"],
         "already holds a model"),
    ],
)
def test_output_paths_and_inputs_are_checked_before_the_work(tmp_path, argv, says):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"p{i}", "completion": "c"}) for i in range(40)) + "\n")
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{prompt: b}\n')
    (tmp_path / "bin").write_bytes(bytes(range(256)) * 4)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"model_type": "diffusion_lm"}')
    (ckpt / "generation_config.json").write_text("{}")
    names = {"{prompts}": prompts, "{empty}": tmp_path / "empty.jsonl", "{malformed}": tmp_path / "bad.jsonl",
             "{binary}": tmp_path / "bin", "{ckpt}": ckpt, "{tmp}": tmp_path}
    for key, value in names.items():
        argv = [a.replace(key, str(value)) for a in argv]
    result = run_cli(*argv)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
    assert heavy_modules(result) == ""  # refused before torch: no work was done, none is lost


def test_result_files_are_written_atomically(tmp_path):
    from hf_dlm.cli.paths import write_text_atomically

    target = tmp_path / "r.json"
    target.write_text("old")
    write_text_atomically(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind

    with pytest.raises(TypeError):
        write_text_atomically(target, 123)  # a failed write keeps the old file whole
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


# --------------------------------------------------------------------------------- broken checkpoints
def truncate_weights(path):
    with open(path / "model.safetensors", "r+b") as handle:
        handle.truncate(1000)


@pytest.mark.parametrize(
    "change, argv, says",
    [
        (truncate_weights, [], "damaged or truncated"),
        (lambda p: os.remove(p / "model.safetensors"), [], "no file named model.safetensors"),
        (lambda p: (p / "config.json").write_text("{not json"), [], "not a valid JSON file"),
        (lambda p: edit_json(p / "config.json", **{"backbone_config.vocab_size": 70}), [],
         "weights do not fit config.json"),
        (lambda p: edit_json(p / "config.json", mask_token_id=3), [],
         "config.json has mask_token_id=3 but generation_config.json has mask_token_id="),
        (lambda p: edit_json(p / "generation_config.json", eos_token_id=[0, 500]), [],
         "generation_config.json has eos_token_id=[0, 500], but the model has only"),
        (None, ["--device", "garbage"], "--device 'garbage' is not a device"),
        (None, ["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "--device cuda"),
        (None, ["--threads", "-1"], "--threads must be >= 1"),
    ],
)
def test_generate_explains_a_broken_checkpoint_or_device_in_one_line(checkpoint, tmp_path, capsys, change, argv,
                                                                     says):
    model = copy_of(checkpoint, tmp_path, change)
    assert says in cli_error(capsys, ["generate", "--model", str(model), "--max-new-tokens", "4", "--block-length",
                                      "4", *argv, "ab"])


def test_an_unreadable_model_directory_is_said_so(checkpoint, capsys, monkeypatch):
    """Permissions are not enforced for root (these tests may run as root), so the check is made to see them."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == checkpoint else real_access(path, mode))
    assert "permission denied" in cli_error(capsys, ["generate", "--model", str(checkpoint), "ab"])


# --------------------------------------------------------------------------------- token ids at load and training
def test_a_mask_id_the_tokenizer_disagrees_with_is_refused_at_load_and_before_training(checkpoint, tmp_path):
    from hf_dlm.loading import load_diffusion_lm
    from hf_dlm.trainer import DiffusionTrainer
    from hf_dlm.training_args import DiffusionTrainingArguments

    model_dir = copy_of(checkpoint, tmp_path)
    mask = json.loads((model_dir / "config.json").read_text())["mask_token_id"]
    edit_json(model_dir / "config.json", mask_token_id=mask - 1)
    edit_json(model_dir / "generation_config.json", mask_token_id=mask - 1)
    with pytest.raises(ValueError, match=f"the tokenizer's mask token '<\\|mask\\|>' has id {mask}"):
        load_diffusion_lm(str(model_dir))
    model = DiffusionLM.from_pretrained(model_dir)  # the two files agree; only the tokenizer tells
    args = DiffusionTrainingArguments(output_dir=str(tmp_path / "o"), report_to="none", use_cpu=True, max_length=16)
    data = Dataset.from_dict({"text": ["abc"]})
    tok = char_tokenizer()
    tok.add_special_tokens({"mask_token": "<|mask|>", "pad_token": "<|pad|>"})
    with pytest.raises(ValueError, match=f"Set mask_token_id to {mask} in config.json"):
        DiffusionTrainer(model=model, args=args, train_dataset=data, processing_class=tok)


@pytest.mark.parametrize("model_type, positions", [("gpt2", 32), ("llama", 32)])
def test_training_rows_longer_than_the_positions_are_refused_with_the_limit(tmp_path, model_type, positions):
    from hf_dlm.trainer import DiffusionTrainer
    from hf_dlm.training_args import DiffusionTrainingArguments

    model, tok = make_dlm(model_type, positions=positions)
    args = DiffusionTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, max_length=64)
    with pytest.raises(ValueError, match=f"max_length=64 is more than the model's {positions} positions"):
        DiffusionTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": ["abc"]}),
                         processing_class=tok)


# --------------------------------------------------------------------------------- training data
@pytest.mark.parametrize(
    "rows, says",
    [
        ([], "has no rows"),
        ([{"text": "abc"}, {"text": None}], "row 1: 'text' is None"),
        ([{"prompt": "ab", "completion": None}], "row 0: 'completion' is None"),
        ([{"messages": [{"role": "user", "content": "hi"}, {"content": "yo"}]}], "row 0, message 1: no string 'role'"),
        ([{"messages": []}], "not a non-empty list"),
        ([{"prompt": "abcdefghij", "completion": "x"}], "Every row of the training data was dropped"),
    ],
)
def test_bad_training_data_says_what_is_wrong_with_it(rows, says):
    from hf_dlm.data import prepare_dataset

    tok = char_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    data = Dataset.from_list(rows) if rows else Dataset.from_dict({"text": []})
    with pytest.raises(ValueError, match=says):
        prepare_dataset(data, tok, max_length=8)


def test_a_tokenizer_that_needs_sentencepiece_says_install_sentencepiece(monkeypatch):
    import importlib.util

    from hf_dlm import loading

    def fails(*args, **kwargs):
        raise ValueError("This tokenizer cannot be instantiated. Please make sure you have `sentencepiece` installed")

    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", fails)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sentencepiece"
                        else real_find_spec(name, *a))
    with pytest.raises(ImportError, match="install sentencepiece"):
        loading.load_tokenizer("some/model")


# --------------------------------------------------------------------------------- diffusion_generate values
@pytest.fixture(scope="module")
def tiny():
    model, tok = make_dlm()
    return model.eval(), tok


@pytest.mark.parametrize(
    "ids, mask, kwargs, says",
    [
        ("float", None, {}, "must hold integer token ids"),
        ("bool", None, {}, "must hold integer token ids"),
        ("ok", "twos", {}, "must hold only 0"),
        ("empty", None, {}, "batch is empty"),
        ("ok", None, {"temperature": math.nan}, "temperature"),
        ("ok", None, {"temperature": math.inf}, "temperature"),
        ("ok", None, {"repetition_penalty": math.inf}, "repetition_penalty"),
        ("ok", None, {"eos_token_id": 500}, "eos_token_id=500, but the model has only"),
        ("ok", None, {"pad_token_id": 500}, "pad_token_id=500"),
        ("ok", None, {"mask_token_id": 500}, "mask_token_id=500"),
    ],
)
def test_diffusion_generate_refuses_values_that_decode_wrongly_or_crash(tiny, ids, mask, kwargs, says):
    model, tok = tiny
    good = tok(["abc"], return_tensors="pt").input_ids
    input_ids = {"ok": good, "float": good.float(), "bool": good.bool(), "empty": good[:0]}[ids]
    attention_mask = torch.full_like(good, 2) if mask == "twos" else None
    with pytest.raises(ValueError, match=says):
        model.diffusion_generate(input_ids, attention_mask, max_new_tokens=4, block_length=4, **kwargs)


@pytest.mark.parametrize(
    "case, says",
    [
        ("eos_minus_one", "eos_token_id"),
        ("eos_past_vocab", "eos_token_id=500, but the model has only"),
        ("empty_batch", "batch is empty"),
        ("zero_row", "no real token"),
        ("float_ids", "integer token ids"),
        ("mask_twos", "must hold only 0"),
    ],
)
def test_speculative_generate_refuses_values_that_decode_wrongly_or_crash(case, says):
    torch.manual_seed(0)
    tok = char_tokenizer()
    verifier = tiny_causal_lm("gpt2", vocab_size=len(tok)).eval()
    drafter = DiffusionLM.from_causal_lm(tiny_causal_lm("gpt2", vocab_size=len(tok)), tok).eval()
    ids = tok(["ab", "cd"], return_tensors="pt").input_ids
    mask, kwargs = torch.ones_like(ids), {}
    if case == "eos_minus_one":
        kwargs["eos_token_id"] = -1
    elif case == "eos_past_vocab":
        kwargs["eos_token_id"] = 500
    elif case == "empty_batch":
        ids, mask = ids[:0], mask[:0]
    elif case == "zero_row":
        mask[1] = 0
    elif case == "float_ids":
        ids = ids.float()
    elif case == "mask_twos":
        mask = mask * 2
    with pytest.raises(ValueError, match=says):
        speculative_generate(drafter, verifier, ids, mask, max_new_tokens=4, draft_length=2, **kwargs)


# --------------------------------------------------------------------------------- lm-eval model args
@pytest.mark.parametrize(
    "args, says",
    [
        ({}, "needs pretrained="),
        ({"pretrained": "/nonexistent"}, "the directory /nonexistent does not exist"),
        ({"pretrained": "{ckpt}", "temperature": math.nan}, "temperature"),
        ({"pretrained": "{ckpt}", "max_length": 0}, "max_length must be an integer >= 2"),
        ({"pretrained": "{ckpt}", "check_greedy": "maybe"}, "check_greedy must be True or False"),
        ({"pretrained": "{ckpt}", "mc_seed": "abc"}, "mc_seed must be an integer"),
    ],
)
def test_lm_eval_model_args_are_refused_with_what_to_write(checkpoint, args, says):
    pytest.importorskip("lm_eval")
    from hf_dlm.integrations.lm_eval import DiffusionLMEval

    args = {k: (str(checkpoint) if v == "{ckpt}" else v) for k, v in args.items()}
    with pytest.raises(ValueError, match=says):
        DiffusionLMEval(**args)
