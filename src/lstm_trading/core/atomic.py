"""Crash-safe writes: write beside the target, flush to disk, then rename over it.

A crash leaves either the old file or the new one, never a half-written file that loads.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield temporary
        # mkstemp makes 0600, and so do writers that create the file anew (safetensors): a written file gets
        # the usual permissions, set after the writer is done.
        os.chmod(temporary, 0o666 & ~umask)
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes_atomic(target: Path | str, data: bytes) -> None:
    with atomic_path(target) as temporary:
        temporary.write_bytes(data)


def write_text_atomic(target: Path | str, text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


def write_with(target: Path | str, writer: Callable[[Path], object], suffix: str = "") -> None:
    """Let `writer` fill a temporary path (e.g. `frame.to_csv`), then move it into place."""
    with atomic_path(target, suffix) as temporary:
        writer(temporary)
