"""transformers' doors: `pipeline("text-generation")` on a saved checkpoint (string, batch, chat), `generate` with a
GenerationConfig and the usual keyword arguments (and refusals of what it cannot honour), stop strings and stopping
criteria that end rows early, gated drafters through the same doors, and a pushed folder a fresh process answers from.
"""

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.errors import EntryNotFoundError
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList, pipeline
from transformers.generation.stopping_criteria import MaxLengthCriteria
from transformers.utils import hub

from hf_dlm import DiffusionGenerationConfig, DiffusionLM
from tests.conftest import make_dlm
from tests.isolated import run_without_hf_dlm
from tests.test_drafter import gated
from tests.test_remote_code import REMOTE_CODE

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")
DECODE = dict(max_new_tokens=12, block_length=4, length_strategy="grow")
# A tiny qwen2 (seed 0) answers "abc" greedily, one token per step, with "cccccccnnnnnnnnnnnnnnnnn" (24 tokens).
STEPWISE = dict(max_new_tokens=24, block_length=4, length_strategy="grow", threshold=None)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, tok = make_dlm("llama")
    tok.chat_template = CHAT_TEMPLATE
    path = tmp_path_factory.mktemp("pipeline") / "tiny-dlm"
    model.save_pretrained(path, tokenizer=tok)
    return SimpleNamespace(path=path, model=model.eval(), tokenizer=tok)


@pytest.fixture(scope="module")
def pipe(saved):
    return pipeline("text-generation", model=str(saved.path), trust_remote_code=True)


def prompt_ids(tok, text):
    return tok(text, return_tensors="pt").input_ids


def answer_text(tok, sequences, prompt_width):
    return tok.decode(sequences[0, prompt_width:], skip_special_tokens=True)


# ----------------------------------------------------------------------------------------------- the pipeline
def test_the_pipeline_loads_the_checkpoint_as_a_causal_lm_and_answers_as_diffusion_generate(saved, pipe):
    assert type(pipe.model).__name__ == "DiffusionLM"
    ids = prompt_ids(saved.tokenizer, "abc")
    expected = saved.model.diffusion_generate(ids, **DECODE)  # the checkpoint's defaults: greedy
    out = pipe("abc", **DECODE, return_tensors=True)
    assert out[0]["generated_token_ids"] == expected[0].tolist()
    text = pipe("abc", **DECODE)[0]["generated_text"]
    assert text == "abc" + answer_text(saved.tokenizer, expected, ids.shape[1])
    # Without any setting the pipeline keeps the checkpoint's decoding (greedy), not its own sampling default.
    default = saved.model.diffusion_generate(ids)
    assert pipe("abc", return_full_text=False)[0]["generated_text"] == answer_text(saved.tokenizer, default, 3)


def test_a_batch_through_the_pipeline_answers_each_prompt_as_alone(saved, pipe):
    prompts = ["abc", "hello there", "q"]
    out = pipe(prompts, batch_size=2, return_full_text=False, **DECODE)  # left-padded batches of 2
    for prompt, answers in zip(prompts, out):
        ids = prompt_ids(saved.tokenizer, prompt)
        alone = saved.model.diffusion_generate(ids, **DECODE)
        assert answers[0]["generated_text"] == answer_text(saved.tokenizer, alone, ids.shape[1])


def test_chat_messages_go_through_the_chat_template(saved, pipe):
    messages = [{"role": "user", "content": "hi there"}]
    out = pipe(messages, **DECODE)[0]["generated_text"]
    ids = saved.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                              return_dict=True).input_ids
    expected = saved.model.diffusion_generate(ids, **DECODE)
    assert out[:-1] == messages
    assert out[-1] == {"role": "assistant", "content": answer_text(saved.tokenizer, expected, ids.shape[1])}


def test_sampling_through_the_pipeline_equals_diffusion_generate_with_the_same_seed(saved, pipe):
    ids = prompt_ids(saved.tokenizer, "abc")
    expected = saved.model.diffusion_generate(ids, temperature=0.8, top_p=0.9, seed=3, **DECODE)
    out = pipe("abc", do_sample=True, temperature=0.8, top_p=0.9, seed=3, return_full_text=False, **DECODE)
    assert out[0]["generated_text"] == answer_text(saved.tokenizer, expected, 3)


