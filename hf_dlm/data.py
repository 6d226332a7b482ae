"""Datasets -> token sequences with a loss mask; packing; the collator of `DiffusionTrainer`.

The dataset formats are TRL's (huggingface/trl, `SFTTrainer`), which users already have on the Hub:

- `{"text": ...}`: adaptation / pretraining. Every document is followed by EOS; documents are concatenated and cut
  into `max_length` chunks (dLLM-Var's multi-sample packing, github.com/maomaocun/dLLM-Var: the model sees
  unrelated texts separated by EOS, with full attention, and learns where text stops). Every token carries loss.
- `{"prompt": ..., "completion": ...}`: SFT. The prompt is never masked and carries no loss; EOS is appended to the
  completion. Conversational prompt/completion (lists of messages) go through the chat template.
- `{"messages": [...]}`: chat SFT through the tokenizer's chat template; only assistant turns carry loss.

EOS filling (LLaDA's SFT, github.com/ML-GSAI/LLaDA): with `eos_fill`, the collator pads a completion with EOS tokens
that are real tokens *and carry loss*, not with attention-masked padding. The model then learns that past the
answer comes EOS, so at inference p(EOS) at canvas position j estimates P(answer length <= j): the signal the
`predict` length strategy of `diffusion_generate` reads. (LLaDA pads to the batch's longest answer; pad to a fixed
`max_length` to teach every canvas position.)

Every example becomes `input_ids` + `loss_mask` (1 = may be noised and carries loss). Position 0 is never maskable
(the AR shift: nothing predicts it); `noise.maskable_positions` enforces it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from .training_settings import DATASET_FORMATS, check_training_settings

MODEL_COLUMNS = ("input_ids", "loss_mask")


def detect_format(column_names: Sequence[str], text_field: str = "text") -> str:
    """TRL's conventions: `messages`, else `prompt` + `completion`, else the text field."""
    columns = set(column_names)
    if "messages" in columns:
        return "messages"
    if {"prompt", "completion"} <= columns:
        return "prompt_completion"
    if text_field in columns:
        return "text"
    raise ValueError(
        f"Cannot tell the dataset format from its columns {sorted(columns)}: expected a {text_field!r} column "
        f"(set dataset_text_field for another name), 'prompt' and 'completion', or 'messages'."
    )


def _eos_id(tokenizer: PreTrainedTokenizerBase, eos_token_id: int | None) -> int:
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    if eos is None:
        raise ValueError("The tokenizer has no eos token; set tokenizer.eos_token (documents and answers end with it).")
    return int(eos)


def tokenize_text(batch: dict[str, list], tokenizer, text_field: str, eos_token_id: int,
                  indices: list[int] | None = None) -> dict[str, list]:
    """Documents -> tokens + EOS; every token carries loss. `indices`: the rows' numbers, for error messages."""
    for index, text in zip(indices or range(len(batch[text_field])), batch[text_field]):
        _require_text(text, f"row {index}: {text_field!r}")
    encoded = tokenizer(batch[text_field])["input_ids"]
    input_ids = [ids + [eos_token_id] if not ids or ids[-1] != eos_token_id else ids for ids in encoded]
    return {"input_ids": input_ids, "loss_mask": [[1] * len(ids) for ids in input_ids]}


def tokenize_prompt_completion(example: dict[str, Any], tokenizer, eos_token_id: int,
                               index: int | None = None) -> dict[str, list]:
    """Prompt (no loss) + completion + EOS (loss).

    The two parts are tokenised separately: at inference the prompt is tokenised alone and the model continues it,
    so a BPE merge across the boundary would be a token the model never sees at the start of an answer.
    """
    prompt, completion = example["prompt"], example["completion"]
    if isinstance(prompt, list) and isinstance(completion, list):  # conversational: the completion's turns carry loss
        return tokenize_messages({"messages": prompt + completion}, tokenizer, eos_token_id, loss_from=len(prompt),
                                 index=index)
    _require_text(prompt, f"row {index}: 'prompt'")
    _require_text(completion, f"row {index}: 'completion'")
    prompt_ids = tokenizer(prompt)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if not completion_ids or completion_ids[-1] != eos_token_id:
        completion_ids = completion_ids + [eos_token_id]
    return {
        "input_ids": prompt_ids + completion_ids,
        "loss_mask": [0] * len(prompt_ids) + [1] * len(completion_ids),
    }


