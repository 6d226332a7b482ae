"""Writing result and config files so that an interrupted write never leaves half a file under the final name.

Standard library only: the command line (`cli/paths.py` re-exports it) uses it before torch is imported, and the
core (`calibration.write_length_rule`) without importing an app.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same directory, then `os.replace` (atomic on POSIX and
    Windows: readers see the old file or the new one, never half of it)."""
    target = Path(path).expanduser()
    handle = tempfile.NamedTemporaryFile("w", dir=target.parent, prefix=f".{target.name}.", suffix=".tmp",
                                         delete=False, encoding="utf-8")
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


__all__ = ["write_text_atomically"]
