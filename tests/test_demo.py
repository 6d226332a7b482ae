"""`hf-dlm generate` and `hf-dlm demo` on a tiny saved checkpoint; the embedded default behind @slow."""

import argparse
import functools
import io
import json

import pytest
import torch

from hf_dlm import default as default_package
from hf_dlm.cli import demo, options
from hf_dlm.cli import main as cli_main
from hf_dlm.generation_dlm import DiffusionGenerationConfig
from tests.conftest import make_dlm


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model, tok = make_dlm("llama")
    path = tmp_path_factory.mktemp("ckpt") / "tiny-dlm"
    model.save_pretrained(path, tokenizer=tok)
    return str(path)


def run_generate(capsys, *argv):
    assert cli_main(["generate", *argv]) == 0
    return capsys.readouterr()


def json_lines(out):
    return [json.loads(line) for line in out.strip().splitlines()]


def test_generate_json_prints_one_object_per_prompt(checkpoint, capsys):
    out = run_generate(capsys, "--model", checkpoint, "ab", "cd", "--json", "--max-new-tokens", "8",
                       "--block-length", "4")
    records = json_lines(out.out)
    assert [r["prompt"] for r in records] == ["ab", "cd"]
    for r in records:
        assert {"prompt", "text", "tokens", "nfe", "seconds", "ended"} <= set(r)
        assert 0 <= r["tokens"] <= 8 and r["nfe"] >= 1


def test_decoding_flags_reach_the_decoder(checkpoint, capsys):
    # fixed length without a threshold commits one token per forward: NFE = the budget, whatever the model says
    out = run_generate(capsys, "--model", checkpoint, "ab", "--json", "--strategy", "fixed", "--threshold", "none",
                       "--max-new-tokens", "12", "--block-length", "4")
    assert json_lines(out.out)[0]["nfe"] == 12


def test_every_decoding_setting_has_a_flag():
    """A field added to DiffusionGenerationConfig without a flag would be unreachable from the CLI."""
    parser = argparse.ArgumentParser()
    options.add_decoding_arguments(parser)
    flags = {action.dest for action in parser._actions}
    not_flags = {"output_history", "return_dict_in_generate", "mask_token_id", "pad_token_id", "eos_token_id",
                 "bos_token_id", "transformers_version", "length_coverage"}  # a record hf-dlm calibrate writes
    fields = set(DiffusionGenerationConfig().to_dict_own()) - not_flags
    assert fields <= flags, f"no flag for {sorted(fields - flags)}"
    args = parser.parse_args(["--repetition-penalty", "1.2", "--no-defer-repeats", "--no-cache"])
    assert options.decoding_settings(args) == {"repetition_penalty": 1.2, "defer_repeats": False, "use_cache": False}
    assert options.decoding_settings(parser.parse_args(["--cache", "dual"])) == {"use_cache": "dual"}
    assert options.decoding_settings(parser.parse_args(["--cache"])) == {"use_cache": True}


