"""Crash-safe writes: write beside the target, flush to disk, then rename over it.

A crash leaves either the old file or the new one, never a half-written file that loads. A write that fails
(disk full, read-only folder) is a `WriteError` naming the target and the cause, and leaves the old file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lstm_trading.core.errors import WriteError


def _write_error(target: Path, error: OSError) -> WriteError:
    return WriteError(f"{target}: cannot write ({error.strerror or error}); nothing was changed there")


@contextmanager
def atomic_path(target: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    except OSError as error:
        raise _write_error(target, error) from None
    os.close(handle)
    temporary = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        try:
            yield temporary
            # mkstemp makes 0600, and so do writers that create the file anew (safetensors): a written file
            # gets the usual permissions, set after the writer is done.
            os.chmod(temporary, 0o666 & ~umask)
            with open(temporary, "rb+") as written:
                os.fsync(written.fileno())
            os.replace(temporary, target)
        except OSError as error:
            raise _write_error(target, error) from None
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


def write_texts_atomic(files: dict[Path, str]) -> None:
    """Write a set of files that belong together (a backtest's trades, equity and stats) all or not at all:
    every temporary file is written and flushed first, then all are renamed into place."""
    written: list[tuple[Path, Path]] = []
    try:
        for target, text in files.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            written.append((Path(name), target))
            with os.fdopen(handle, "wb") as out:
                out.write(text.encode("utf-8"))
                out.flush()
                os.fsync(out.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(name, 0o666 & ~umask)
        for temporary, target in written:
            os.replace(temporary, target)
    except OSError as error:
        failed = written[-1][1] if written else next(iter(files))
        raise _write_error(failed, error) from None
    finally:
        for temporary, _ in written:
            temporary.unlink(missing_ok=True)
