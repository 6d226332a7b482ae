"""The synthetic benchmark tasks (benchmarks/tasks.py): variable-length answers, exact checking, disjoint seeded
splits."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the benchmark's modules are scripts
from tasks import SUITE, TASKS, VOCABULARY, in_test_split, is_correct, make_split, word_tokenizer  # noqa: E402


def test_splits_are_disjoint_seeded_and_cover_every_task():
    train = make_split("train", 2000, seed=0)
    test = make_split("test", 200, seed=0)
    assert {e["prompt"] for e in train}.isdisjoint(e["prompt"] for e in test)
    assert all(not in_test_split(e["prompt"]) for e in train) and all(in_test_split(e["prompt"]) for e in test)
    assert make_split("test", 50, seed=0) == test[:50]  # same seed, same examples
    assert make_split("test", 50, seed=1) != test[:50]
    assert {e["task"] for e in train} == set(SUITE) and len(SUITE) >= 4 and set(SUITE) <= set(TASKS)


def test_answers_range_from_one_to_at_least_48_tokens_with_a_wide_spread():
    tokenizer = word_tokenizer()
    lengths = sorted(len(tokenizer(e["completion"], add_special_tokens=False)["input_ids"])
                     for e in make_split("train", 4000, seed=0))
    assert lengths[0] == 1 and lengths[-1] >= 48
    assert 8 <= lengths[len(lengths) // 2] <= 16  # short answers dominate: the median is ~12 tokens
    assert sum(n > 32 for n in lengths) / len(lengths) > 0.1  # and a long tail is there


def test_the_word_tokenizer_gives_one_token_per_word_and_round_trips_every_example():
    tokenizer = word_tokenizer()
    for example in make_split("train", 700, seed=2, tasks=list(TASKS)):  # every task, the suite's and the probes'
        for text in (example["prompt"], example["completion"]):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert len(ids) == len(text.split()) and tokenizer.unk_token_id not in ids
            assert tokenizer.decode(ids) == text
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert len(set(VOCABULARY)) == len(VOCABULARY)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_task_has_exactly_one_right_answer(name):
    for example in make_split("train", 20, seed=3, tasks=[name]):
        assert is_correct(example, example["completion"])
        assert not is_correct(example, example["completion"] + " 1")


def test_unknown_task_or_split_raises():
    with pytest.raises(ValueError, match="Unknown tasks"):
        make_split("train", 1, tasks=["nope"])
    with pytest.raises(ValueError, match="split"):
        make_split("dev", 1)