def test_a_stop_sequence_in_the_pipeline_keeps_the_stop_and_ends_there(saved, pipe):
    full = pipe("abc", return_full_text=False, **DECODE)[0]["generated_text"]
    stop = full[1:3]
    text = pipe("abc", stop_sequence=stop, return_full_text=False, **DECODE)[0]["generated_text"]
    assert text == full[: full.index(stop) + len(stop)]


# ----------------------------------------------------------------------------------------------- generate()
def test_generate_honours_a_plain_generation_config(saved):
    model, ids = saved.model, prompt_ids(saved.tokenizer, "abc")
    greedy = model.generate(ids, generation_config=GenerationConfig(max_new_tokens=6, do_sample=False))
    assert torch.equal(greedy, model.diffusion_generate(ids, max_new_tokens=6, temperature=0.0))
    config = GenerationConfig(max_new_tokens=6, do_sample=True, temperature=0.7, top_k=20, top_p=0.9)
    sampled = model.generate(ids, generation_config=config, seed=11)
    assert torch.equal(sampled, model.diffusion_generate(ids, max_new_tokens=6, temperature=0.7, top_k=20, top_p=0.9,
                                                         seed=11))
    # keyword arguments override the config's fields, as in transformers
    assert model.generate(ids, generation_config=config, do_sample=False).equal(greedy)


def test_generate_maps_the_usual_keyword_arguments(saved):
    model, tok = saved.model, saved.tokenizer
    ids = prompt_ids(tok, "abc")
    assert model.generate(ids, max_length=9, do_sample=False).equal(model.diffusion_generate(ids, max_new_tokens=6))
    eos = tok.convert_tokens_to_ids("c")  # an EOS the model will produce at once
    assert model.generate(ids, eos_token_id=eos, max_new_tokens=6).equal(
        model.diffusion_generate(ids, eos_token_id=eos, max_new_tokens=6))
    assert model.generate(ids, do_sample=True, max_new_tokens=6, seed=2).equal(
        model.diffusion_generate(ids, temperature=1.0, max_new_tokens=6, seed=2))  # transformers' default temperature
    twice = model.generate(ids, do_sample=True, temperature=0.9, num_return_sequences=2, max_new_tokens=6, seed=4)
    assert twice.equal(model.diffusion_generate(ids.repeat(2, 1), temperature=0.9, max_new_tokens=6, seed=4))
    assert model.generate(ids, num_beams=1, output_scores=False, logits_processor=[], max_new_tokens=6).shape[0] == 1


def test_the_checkpoint_shows_transformers_whether_it_samples(saved, tmp_path):
    config = DiffusionGenerationConfig(temperature=0.0)
    assert config.do_sample is False and config.to_diff_dict()["do_sample"] is False
    assert DiffusionGenerationConfig(do_sample=True).temperature == 1.0
    config.do_sample = True
    assert config.temperature == 1.0 and config.do_sample
    assert json.loads((saved.path / "generation_config.json").read_text())["do_sample"] is False
    loaded = DiffusionGenerationConfig.from_pretrained(saved.path)
    assert loaded.to_dict_own() == saved.model.generation_config.to_dict_own()
    with pytest.raises(ValueError, match="temperature"):
        DiffusionGenerationConfig(do_sample=False, temperature=0.5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_beams=2), "beam search"),
    (dict(output_scores=True), "no per-token scores"),
    (dict(min_new_tokens=3), "cannot forbid EOS"),
    (dict(logits_processor=[lambda ids, scores: scores]), "no logits processors"),
    (dict(do_sample=False, temperature=0.7), "pass do_sample=True"),
    (dict(do_sample=False, top_p=0.5), "restricts sampling"),
    (dict(do_sample=True, temperature=0.0), "needs a temperature > 0"),
    (dict(num_return_sequences=2), "needs sampling"),
    (dict(typical_p=0.5), r"cannot honour \['typical_p'\]"),
    (dict(stop_strings=["x"]), "pass tokenizer="),
])
def test_generate_refuses_what_it_cannot_honour(saved, kwargs, message):
    with pytest.raises(ValueError, match=message):
        saved.model.generate(prompt_ids(saved.tokenizer, "abc"), max_new_tokens=6, **kwargs)


