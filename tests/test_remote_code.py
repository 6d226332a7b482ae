"""Hub round trip: a saved checkpoint carries its code, its tokenizer and its settings, and loads with nothing but
torch and transformers (`AutoModel.from_pretrained(dir, trust_remote_code=True)`)."""

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer

from hf_dlm import DiffusionGenerationConfig, DiffusionLM
from tests.conftest import BACKBONES, make_dlm
from tests.isolated import run_without_hf_dlm

# What transformers' save_pretrained copies: the files `modeling_dlm.py` imports relatively, transitively (their
# imports are the one list; test_remote_code_imports_only_torch_transformers_and_each_other checks none is missing).
REMOTE_CODE = {"configuration_dlm.py", "modeling_dlm.py", "generation_dlm.py", "decoder_dlm.py",
               "length_strategies_dlm.py", "unmasking_dlm.py", "settings_dlm.py", "generate_kwargs_dlm.py",
               "stopping_dlm.py"}
SAFE_SUFFIXES = {".safetensors", ".json", ".py", ".txt", ".jinja", ".md"}  # weights, configs, code, tokenizer, card
PROMPT = torch.tensor([[1, 5, 9, 2, 7, 3], [0, 0, 0, 4, 8, 6]])
PROMPT_MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]])
DECODE = dict(max_new_tokens=12, block_length=4, length_strategy="grow", threshold=0.9)
CANVAS_START = 4  # causal-prefix models attend causally before it; bidirectional ones ignore it
# Every backbone with the default bidirectional attention, plus one block-diffusion (causal-prefix) checkpoint.
CHECKPOINTS = {name: (name, "bidirectional") for name in BACKBONES} | {"llama-causal_prefix": ("llama", "causal_prefix")}


def reference_outputs(model):
    with torch.no_grad():
        logits = model(PROMPT, attention_mask=PROMPT_MASK, canvas_start=CANVAS_START).logits
    sequences = model.diffusion_generate(PROMPT, PROMPT_MASK, **DECODE)
    return logits, sequences


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One saved tiny checkpoint per backbone, with the logits and greedy decode of the model that saved it."""
    root = tmp_path_factory.mktemp("checkpoints")
    saved = {}
    for name, (model_type, attention) in CHECKPOINTS.items():
        model, tok = make_dlm(model_type, attention=attention)
        path = root / name
        model.save_pretrained(path)
        logits, sequences = reference_outputs(model)
        saved[name] = SimpleNamespace(path=path, model=model, tokenizer=tok, logits=logits, sequences=sequences)
    return saved


# ----------------------------------------------------------------------------------------------- what is written
def test_checkpoint_holds_weights_config_code_tokenizer_and_no_pickle(checkpoints):
    for ckpt in checkpoints.values():
        files = {p.name for p in ckpt.path.iterdir()}
        assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer_config.json", "README.md"} <= files
        assert REMOTE_CODE <= files
        unsafe = [f for f in files if Path(f).suffix not in SAFE_SUFFIXES]
        assert not unsafe, f"files that are not safetensors/json/code/tokenizer: {unsafe}"
        config = json.loads((ckpt.path / "config.json").read_text())
        assert config["auto_map"] == {
            "AutoConfig": "configuration_dlm.DiffusionLMConfig",
            "AutoModel": "modeling_dlm.DiffusionLM",
            "AutoModelForMaskedLM": "modeling_dlm.DiffusionLM",
            "AutoModelForCausalLM": "modeling_dlm.DiffusionLM",  # the text-generation pipeline's class
        }
        assert config["model_type"] == "diffusion_lm" and config["backbone_config"]["is_causal"] is False


def test_checkpoint_carries_auto_map_and_code_without_any_auto_class_registration(tmp_path):
    """`save_pretrained` writes auto_map and copies the code because the classes declare their Auto classes
    (`_auto_class`), not because `hf_dlm/__init__` registered them: the package's `__init__` is not run here (a bare
    `hf_dlm` package object stands in for it) and "diffusion_lm" is unknown to AutoConfig."""
    script = textwrap.dedent("""
        import importlib.util, sys, types
        from transformers import GPT2Config
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        package = types.ModuleType("hf_dlm")  # hf_dlm without running its __init__.py
        package.__path__ = list(importlib.util.find_spec("hf_dlm").submodule_search_locations)
        sys.modules["hf_dlm"] = package
        from hf_dlm.configuration_dlm import DiffusionLMConfig
        from hf_dlm.modeling_dlm import DiffusionLM

        assert "diffusion_lm" not in CONFIG_MAPPING and not hasattr(package, "__version__")
        backbone = GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=32, vocab_size=32, bos_token_id=0,
                              eos_token_id=0)
        config = DiffusionLMConfig(backbone_config=backbone, mask_token_id=31, pad_token_id=30, eos_token_id=0)
        DiffusionLM(config).save_pretrained("saved")
        """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=240,
                            env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    saved = tmp_path / "saved"
    assert REMOTE_CODE <= {p.name for p in saved.iterdir()}
    assert json.loads((saved / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_dlm.DiffusionLMConfig",
        "AutoModel": "modeling_dlm.DiffusionLM",
        "AutoModelForMaskedLM": "modeling_dlm.DiffusionLM",
        "AutoModelForCausalLM": "modeling_dlm.DiffusionLM",
    }


def test_remote_code_imports_only_torch_transformers_and_each_other(checkpoints):
    """Anything else would fail on a machine that has only torch and transformers (the standard library aside)."""
    path = checkpoints["gpt2"].path
    code = {p.stem: p for p in path.glob("*.py")}
    for name, file in code.items():
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                assert node.module in code, f"{name}.py imports .{node.module}, which is not saved next to it"
                continue
            if isinstance(node, ast.ImportFrom):
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                assert top in {"torch", "transformers"} or top in sys.stdlib_module_names, f"{name}.py imports {module}"


# ----------------------------------------------------------------------------------------------- loading
def test_clean_interpreter_loads_with_automodel_and_decodes_identically(checkpoints, tmp_path):
    """In an interpreter where hf_dlm cannot be imported: AutoModel and AutoModelForMaskedLM (trust_remote_code)
    give the saving model's logits and greedy answers; a model re-saved there loads again."""
    paths = {name: str(ckpt.path) for name, ckpt in checkpoints.items()}
    save_file({"input_ids": PROMPT, "attention_mask": PROMPT_MASK}, tmp_path / "prompt.safetensors")
    run_without_hf_dlm(
        f"""
        import torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

        prompt = load_file("prompt.safetensors")
        results = {{}}
        for name, path in {paths!r}.items():
            model = AutoModel.from_pretrained(path, trust_remote_code=True)
            assert type(model).__name__ == "DiffusionLM" and "hf_dlm" not in type(model).__module__
            masked_lm = AutoModelForMaskedLM.from_pretrained(path, trust_remote_code=True)
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=True)  # see test_saved_tokenizer_loads_...
            assert tok.mask_token_id == model.config.mask_token_id == model.generation_config.mask_token_id
            with torch.no_grad():
                results[name + ".logits"] = model(**prompt, canvas_start={CANVAS_START}).logits
                results[name + ".masked_lm_logits"] = masked_lm(**prompt, canvas_start={CANVAS_START}).logits
            results[name + ".sequences"] = model.diffusion_generate(
                prompt["input_ids"], prompt["attention_mask"], **{DECODE!r})
            model.save_pretrained("resaved-" + name)
            again = AutoModelForMaskedLM.from_pretrained("resaved-" + name, trust_remote_code=True)
            with torch.no_grad():
                results[name + ".resaved_logits"] = again(**prompt, canvas_start={CANVAS_START}).logits
        save_file({{k: v.contiguous() for k, v in results.items()}}, "results.safetensors")
        """,
        cwd=tmp_path,
    )
    results = load_file(tmp_path / "results.safetensors")
    for name, ckpt in checkpoints.items():
        for key in ("logits", "masked_lm_logits", "resaved_logits"):
            torch.testing.assert_close(results[f"{name}.{key}"], ckpt.logits, rtol=0, atol=1e-6)
        assert torch.equal(results[f"{name}.sequences"], ckpt.sequences)


