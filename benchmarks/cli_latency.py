"""How fast the command line answers: `hf-dlm --help` and bad-setting errors against `import torch, transformers`,
in one run (interleaved, median of N), so the ratio holds whatever else the machine is doing.

    python benchmarks/cli_latency.py [--repeats 5]

Target (issue 13): every row well under half the time of the import.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c 'import torch, transformers'": [sys.executable, "-c", "import torch, transformers"],
    "hf-dlm --help": ["hf-dlm", "--help"],
    "hf-dlm --version": ["hf-dlm", "--version"],
    "hf-dlm generate --help": ["hf-dlm", "generate", "--help"],
    "hf-dlm generate --max-new-tokens -5 Hi": ["hf-dlm", "generate", "--max-new-tokens", "-5", "Hi"],
    "hf-dlm generate --threshold 2 Hi": ["hf-dlm", "generate", "--threshold", "2", "Hi"],
    "hf-dlm generate --model /no/such/dir Hi": ["hf-dlm", "generate", "--model", "/no/such/dir", "Hi"],
    "hf-dlm generate ''": ["hf-dlm", "generate", ""],
    "hf-dlm demo --prompts 9": ["hf-dlm", "demo", "--prompts", "9"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("hf-dlm") is None:
        parser.error("hf-dlm is not on PATH: pip install -e . first")
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.repeats):
        for name, command in CASES.items():
            start = time.perf_counter()
            subprocess.run(command, capture_output=True)
            times[name].append(time.perf_counter() - start)
    reference = statistics.median(times[next(iter(CASES))])
    print("| command | median s | vs import |\n|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.3f} | {median / reference:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
