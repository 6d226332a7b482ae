"""Data formats (hf_dlm.data): which tokens exist, which carry loss, how rows are packed and padded."""

import pytest
import torch
from datasets import Dataset, IterableDataset, load_dataset

from hf_dlm.adapt import add_special_tokens
from hf_dlm.data import (
    DataCollatorForDiffusion,
    block_rows,
    detect_format,
    infer_format,
    prepare_dataset,
    random_fill_lengths,
)
from hf_dlm.testing import char_tokenizer

# A chat template in the char tokenizer's alphabet; assistant turns end with EOS, like <|im_end|> in ChatML.
# (transformers renders templates with trim_blocks: the newline after a block tag is dropped.)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}<|endoftext|>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture
def tok():
    tokenizer = char_tokenizer()
    add_special_tokens(tokenizer)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def text_of(tok, ids, mask=None):
    return "".join(tok.convert_ids_to_tokens([i for j, i in enumerate(ids) if mask is None or mask[j]]))


def test_text_documents_end_with_eos_and_pack_into_max_length_rows(tok):
    docs = ["abc", "hello world", "xy", "zzzzzz"]
    ds = prepare_dataset(Dataset.from_dict({"text": docs}), tok, max_length=8)
    stream = [i for row in ds["input_ids"] for i in row]
    assert text_of(tok, stream) == "".join(d + "<|endoftext|>" for d in docs)
    assert [len(r) for r in ds["input_ids"]] == [8, 8, 8, 2]  # 26 tokens
    assert all(all(m) for m in ds["loss_mask"])


def test_text_without_packing_keeps_one_truncated_document_per_row(tok):
    ds = prepare_dataset(Dataset.from_dict({"text": ["abcdef", "gh"]}), tok, max_length=4, packing=False)
    assert [text_of(tok, r) for r in ds["input_ids"]] == ["abcd", "gh<|endoftext|>"]


def test_prompt_carries_no_loss_and_the_completion_ends_with_one_eos(tok):
    ds = prepare_dataset(Dataset.from_dict({"prompt": ["2+2="], "completion": ["4"]}), tok)
    ids, mask = ds[0]["input_ids"], ds[0]["loss_mask"]
    assert text_of(tok, ids) == "2+2=4<|endoftext|>"
    assert text_of(tok, ids, mask) == "4<|endoftext|>"
    already = prepare_dataset(Dataset.from_dict({"prompt": ["a"], "completion": ["b<|endoftext|>"]}), tok)
    assert text_of(tok, already[0]["input_ids"]) == "ab<|endoftext|>"


def test_messages_put_loss_on_assistant_turns_only(tok):
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    row = prepare_dataset(Dataset.from_dict({"messages": [messages]}), tok)[0]
    assert text_of(tok, row["input_ids"]) == tok.apply_chat_template(messages, tokenize=False)
    # the assistant contents and their end-of-turn EOS
    assert text_of(tok, row["input_ids"], row["loss_mask"]) == "hello<|endoftext|>4<|endoftext|>"


def test_messages_get_an_eos_when_the_template_ends_turns_without_one(tok):
    tok.chat_template = "{% for m in messages %}#{{ m['content'] }};{% endfor %}{% if add_generation_prompt %}#{% endif %}"
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    row = prepare_dataset(Dataset.from_dict({"messages": [messages]}), tok)[0]
    assert text_of(tok, row["input_ids"]) == "#q;#a;<|endoftext|>"
    assert text_of(tok, row["input_ids"], row["loss_mask"]) == "a;<|endoftext|>"


def test_conversational_prompt_completion_trains_only_the_completion_turns(tok):
    prompt = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}, {"role": "user", "content": "r"}]
    completion = [{"role": "assistant", "content": "y"}]
    row = prepare_dataset(Dataset.from_list([{"prompt": prompt, "completion": completion}]), tok)[0]
    assert text_of(tok, row["input_ids"], row["loss_mask"]) == "y<|endoftext|>"


