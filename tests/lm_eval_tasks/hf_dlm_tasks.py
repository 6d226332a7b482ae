"""Two small local lm-eval tasks (no Hub): `hf_dlm_qa` (generate_until) and `hf_dlm_choice` (multiple_choice).

Use them with `--include_path tests/lm_eval_tasks`; the YAML files point here with `!function`, and the data files
are found next to this file whatever the working directory.
"""

import json
import re
from pathlib import Path

from datasets import Dataset, DatasetDict

HERE = Path(__file__).parent


def _load(name: str) -> DatasetDict:
    rows = [json.loads(line) for line in (HERE / name).read_text().splitlines() if line.strip()]
    return DatasetDict({"test": Dataset.from_list(rows)})


def load_qa(**metadata) -> DatasetDict:
    """lm-eval calls this with the run's metadata (model_args included); the data does not depend on it."""
    return _load("qa.jsonl")


def load_choice(**metadata) -> DatasetDict:
    return _load("choice.jsonl")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def score_qa(doc: dict, results: list[str]) -> dict:
    """`contains_answer`: the target word occurs in the answer (chat models answer "The capital of France is
    Paris." however firmly asked for one word)."""
    return {"contains_answer": float(doc["answer"].lower() in _words(results[0]))}
