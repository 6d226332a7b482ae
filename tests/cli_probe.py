"""Run `hf-dlm ARGS` in a fresh interpreter and report which heavy modules it imported before exiting: the
command line must answer `--help` and bad settings without torch, transformers or gradio."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "gradio")
PROBE = (
    "import sys, runpy\n"
    "sys.argv = ['hf-dlm', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('hf_dlm.cli', run_name='__main__')\n"
    "except SystemExit as exit:\n"
    f"    heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
    "    print('HEAVY=' + ','.join(heavy), file=sys.stderr)\n"
    "    raise\n"
)


def run_cli(*argv, stdin=""):
    return subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, input=stdin,
                          timeout=60)


def heavy_modules(result) -> str:
    """The heavy modules the run had imported when it exited ('' = none)."""
    return result.stderr.rsplit("HEAVY=", 1)[1].strip()