@pytest.mark.parametrize("model_type", list(CHECKPOINTS))
def test_in_process_load_gives_identical_logits_and_settings(checkpoints, model_type):
    ckpt = checkpoints[model_type]
    assert DiffusionLM.from_pretrained(ckpt.path).config.attention == CHECKPOINTS[model_type][1]
    for auto in (DiffusionLM, AutoModel, AutoModelForMaskedLM):
        loaded = auto.from_pretrained(ckpt.path)
        assert isinstance(loaded, DiffusionLM)
        with torch.no_grad():
            logits = loaded(PROMPT, attention_mask=PROMPT_MASK, canvas_start=CANVAS_START).logits
            torch.testing.assert_close(logits, ckpt.logits, rtol=0, atol=0)
        assert isinstance(loaded.generation_config, DiffusionGenerationConfig)
        assert loaded.generation_config.to_dict_own() == ckpt.model.generation_config.to_dict_own()
        assert not loaded.training
    eager = DiffusionLM.from_pretrained(ckpt.path, attn_implementation="eager")
    assert eager.backbone.config._attn_implementation == "eager" and eager.backbone.config.is_causal is False
    with torch.no_grad():
        logits = eager(PROMPT, attention_mask=PROMPT_MASK, canvas_start=CANVAS_START).logits
        torch.testing.assert_close(logits, ckpt.logits, rtol=0, atol=1e-5)


def test_tokenizer_and_model_agree_on_special_tokens_after_save_load(checkpoints):
    for ckpt in checkpoints.values():
        tok = AutoTokenizer.from_pretrained(ckpt.path)
        config = AutoConfig.from_pretrained(ckpt.path)
        assert tok.mask_token_id == config.mask_token_id == ckpt.tokenizer.mask_token_id
        assert tok.pad_token_id == config.pad_token_id and tok.eos_token_id == config.eos_token_id
        assert tok.encode(tok.mask_token, add_special_tokens=False) == [config.mask_token_id]
        assert len(tok) == config.backbone_config.vocab_size


