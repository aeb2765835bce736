"""The time split: trades sorted by start time, cut by count into train / val / test, with a purge of the trades
whose outcome horizon reaches into the next split (DESIGN.md, "Split"). No shuffling across time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lstm_trading.core.config import SplitConfig
from lstm_trading.core.errors import DataError
from lstm_trading.samples.targets import Samples

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Train / validation / test samples in time order, and how many the purge dropped from each."""

    train: Samples
    val: Samples
    test: Samples
    purged: dict[str, int]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split_by_time(
    samples: Samples, config: SplitConfig = SplitConfig(), *, horizon_seconds: int | None = None
) -> Split:
    """Cut samples sorted by start time by count (70/15/15), then purge across boundaries.

    A trade of an earlier split whose outcome horizon (`start + horizon`) reaches past the first start of the
    next split is dropped: its label was decided by candles that the next split's windows already see.
    """
    order = np.argsort(samples.start_time, kind="stable")
    ordered = samples.subset(order)
    n = len(ordered)
    n_train = max(1, round(n * config.train))
    n_val = round(n * config.val)
    n_val = min(n_val, n - n_train)
    bounds = [0, n_train, n_train + n_val, n]
    parts = [ordered.subset(slice(bounds[i], bounds[i + 1])) for i in range(3)]
    horizon = config.purge_seconds if horizon_seconds is None else horizon_seconds
    purged = dict.fromkeys(SPLIT_NAMES, 0)
    for i in range(2):
        later = [p for p in parts[i + 1 :] if len(p)]
        if not later or not len(parts[i]):
            continue
        next_start = int(later[0].start_time[0])
        keep = parts[i].start_time + horizon <= next_start
        purged[SPLIT_NAMES[i]] = int((~keep).sum())
        parts[i] = parts[i].subset(keep)
    if len(parts[0]) == 0:
        raise DataError(f"the training split is empty after purging a {horizon} s horizon; use more trades")
    return Split(train=parts[0], val=parts[1], test=parts[2], purged=purged)


def training_rows(samples: Samples) -> slice:
    """The feature rows the training windows cover: the only rows a scaler may be fitted on."""
    return slice(int((samples.end - samples.length).min()), int(samples.end.max()))