def tokenize_messages(example: dict[str, Any], tokenizer, eos_token_id: int, loss_from: int = 0,
                      index: int | None = None) -> dict[str, list]:
    """A conversation through the chat template; assistant turns (from message `loss_from` on) carry loss.

    Each assistant turn's span is found by rendering the conversation up to it (with the generation prompt) and
    through it: the tokens in between are what the model must produce, end-of-turn tokens included. This works
    with any template that renders a conversation's prefixes as prefixes of its tokens (every common one does),
    without needing `{% generation %}` markers. An EOS is appended when no assistant turn holds one (templates that
end turns with a token other than EOS), so that the answer's end is always a target.
    """
    messages = _check_messages(example["messages"], index)

    def render(conversation, add_generation_prompt=False) -> list[int]:
        if not conversation:
            return []
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=add_generation_prompt)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    input_ids = render(messages)
    loss_mask = [0] * len(input_ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or i < loss_from:
            continue
        before, through = render(messages[:i], add_generation_prompt=True), render(messages[: i + 1])
        if input_ids[: len(before)] != before or input_ids[: len(through)] != through or len(before) > len(through):
            raise ValueError(
                "The chat template does not render a conversation's prefixes as prefixes of its tokens, so the "
                "assistant turns cannot be located. Use a template whose turns are delimited by special tokens."
            )
        loss_mask[len(before) : len(through)] = [1] * (len(through) - len(before))
    if any(loss_mask) and not any(m and tok == eos_token_id for tok, m in zip(input_ids, loss_mask)):
        input_ids, loss_mask = input_ids + [eos_token_id], loss_mask + [1]
    return {"input_ids": input_ids, "loss_mask": loss_mask}


class _Indexed:
    """`fn(example_or_batch, index=...)` called as `datasets.map(..., with_indices=True)` calls it, so that a bad
    row's error names its number. A module-level class (not a closure): `map(num_proc=...)` pickles it."""

    def __init__(self, fn, keyword: str):
        self.fn, self.keyword = fn, keyword

    def __call__(self, example, index):
        return self.fn(example, **{self.keyword: index})


def _require_text(value, where: str) -> None:
    """A text field must be a string: None (a missing value in a JSON or CSV file) would reach the tokenizer as
    "TextEncodeInput must be Union[...]"."""
    if not isinstance(value, str):
        raise ValueError(f"Bad training data, {where} is {_shown(value)}, not a string: fix or drop that row.")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_messages(messages, index: int | None) -> list[dict]:
    """Every message of a conversation is a mapping with a string `role` and `content` (chat templates read both)."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"Bad training data, row {index}: 'messages' is {_shown(messages)}, not a non-empty list of "
                         f"{{'role': ..., 'content': ...}} messages.")
    for number, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"Bad training data, row {index}, message {number}: {_shown(message)} is not a "
                             f"{{'role': ..., 'content': ...}} mapping.")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise ValueError(f"Bad training data, row {index}, message {number}: no string {key!r} (got "
                                 f"{_shown(message.get(key))}); every message needs 'role' and 'content'.")
    return list(messages)


def pack_text(batch: dict[str, list], max_length: int) -> dict[str, list]:
    """Concatenate documents (each already ending in EOS) and cut into `max_length` chunks; the tail chunk of each
    map batch stays shorter (the collator pads it)."""
    ids = [tok for seq in batch["input_ids"] for tok in seq]
    mask = [m for seq in batch["loss_mask"] for m in seq]
    starts = range(0, len(ids), max_length)
    return {"input_ids": [ids[s : s + max_length] for s in starts], "loss_mask": [mask[s : s + max_length] for s in starts]}


def pack_examples(batch: dict[str, list], max_length: int) -> dict[str, list]:
    """Pack whole SFT examples into rows of at most `max_length` tokens, first-fit decreasing (TRL's "bfd" idea):
    no example is split, so every answer keeps its prompt and its EOS. With EOS filling, the last answer of a row
    is followed by the row's EOS fill, which is what an answer at the end of a canvas should see."""
    order = sorted(range(len(batch["input_ids"])), key=lambda i: -len(batch["input_ids"][i]))
    rows: list[list[int]] = []  # example indices per row
    room: list[int] = []
    for i in order:
        size = len(batch["input_ids"][i])
        target = next((r for r, free in enumerate(room) if free >= size), None)
        if target is None:
            target = len(rows)
            rows.append([])
            room.append(max_length)
        rows[target].append(i)
        room[target] -= size
    return {
        "input_ids": [[t for i in row for t in batch["input_ids"][i]] for row in rows],
        "loss_mask": [[m for i in row for m in batch["loss_mask"][i]] for row in rows],
    }


def truncate(example: dict[str, list], max_length: int) -> dict[str, list]:
    """Keep the first `max_length` tokens. A cut answer loses its EOS, and the row is then `max_length` long, so EOS
    filling can never claim that the answer ended where it was cut."""
    return {"input_ids": example["input_ids"][:max_length], "loss_mask": example["loss_mask"][:max_length]}


def _has_loss(example: dict[str, list]) -> bool:
    return any(example["loss_mask"][1:])  # position 0 never carries loss


def column_names(dataset) -> list[str]:
    names = getattr(dataset, "column_names", None)
    if names is None:  # a streaming dataset whose features are unknown until read
        names = list(next(iter(dataset)).keys())
    return list(names)


def infer_format(dataset, text_field: str = "text") -> str | None:
    """The TRL format of a dataset from its columns; None when it is already tokenised (`input_ids`)."""
    columns = column_names(dataset)
    return None if "input_ids" in columns else detect_format(columns, text_field)


def prepare_dataset(
    dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    dataset_format: str | None = None,
    text_field: str = "text",
    max_length: int | None = 1024,
    packing: bool | None = None,
    eos_token_id: int | None = None,
    num_proc: int | None = None,
):
    """Tokenise a `datasets.Dataset` or `IterableDataset` of any supported format into `input_ids` + `loss_mask`.

    Already tokenised datasets (an `input_ids` column) are returned as they are (a missing `loss_mask` means every
    token carries loss). Work runs through `datasets.map`, so it is cached for datasets backed by files and lazy for
    streaming ones. `packing=None` packs `text` and leaves SFT examples one per row.
    """
    _refuse_empty(dataset, "The training dataset has no rows: give data with at least one example.")
    columns = column_names(dataset)
    if "input_ids" in columns:
        return dataset
    dataset_format = dataset_format or detect_format(columns, text_field)
    check_training_settings({"dataset_format": dataset_format})
    eos = _eos_id(tokenizer, eos_token_id)
    streaming = not hasattr(dataset, "__len__")
    map_kwargs = {} if streaming else {"num_proc": num_proc, "desc": f"Tokenising ({dataset_format})"}
    if dataset_format == "text":
        fn, batched = partial(tokenize_text, tokenizer=tokenizer, text_field=text_field, eos_token_id=eos), True
    elif dataset_format == "prompt_completion":
        fn, batched = partial(tokenize_prompt_completion, tokenizer=tokenizer, eos_token_id=eos), False
    else:
        if tokenizer.chat_template is None:
            raise ValueError("The 'messages' format needs a chat template: set tokenizer.chat_template.")
        fn, batched = partial(tokenize_messages, tokenizer=tokenizer, eos_token_id=eos), False
    fn = _Indexed(fn, "indices" if batched else "index")
    dataset = dataset.map(fn, batched=batched, with_indices=True, remove_columns=columns, **map_kwargs)

    packing = dataset_format == "text" if packing is None else packing
    check_training_settings({"packing": packing, "max_length": max_length})
    if packing:
        pack = pack_text if dataset_format == "text" else pack_examples
        if dataset_format != "text":  # an example longer than a row cannot be packed whole: cut it first
            dataset = dataset.map(partial(truncate, max_length=max_length), **_desc(map_kwargs, "Truncating"))
        dataset = dataset.map(partial(pack, max_length=max_length), batched=True, **_desc(map_kwargs, "Packing"))
    elif max_length is not None:
        dataset = dataset.map(partial(truncate, max_length=max_length), **_desc(map_kwargs, "Truncating"))
    # A prompt that fills the whole row leaves nothing to learn from.
    dataset = dataset.filter(_has_loss, **({} if streaming else {"num_proc": num_proc}))
    _refuse_empty(dataset, f"Every row of the training data was dropped: none has a token to learn from within "
                  f"max_length={max_length} (each prompt fills its row, or every answer is empty). Raise max_length "
                  f"or shorten the prompts.")
    return dataset


def _refuse_empty(dataset, message: str) -> None:
    """A dataset with no rows fails much later with a message about something else (transformers' "set
    remove_unused_columns=False", a sampler's "num_samples=0"): refuse it here. Streaming datasets are not counted."""
    if hasattr(dataset, "__len__") and len(dataset) == 0:
        raise ValueError(message)


def _desc(map_kwargs: dict, desc: str) -> dict:
    return {**map_kwargs, "desc": desc} if "desc" in map_kwargs else map_kwargs


@dataclass
class DataCollatorForDiffusion:
    """Pads `input_ids` + `loss_mask` rows on the right into `input_ids`, `attention_mask`, `loss_mask` tensors.

    Args:
        pad_token_id: id written into padding (attention 0, no loss).
        eos_token_id: id of the EOS fill (needed with `eos_fill`).
        eos_fill: LLaDA's SFT padding: pad with EOS tokens that are attended and carry loss (see the module doc).
        padding: "longest" pads to the batch's longest row; "max_length" to `max_length` (the same length for every
            batch, so the EOS targets of a row do not depend on the other rows); "random" pads like "max_length"
            when EOS filling (`DiffusionTrainer` then cuts each row's fill at a random length, `random_fill_lengths`)
            and like "longest" otherwise.
        max_length: the fixed length of `padding="max_length"`.
        pad_to_multiple_of: round the padded length up to a multiple of this (tensor-core friendly shapes).
    """

    pad_token_id: int
    eos_token_id: int | None = None
    eos_fill: bool = False
    padding: str = "longest"
    max_length: int | None = None
    pad_to_multiple_of: int | None = None

    def __post_init__(self):
        check_training_settings({"padding": self.padding, "max_length": self.max_length, "eos_fill": self.eos_fill,
                                 "eos_token_id": self.eos_token_id})

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        full = self.padding == "max_length" or (self.padding == "random" and self.eos_fill)
        length = self.max_length if full else max(lengths)
        if max(lengths) > length:
            raise ValueError(f"A row has {max(lengths)} tokens, more than max_length={length}: truncate the dataset.")
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        fill = self.eos_token_id if self.eos_fill else self.pad_token_id
        input_ids = torch.full((len(features), length), fill, dtype=torch.long)
        attention_mask = torch.full((len(features), length), int(self.eos_fill), dtype=torch.long)
        loss_mask = torch.full((len(features), length), int(self.eos_fill), dtype=torch.long)
        for row, (feature, n) in enumerate(zip(features, lengths)):
            input_ids[row, :n] = torch.as_tensor(feature["input_ids"])
            attention_mask[row, :n] = 1
            loss_mask[row, :n] = torch.as_tensor(feature["loss_mask"]) if "loss_mask" in feature else 1
        loss_mask[:, 0] = 0  # position 0 is never predicted (AR shift)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}


def random_fill_lengths(
    batch: dict[str, torch.Tensor],
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    generator_for: Callable[[int], torch.Generator],
) -> dict[str, torch.Tensor]:
    """Cut each EOS-filled row of a collated batch at a random length: the view of every canvas size at once.

    A row EOS-filled to `max_length` teaches `fixed` and `predict` at large budgets (every canvas position they
    read carries an EOS target), but a row never *ends* soon after its answer, which is what the last block of
    `grow` and the short canvas of `predict` look like; EOS-filling only to the batch's longest row
    (`padding="longest"`, LLaDA) leaves the positions past it untrained, which `fixed` and `predict` then read at
    any budget longer than the training answers. Measured (docs/benchmarks.md, "Training defaults"): neither
    serves all three strategies. So each row keeps its EOS fill up to a length drawn uniformly between the end of
    its answer (its first loss-carrying EOS, included) and its full length; past it the row is padding (not
    attended, no loss), and the batch is trimmed to its longest kept row. Rows without an EOS (cut answers) stay
    whole.

    `generator_for(row)` returns the torch.Generator of a row (the trainer seeds it by seed, optimizer step and
    the row's tokens, like the noise).
    """
    input_ids, attention_mask, loss_mask = (batch[k].clone() for k in ("input_ids", "attention_mask", "loss_mask"))
    eos = torch.tensor(list(eos_token_ids), device=input_ids.device)
    keep = []
    for row in range(input_ids.shape[0]):
        end = int(attention_mask[row].nonzero().max()) + 1 if attention_mask[row].any() else 0
        ends = (torch.isin(input_ids[row, :end], eos) & loss_mask[row, :end].bool()).nonzero()
        ends = ends[ends > 0]
        if ends.numel() == 0:
            keep.append(end)
            continue
        answer_end = int(ends[0]) + 1
        cut = int(torch.randint(answer_end, end + 1, (1,), generator=generator_for(row)))
        input_ids[row, cut:] = pad_token_id
        attention_mask[row, cut:] = 0
        loss_mask[row, cut:] = 0
        keep.append(cut)
    length = max(keep, default=0)
    return {**batch, "input_ids": input_ids[:, :length], "attention_mask": attention_mask[:, :length],
            "loss_mask": loss_mask[:, :length]}


def block_rows(
    batch: dict[str, torch.Tensor],
    block_length: int,
    share: float,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    generator_for: Callable[[int], torch.Generator],
) -> dict[str, torch.Tensor]:
    """Turn a `share` of a collated batch's rows into *block rows*: the view of semi-autoregressive decoding.

    A canvas row (the whole answer, EOS-filled, noised at one level t) teaches the first forward of `fixed` and
    `predict`. But `grow` (dLLM-Var) and every later block of the semi-AR schedule see something else: the prompt,
    the answer's finished blocks *clean*, the current block partly masked, and nothing after it. A model trained
    on canvas rows only has never seen a sequence end in masks unless an EOS fill follows, so at the end of a
    growing canvas it predicts EOS and stops answers after a few words. A block row is that view: pick block k
    (block_length tokens from the answer's first loss-carrying position; k uniform over the blocks up to the one
    holding the answer's first EOS, the blocks `grow` can reach), keep the tokens before it clean and without
    loss, keep block k as the only loss-carrying span (the noise then masks it at level t), and cut the row after
    it (padding: not attended, no loss). With EOS filling, a block past the answer's end holds its EOS fill.

    `generator_for(row)` returns the torch.Generator of a row, so the choice is reproducible (the trainer seeds it
    like the noise: by seed, optimizer step and the row's tokens).
    """
    check_training_settings({"block_rows": share, "block_length": block_length})
    input_ids, attention_mask, loss_mask = (batch[k].clone() for k in ("input_ids", "attention_mask", "loss_mask"))
    eos = torch.tensor(list(eos_token_ids), device=input_ids.device)
    for row in range(input_ids.shape[0]):
        generator = generator_for(row)
        if torch.rand(1, generator=generator).item() >= share:
            continue
        loss_at = loss_mask[row].bool().nonzero().squeeze(-1)
        loss_at = loss_at[loss_at > 0]
        if loss_at.numel() == 0:
            continue
        start = int(loss_at[0])
        end = int(attention_mask[row].nonzero().max()) + 1  # right-padded rows: one past the last real token
        ends = (torch.isin(input_ids[row, start:end], eos) & loss_mask[row, start:end].bool()).nonzero()
        last = int(ends[0]) if ends.numel() else end - start - 1  # the answer's first EOS (or its last token)
        k = int(torch.randint(0, last // block_length + 1, (1,), generator=generator))
        block_start = start + k * block_length
        block_end = min(block_start + block_length, end)
        loss_mask[row, :block_start] = 0
        loss_mask[row, block_end:] = 0
        attention_mask[row, block_end:] = 0
        input_ids[row, block_end:] = pad_token_id
    return {**batch, "input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}


def left_padded(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], add_special_tokens: bool = True) -> dict:
    """`input_ids` / `attention_mask` of `texts`, padded on the left as `diffusion_generate` wants them, whatever
    the tokenizer's own `padding_side` (restored afterwards)."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        encoded = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
    finally:
        tokenizer.padding_side = side
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


DATA_FILE_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def local_data_problem(name: str) -> str | None:
    """Why `name` cannot be training data when it can only be a local path (None otherwise): a data file name or a
    path that does not exist would otherwise be looked up on the Hub ("Couldn't reach 'nope.jsonl' on the Hub")."""
    from .loading import looks_like_path

    path = Path(name).expanduser()
    if path.exists():
        if path.is_file() and path.suffix not in DATA_FILE_BUILDERS:
            return f"{name}: unknown data file type {path.suffix!r}; use one of {sorted(DATA_FILE_BUILDERS)}"
        return None
    if path.suffix in DATA_FILE_BUILDERS or looks_like_path(name):
        return f"{name}: no such file or directory"
    return None


def load_training_dataset(name: str, config: str | None = None, split: str = "train", streaming: bool = False):
    """A dataset from the Hub, a `save_to_disk` directory, or one local file (.txt/.json/.jsonl/.csv/.parquet)."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    problem = local_data_problem(name)
    if problem:
        raise FileNotFoundError(problem)
    path = Path(name)
    if path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
        dataset = load_from_disk(name)
        dataset = dataset[split] if isinstance(dataset, DatasetDict) else dataset
        return dataset.to_iterable_dataset() if streaming else dataset
    if path.is_file():
        if path.stat().st_size == 0:
            raise ValueError(f"{name} is empty: give data with at least one example.")
        return load_dataset(DATA_FILE_BUILDERS[path.suffix], data_files=name, split=split, streaming=streaming)
    return load_dataset(name, config, split=split, streaming=streaming)


__all__ = [
    "left_padded",
    "load_training_dataset",
    "local_data_problem",
    "DATASET_FORMATS",
    "DataCollatorForDiffusion",
    "block_rows",
    "detect_format",
    "infer_format",
    "pack_examples",
    "pack_text",
    "prepare_dataset",
    "random_fill_lengths",
    "tokenize_messages",
    "tokenize_prompt_completion",
    "tokenize_text",
]
