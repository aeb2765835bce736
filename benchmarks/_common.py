"""What the benchmark scripts share: timing on a shared machine, one child process per measurement, flags.

The scripts import it as `_common` (their own folder is first on `sys.path` when run as
`python benchmarks/<script>.py`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable
from typing import Any


def best_of(repeats: int, work: Callable[[], Any]) -> tuple[float, Any]:
    """The fastest of `repeats` runs (seconds) and the last result: other load only ever adds time."""
    best, result = float("inf"), None
    for _ in range(repeats):
        began = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - began)
    return best, result


def run_in_child(target: Callable[..., None], args: tuple[Any, ...], what: str) -> Any:
    """`target(*args, queue)` in a fresh spawned process (its own peak memory, no state from earlier runs);
    returns what it put on the queue."""
    context = mp.get_context("spawn")
    queue: mp.Queue = context.Queue()
    child = context.Process(target=target, args=(*args, queue))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"{what}: child failed with exit code {child.exitcode}")
    return queue.get()


def chunk_setting(text: str) -> int | str:
    """A `--chunk-lens` value: `auto` or a number of steps."""
    return text if text == "auto" else int(text)


def load_average() -> float:
    """The 1-minute load average, printed with the figures (NaN where the platform has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def walkforward_config(max_len: int, epochs: int, hidden: int) -> Any:
    """The tiny-but-real pipeline the walk-forward and tuning benchmarks time: short warm-up, first-touch labels
    every 20 minutes over 6 hours, no costs and any probability (every fold trades), fp32, no feature cache."""
    from lstm_trading.core.config import Config

    hour = 3_600
    return (
        Config()
        .with_overrides("features", warmup_minutes=2_000)
        .with_overrides("targets", max_len=max_len)
        .with_overrides("labels", every_seconds=1_200, horizon_seconds=6 * hour)
        .with_overrides("split", purge_seconds=6 * hour)
        .with_overrides("train", epochs=epochs, batch_size=16, accumulate_grad_batches=1, precision="32-true")
        .with_overrides("model", hidden_size=hidden)
        .with_overrides("backtest", fee=0.0, slippage=0.0, min_prob=0.0, min_ev=-50.0, max_hold_seconds=2 * hour)
        .with_overrides("runtime", cache=False)
    )
