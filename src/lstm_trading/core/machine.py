"""What this machine offers the CPU kernels: the cache a core can count on, and the cores this process may use.

The LSTM's CPU chunks are sized from it (`chunk_sample_steps`): a chunk runs fastest when its activations stay
in the caches, and constants tuned on one CPU miss that on another. Measured on two 2-core virtual machines
(benchmarks/README.md), the fastest chunk did not follow the L2 alone (the same on 2 MB and on 512 KB of L2)
but matched the core's share of L2 plus L3 (512 KB + 32 MB / 2 cores: about 13 MB of inference activations,
21 MB of training ones). So the budget is `l2_bytes + l3_bytes`, where `l3_bytes` is the L3 divided by the
CPUs sharing it.

Read from sysfs on Linux, from `os.sysconf` where the platform has the names, else `DEFAULT_L2_BYTES` and
`DEFAULT_L3_BYTES`. The environment variables `LSTM_TRADING_L2_BYTES` (a core's L2) and
`LSTM_TRADING_L3_BYTES` (a core's share of L3) override what is read, in bytes or with a K / M suffix
(`512K`, `2M`): that is how a benchmark imitates a machine with smaller caches. Both are read once per process
(`functools.cache`); tests call `cpu_caches.cache_clear()` after changing them.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import NamedTuple

from lstm_trading.core.errors import ConfigError

L2_ENV = "LSTM_TRADING_L2_BYTES"
L3_ENV = "LSTM_TRADING_L3_BYTES"
DEFAULT_L2_BYTES = 2 * 2**20  # where nothing can be read: the machines measured (2 MB L2, 16 MB L3 a core)
DEFAULT_L3_BYTES = 16 * 2**20
_SYSFS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")
_SUFFIXES = {"K": 2**10, "M": 2**20, "G": 2**30}


class CpuCaches(NamedTuple):
    """Bytes of cache one core can count on: its L2 and its share of the L3, and where each figure came from."""

    l2_bytes: int
    l3_bytes: int
    source: str  # "sysfs", "sysconf", "default", or the overriding variables

    @property
    def per_core_bytes(self) -> int:
        return self.l2_bytes + self.l3_bytes

    def describe(self) -> str:
        """One line for benchmark headers, e.g. `L2 512 KB + L3 16,384 KB a core (sysfs)`."""
        return f"L2 {self.l2_bytes // 1024:,} KB + L3 {self.l3_bytes // 1024:,} KB a core ({self.source})"


def parse_bytes(text: str, name: str) -> int:
    """`text` as a positive number of bytes (`524288`, `512K`, `2M`); a clear error naming `name` otherwise."""
    value = text.strip().upper().removesuffix("B")
    factor = _SUFFIXES.get(value[-1:], 1)
    digits = value[:-1] if value[-1:] in _SUFFIXES else value
    if not digits.isdigit() or int(digits) == 0:
        raise ConfigError(f"{name}={text!r} is not a cache size: give bytes, e.g. 524288, 512K or 2M")
    return int(digits) * factor


def _cpu_count(cpu_list: str) -> int:
    """CPUs in a sysfs list such as `0-1,4`."""
    count = 0
    for part in cpu_list.strip().split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def _from_sysfs() -> tuple[int, int] | None:
    """(L2 of cpu0, its share of the L3) in bytes from sysfs; None where sysfs has no L2 entry."""
    sizes: dict[int, int] = {}
    for index in sorted(_SYSFS_CACHE.glob("index*")):
        try:
            level = int((index / "level").read_text())
            if (index / "type").read_text().strip() not in ("Unified", "Data"):
                continue
            size = parse_bytes((index / "size").read_text(), str(index / "size"))
            shared = _cpu_count((index / "shared_cpu_list").read_text())
        except (OSError, ValueError, ConfigError):
            continue
        sizes[level] = size // max(shared, 1) if level == 3 else size
    if 2 not in sizes:
        return None
    return sizes[2], sizes.get(3, 0)


def _from_sysconf() -> tuple[int, int] | None:
    """(L2, L3 divided by the usable cores) from `os.sysconf` (glibc has the names); None where unknown."""
    try:
        l2 = int(os.sysconf("SC_LEVEL2_CACHE_SIZE"))
        l3 = int(os.sysconf("SC_LEVEL3_CACHE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None
    if l2 <= 0:
        return None
    return l2, max(l3, 0) // usable_cores()


@functools.cache
def cpu_caches() -> CpuCaches:
    """The cache a core can count on: sysfs, else sysconf, else defaults, then the environment's overrides."""
    found, source = _from_sysfs(), "sysfs"
    if found is None:
        found, source = _from_sysconf(), "sysconf"
    if found is None:
        found, source = (DEFAULT_L2_BYTES, DEFAULT_L3_BYTES), "default"
    l2, l3 = found
    overridden = []
    if os.environ.get(L2_ENV):
        l2 = parse_bytes(os.environ[L2_ENV], L2_ENV)
        overridden.append(L2_ENV)
    if os.environ.get(L3_ENV):
        l3 = parse_bytes(os.environ[L3_ENV], L3_ENV)
        overridden.append(L3_ENV)
    return CpuCaches(l2, l3, " and ".join(overridden) or source)


@functools.cache
def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the platform has one, as `taskset` sets)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def pin_to_core(pid: int, number: int) -> None:
    """Keep process `pid` on one usable core, the `number`-th (modulo their count), where the platform allows.

    One-thread inference workers, one per core, pinned this way ran 10 % faster side by side than left to the
    scheduler, which moves them between cores and their caches (benchmarks/README.md). A refusal (a container
    that forbids it) leaves the process where it is: pinning is a speed-up, never a requirement."""
    if not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    try:
        os.sched_setaffinity(pid, {cores[number % len(cores)]})
    except OSError:
        return


def chunk_sample_steps(bytes_per_step: int, most: int, least: int = 512) -> int:
    """Sample-steps (batch x steps) per CPU chunk whose `bytes_per_step` activations fill a core's cache.

    The power of two nearest (on a log scale) to `per_core_bytes / bytes_per_step`, within [least, most]:
    `most` is the size measured fastest where the caches are large (larger chunks were never measured faster).
    """
    budget = cpu_caches().per_core_bytes / bytes_per_step
    steps = least
    while steps < most and steps * 1.4142 < budget:  # the next power of two is nearer to `budget` on a log scale
        steps *= 2
    return min(steps, most)
