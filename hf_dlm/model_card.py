"""Model cards (README.md with Hub metadata) for saved and pushed diffusion LMs.

On the Hub an empty README leaves a model's page blank: no `base_model` (the Hub's model tree), no
`library_name` / `pipeline_tag` (how the Hub offers to run it), no licence, no usage. transformers' `Trainer`
writes a card for this reason; this module writes one for hf_dlm models, from what the model itself knows:

- metadata: `base_model` (the causal LM it was adapted from, when that is a Hub id), `library_name: transformers`,
  `pipeline_tag: text-generation`, `tags`, `license` (read from the base's card when it is available offline, in
  a local directory or the Hub cache; else left out rather than guessed), `datasets` (Hub ids, when known);
- a body: what the model is (backbone, attention, mask token), its decoding defaults (`generation_config`), how to
  load and decode it with `AutoModel` + `trust_remote_code=True`, how it was trained (`DiffusionTrainer`) and
  measured numbers, when the user passes them;
- `model-index` (the Hub's evaluation results, shown on the model page and in leaderboards) for the measured numbers
  that say on what they were measured: a `huggingface_hub.EvalResult`, or a dict of its fields, as the value.
  A plain number only goes into the body's table: the Hub's schema needs a task, a dataset and a metric type, which
  a bare "tokens per forward: 0.96" does not give, and they are not guessed.

Who calls it: `DiffusionLM.save_pretrained` (and so `push_to_hub`) and `DiffusionTrainer.create_model_card`. The
remote-code files (`*_dlm.py`) must not import hf_dlm, so `modeling_dlm` looks this module up at run time and
skips the card where hf_dlm is not installed (a checkpoint loaded as remote code saves without a card there).

A README.md is only ever replaced when a tool wrote it: one of ours (it carries `CARD_MARK`; delete that line to
keep your edits), or the generic drafts transformers, the Trainer and peft write. A user's own README is never
touched. What `DiffusionTrainer` and `save_pretrained(model_card_metrics=...)` told the model is kept on it
(`CARD_INFO_ATTRIBUTE`), so that a later save or push writes the same complete card.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CARD_MARK = "<!-- hf_dlm model card: written by hf_dlm, rewritten when the model is saved again. Delete this line " \
            "to keep your edits. -->"
# Sentences of the drafts other tools write, which a richer card may replace: transformers' push_to_hub template,
# the Trainer's TrainingSummary, huggingface_hub's default template (peft's adapter card).
GENERATED_MARKS = ("This model card has been automatically generated",
                   "This model card has been generated automatically",
                   "<!-- Provide a quick summary of what the model is/does. -->")
FILE_SUFFIXES = {".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt", ".arrow", ".gguf", ".safetensors", ".bin"}
CARD_INFO_ATTRIBUTE = "_hf_dlm_model_card"  # {"metrics": {...}, "training": {...}, "datasets": [...]}
TAGS = ["hf_dlm", "diffusion-lm", "masked-diffusion", "text-generation"]
# Decoding settings that describe the model's defaults (token ids and output switches are left out).
DECODING_FIELDS = ("length_strategy", "max_new_tokens", "block_length", "steps", "threshold", "unmasking",
                   "decided_as_context", "defer_repeats", "repetition_penalty", "temperature", "top_k", "top_p",
                   "predict_threshold", "length_margin", "use_cache", "cache_refresh")
ATTENTION_TEXT = {
    "bidirectional": "bidirectional attention over the whole sequence (DiffuGPT / DiffuLLaMA)",
    "causal_prefix": "block diffusion with a causal context (BD3-LM / Fast-dLLM v2 style): the prompt and finished "
                     "blocks are read causally, the block being denoised bidirectionally",
}


# ----------------------------------------------------------------------------------------------- what is known
def card_info(model) -> dict:
    """What was told to the model for its card (training, datasets, metrics); `{}` when nothing was."""
    return getattr(_unwrap(model), CARD_INFO_ATTRIBUTE, None) or {}


def remember(model, **info) -> dict:
    """Keep `info` (training=..., datasets=..., metrics=...) on the model for the cards of its later saves."""
    inner = _unwrap(model)
    kept = dict(card_info(inner))
    kept.update({k: v for k, v in info.items() if v})
    setattr(inner, CARD_INFO_ATTRIBUTE, kept)
    return kept


def _unwrap(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def hub_id(name: str | None) -> str | None:
    """`name` if it reads as a Hub repo id (and is not a local path), else None: a local or temporary directory
    means nothing on the Hub, and `base_model` must name a Hub repo."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not name or os.path.exists(name) or os.path.isabs(name) or name.startswith((".", "~")):
        return None
    if Path(name).suffix.lower() in FILE_SUFFIXES:  # a data or weights file given by name (data.jsonl)
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def base_name(model) -> str | None:
    """The name or path the causal LM was loaded from (`backbone_config._name_or_path`), or None."""
    config = getattr(_unwrap(model), "config", None)
    backbone = getattr(config, "backbone_config", None)
    name = getattr(backbone, "_name_or_path", None) if backbone is not None else None
    return name or None


