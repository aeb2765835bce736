"""Where local fold processes come from: a fork server that imports the training stack once, from which every
fold process (and a replacement for one that died) is forked ready to train.

Spawning each fold process costs a full import of torch and Lightning (about 6 s), two of them at once on a
2-core machine; forked from the server, a process starts in milliseconds. The server imports while the command
imports and reads the rest: `start_fold_server` is cheap to call early, and this module imports nothing heavy
so that a command can call it first. Where the platform has no fork server (Windows), processes are spawned.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from lstm_trading.core.machine import usable_cores

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# what a fold imports before its first epoch (about 6 s a process): imported once by the fork server
TRAINING_STACK = (
    "lightning",
    "lightgbm",
    "lstm_trading.runs.train",
    "lstm_trading.models.lstm.training",
    "lstm_trading.models.gbm.training",
    "lstm_trading.models.bundle",
    "lstm_trading.backtest.simulation",
    "lstm_trading.evaluate.metrics",
    "lstm_trading.predict",
    "lstm_trading.report.figures",
    "lstm_trading.runs.walkforward",
)


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """These environment variables set while the block runs (processes started meanwhile inherit them), then
    restored."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def one_thread_children() -> AbstractContextManager[None]:
    """Processes started meanwhile begin with one OpenMP / BLAS thread: a worker imports numpy (and its BLAS
    threads, which spin while they wait) before it can pin anything (Ray's workers get this too)."""
    return environment(dict.fromkeys(THREAD_VARIABLES, "1"))


def pool_processes(fold_workers: int | None, warm_start: bool, tasks: int | None = None) -> int:
    """Local fold processes for the folds (1: the command's own process trains them): --fold-workers, else one
    per usable core, never more than the `tasks` (None: not known yet); 1 with --warm-start, where each fold
    starts from the one before."""
    if warm_start:
        return 1
    wanted = fold_workers or usable_cores()
    return max(1, wanted if tasks is None else min(wanted, tasks))


def fold_process_context() -> Any:
    """The multiprocessing context fold processes start from: the fork server with the training stack preloaded,
    or spawn where there is none. Never plain fork: it would copy this process's torch threads and locks."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(TRAINING_STACK))
    return context


def start_fold_server() -> None:
    """Start the fork server now (no-op when it runs, or where there is none) without waiting for its imports;
    it and every process forked from it run with one OpenMP / BLAS thread."""
    context = fold_process_context()
    if context.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    with one_thread_children():
        forkserver.ensure_running()
