"""The command line answers at once: `--help`, `--version` and every bad-setting error come back without importing
torch or transformers (seconds saved on every typo), as one line on stderr, never a traceback."""

import json
import os
import subprocess
import sys

import pytest

from hf_dlm.cli import main as cli_main
from tests.cli_probe import heavy_modules, run_cli


def test_help_lists_the_commands_without_importing_torch():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("generate", "demo", "bench", "train"):
        assert command in result.stdout
    assert heavy_modules(result) == ""


def test_version_is_answered():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("hf-dlm ")
    assert heavy_modules(result) == ""


@pytest.mark.parametrize("command", ["generate", "demo", "bench"])
def test_command_help_is_light(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0 and "--max-new-tokens" in result.stdout or command == "bench"
    assert heavy_modules(result) == ""


@pytest.mark.parametrize(
    "argv, says",
    [
        (["generate", "--max-new-tokens", "-5", "Hi"], "max_new_tokens"),
        (["generate", "--threshold", "2", "Hi"], "threshold"),
        (["generate", "--threshold", "high", "Hi"], "expects a number"),
        (["generate", "--strategy", "longest", "Hi"], "invalid choice"),
        (["generate", "--steps", "7", "--max-new-tokens", "64", "--block-length", "16", "Hi"], "multiple of 4"),
        (["generate", "--steps", "100", "--max-new-tokens", "64", "Hi"], "more than the 64 masks"),
        (["generate", "--top-p", "0", "Hi"], "top_p"),
        (["generate", "--model", "/no/such/dir", "Hi"], "/no/such/dir: no such directory"),
        (["generate", "--model", "./missing-checkpoint", "Hi"], "no such directory"),
        (["generate", ""], "prompt is empty"),
        (["generate", "   "], "prompt is empty"),
        (["generate", "--batch-size", "0", "Hi"], "--batch-size"),
        (["demo", "--prompts", "9"], "--prompts must be between 1 and 5"),
        (["demo", "--prompt", ""], "--prompt is empty"),
        (["demo", "--block-length", "0"], "block_length"),
        (["bench", "--model", "/no/such/dir", "--prompts", "p.jsonl"], "no such directory"),
        (["bench", "--model", "x", "--prompts", "p.jsonl", "--strategies", "fixed,longest"], "unknown ['longest']"),
        (["bench", "--model", "x", "--prompts", "p.jsonl", "--thresholds", "0.9,2"], "threshold"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_settings_are_refused_before_anything_loads(argv, says):
    result = run_cli(*argv)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert heavy_modules(result) == ""


def test_an_offline_hub_id_is_explained_in_one_sentence(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as exit:
        cli_main(["generate", "--model", "someone/no-such-model", "Hi"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "someone/no-such-model is not a local directory and HF_HUB_OFFLINE is set" in err


def test_a_causal_lm_checkpoint_is_refused_with_advice(tmp_path, capsys):
    from hf_dlm.testing import char_tokenizer, tiny_causal_lm

    tok = char_tokenizer()
    tiny_causal_lm("gpt2", vocab_size=len(tok)).save_pretrained(tmp_path)
    with pytest.raises(SystemExit):
        cli_main(["generate", "--model", str(tmp_path), "Hi"])
    assert "not a DiffusionLM checkpoint" in capsys.readouterr().err


def test_train_help_leads_with_the_flags_people_set():
    result = subprocess.run([sys.executable, "-m", "hf_dlm.cli", "train", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) < 200  # was 762 before grouping, f"{len(lines)} lines"
    for flag in ("--model_name_or_path", "--dataset_name", "--max_length", "--anneal_steps", "--learning_rate",
                 "--help-all"):
        assert flag in result.stdout
    full = subprocess.run([sys.executable, "-m", "hf_dlm.cli", "train", "--help-all"], capture_output=True,
                          text=True, timeout=120)
    assert "--adam_beta1" in full.stdout and "--adam_beta1" not in result.stdout


def test_train_refuses_a_bad_setting_before_loading(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hf_dlm.cli", "train", "--model_name_or_path", str(tmp_path / "none"),
         "--dataset_name", "d.jsonl", "--output_dir", str(tmp_path / "o"), "--t_min", "0"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "t_min" in result.stderr and "Traceback" not in result.stderr


def test_import_hf_dlm_is_light_and_names_load_on_use():
    code = ("import sys, hf_dlm; assert 'torch' not in sys.modules, 'torch imported'; "
            "from hf_dlm import DiffusionLM; from transformers import AutoConfig; "
            "assert AutoConfig.for_model('diffusion_lm').__class__.__name__ == 'DiffusionLMConfig'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_generate_loads_a_saved_checkpoint_in_a_fresh_process(tmp_path):
    """The command registers the diffusion classes itself: nothing imported them before it runs."""
    from tests.conftest import make_dlm

    model, tok = make_dlm("llama")
    model.save_pretrained(tmp_path, tokenizer=tok)
    result = subprocess.run([sys.executable, "-m", "hf_dlm.cli", "generate", "--model", str(tmp_path), "--json",
                             "--max-new-tokens", "4", "--block-length", "4", "ab"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"prompt": "ab"' in result.stdout


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--verify", "--threshold", "0.5"], "threshold do not apply"),
        (["--verify", "--draft-length", "0"], "--draft-length must be >= 1"),
        (["--draft-length", "3"], "add --gated or --verify"),
        (["--gated", "--verify"], "pick one"),
        (["--gated", "--strategy", "grow"], "length_strategy do not apply"),
        (["--model", "{ckpt}", "--gated"], "is a diffusion model (no drafter)"),
        (["--model", "{ckpt}", "--verify"], "needs the causal LM that --model was adapted from"),
        (["--model", "{ckpt}", "--verifier", "{ckpt}"], "does not load as a causal LM"),
        (["--model", "{ckpt}", "--verifier", "/no/such/ar"], "/no/such/ar: no such directory"),
    ],
)
def test_generate_verify_refuses_what_does_not_apply(tmp_path, capsys, extra, says):
    from tests.conftest import make_dlm

    model, tok = make_dlm()
    model.save_pretrained(tmp_path, tokenizer=tok)
    argv = ["generate", *[a.replace("{ckpt}", str(tmp_path)) for a in extra], "Hi"]
    with pytest.raises(SystemExit) as exit:
        cli_main(argv)
    assert exit.value.code == 2
    assert says in capsys.readouterr().err


def test_generate_verify_answers_with_the_verifiers_greedy_answer(tmp_path, capsys):
    import copy

    import torch

    from hf_dlm import DiffusionLM
    from hf_dlm.testing import char_tokenizer, tiny_causal_lm

    torch.manual_seed(0)
    tok = char_tokenizer()
    verifier = tiny_causal_lm("gpt2", vocab_size=len(tok)).eval()
    verifier.save_pretrained(tmp_path / "ar")
    DiffusionLM.from_causal_lm(copy.deepcopy(verifier), tok).save_pretrained(tmp_path / "dlm")
    cli_main(["generate", "--model", str(tmp_path / "dlm"), "--verifier", str(tmp_path / "ar"), "--json",
              "--max-new-tokens", "12", "--draft-length", "3", "--dtype", "float32", "abc"])
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ids = tok("abc", return_tensors="pt").input_ids
    expected = verifier.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                                 pad_token_id=0, eos_token_id=0)[0, ids.shape[1]:].tolist()
    expected = expected[: expected.index(0)] if 0 in expected else expected
    assert record["text"] == tok.decode(expected)
    assert record["nfe"] == record["draft_forwards"] + record["verify_forwards"]


def test_generate_decodes_a_gated_drafter_checkpoint_as_its_bases_greedy_answer(tmp_path, capsys):
    import copy

    import torch

    from hf_dlm import DiffusionLM
    from hf_dlm.testing import char_tokenizer, tiny_causal_lm

    torch.manual_seed(0)
    tok = char_tokenizer()
    base = tiny_causal_lm("llama", vocab_size=len(tok)).eval()
    DiffusionLM.from_causal_lm(copy.deepcopy(base), tok, drafter="gated_lora", drafter_rank=4).save_pretrained(tmp_path)
    cli_main(["generate", "--model", str(tmp_path), "--gated", "--json", "--max-new-tokens", "12", "--draft-length", "3",
              "--dtype", "float32", "--no-chat-template", "abc"])
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ids = tok("abc", return_tensors="pt").input_ids
    expected = base.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                             pad_token_id=0, eos_token_id=0)[0, ids.shape[1]:].tolist()
    expected = expected[: expected.index(0)] if 0 in expected else expected
    assert record["text"] == tok.decode(expected)
    assert record["tokens"] == len(expected) and "accepted" in record


def test_bench_measures_a_gated_drafter_against_its_base(tmp_path, capsys):
    import copy

    import torch

    from hf_dlm import DiffusionLM
    from hf_dlm.testing import char_tokenizer, tiny_causal_lm

    torch.manual_seed(0)
    tok = char_tokenizer()
    base = tiny_causal_lm("gpt2", vocab_size=len(tok)).eval()
    base.save_pretrained(tmp_path / "ar")
    DiffusionLM.from_causal_lm(copy.deepcopy(base), tok, drafter="gated_lora", drafter_rank=4).save_pretrained(
        tmp_path / "gated")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "abc"}\n{"prompt": "q"}\n')
    out = tmp_path / "bench.json"
    argv = ["bench", "--model", str(tmp_path / "gated"), "--prompts", str(prompts), "--ar-model",
            str(tmp_path / "ar"), "--budgets", "8", "--draft-lengths", "2,3", "--batch-size", "2", "--out", str(out)]
    assert cli_main(argv) == 0
    results = json.loads(out.read_text())["results"]
    ar = next(r for r in results if r["method"] == "ar")
    gated = [r for r in results if r["method"] == "gated"]
    assert [r["block_length"] for r in gated] == [2, 3]
    assert all(r["answers"] == ar["answers"] and "speedup_vs_ar" in r for r in gated)
    with pytest.raises(SystemExit) as exit:
        cli_main(argv + ["--thresholds", "0.5"])
    assert exit.value.code == 2 and "--thresholds do not apply" in capsys.readouterr().err