def base_license(name: str | None) -> str | None:
    """The licence in the base model's own card, read offline: a local directory's README.md, or the Hub cache's
    copy of the repo's README.md. None when neither is there: a licence is carried, never guessed."""
    if not name:
        return None
    readme = Path(name) / "README.md"
    if not readme.is_file() and hub_id(name):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "README.md")
        readme = Path(cached) if isinstance(cached, str) else None
    if readme is None or not readme.is_file():
        return None
    from huggingface_hub import ModelCard

    try:
        license_ = ModelCard.load(readme).data.license
    except Exception:  # an unreadable card is as good as none: the licence is left out
        return None
    return license_ if isinstance(license_, str) and license_ else None


def training_summary(args, peft_config=None) -> dict:
    """The training arguments that matter to a reader of the card (what `DiffusionTrainer` was run with)."""
    fields = ("max_length", "block_length", "t_min", "t_max", "padding", "packing", "eos_fill", "block_rows",
              "anneal_steps", "confidence_loss_weight", "learning_rate", "per_device_train_batch_size",
              "gradient_accumulation_steps", "num_train_epochs", "max_steps", "seed")
    summary = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    if summary.get("max_steps", -1) <= 0:
        summary.pop("max_steps", None)
    else:
        summary.pop("num_train_epochs", None)
    if peft_config is not None:
        kind = getattr(peft_config, "peft_type", None)
        summary["peft"] = getattr(kind, "value", kind) or type(peft_config).__name__
        for name in ("r", "lora_alpha", "lora_dropout"):
            if getattr(peft_config, name, None) is not None:
                summary[f"lora_{name}" if name == "r" else name] = getattr(peft_config, name)
    return summary


# ----------------------------------------------------------------------------------------------- the card
def build_card(model, repo_id: str | None = None, *, metrics: dict | None = None, training: dict | None = None,
               datasets: list[str] | None = None, license: str | None = None, extra_tags: list[str] | None = None):
    """The `huggingface_hub.ModelCard` of `model`. `repo_id`: the name the usage snippet loads (the Hub repo, or
    the directory saved to); the rest default to what `remember` kept on the model."""
    from huggingface_hub import ModelCard, ModelCardData

    inner = _unwrap(model)
    info = card_info(inner)
    metrics = metrics if metrics is not None else info.get("metrics")
    metrics = {name: _eval_result(name, value) for name, value in (metrics or {}).items()} or None
    training = training if training is not None else info.get("training")
    datasets = [d for d in (datasets if datasets is not None else info.get("datasets") or []) if hub_id(d)]
    base = base_name(inner)
    base_id = hub_id(base)
    license = license or info.get("license") or base_license(base)
    tags = list(dict.fromkeys(TAGS + list(extra_tags or [])))
    results = [value for value in (metrics or {}).values() if not _is_number(value)]
    model_name = repo_id.rstrip("/").rsplit("/", 1)[-1] if repo_id else "diffusion-lm"
    data = ModelCardData(base_model=base_id, library_name="transformers", pipeline_tag="text-generation",
                         tags=tags, license=license, datasets=datasets or None,
                         model_name=model_name if results else None, eval_results=results or None)
    body = "\n\n".join(part for part in (_about(inner, repo_id, base, base_id), _decoding(inner),
                                         _usage(inner, repo_id), _training(training, datasets),
                                         _measured(metrics), _limits()) if part)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{CARD_MARK}\n\n{body}\n")


