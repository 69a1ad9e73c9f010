"""Files written atomically: checkpoints, metrics.json, detections.json, reports, plots.

Every writer goes through `atomic_write`: the bytes go to a temporary file in the same
directory, are flushed and fsynced, then `os.replace` swaps it in (and the directory entry is
fsynced), so a reader or a crash at any moment sees the old file or the new one, never a torn
one. A writer killed half-way leaves a `.<name>.*.tmp` file beside the target.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "suppress_os_error", "write_json", "write_text"]


class suppress_os_error:  # noqa: N801  (used like contextlib.suppress)
    """Context manager that swallows OSError (best-effort clean-up)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is not None and issubclass(exc_type, OSError)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write(f)` on a binary temporary file beside `path`, fsync it and move it onto
    `path` (creating the parent folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with suppress_os_error():
            os.unlink(tmp_name)
        raise
    with suppress_os_error():
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """`text` (UTF-8) to `path`, atomically."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    """`obj` as JSON to `path`, atomically; NaN is refused (JSON has none)."""
    write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")