def test_saved_tokenizer_loads_with_no_question_and_no_warning_with_or_without_hf_dlm(checkpoints, tmp_path):
    """Where hf_dlm is imported, `AutoTokenizer.from_pretrained(dir)` knows the config's model type "diffusion_lm"
    and loads plainly. Without hf_dlm, transformers 5.24 reads config.json before any tokenizer file, and an unknown
    model type with an `auto_map` makes it ask whether to run configuration_dlm.py (declined: a "model of type ``"
    warning), whatever the tokenizer files say; `trust_remote_code=True`, the flag that loads the model there, loads
    the tokenizer plainly too. stdin reads nothing: a question would fail fast and show in the output."""
    path = str(checkpoints["llama"].path)
    expected = checkpoints["llama"].tokenizer
    text = f"sort 31{expected.mask_token}2="
    want = {"warnings": [], "ids": expected.encode(text), "size": len(expected), "mask": expected.mask_token_id,
            "pad": expected.pad_token_id}

    def load_tokenizer(load_kwargs):
        return textwrap.dedent(f"""
            import json, os, sys, warnings
            warnings.simplefilter("always")
            from transformers import AutoTokenizer

            with open(os.devnull) as sys.stdin, warnings.catch_warnings(record=True) as caught:
                tok = AutoTokenizer.from_pretrained({path!r}, **{load_kwargs!r})
            print(json.dumps({{"warnings": [str(w.message) for w in caught], "ids": tok.encode({text!r}),
                              "size": len(tok), "mask": tok.mask_token_id, "pad": tok.pad_token_id}}))
            """)

    with_hf_dlm = subprocess.run(
        [sys.executable, "-c", "from hf_dlm import DiffusionLM\n" + load_tokenizer({})], cwd=tmp_path,
        env=os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}, capture_output=True, text=True,
        timeout=240,
    )
    assert with_hf_dlm.returncode == 0, with_hf_dlm.stderr
    without_hf_dlm = run_without_hf_dlm(load_tokenizer({"trust_remote_code": True}), cwd=tmp_path)
    for result in (with_hf_dlm, without_hf_dlm):
        assert (result.stdout.strip(), result.stderr) == (json.dumps(want), "")


def test_save_pretrained_writes_the_tokenizer_passed_to_it(checkpoints, tmp_path):
    """A model loaded from a checkpoint has no tokenizer attached; `tokenizer=` saves one next to the weights."""
    loaded = DiffusionLM.from_pretrained(checkpoints["llama"].path)
    loaded.save_pretrained(tmp_path / "without")
    assert not (tmp_path / "without" / "tokenizer_config.json").exists()
    loaded.save_pretrained(tmp_path / "with", tokenizer=checkpoints["llama"].tokenizer)
    assert AutoTokenizer.from_pretrained(tmp_path / "with").mask_token_id == loaded.config.mask_token_id


def test_push_to_hub_uploads_code_tokenizer_and_safetensors(checkpoints, tmp_path, monkeypatch):
    """No Hub here: capture the folder push_to_hub would upload (its save_pretrained output) and load it back."""
    import transformers.utils.hub as hub

    uploaded = tmp_path / "uploaded"
    calls = []

    class FakeHub:
        def create_repo(self, repo_id, **kwargs):
            return SimpleNamespace(repo_id=repo_id)

        def create_branch(self, **kwargs):
            pass

        def create_commit(self, repo_id, operations, **kwargs):
            calls.append(repo_id)
            for op in operations:
                (uploaded / op.path_in_repo).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(op.path_or_fileobj, uploaded / op.path_in_repo)

    class Card:
        def save(self, path):
            Path(path).write_text("model card")

    monkeypatch.setattr(hub, "hf_api", lambda: FakeHub())
    monkeypatch.setattr(hub, "create_and_tag_model_card", lambda *args, **kwargs: Card())
    ckpt = checkpoints["qwen2"]
    ckpt.model.push_to_hub("someone/tiny-dlm")

    assert calls == ["someone/tiny-dlm"]
    files = {p.name for p in uploaded.iterdir()}
    assert REMOTE_CODE | {"model.safetensors", "config.json", "generation_config.json", "tokenizer_config.json"} <= files
    assert not [f for f in files if Path(f).suffix not in SAFE_SUFFIXES | {".md"}]
    assert "AutoModel" in json.loads((uploaded / "config.json").read_text())["auto_map"]
    pushed = DiffusionLM.from_pretrained(uploaded)
    with torch.no_grad():
        torch.testing.assert_close(pushed(PROMPT, attention_mask=PROMPT_MASK).logits, ckpt.logits, rtol=0, atol=0)
    assert AutoTokenizer.from_pretrained(uploaded).mask_token_id == pushed.config.mask_token_id
