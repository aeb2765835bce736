"""The gradient-boosting model's inputs: a fixed-size summary of each window of the scaled feature matrix.

A window is the rows `[end - length, end)` (DESIGN.md's "Window"); its summary depends on those rows only, so a
moment gets the same inputs in training, in a backtest and one moment at a time. Per window, for F features:

- the last row (F values): the candle closed last by the moment;
- the mean, standard deviation (population), minimum and maximum of each feature over the window (4 F);
- the close's compounded return over its last 60, 240 and 1,440 rows (fewer where the window is shorter), in
  percent: `100 * (prod(1 + close_pct / 100) - 1)`. `close_pct` is turned back from the scaled column into
  percent first (`CloseColumn`); with the `standard` scaler that is the training-quantile-clipped percentage,
  which differs from the raw one on about 0.2 % of minutes only. The `levels` feature set has `close_ret`, the
  same change as a fraction (`close / previous close - 1`), which `CloseColumn` turns into percent alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from lstm_trading.core.errors import DataError
from lstm_trading.models.base import Progress

RETURN_ROWS = (60, 240, 1_440)
CLOSE_FEATURE = "close_pct"
# The close's one-row change in each feature set, and what turns its value into percent.
CLOSE_FEATURES = {CLOSE_FEATURE: 1.0, "close_ret": 100.0}
STATISTICS = ("mean", "std", "min", "max")
ROWS_PER_THREAD = 2_000_000  # window rows a summary thread must have to pay for itself (about 0.1 s of work)
WINDOWS_PER_SHARE = 256  # windows between two progress reports


@dataclass(frozen=True)
class CloseColumn:
    """Where the close's change (`close_pct` or `close_ret`) sits in the scaled matrix and how to turn it back
    into percent: `scaled * scale + offset`."""

    index: int
    offset: float
    scale: float

    @classmethod
    def of(cls, names: Sequence[str], offset: np.ndarray, scale: np.ndarray) -> CloseColumn:
        """From the feature names and the feature scaler's `offset` and `scale` (`samples/scalers.py`): the main
        symbol's own column (another symbol's is named `SYMBOL.close_pct`)."""
        found = [name for name in CLOSE_FEATURES if name in names]
        if not found:
            raise DataError(
                f"the gbm model needs the feature {' or '.join(CLOSE_FEATURES)} for its returns, but the features "
                f"are {list(names)}"
            )
        index, percent = list(names).index(found[0]), CLOSE_FEATURES[found[0]]
        return cls(index=index, offset=percent * float(offset[index]), scale=percent * float(scale[index]))


def summary_names(names: Sequence[str], return_rows: Sequence[int] = RETURN_ROWS) -> list[str]:
    """Column names of `window_summary`'s output, in its order (LightGBM stores them in its model files)."""
    columns = [f"last_{name}" for name in names]
    for statistic in STATISTICS:
        columns += [f"{statistic}_{name}" for name in names]
    return columns + [f"close_return_{rows}" for rows in return_rows]


def summary_width(n_features: int, return_rows: Sequence[int] = RETURN_ROWS) -> int:
    return (1 + len(STATISTICS)) * n_features + len(return_rows)


def _summarise(
    scaled: np.ndarray, end: int, length: int, close: CloseColumn, return_rows: Sequence[int], out: np.ndarray
) -> None:
    # (F, L) in float64: each feature's rows contiguous, so the reductions run along memory (2.4x faster than
    # along the (L, F) slice), and 90 days of minutes sum without float32's rounding.
    window = np.ascontiguousarray(scaled[end - length : end].T, dtype=np.float64)
    n = scaled.shape[1]
    out[:n] = window[:, -1]
    out[n : 2 * n] = window.mean(axis=1)
    out[2 * n : 3 * n] = window.std(axis=1)
    out[3 * n : 4 * n] = window.min(axis=1)
    out[4 * n : 5 * n] = window.max(axis=1)
    pct = window[close.index] * close.scale + close.offset  # (L,) close_pct in percent again
    growth = np.log1p(np.maximum(pct / 100.0, -0.999999))  # a close never falls by 100 % in one minute
    for k, rows in enumerate(return_rows):
        out[5 * n + k] = 100.0 * np.expm1(growth[-rows:].sum())


def _threads(workers: int | None, rows: int, windows: int) -> int:
    """`None`: one per core, but no more than the work is worth; never more than there are windows."""
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = max(1, min(cores, rows // ROWS_PER_THREAD))
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return max(1, min(workers, windows))


def window_summary(
    scaled: np.ndarray,
    ends: np.ndarray,
    lengths: np.ndarray,
    close: CloseColumn,
    *,
    return_rows: Sequence[int] = RETURN_ROWS,
    workers: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """(n, 5 F + 3) float64: one summary row per window `[end - length, end)` of `scaled` (N, F).

    Windows are summarised on `workers` threads (numpy's reductions release the GIL); every worker count gives
    the same rows, as each row is computed from its own window alone. `progress(done, total)` after each share.
    """
    ends = np.asarray(ends, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(ends) != len(lengths):
        raise ValueError(f"{len(ends)} window ends for {len(lengths)} lengths")
    if len(lengths) and (lengths.min() < 1 or (ends - lengths).min() < 0 or ends.max() > len(scaled)):
        raise DataError("a window is empty or reaches outside the feature matrix")
    out = np.empty((len(ends), summary_width(scaled.shape[1], return_rows)), dtype=np.float64)
    if len(ends) == 0:
        return out
    threads = _threads(workers, int(lengths.sum()), len(ends))
    shares = np.array_split(np.arange(len(ends)), max(threads * 4, -(-len(ends) // WINDOWS_PER_SHARE)))

    def work(share: np.ndarray) -> int:
        for i in share:
            _summarise(scaled, int(ends[i]), int(lengths[i]), close, return_rows, out[i])
        return len(share)

    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
    try:
        done = 0
        for count in pool.map(work, shares) if pool is not None else map(work, shares):
            done += count
            if progress is not None:
                progress(done, len(ends))
    finally:
        if pool is not None:
            pool.shutdown()
    return out