def _about(model, repo_id, base, base_id) -> str:
    config = model.config
    backbone = config.backbone_config
    name = repo_id.rstrip("/").rsplit("/", 1)[-1] if repo_id else "A diffusion language model"
    source = (f"[{base_id}](https://huggingface.co/{base_id})" if base_id else
              f"`{base}`" if base else f"a {backbone.model_type} causal LM")
    params = sum(p.numel() for p in model.parameters())
    tokenizer = getattr(model, "tokenizer", None)
    mask = tokenizer.convert_ids_to_tokens(config.mask_token_id) if tokenizer is not None else None
    mask_text = f"`{mask}` (id {config.mask_token_id})" if mask else f"id {config.mask_token_id}"
    lines = [f"# {name}", "",
             f"A masked **diffusion language model** adapted from {source} by hf_dlm (the `hf-dlm` Python "
             f"package): the causal LM's weights are reused as a denoiser that fills a canvas "
             f"of mask tokens, several tokens per forward pass, and decodes with variable output length (it stops at "
             f"its own EOS instead of filling a fixed canvas).", "",
             f"- backbone: {backbone.model_type}, {params / 1e6:.1f}M parameters",
             f"- attention: `{config.attention}`: {ATTENTION_TEXT.get(config.attention, config.attention)}",
             f"- mask token: {mask_text}; the AR shift is kept (hidden state i-1 scores token i)"]
    if getattr(config, "drafter", None):
        lines.append(f"- drafter: `{config.drafter}` (rank {config.drafter_rank}): it drafts for its own base, "
                     f"decode with `model.speculative_generate` (the base's greedy answer)")
    return "\n".join(lines)


def _decoding(model) -> str:
    config = model.generation_config
    rows = [(name, getattr(config, name, None)) for name in DECODING_FIELDS]
    table = "\n".join(f"| `{name}` | `{value}` |" for name, value in rows if value is not None)
    return ("## Decoding defaults\n\n`generation_config.json` holds the settings `diffusion_generate` uses unless a "
            "call overrides them:\n\n| setting | value |\n|---|---|\n" + table)


def _usage(model, repo_id) -> str:
    repo = repo_id or "path/to/this/model"
    tokenizer = getattr(model, "tokenizer", None)
    chat = getattr(tokenizer, "chat_template", None) is not None
    if chat:
        prompt = ('text = tokenizer.apply_chat_template([{"role": "user", "content": "Name three rivers."}],\n'
                  '                                     tokenize=False, add_generation_prompt=True)\n'
                  'inputs = tokenizer([text], return_tensors="pt", add_special_tokens=False)')
    else:
        prompt = 'inputs = tokenizer(["The capital of France is"], return_tensors="pt")'
    pipe_input = '[{"role": "user", "content": "Name three rivers."}]' if chat else '"The capital of France is"'
    return (f"## Usage\n\nWith torch and transformers only (the model's code, `*_dlm.py`, comes with it):\n\n"
            f"```python\nfrom transformers import AutoModel, AutoTokenizer\n\n"
            f'model = AutoModel.from_pretrained("{repo}", trust_remote_code=True)\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}", trust_remote_code=True)\n'
            f'tokenizer.padding_side = "left"\n{prompt}\n'
            f"out = model.diffusion_generate(inputs.input_ids, inputs.attention_mask, return_dict_in_generate=True)\n"
            f'print(tokenizer.decode(out.sequences[0, inputs.input_ids.shape[1]:], skip_special_tokens=True), '
            f'out.nfe, "forwards")\n```\n\n'
            f"Or through transformers' pipeline (strings, batches or chat messages):\n\n"
            f"```python\nfrom transformers import pipeline\n\n"
            f'pipe = pipeline("text-generation", model="{repo}", trust_remote_code=True)\n'
            f"print(pipe({pipe_input}, max_new_tokens=128))\n```\n\n"
            f"Any decoding default above can be passed as a keyword (`max_new_tokens=128, threshold=0.8`). With "
            f"`pip install hf-dlm`: `hf-dlm generate --model {repo} \"prompt\"`, or `hf-dlm serve --model {repo}` "
            f"for a web page that shows the canvas filling in and an OpenAI-compatible API on the same port.")


