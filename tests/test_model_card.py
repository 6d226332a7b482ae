"""Model cards (hf_dlm/model_card.py): what save_pretrained, push_to_hub (captured: the Hub is offline here) and
DiffusionTrainer.create_model_card write, read back with huggingface_hub's ModelCard; a user's README stays."""

import shutil
from types import SimpleNamespace

import pytest
import yaml
from huggingface_hub import EvalResult, ModelCard, metadata_eval_result
from huggingface_hub.errors import EntryNotFoundError
from peft import LoraConfig
from transformers.utils import hub

from hf_dlm import DiffusionTrainer
from hf_dlm.model_card import CARD_MARK, base_license, build_card, hub_id
from tests.conftest import make_dlm
from tests.isolated import run_without_hf_dlm
from tests.test_trainer import as_text, sort_task, training_args

BASE = "openai-community/gpt2"


@pytest.fixture
def model():
    model, _ = make_dlm("gpt2")
    model.config.backbone_config._name_or_path = BASE  # as if adapted from the Hub id
    return model


def load(path) -> ModelCard:
    return ModelCard.load(path / "README.md")


def test_save_pretrained_writes_a_card_with_hub_metadata(model, tmp_path):
    model.save_pretrained(tmp_path / "my-dlm")
    card = load(tmp_path / "my-dlm")
    data = card.data.to_dict()
    assert data["base_model"] == BASE and data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "text-generation" and {"hf_dlm", "diffusion-lm"} <= set(data["tags"])
    assert "license" not in data  # not known offline: left out, not guessed
    text = card.text
    assert CARD_MARK in text and "# my-dlm" in text
    assert f"[{BASE}](https://huggingface.co/{BASE})" in text
    assert "`bidirectional`" in text and "`<|mask|>` (id" in text
    assert f"| `length_strategy` | `{model.generation_config.length_strategy}` |" in text
    assert "AutoModel.from_pretrained(" in text and "trust_remote_code=True" in text and "diffusion_generate" in text
    assert 'pipeline("text-generation", model=' in text
    # the metadata block is plain YAML the Hub reads (ModelCard.validate asks the Hub itself; offline, this is it)
    front = yaml.safe_load(str(card).split("---")[1])
    assert front == data


def test_measured_numbers_show_and_stay_for_later_saves(model, tmp_path):
    model.save_pretrained(tmp_path / "a", model_card_metrics={"exact match %": 65.6, "tokens per forward": 0.96})
    model.save_pretrained(tmp_path / "b")
    for name in ("a", "b"):
        text = load(tmp_path / name).text
        assert "## Measured" in text and "| exact match % | 65.6 |" in text and "| tokens per forward | 0.96 |" in text


def test_measured_results_with_a_task_and_dataset_go_into_model_index(model, tmp_path):
    """The Hub's `model-index`: what huggingface_hub's own `metadata_eval_result` builds for the same numbers, read
    back by `ModelCard`; a bare number stays in the body's table only (no task or dataset to file it under)."""
    gsm8k = EvalResult(task_type="text-generation", dataset_type="gsm8k", dataset_name="GSM8K", metric_type="exact_match",
                       metric_value=65.6, dataset_split="test")
    arc = {"task_type": "text-generation", "dataset_type": "allenai/ai2_arc", "dataset_name": "ARC-Easy",
           "dataset_config": "ARC-Easy", "metric_type": "acc", "metric_value": 0.71, "metric_name": "accuracy"}
    model.save_pretrained(tmp_path / "my-dlm", model_card_metrics={"exact match %": gsm8k, "arc": arc,
                                                                   "tokens per forward": 0.96})
    card = load(tmp_path / "my-dlm")
    expected = metadata_eval_result(model_pretty_name="my-dlm", task_pretty_name=None, task_id="text-generation",
                                    metrics_pretty_name="exact match %", metrics_id="exact_match", metrics_value=65.6,
                                    dataset_pretty_name="GSM8K", dataset_id="gsm8k", dataset_split="test")
    index = yaml.safe_load(str(card).split("---")[1])["model-index"]
    gsm8k_entry = index[0]["results"][0]
    expected_entry = expected["model-index"][0]["results"][0]
    expected_entry["metrics"][0].pop("verified")  # metadata_eval_result adds verified: false; unset here
    assert index[0]["name"] == "my-dlm" and gsm8k_entry == expected_entry
    results = card.data.eval_results
    assert [(r.dataset_type, r.metric_type, r.metric_value, r.metric_name) for r in results] == [
        ("gsm8k", "exact_match", 65.6, "exact match %"), ("allenai/ai2_arc", "acc", 0.71, "accuracy")]
    assert "| exact match % | 65.6 (GSM8K, test) |" in card.text and "| tokens per forward | 0.96 |" in card.text
    assert gsm8k.metric_name is None  # the caller's object is left as it was
    with pytest.raises(ValueError, match="task_type"):
        model.save_pretrained(tmp_path / "bad", model_card_metrics={"x": {"value": 1}})


def test_a_users_readme_is_never_overwritten(model, tmp_path):
    path = tmp_path / "mine"
    path.mkdir()
    (path / "README.md").write_text("# My own notes\n")
    model.save_pretrained(path, model_card_metrics={"x": 1})
    assert (path / "README.md").read_text() == "# My own notes\n"
    assert (path / "config.json").exists()


