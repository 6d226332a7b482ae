"""Synthetic tasks with variable-length answers that are checkable exactly: the benchmark's ground truth.

Each task turns a target answer length into one `{"prompt", "completion"}` example (TRL's prompt/completion
format). Texts are space-separated words, and `word_tokenizer()` gives every word one token, so an answer of n
words is n tokens (+ EOS) and the length of the right answer is known exactly: what `length_strategy` must find on
its own.

| task      | prompt               | completion    | what the model must do                                 |
|-----------|----------------------|---------------|--------------------------------------------------------|
| `sort`    | `sort 3 1 2 =`       | `1 2 3`       | count and order digits                                 |
| `reverse` | `rev a b c =`        | `c b a`       | copy by position, backwards                            |
| `rle`     | `rle 3 a 2 b =`      | `a a a b b`   | run-length expansion: a short prompt, a long answer    |
| `range`   | `range 12 15 =`      | `12 13 14 15` | count from one number to another (numbers 0-99 are words) |

Answers run from 1 to `MAX_ANSWER` = 48 tokens, drawn skewed towards short ones (`length = ceil(max * u **
LENGTH_SKEW)`, u uniform), as real answers are: the median is 12 tokens, a long tail reaches 48. `make_split`
assigns every prompt to train or test by a hash of its text, so the splits never overlap, whatever the seeds and
sizes.

Dropped after the small-scale probe (docs/benchmarks.md, "Choosing the tasks"): multi-digit addition (a 0.8M
GPT-2 does not learn carry chains in the time `make bench` has) and the character-level versions of these tasks
(answers of up to 80 tokens in rows of 208: the previous suite, whose AR base reached 22.9% exact).
"""

from __future__ import annotations

import math
import random
import string
import zlib
from collections.abc import Callable
from dataclasses import dataclass

LETTERS = string.ascii_lowercase
DIGITS = string.digits
NUMBERS = [str(n) for n in range(100)]
MAX_ANSWER = 48
# u ** 2: median answer = max / 4 = 12 tokens, mean max / 3 = 16. Short answers dominate (cheap to train, as in real
# use) while every length up to the maximum still occurs (P(length > 40) ~ 9%).
LENGTH_SKEW = 2.0
TEST_FRACTION = 16  # one prompt in 16 belongs to the test split


@dataclass(frozen=True)
class Task:
    name: str
    max_answer: int  # longest answer in words (= tokens with word_tokenizer)
    make: Callable[[random.Random, int], tuple[str, str]]  # (rng, answer length) -> (prompt, completion)


def _words(items) -> str:
    return " ".join(items)


def _sort(rng: random.Random, length: int) -> tuple[str, str]:
    digits = [rng.choice(DIGITS) for _ in range(length)]
    return f"sort {_words(digits)} =", _words(sorted(digits))


def _reverse(rng: random.Random, length: int) -> tuple[str, str]:
    letters = [rng.choice(LETTERS) for _ in range(length)]
    return f"rev {_words(letters)} =", _words(letters[::-1])


def _rle(rng: random.Random, length: int) -> tuple[str, str]:
    """Runs of 1-9 equal letters, consecutive runs differ, expanding to exactly `length` letters."""
    runs, left, previous = [], length, ""
    while left:
        count = rng.randint(1, min(9, left))
        letter = rng.choice([c for c in LETTERS if c != previous])
        runs.append((count, letter))
        left -= count
        previous = letter
    prompt = "rle " + _words(f"{n} {c}" for n, c in runs) + " ="
    return prompt, _words(c for n, c in runs for _ in range(n))


def _copy(rng: random.Random, length: int) -> tuple[str, str]:
    letters = [rng.choice(LETTERS) for _ in range(length)]
    return f"copy {_words(letters)} =", _words(letters)


def _repeat(rng: random.Random, length: int) -> tuple[str, str]:
    """A pattern of 1-3 different letters, repeated (and cut) to exactly `length` letters; the prompt says how many."""
    pattern = rng.sample(LETTERS, rng.randint(1, 3))
    return f"rep {length} {_words(pattern)} =", _words(pattern[i % len(pattern)] for i in range(length))