def _training(training: dict | None, datasets: list[str]) -> str:
    if not training:
        return ""
    rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in training.items())
    data = f"\n\nDatasets: {', '.join(f'[{d}](https://huggingface.co/datasets/{d})' for d in datasets)}." \
        if datasets else ""
    return (f"## Training\n\nAdapted with hf_dlm's `DiffusionTrainer` (masked diffusion objective, 1/t-weighted "
            f"loss on masked tokens):\n\n| argument | value |\n|---|---|\n{rows}{data}")


def _measured(metrics: dict | None) -> str:
    if not metrics:
        return ""
    rows = "\n".join(f"| {k} | {_format(v)} |" for k, v in metrics.items())
    return f"## Measured\n\nNumbers given when the model was saved (`save_pretrained(..., model_card_metrics={...})`), as measured by whoever saved it:\n\n| metric | value |\n|---|---|\n{rows}"


def _format(value: Any) -> str:
    if not _is_number(value):  # an EvalResult: its value, and on what it was measured
        split = f", {value.dataset_split}" if value.dataset_split else ""
        return f"{_format(value.metric_value)} ({value.dataset_name}{split})"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _eval_result(name: str, value: Any):
    """A measured number as given: a number stays one (the body's table only); an `EvalResult`, or a mapping of its
    fields, becomes an `EvalResult` for `model-index`, named `name` unless it names its metric itself."""
    from huggingface_hub import EvalResult

    if _is_number(value):
        return value
    if isinstance(value, Mapping):
        try:
            value = EvalResult(**value)
        except TypeError as error:
            raise ValueError(
                f"model_card_metrics[{name!r}] = {dict(value)!r} is not an evaluation result ({error}). Give a "
                f"number, or the fields of huggingface_hub.EvalResult: task_type (e.g. 'text-generation'), "
                f"dataset_type (the dataset's Hub id, e.g. 'gsm8k'), dataset_name, metric_type (e.g. 'exact_match'), "
                f"metric_value, and optionally dataset_split, dataset_config, ..."
            ) from None
    if not isinstance(value, EvalResult):
        raise ValueError(f"model_card_metrics[{name!r}] must be a number or a huggingface_hub.EvalResult (or a dict "
                         f"of its fields), got {type(value).__name__}.")
    return value if value.metric_name is not None else dataclasses.replace(value, metric_name=name)


def _limits() -> str:
    return ("## Limitations\n\nA diffusion LM adapted from a causal LM needs diffusion training before its answers "
            "are good; it keeps its base's knowledge, biases and licence.")


# ----------------------------------------------------------------------------------------------- writing
def replaceable(readme: Path) -> bool:
    """Whether `readme` may be (re)written: absent, ours, or another tool's generated draft; never a user's."""
    if not readme.exists():
        return True
    text = readme.read_text(encoding="utf-8", errors="replace")
    return CARD_MARK in text or any(mark in text for mark in GENERATED_MARKS)


def write_model_card(directory, model, repo_id: str | None = None, *, metrics: dict | None = None,
                     **kwargs) -> Path | None:
    """Write `directory/README.md` for `model` unless a user's README is there; returns the path written, or None.

    `repo_id`: the name the usage snippet loads (default: the directory as given); `metrics`: measured numbers
    (name -> value) for the card, kept on the model for later saves. Tags a README already holds (e.g. those
    `push_to_hub(tags=...)` put in transformers' draft) are kept."""
    readme = Path(directory) / "README.md"
    if not replaceable(readme):
        return None
    if metrics:  # checked before it is kept: a bad entry must not stay on the model and fail every later save
        remember(model, metrics={name: _eval_result(name, value) for name, value in metrics.items()})
    extra_tags = list(kwargs.pop("extra_tags", None) or [])
    if readme.exists():
        from huggingface_hub import ModelCard

        try:
            extra_tags += list(ModelCard.load(readme).data.tags or [])
        except Exception:  # a draft without readable metadata: nothing to keep
            pass
    card = build_card(model, repo_id or str(directory), extra_tags=extra_tags, **kwargs)
    card.save(readme)
    return readme


__all__ = ["CARD_MARK", "base_license", "build_card", "card_info", "hub_id", "remember", "replaceable",
           "training_summary", "write_model_card"]
