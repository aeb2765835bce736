"""Which SQLite files this process holds open, so that nothing reads them behind SQLite's back meanwhile.

SQLite locks a database with POSIX advisory locks, and POSIX drops *every* lock a process holds on a file when
the process closes *any* descriptor of that file. A header check with Python's `open()` on a database that a
connection of this process has open (the live loop's state beside a new candle store on the same file, every
period) silently releases that connection's locks; another process (an `ingest` run by cron) may then write
while this one reads, which SQLite's documentation lists among the ways to corrupt a database. The stores
register their connections here, and a file already open in this process is not read outside SQLite again.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

FileKey = tuple[int, int]  # (device, inode): the same file under any name or link

_open_here: Counter[FileKey] = Counter()


def file_key(path: Path) -> FileKey | None:
    """The file's identity, None where it does not exist (yet)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_dev, status.st_ino)


def open_here(path: Path) -> bool:
    """Whether a connection of this process holds the file open now."""
    key = file_key(path)
    return key is not None and _open_here[key] > 0


def hold(path: Path) -> FileKey | None:
    """Count a connection to `path` as open (after `sqlite3.connect`); give its key back to `release`."""
    key = file_key(path)
    if key is not None:
        _open_here[key] += 1
    return key


def release(key: FileKey | None) -> None:
    """The connection counted by `hold` is closed."""
    if key is None:
        return
    _open_here[key] -= 1
    if _open_here[key] <= 0:
        del _open_here[key]