def test_sft_packing_keeps_examples_whole(tok):
    prompts = ["a", "bb", "ccc", "dddd", "e"]
    ds = Dataset.from_dict({"prompt": prompts, "completion": ["1", "22", "333", "4", "55555"]})
    packed = prepare_dataset(ds, tok, max_length=10, packing=True)
    lengths = [len(r) for r in packed["input_ids"]]
    assert max(lengths) <= 10 and len(lengths) < len(prompts)
    pieces = sorted(text_of(tok, r).split("<|endoftext|>")[:-1] for r in packed["input_ids"])
    assert sorted(p for row in pieces for p in row) == sorted(p + c for p, c in zip(prompts, ds["completion"]))


def test_rows_without_anything_to_learn_are_dropped(tok):
    ds = Dataset.from_dict({"prompt": ["a long prompt", "ok"], "completion": ["x", "y"]})
    out = prepare_dataset(ds, tok, max_length=6)
    assert [text_of(tok, r) for r in out["input_ids"]] == ["oky<|endoftext|>"]


def test_collator_pads_with_eos_that_carry_loss_when_filling(tok):
    rows = [{"input_ids": [5, 6, 7], "loss_mask": [0, 1, 1]}, {"input_ids": [5], "loss_mask": [0]}]
    eos, pad = tok.eos_token_id, tok.pad_token_id
    filled = DataCollatorForDiffusion(pad_token_id=pad, eos_token_id=eos, eos_fill=True)(rows)
    assert filled["input_ids"].tolist() == [[5, 6, 7], [5, eos, eos]]
    assert filled["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 1]]
    assert filled["loss_mask"].tolist() == [[0, 1, 1], [0, 1, 1]]
    padded = DataCollatorForDiffusion(pad_token_id=pad, padding="max_length", max_length=4)(rows)
    assert padded["input_ids"].tolist() == [[5, 6, 7, pad], [5, pad, pad, pad]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert padded["loss_mask"].tolist() == [[0, 1, 1, 0], [0, 0, 0, 0]]


def test_collator_never_gives_loss_to_position_zero_and_defaults_to_all_loss():
    batch = DataCollatorForDiffusion(pad_token_id=0, pad_to_multiple_of=4)([{"input_ids": [3, 4, 5]}])
    assert batch["loss_mask"].tolist() == [[0, 1, 1, 0]]


def test_streaming_datasets_give_the_same_rows(tok):
    data = {"prompt": ["a", "bc", "d"], "completion": ["x", "yz", "w"]}
    eager = prepare_dataset(Dataset.from_dict(data), tok)
    streamed = prepare_dataset(Dataset.from_dict(data).to_iterable_dataset(), tok)
    assert isinstance(streamed, IterableDataset)
    assert [r["input_ids"] for r in streamed] == eager["input_ids"]
    text_stream = prepare_dataset(Dataset.from_dict({"text": ["abc", "de"]}).to_iterable_dataset(), tok, max_length=4)
    assert [len(r["input_ids"]) for r in text_stream] == [4, 3]


def test_tokenisation_of_file_datasets_is_cached(tok, tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("first line\nsecond line\n")
    ds = load_dataset("text", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    first = prepare_dataset(ds, tok, max_length=8)
    again = prepare_dataset(ds, tok, max_length=8)
    assert first.cache_files and first.cache_files == again.cache_files
    assert first["input_ids"] == again["input_ids"]


def test_format_detection_follows_trl(tok):
    assert detect_format(["messages", "text"]) == "messages"
    assert detect_format(["prompt", "completion"]) == "prompt_completion"
    assert detect_format(["body"], text_field="body") == "text"
    assert infer_format(Dataset.from_dict({"input_ids": [[1, 2]]})) is None
    with pytest.raises(ValueError, match="dataset_text_field"):
        detect_format(["question", "answer"])
    no_template = char_tokenizer()
    with pytest.raises(ValueError, match="chat template"):
        prepare_dataset(Dataset.from_dict({"messages": [[{"role": "user", "content": "a"}]]}), no_template)


def test_block_rows_show_a_clean_prefix_one_loss_block_and_nothing_after(tok):
    eos, pad = tok.eos_token_id, tok.pad_token_id
    # prompt of 3 tokens, answer of 5 + EOS, EOS-filled to 16: with blocks of 4 the answer's EOS is in block 1,
    # so only blocks 0 and 1 are reachable by `grow`.
    rows = [{"input_ids": [5, 6, 7, 10, 11, 12, 13, 14, eos], "loss_mask": [0, 0, 0, 1, 1, 1, 1, 1, 1]}]
    batch = DataCollatorForDiffusion(pad_token_id=pad, eos_token_id=eos, eos_fill=True, padding="max_length",
                                     max_length=16)(rows)
    seen = set()
    for seed in range(40):
        generator = torch.Generator().manual_seed(seed)
        out = block_rows(batch, 4, 1.0, [eos], pad, lambda row, g=generator: g)
        ids, attention, loss = (out[k][0].tolist() for k in ("input_ids", "attention_mask", "loss_mask"))
        start = loss.index(1)
        end = sum(attention)
        seen.add(start)
        assert start in (3, 7) and end == start + 4 and sum(loss) == 4  # one whole block carries loss
        assert ids[:end] == batch["input_ids"][0, :end].tolist()  # clean prefix and block (the noise masks later)
        assert ids[end:] == [pad] * (16 - end) and not any(loss[end:])
    assert seen == {3, 7}  # both reachable blocks are drawn, never the EOS fill beyond them
    untouched = block_rows(batch, 4, 0.0, [eos], pad, lambda row: torch.Generator().manual_seed(0))
    assert all(torch.equal(untouched[k], batch[k]) for k in batch)
    with pytest.raises(ValueError, match="share"):
        block_rows(batch, 4, 1.5, [eos], pad, lambda row: None)


def test_random_fill_keeps_each_answer_and_cuts_its_eos_fill_anywhere_up_to_max_length(tok):
    eos, pad = tok.eos_token_id, tok.pad_token_id
    # answer + EOS end at position 6; a second row without EOS (an answer cut at max_length) fills its whole row.
    rows = [{"input_ids": [5, 6, 7, 10, 11, 12, eos], "loss_mask": [0, 0, 0, 1, 1, 1, 1]},
            {"input_ids": [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], "loss_mask": [0, 0, 0] + [1] * 9}]
    collator = DataCollatorForDiffusion(pad_token_id=pad, eos_token_id=eos, eos_fill=True, padding="random",
                                        max_length=12)
    batch = collator(rows)
    assert batch["input_ids"].shape == (2, 12)  # "random" pads to max_length, the trainer cuts
    ends = set()
    for seed in range(60):
        out = random_fill_lengths(batch, [eos], pad, lambda row, s=seed: torch.Generator().manual_seed(s + row))
        ids, attention, loss = (out[k][0].tolist() for k in ("input_ids", "attention_mask", "loss_mask"))
        end = sum(attention)
        ends.add(end)
        assert ids[:7] == rows[0]["input_ids"] and loss[:7] == rows[0]["loss_mask"]  # the answer and its EOS stay
        assert ids[7:end] == [eos] * (end - 7) and all(loss[7:end])  # the kept fill is EOS with loss
        assert ids[end:] == [pad] * (len(ids) - end) and not any(loss[end:]) and not any(attention[end:])
        assert out["attention_mask"][1].sum() == 12  # no EOS: nothing to cut
    assert ends == set(range(7, 13))  # from no fill at all to the full row
    assert DataCollatorForDiffusion(pad_token_id=pad, padding="random", max_length=14)(rows)["input_ids"].shape == (
        2, 12)  # without EOS filling, "random" is "longest"