def _countdown(rng: random.Random, length: int) -> tuple[str, str]:
    """`length` consecutive numbers within 0-99, counting down."""
    start = rng.randint(length - 1, 99)
    numbers = NUMBERS[start - length + 1 : start + 1][::-1]
    return f"down {numbers[0]} {numbers[-1]} =", _words(numbers)


def _sort_letters(rng: random.Random, length: int) -> tuple[str, str]:
    letters = [rng.choice(LETTERS) for _ in range(length)]
    return f"sortl {_words(letters)} =", _words(sorted(letters))


def _step(rng: random.Random, length: int) -> tuple[str, str]:
    """`length` numbers within 0-99 counting up by a step drawn from 2-5 (at most the longest step that fits)."""
    step = rng.randint(2, min(5, 99 // max(length - 1, 1)))  # >= 2 for every length up to MAX_ANSWER = 48
    start = rng.randint(0, 99 - step * (length - 1))
    numbers = [NUMBERS[start + step * i] for i in range(length)]
    return f"step {step} {numbers[0]} {numbers[-1]} =", _words(numbers)


def _range(rng: random.Random, length: int) -> tuple[str, str]:
    """`length` consecutive numbers within 0-99."""
    start = rng.randint(0, 100 - length)
    numbers = NUMBERS[start : start + length]
    return f"range {numbers[0]} {numbers[-1]} =", _words(numbers)


TASKS: dict[str, Task] = {
    "sort": Task("sort", MAX_ANSWER, _sort),
    "reverse": Task("reverse", MAX_ANSWER, _reverse),
    "rle": Task("rle", MAX_ANSWER, _rle),
    "range": Task("range", MAX_ANSWER, _range),
    "copy": Task("copy", MAX_ANSWER, _copy),
    "repeat": Task("repeat", MAX_ANSWER, _repeat),
    "countdown": Task("countdown", MAX_ANSWER, _countdown),
    "sortl": Task("sortl", MAX_ANSWER, _sort_letters),
    "step": Task("step", MAX_ANSWER, _step),
}
# The benchmark's tasks (a preset may choose others from TASKS: benchmarks/probe_ar.py --set tasks=...).
SUITE = ("sort", "range", "countdown", "step")
VOCABULARY = ["sort", "rev", "rle", "range", "copy", "rep", "down", "sortl", "step", "=", *LETTERS, *NUMBERS]  # every word a task writes


def sample_length(rng: random.Random, max_answer: int) -> int:
    return max(1, math.ceil(max_answer * rng.random() ** LENGTH_SKEW))


def in_test_split(prompt: str) -> bool:
    """Which split a prompt belongs to, by a stable hash: one prompt in TEST_FRACTION goes to test. Splitting the
    prompt *space* (rather than deduplicating after the fact) keeps both splits disjoint by construction and keeps
    the short answers in both (there are only 10 `sort d =` prompts; a dedup would leave none of them for test)."""
    return zlib.crc32(prompt.encode()) % TEST_FRACTION == 0


def make_split(split: str, n: int, seed: int = 0, tasks: list[str] | None = None) -> list[dict]:
    """`n` examples of `split` ("train" or "test"), cycling over `tasks`. Train and test never share a prompt."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    names = list(tasks or SUITE)
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


def word_tokenizer():
    """One token per word of `VOCABULARY` (WordLevel over whitespace-split text, built locally with `tokenizers`);
    id 0 is `<|endoftext|>` (bos = eos = unk, as in GPT-2), id 1 the pad token. Decoding joins words with spaces, so
    `decode(encode(text)) == text` for every prompt and answer of the tasks."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from hf_dlm.adapt import DEFAULT_PAD_TOKEN

    endoftext = "<|endoftext|>"
    vocab = {endoftext: 0, DEFAULT_PAD_TOKEN: 1}
    for word in VOCABULARY:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token=endoftext))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=endoftext, eos_token=endoftext,
                                        unk_token=endoftext, pad_token=DEFAULT_PAD_TOKEN)
    tokenizer.clean_up_tokenization_spaces = False
    return tokenizer


__all__ = ["LENGTH_SKEW", "MAX_ANSWER", "SUITE", "TASKS", "TEST_FRACTION", "VOCABULARY", "Task", "in_test_split", "is_correct",
           "make_split", "sample_length", "word_tokenizer"]
