"""A fold task whose worker process is killed (SIGKILL, as by the out-of-memory killer) after its first epoch:
read by tests/test_walkforward.py. It lives in its own module because a spawned fold process imports it by
name to unpickle the task, and there it arms the kill; the driver keeps the task as any other."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, fields
from typing import Any

from lstm_trading.runs.walkforward import FoldTask


@dataclass(frozen=True)
class KilledAfterFirstEpoch(FoldTask):
    def __reduce__(self) -> tuple[Any, ...]:
        plain = FoldTask(**{f.name: getattr(self, f.name) for f in fields(FoldTask)})
        return (_armed, (plain,))


def _armed(task: FoldTask) -> FoldTask:
    """In the fold process: its training kills the process once the first epoch is reported."""
    import lstm_trading.runs.train as train

    real = train.train_run

    def killed(*args: Any, on_epoch: Any = None, **options: Any) -> Any:
        def then_die(epoch: int, epochs: int) -> None:
            on_epoch(epoch, epochs)
            os.kill(os.getpid(), signal.SIGKILL)

        return real(*args, on_epoch=then_die, **options)

    train.train_run = killed
    return task
