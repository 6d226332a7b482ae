"""Bridges from hf_dlm to evaluation frameworks. Each submodule imports its framework, so nothing here is imported
by `import hf_dlm`.

- `hf_dlm.integrations.lm_eval`: the lm-evaluation-harness model `hf_dlm` (`pip install hf-dlm[eval]`);
  `python -m hf_dlm.integrations.lm_eval --model hf_dlm --model_args pretrained=DIR --tasks ...`.
"""