def test_prompts_come_from_a_file_and_from_stdin(checkpoint, capsys, monkeypatch, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("ab\n\ncd\n")
    out = run_generate(capsys, "--model", checkpoint, "--file", str(prompts), "--json", "--max-new-tokens", "4")
    assert [r["prompt"] for r in json_lines(out.out)] == ["ab", "cd"]
    monkeypatch.setattr("sys.stdin", io.StringIO("ef\ngh\n"))
    out = run_generate(capsys, "--model", checkpoint, "-", "--json", "--max-new-tokens", "4")
    assert [r["prompt"] for r in json_lines(out.out)] == ["ef", "gh"]


def test_batched_generation_gives_each_prompt_its_own_answer(checkpoint, capsys):
    args = ["--model", checkpoint, "--json", "--max-new-tokens", "8", "--block-length", "4"]
    alone = [json_lines(run_generate(capsys, *args, p).out)[0]["text"] for p in ("ab", "cdefg")]
    batched = json_lines(run_generate(capsys, *args, "--batch-size", "2", "ab", "cdefg").out)
    assert [r["text"] for r in batched] == alone


def test_invalid_settings_and_missing_prompts_are_explained(checkpoint, capsys, monkeypatch):
    with pytest.raises(SystemExit):
        cli_main(["generate", "--model", checkpoint, "ab", "--steps", "3", "--max-new-tokens", "8", "--block-length", "4"])
    assert "multiple of 2" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(SystemExit):
        cli_main(["generate", "--model", checkpoint])
    assert "no prompt" in capsys.readouterr().err


def test_demo_without_animation_prints_the_answers_and_the_totals(checkpoint, capsys):
    assert cli_main(["demo", "--model", checkpoint, "--no-live", "--prompt", "ab", "--prompt", "cd",
                     "--max-new-tokens", "8", "--block-length", "4"]) == 0
    out = capsys.readouterr().out
    assert "2/2  cd" in out and "forwards (NFE)" in out and "All prompts" in out


def test_the_live_canvas_draws_final_text_then_the_masked_draft_and_stops_at_eos():
    """The demo's live view is a streamer: prompt, then final tokens (put) and the undecided rest (put_draft)."""
    from rich.console import Console

    model, tok = make_dlm("gpt2")
    drawn = []
    screen = type("Screen", (), {"update": lambda self, renderable: drawn.append(renderable)})()
    canvas = demo.LiveCanvas(tok, tok.mask_token_id, [tok.eos_token_id], screen, "t")
    a, b, mask, eos = *tok.convert_tokens_to_ids(["a", "b"]), tok.mask_token_id, tok.eos_token_id
    canvas.put(torch.tensor([7]))  # the prompt: not drawn
    canvas.put(torch.tensor([a]))
    canvas.put_draft(torch.tensor([mask, mask]))
    canvas.put(torch.tensor([b, eos]))
    console = Console(width=60, record=True)
    console.print(drawn[0])
    first = console.export_text()
    console.print(drawn[-1])
    last = console.export_text()
    assert "a" + demo.MASK_GLYPH * 2 in first and "1/3 positions decided" in first
    assert "ab \u23ce" in last and demo.MASK_GLYPH not in last and "3/3 positions decided" in last


def test_the_live_canvas_follows_a_real_decode(checkpoint):
    from hf_dlm.loading import load_diffusion_lm

    model = load_diffusion_lm(checkpoint)
    drawn = []
    screen = type("Screen", (), {"update": lambda self, renderable: drawn.append(renderable)})()
    view = demo.LiveCanvas(model.tokenizer, model.config.mask_token_id, model.config.eos_token_ids, screen, "t")
    ids = model.tokenizer(["ab"], return_tensors="pt").input_ids
    out = model.diffusion_generate(ids, max_new_tokens=8, block_length=4, length_strategy="fixed", threshold=None,
                                   streamer=view)
    answer = [t for t in out[0, ids.shape[1] :].tolist() if t != model.config.pad_token_id]
    assert view.final == answer[: len(view.final)] and len(view.final) >= 1
    assert len(drawn) >= 8  # one drawing per step, and one at the end


# ----------------------------------------------------------------------------------------------- the default
_REAL_LOAD_DEFAULT = default_package.load_default  # taken before the fixture patches it

@functools.cache
def _default_pair():
    return _REAL_LOAD_DEFAULT(autoregressive=True)


@pytest.fixture
def default_model(monkeypatch):
    """The embedded default, loaded once for every slow test of this file."""
    pytest.importorskip("gguf")
    monkeypatch.setattr("hf_dlm.default.load_default", lambda *a, autoregressive=False, **k:
                        _default_pair() if autoregressive else _default_pair()[0])
    return _default_pair()


@pytest.mark.slow
def test_the_default_model_answers_through_the_cli_within_its_budget(default_model, capsys):
    """The pipeline, not the quality (docs/quality.md measures that): JSON records with every field, the budget
    respected, a finished answer shorter than the budget."""
    assert cli_main(["generate", "--json", "--max-new-tokens", "32", "What is the capital of Germany?",
                     "List three birds."]) == 0
    records = json_lines(capsys.readouterr().out)
    assert [r["prompt"] for r in records] == ["What is the capital of Germany?", "List three birds."]
    for record in records:
        assert {"prompt", "text", "tokens", "nfe", "seconds", "ended"} <= set(record)
        assert 0 < record["tokens"] <= 32 and record["nfe"] >= 1 and record["seconds"] > 0
        assert record["ended"] or record["tokens"] == 32


@pytest.mark.slow
def test_the_demo_runs_to_the_end_next_to_the_autoregressive_model(default_model, capsys):
    assert cli_main(["demo", "--no-live", "--prompt", "Write a haiku about snow.", "--max-new-tokens", "64"]) == 0
    out = capsys.readouterr().out
    assert "autoregressive (SmolLM2)" in out and "diffusion (" in out and "All prompts" in out