def test_a_max_length_that_leaves_no_answer_is_refused(saved):
    with pytest.raises(ValueError, match="leaves no room for an answer"):
        saved.model.generate(prompt_ids(saved.tokenizer, "abc"), max_length=3)


# ----------------------------------------------------------------------------------------------- stopping early
@pytest.fixture(scope="module")
def stepwise():
    model, tok = make_dlm("qwen2", seed=0)
    return model.eval(), tok


def test_a_stop_string_ends_the_row_early_and_keeps_the_stop(stepwise):
    model, tok = stepwise
    ids = prompt_ids(tok, "abc")
    full = model.diffusion_generate(ids, return_dict_in_generate=True, **STEPWISE)
    text = answer_text(tok, full.sequences, 3)
    assert text == "ccccccc" + "n" * 17  # the tiny model's answer, which the numbers below rely on
    out = model.generate(ids, stop_strings=["cn"], tokenizer=tok, return_dict_in_generate=True, **STEPWISE)
    assert answer_text(tok, out.sequences, 3) == "ccccccc" + "n"  # through the token that completes the stop
    assert out.lengths.tolist() == [8] and not out.finished.item()
    assert out.nfe == 8 < full.nfe == 24  # one token per step: the 16 forwards after the stop are saved


def test_rows_stop_on_their_own_and_answer_as_alone(stepwise):
    model, tok = stepwise
    tok.padding_side = "left"
    prompts = ["abc", "2+2=", "hello there "]
    batch = tok(prompts, return_tensors="pt", padding=True)
    stops = dict(stop_strings=["cn", "=="], tokenizer=tok)
    out = model.diffusion_generate(batch.input_ids, batch.attention_mask, return_dict_in_generate=True, **stops,
                                   **STEPWISE)
    for i, prompt in enumerate(prompts):
        ids = prompt_ids(tok, prompt)
        alone = model.diffusion_generate(ids, return_dict_in_generate=True, **stops, **STEPWISE)
        width = batch.input_ids.shape[1]
        assert answer_text(tok, out.sequences[i : i + 1], width) == answer_text(tok, alone.sequences, ids.shape[1])
    # The first two rows leave at their stop; the third never meets one and decodes its whole budget.
    assert out.nfe_per_row[0] == 8 and out.nfe_per_row[1] < 24 and out.nfe_per_row[2] == out.nfe == 24