def test_our_own_card_is_rewritten_unless_its_mark_is_deleted(model, tmp_path):
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path, model_card_metrics={"score": 1})
    assert "| score | 1 |" in load(tmp_path).text
    edited = (tmp_path / "README.md").read_text().replace(CARD_MARK, "") + "\nMy edit.\n"
    (tmp_path / "README.md").write_text(edited)
    model.save_pretrained(tmp_path, model_card_metrics={"score": 2})
    assert (tmp_path / "README.md").read_text() == edited


def test_base_model_is_left_out_for_local_or_unnamed_bases(tmp_path):
    assert hub_id(BASE) == BASE and hub_id("gpt2") == "gpt2"
    assert hub_id(str(tmp_path)) is None and hub_id("./my-model") is None and hub_id("") is None
    assert hub_id("data.jsonl") is None
    model, _ = make_dlm("llama", attention="causal_prefix")
    model.config.backbone_config._name_or_path = str(tmp_path)  # a local directory
    card = build_card(model)
    assert "base_model" not in card.data.to_dict()
    assert "causal context" in card.text and "`causal_prefix`" in card.text


def test_the_licence_is_carried_from_the_base_when_its_card_is_at_hand(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# base\n")
    assert base_license(str(base)) == "apache-2.0"
    assert base_license(str(tmp_path / "missing")) is None
    model, _ = make_dlm()
    model.config.backbone_config._name_or_path = str(base)
    assert build_card(model).data.license == "apache-2.0"


def test_push_to_hub_uploads_the_card_with_code_weights_tokenizer(model, tmp_path, monkeypatch):
    """The Hub is offline: the repository is created by a stand-in, it has no README yet (so transformers writes
    its generic draft), and the upload copies the folder instead of sending it."""
    captured = tmp_path / "pushed"

    def upload(self, working_dir, repo_id, *args, **kwargs):
        shutil.copytree(working_dir, captured)
        return "https://huggingface.co/" + repo_id

    real_load = ModelCard.load.__func__

    def no_card_on_the_hub(cls, repo_id_or_path, *args, **kwargs):
        if repo_id_or_path == "someone/tiny-dlm":
            raise EntryNotFoundError("no README.md in the new repository")
        return real_load(cls, repo_id_or_path, *args, **kwargs)

    monkeypatch.setattr(hub, "hf_api", lambda: SimpleNamespace(create_repo=lambda repo_id, **_: SimpleNamespace(
        repo_id=repo_id)))
    monkeypatch.setattr(hub.ModelCard, "load", classmethod(no_card_on_the_hub))
    monkeypatch.setattr(hub.PushToHubMixin, "_upload_modified_files", upload)
    model.push_to_hub("someone/tiny-dlm", tags=["my-tag"])
    monkeypatch.undo()
    files = {p.name for p in captured.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer_config.json",
            "modeling_dlm.py", "generation_dlm.py", "README.md"} <= files
    card = load(captured)
    assert card.data.base_model == BASE and "my-tag" in card.data.tags and "hf_dlm" in card.data.tags
    assert 'AutoModel.from_pretrained("someone/tiny-dlm", trust_remote_code=True)' in card.text
    assert "automatically generated" not in card.text  # transformers' draft gave way


def test_the_saved_checkpoint_still_loads_and_saves_as_remote_code_without_hf_dlm(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    run_without_hf_dlm(f"""
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True)
        model.save_pretrained("again")  # no hf_dlm: no card, and no error
        import os
        assert os.path.exists("again/config.json") and not os.path.exists("again/README.md")
        """, tmp_path)


def test_the_trainer_writes_the_card_with_its_arguments_and_datasets(tmp_path):
    model, tok = make_dlm()
    model.config.backbone_config._name_or_path = BASE
    args = training_args(tmp_path, max_steps=1, block_length=8)
    trainer = DiffusionTrainer(model=model, args=args, train_dataset=as_text(sort_task(16)), processing_class=tok,
                               peft_config=LoraConfig(r=4, lora_alpha=8))
    trainer.train()
    trainer.save_model()  # peft writes its adapter card: a generated draft, which hf_dlm's card replaces
    trainer.create_model_card(dataset=["someone/sorting", "local.jsonl"], license="mit", tags="extra")
    card = ModelCard.load(f"{args.output_dir}/README.md")
    data = card.data.to_dict()
    assert data["datasets"] == ["someone/sorting"] and data["license"] == "mit" and data["base_model"] == BASE
    assert {"hf_dlm", "diffusion-lm", "extra"} <= set(data["tags"])
    for row in ("| `max_length` | `32` |", "| `block_length` | `8` |", f"| `t_min` | `{args.t_min}` |",
                "| `max_steps` | `1` |", "| `learning_rate` | `0.003` |", "| `peft` | `LORA` |", "| `lora_r` | `4` |"):
        assert row in card.text, row
    # what the trainer told the model stays on it: a later save writes the same card
    trainer.model.merge_and_unload().save_pretrained(tmp_path / "full")  # as hf-dlm train --merge_adapter
    assert "| `lora_r` | `4` |" in load(tmp_path / "full").text
