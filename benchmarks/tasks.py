"""Synthetic tasks with variable-length answers that are checkable exactly: the benchmark's ground truth.

Each task turns a target answer length into one `{"prompt", "completion"}` example (TRL's prompt/completion
format). Answers run from 1 to 64-80 characters, so a character-level tokenizer (`hf_dlm.testing.char_tokenizer`)
sees answers of 1 to 80 tokens and the length of the right answer is known exactly: what `length_strategy`
must find on its own.

| task      | prompt            | completion | what the model must do                               |
|-----------|-------------------|------------|------------------------------------------------------|
| `reverse` | `rev:abc=`        | `cba`      | copy by position, backwards                          |
| `sort`    | `sort:cab=`       | `abc`      | count and order letters                              |
| `add`     | `add:95+17=`      | `112`      | multi-digit addition with carries (length n or n+1)  |
| `rle`     | `rle:3a2b=`       | `aaabb`    | run-length expansion: a short prompt, a long answer  |

Lengths are drawn skewed towards short answers (`length = ceil(max * u ** LENGTH_SKEW)`, u uniform), as real
answers are: the typical answer is short, a long tail reaches the maximum. `make_split` assigns every prompt to train
or test by a hash of its text, so the splits never overlap, whatever the seeds and sizes.
"""

from __future__ import annotations

import math
import random
import string
import zlib
from collections.abc import Callable
from dataclasses import dataclass

LETTERS = string.ascii_lowercase
# u ** 1.5: median answer ~ 0.35 * max, mean 0.4 * max. Short answers dominate (cheap to train) while every
# length up to the maximum still occurs.
LENGTH_SKEW = 1.5
TEST_FRACTION = 16  # one prompt in 16 belongs to the test split


@dataclass(frozen=True)
class Task:
    name: str
    max_answer: int  # longest answer in characters (= tokens with the char tokenizer)
    make: Callable[[random.Random, int], tuple[str, str]]  # (rng, answer length) -> (prompt, completion)


def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(n))


def _reverse(rng: random.Random, length: int) -> tuple[str, str]:
    s = _letters(rng, length)
    return f"rev:{s}=", s[::-1]


def _sort(rng: random.Random, length: int) -> tuple[str, str]:
    s = _letters(rng, length)
    return f"sort:{s}=", "".join(sorted(s))


def _add(rng: random.Random, length: int) -> tuple[str, str]:
    """The sum has exactly `length` digits: draw it, then split it into two addends."""
    low = 0 if length == 1 else 10 ** (length - 1)
    total = rng.randrange(low, 10**length)
    a = rng.randint(0, total)
    return f"add:{a}+{total - a}=", str(total)


def _rle(rng: random.Random, length: int) -> tuple[str, str]:
    """Runs of 1-9 equal letters, consecutive runs differ, expanding to exactly `length` letters."""
    runs, left, previous = [], length, ""
    while left:
        count = rng.randint(1, min(9, left))
        letter = rng.choice([c for c in LETTERS if c != previous])
        runs.append((count, letter))
        left -= count
        previous = letter
    return "rle:" + "".join(f"{n}{c}" for n, c in runs) + "=", "".join(c * n for n, c in runs)


TASKS: dict[str, Task] = {
    "reverse": Task("reverse", 64, _reverse),
    "sort": Task("sort", 64, _sort),
    # Sums of up to 20 digits: addition longer than that is a test of carry chains, not of length.
    "add": Task("add", 20, _add),
    "rle": Task("rle", 80, _rle),
}


def sample_length(rng: random.Random, max_answer: int) -> int:
    return max(1, math.ceil(max_answer * rng.random() ** LENGTH_SKEW))


def in_test_split(prompt: str) -> bool:
    """Which split a prompt belongs to, by a stable hash: one prompt in TEST_FRACTION goes to test. Splitting the
    prompt *space* (rather than deduplicating after the fact) keeps both splits disjoint by construction and keeps
    the short answers in both (there are only 26 `rev:x=` prompts; a dedup would leave none of them for test)."""
    return zlib.crc32(prompt.encode()) % TEST_FRACTION == 0


def make_split(split: str, n: int, seed: int = 0, tasks: list[str] | None = None) -> list[dict]:
    """`n` examples of `split` ("train" or "test"), cycling over `tasks`. Train and test never share a prompt."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    names = list(tasks or TASKS)
    unknown = set(names) - set(TASKS)
    if unknown:
        raise ValueError(f"Unknown tasks {sorted(unknown)}; choose from {sorted(TASKS)}.")
    rng = random.Random(f"{split}-{seed}")
    want_test = split == "test"
    examples = []
    while len(examples) < n:
        task = TASKS[names[len(examples) % len(names)]]
        prompt, completion = task.make(rng, sample_length(rng, task.max_answer))
        if in_test_split(prompt) == want_test:
            examples.append({"prompt": prompt, "completion": completion, "task": task.name})
    return examples


def is_correct(example: dict, answer: str) -> bool:
    """Exact match: every task has exactly one right answer."""
    return answer == example["completion"]


__all__ = ["LENGTH_SKEW", "TASKS", "TEST_FRACTION", "Task", "in_test_split", "is_correct", "make_split", "sample_length"]
