"""`python -m hf_dlm.cli`: the same as the `hf-dlm` command."""

from . import main

raise SystemExit(main())
