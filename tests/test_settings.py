"""settings_dlm: the table of decoding settings and their validation, usable without torch or transformers."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from hf_dlm import settings_dlm
from hf_dlm.generation_dlm import DiffusionGenerationConfig
from hf_dlm.settings_dlm import SETTINGS, default_settings, validate_generation_settings

SETTINGS_FILE = Path(settings_dlm.__file__)
BY_NAME = {setting.name: setting for setting in SETTINGS}


# ----------------------------------------------------------------------------------------------- no torch
def test_settings_module_imports_only_the_standard_library():
    for node in ast.walk(ast.parse(SETTINGS_FILE.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, "settings_dlm must not import the package (it is loaded on its own)"
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            assert module.split(".")[0] in sys.stdlib_module_names | {"__future__"}, f"settings_dlm imports {module}"


def test_settings_module_validates_flags_in_an_interpreter_without_torch_or_transformers():
    """What `hf-dlm` does before loading a model. Loaded from its file: hf_dlm/__init__.py imports transformers."""
    code = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("settings_dlm", {str(SETTINGS_FILE)!r})
settings = importlib.util.module_from_spec(spec)
sys.modules["settings_dlm"] = settings
spec.loader.exec_module(settings)
flags = {{s.name: s.parse(str(s.default)) for s in settings.SETTINGS}}
settings.validate_generation_settings(flags)
try:
    settings.validate_generation_settings({{"max_new_tokens": 16, "block_length": 4, "steps": 6}})
except ValueError as error:
    assert "multiple of 4" in str(error), error
else:
    raise AssertionError("steps=6 over 4 blocks was accepted")
assert "torch" not in sys.modules and "transformers" not in sys.modules, sorted(sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------------------------- the table
def test_the_config_takes_its_fields_and_defaults_from_the_table():
    assert DiffusionGenerationConfig().to_dict_own() == default_settings()
    assert list(DiffusionGenerationConfig().to_dict_own()) == [setting.name for setting in SETTINGS]
    for setting in SETTINGS:  # and documents every one of them
        assert setting.name in DiffusionGenerationConfig.__doc__, setting.name


def test_every_setting_has_one_line_of_help_and_a_group():
    for setting in SETTINGS:
        assert setting.help and "\n" not in setting.help, setting.name
        assert setting.group in ("decoding", "output", "tokens", "calibration"), setting.name
    assert BY_NAME["length_strategy"].choices == settings_dlm.LENGTH_STRATEGIES
    assert BY_NAME["unmasking"].choices == settings_dlm.UNMASKING_RULES
    assert {s.name for s in SETTINGS if s.group == "output"} == {"output_history", "return_dict_in_generate"}


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_default_survives_the_command_line(setting):
    assert setting.parse(str(setting.default)) == setting.default


@pytest.mark.parametrize("name, text, value", [
    ("max_new_tokens", "64", 64),
    ("threshold", "0.7", 0.7),
    ("threshold", "none", None),
    ("threshold", "OFF", None),
    ("temperature", "1", 1.0),
    ("use_cache", "false", False),
    ("use_cache", "dual", "dual"),
    ("use_cache", "Prefix", "prefix"),
    ("defer_repeats", "yes", True),
    ("length_strategy", "grow", "grow"),
])
def test_parse_reads_a_command_line_value(name, text, value):
    assert BY_NAME[name].parse(text) == value


@pytest.mark.parametrize("name, text, message", [
    ("max_new_tokens", "many", "expects an integer, got 'many'"),
    ("max_new_tokens", "none", "expects an integer"),  # not optional: None is no budget
    ("threshold", "high", "expects a number or none"),
    ("use_cache", "maybe", "expects true or false"),
])
def test_parse_refuses_text_of_the_wrong_type(name, text, message):
    with pytest.raises(ValueError, match=message):
        BY_NAME[name].parse(text)


# ----------------------------------------------------------------------------------------------- validation
IMPOSSIBLE = [
    (dict(max_new_tokens=0), "`max_new_tokens` must be a positive integer"),
    (dict(max_new_tokens=2.5), "`max_new_tokens` must be a positive integer"),
    (dict(max_new_tokens=True), "`max_new_tokens` must be a positive integer"),
    (dict(block_length=-1), "`block_length` must be a positive integer"),
    (dict(steps=0), "`steps` must be a positive integer"),
    (dict(max_new_tokens=16, block_length=4, steps=2), "zero steps.*Use steps >= 4"),
    (dict(max_new_tokens=16, block_length=4, steps=6), "multiple of 4"),
    (dict(max_new_tokens=8, block_length=8, steps=9), "more than the 8 masks"),
    (dict(length_strategy="magic"), "`length_strategy` must be one of"),
    (dict(length_strategy=["grow"]), "`length_strategy` must be one of"),
    (dict(unmasking="best"), "`unmasking` must be one of"),
    (dict(defer_repeats="yes"), "`defer_repeats` must be True or False"),
    (dict(use_cache=1), "`use_cache` must be True or False"),
    (dict(return_dict_in_generate=None), "`return_dict_in_generate` must be True or False"),
    (dict(repetition_penalty=0.0), "`repetition_penalty` must be a finite number > 0"),
    (dict(repetition_penalty="1.2"), "`repetition_penalty` must be a finite number > 0"),
    (dict(repetition_penalty=float("inf")), "`repetition_penalty` must be a finite number > 0"),
    (dict(repetition_penalty=float("nan")), "`repetition_penalty` must be a finite number > 0"),
    (dict(threshold=0.0), r"`threshold` must be in \(0, 1\]"),
    (dict(threshold=1.5), r"`threshold` must be in \(0, 1\]"),
    (dict(threshold="0.9"), r"`threshold` must be in \(0, 1\]"),
    (dict(temperature=-1.0), "`temperature` must be a finite number >= 0"),
    (dict(temperature=None), "`temperature` must be a finite number >= 0"),
    (dict(temperature=float("nan")), "`temperature` must be a finite number >= 0"),
    (dict(temperature=float("inf")), "`temperature` must be a finite number >= 0"),
    (dict(temperature=0.7, top_k=0), "`top_k` must be a positive integer"),
    (dict(temperature=0.7, top_k=2.5), "`top_k` must be a positive integer"),
    (dict(temperature=0.7, top_p=0.0), r"`top_p` must be in \(0, 1\]"),
    (dict(top_k=20), "`top_k`=20 restricts sampling.*set temperature > 0, or top_k=None"),
    (dict(top_p=0.9), "`top_p`=0.9 restricts sampling.*set temperature > 0, or top_p=None"),
    (dict(seed="1"), "`seed` must be an integer or None"),
    (dict(predict_threshold=1.0), r"`predict_threshold` must be in \(0, 1\)"),
    (dict(length_margin=-1), "`length_margin` must be an integer >= 0"),
    (dict(length_margin=1.5), "`length_margin` must be an integer >= 0"),
    (dict(output_history=True), "output_history=True needs return_dict_in_generate=True"),
    (dict(mask_token_id=-1), "`mask_token_id` must be a token id"),
    (dict(pad_token_id="2"), "`pad_token_id` must be a token id"),
    (dict(eos_token_id=[1, "2"]), "`eos_token_id` must be a token id"),
    (dict(mask_token_id=5, pad_token_id=5), "`mask_token_id`=5 is also the `pad_token_id`"),
    (dict(mask_token_id=5, eos_token_id=[1, 5]), "`mask_token_id`=5 is also the `eos_token_id`"),
    (dict(mask_token_id=5, bos_token_id=5), "`mask_token_id`=5 is also the `bos_token_id`"),
    (dict(no_such_setting=1), r"Unknown diffusion generation settings: \['no_such_setting'\]"),
]


@pytest.mark.parametrize("bad, message", IMPOSSIBLE)
def test_impossible_settings_get_one_message_from_the_function_and_the_config(bad, message):
    """The config validates through settings_dlm: the same words, whichever way the settings arrive."""
    with pytest.raises(ValueError, match=message) as from_function:
        validate_generation_settings(default_settings() | bad)
    with pytest.raises(ValueError, match=message) as from_config:
        DiffusionGenerationConfig(**bad)
    assert str(from_config.value) == str(from_function.value)


def test_possible_settings_pass():
    for good in [
        default_settings(),
        dict(max_new_tokens=8, block_length=32),  # a block longer than the budget is one (partial) block
        dict(max_new_tokens=16, block_length=4, steps=8, threshold=None),
        dict(temperature=0.7, top_k=20, top_p=0.9, seed=3),
        dict(threshold=1, repetition_penalty=1),  # ints where floats are expected
        dict(mask_token_id=3, pad_token_id=1, eos_token_id=[1, 2], bos_token_id=1),  # pad may be an EOS
        dict(output_history=True, return_dict_in_generate=True),
    ]:
        validate_generation_settings(default_settings() | good)
        DiffusionGenerationConfig(**good)


def test_a_partial_mapping_gets_every_check_its_settings_allow():
    """The command line knows only the flags given; the model's generation_config supplies the rest later."""
    validate_generation_settings({"steps": 3})  # no budget given: cannot tell whether 3 splits over the blocks
    validate_generation_settings({"top_k": 20})  # no temperature given
    with pytest.raises(ValueError, match="zero steps"):
        validate_generation_settings({"steps": 3, "max_new_tokens": 64, "block_length": 16})
    with pytest.raises(ValueError, match="`top_k` must be a positive integer"):
        validate_generation_settings({"top_k": -1})