def test_stopping_criteria_see_the_row_token_by_token(stepwise):
    model, tok = stepwise
    ids = prompt_ids(tok, "abc")
    seen = []

    class Record(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            seen.append(input_ids.shape[1])
            return torch.zeros(1, dtype=torch.bool)

    criteria = StoppingCriteriaList([Record(), MaxLengthCriteria(max_length=3 + 5)])
    out = model.generate(ids, stopping_criteria=criteria, return_dict_in_generate=True, **STEPWISE)
    assert out.lengths.tolist() == [5] and out.nfe <= 8  # the prefix of 5 is decided by the second block's end
    assert seen == [4, 5, 6, 7, 8]  # prompt + 1, + 2, ... as an autoregressive decoder would have asked


def test_a_streamer_gets_the_answer_up_to_the_stop(stepwise):
    model, tok = stepwise
    put = []
    streamer = SimpleNamespace(put=lambda tokens: put.append(tokens.tolist()), end=lambda: put.append("end"))
    model.generate(prompt_ids(tok, "abc"), stop_strings="cn", tokenizer=tok, streamer=streamer, **STEPWISE)
    assert put[-1] == "end"
    assert tok.decode([t for chunk in put[1:-1] for t in chunk]) == "ccccccc" + "n"


# ----------------------------------------------------------------------------------------------- gated drafters
def test_a_gated_drafter_takes_the_usual_greedy_arguments_and_refuses_the_rest():
    model, _, tok = gated()
    ids = prompt_ids(tok, "abc")
    expected = model.speculative_generate(ids, max_new_tokens=8).sequences
    config = GenerationConfig(max_new_tokens=8, do_sample=False)
    assert model.generate(ids, generation_config=config, pad_token_id=model.config.pad_token_id).equal(expected)
    assert model.generate(ids, max_length=ids.shape[1] + 8, temperature=0.0).equal(expected)
    with pytest.raises(ValueError, match="sampling is not supported"):
        model.generate(ids, max_new_tokens=8, do_sample=True)
    with pytest.raises(ValueError, match=r"cannot honour \['block_length', 'generator'\]"):
        model.generate(ids, max_new_tokens=8, block_length=4, generator=torch.Generator())


def test_a_stop_string_ends_a_gated_drafters_row_early_too():
    model, _, tok = gated()
    ids = prompt_ids(tok, "the cat sat on")
    full = model.speculative_generate(ids, max_new_tokens=16)
    text = tok.decode(full.sequences[0, ids.shape[1]:], skip_special_tokens=True)
    stop = text[4:6]
    out = model.generate(ids, max_new_tokens=16, stop_strings=[stop], tokenizer=tok, return_dict_in_generate=True)
    assert tok.decode(out.sequences[0, ids.shape[1]:], skip_special_tokens=True) == text[: text.index(stop) + 2]
    assert out.verify_forwards[0] < full.verify_forwards[0]


def test_the_pipeline_answers_from_a_gated_drafter_checkpoint(tmp_path):
    model, _, tok = gated()
    model.save_pretrained(tmp_path / "drafter", tokenizer=tok)
    pipe = pipeline("text-generation", model=str(tmp_path / "drafter"), trust_remote_code=True)
    ids = prompt_ids(tok, "abc")
    expected = model.speculative_generate(ids, max_new_tokens=8).sequences
    assert pipe("abc", max_new_tokens=8, return_tensors=True)[0]["generated_token_ids"] == expected[0].tolist()


# ----------------------------------------------------------------------------------------------- a pushed folder
def test_a_pushed_folder_answers_through_the_pipeline_in_a_fresh_process(saved, tmp_path, monkeypatch):
    """The Hub is offline: a stand-in API creates the repository and receives the commit, copying the uploaded files
    into a folder; the repository has no README yet, so transformers drafts one and hf_dlm's card replaces it. A
    fresh interpreter without hf_dlm (HF_HUB_OFFLINE=1) then loads the folder with the pipeline."""
    uploaded = tmp_path / "uploaded"

    class OfflineHub:
        def create_repo(self, repo_id, **kwargs):
            return SimpleNamespace(repo_id=repo_id)

        def create_commit(self, repo_id, operations, **kwargs):
            for op in operations:
                (uploaded / op.path_in_repo).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(op.path_or_fileobj, uploaded / op.path_in_repo)
            return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0")

    def no_card_yet(cls, repo_id_or_path, *args, **kwargs):
        raise EntryNotFoundError("no README.md in the new repository")

    monkeypatch.setattr(hub, "hf_api", lambda: OfflineHub())
    monkeypatch.setattr(hub.ModelCard, "load", classmethod(no_card_yet))
    pushed = DiffusionLM.from_pretrained(saved.path)
    pushed.tokenizer = saved.tokenizer  # what from_causal_lm attaches; save_pretrained (inside push_to_hub) saves it
    pushed.push_to_hub("someone/tiny-dlm")
    monkeypatch.undo()

    files = {p.name for p in uploaded.iterdir()}
    assert REMOTE_CODE | {"model.safetensors", "config.json", "generation_config.json", "tokenizer_config.json",
                          "tokenizer.json", "README.md"} <= files
    card = ModelCard.load(uploaded / "README.md")
    assert card.data.pipeline_tag == "text-generation" and "automatically generated" not in card.text

    ids = prompt_ids(saved.tokenizer, "abc")
    expected = answer_text(saved.tokenizer, saved.model.diffusion_generate(ids, **DECODE), ids.shape[1])
    result = run_without_hf_dlm(f"""
        from transformers import pipeline
        pipe = pipeline("text-generation", model={str(uploaded)!r}, trust_remote_code=True)
        out = pipe("abc", return_full_text=False, **{DECODE!r})
        print("ANSWER=" + repr(out[0]["generated_text"]))
        """, tmp_path)
    assert f"ANSWER={expected!r}" in result.stdout
