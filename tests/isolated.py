"""Run a script in a fresh interpreter that cannot import hf_dlm: how a user without the package loads a checkpoint.

`python -I -S` skips the user site, PYTHONPATH, the script's folder and site-packages' `.pth` files (the editable
install of hf_dlm is such a file); site-packages is then put back on `sys.path` as a plain folder, so torch and
transformers import as usual. A meta-path blocker also refuses `hf_dlm` in case it is installed as a real folder
there. The script first proves that `import hf_dlm` fails, then runs with cwd outside the repository.
"""

import os
import site
import subprocess
import sys
import textwrap

PRELUDE = """
import sys
sys.path.extend({site_packages!r})

class _RefuseHfDlm:
    def find_spec(self, name, path=None, target=None):
        if name == "hf_dlm" or name.startswith("hf_dlm."):
            raise ModuleNotFoundError("hf_dlm is not installed here", name=name)

sys.meta_path.insert(0, _RefuseHfDlm())
try:
    import hf_dlm
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("hf_dlm is importable: this interpreter does not isolate the checkpoint from the package")
"""


def run_without_hf_dlm(script: str, cwd, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run `script` (Python source) in an interpreter without hf_dlm; raise with its output if it fails."""
    site_packages = [p for p in site.getsitepackages() if os.path.isdir(p)]
    source = PRELUDE.format(site_packages=site_packages) + textwrap.dedent(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_MODULES"))}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HF_MODULES_CACHE=os.path.join(cwd, "hf_modules"))
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", source], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(f"isolated interpreter failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result
