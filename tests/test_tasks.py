"""The synthetic benchmark tasks (benchmarks/tasks.py): variable-length answers, exact checking, disjoint seeded
splits."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the benchmark's modules are scripts
from tasks import TASKS, in_test_split, is_correct, make_split  # noqa: E402


def test_splits_are_disjoint_seeded_and_cover_every_task():
    train = make_split("train", 2000, seed=0)
    test = make_split("test", 200, seed=0)
    assert {e["prompt"] for e in train}.isdisjoint(e["prompt"] for e in test)
    assert all(not in_test_split(e["prompt"]) for e in train) and all(in_test_split(e["prompt"]) for e in test)
    assert make_split("test", 50, seed=0) == test[:50]  # same seed, same examples
    assert make_split("test", 50, seed=1) != test[:50]
    assert {e["task"] for e in train} == set(TASKS) and len(TASKS) >= 4


def test_answers_range_from_one_to_at_least_64_tokens():
    lengths = [len(e["completion"]) for e in make_split("train", 4000, seed=0)]
    assert min(lengths) == 1 and max(lengths) >= 64


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_task_has_exactly_one_right_answer(name):
    for example in make_split("train", 20, seed=3, tasks=[name]):
        assert is_correct(example, example["completion"])
        assert not is_correct(example, example["completion"] + "x")


def test_unknown_task_or_split_raises():
    with pytest.raises(ValueError, match="Unknown tasks"):
        make_split("train", 1, tasks=["nope"])
    with pytest.raises(ValueError, match="split"):
        make_split("dev", 1)
