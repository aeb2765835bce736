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
    """Write a set of files that belong together (a backtest's trades, equity and stats) all or not at all.

    Every new file is written and flushed under a temporary name first; then each target's old file (if any) is
    moved aside and the new one renamed in. If any step fails, the files already renamed are put back as they
    were, so the folder holds the old set or the new one, never a mix.
    """
    staged: list[tuple[Path, Path]] = []  # (temporary, target)
    swapped: list[tuple[Path, Path | None]] = []  # (target, its old file moved aside, or None)
    umask = os.umask(0)
    os.umask(umask)
    try:
        for target, text in files.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            staged.append((Path(name), target))
            with os.fdopen(handle, "wb") as out:
                out.write(text.encode("utf-8"))
                out.flush()
                os.fsync(out.fileno())
            os.chmod(name, 0o666 & ~umask)
        for temporary, target in staged:
            old: Path | None = None
            if target.exists():
                old = target.with_name(f".{target.name}.old")
                os.replace(target, old)
            swapped.append((target, old))
            os.replace(temporary, target)
    except OSError as error:
        failed = swapped[-1][0] if swapped else (staged[-1][1] if staged else next(iter(files)))
        for target, old in reversed(swapped):  # put the old set back
            if old is not None:
                os.replace(old, target)
            else:
                target.unlink(missing_ok=True)
        raise _write_error(failed, error) from None
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
    for _, old in swapped:
        if old is not None:
            old.unlink(missing_ok=True)
