"""Windows as index ranges into the feature matrix: the window of a moment `t` holds the candles closed by `t`,
open time `s` with `t - max_len*60 <= s` and `s + 60 <= t` (DESIGN.md, "Window")."""

from __future__ import annotations

import numpy as np

from lstm_trading.core.errors import DataError
from lstm_trading.core.timeutil import MINUTE, format_time
from lstm_trading.features.matrix import FeatureMatrix


def window_bounds(timestamps: np.ndarray, moments: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ranges `[start, end)` of the candles closed by each moment, at most `max_len` minutes back.

    Closed by `t` means `s + 60 <= t`; the window reaches back to open times `s >= t - max_len*60`.
    """
    moments = np.asarray(moments, dtype=np.int64)
    end = np.searchsorted(timestamps, moments - MINUTE, side="right")
    start = np.searchsorted(timestamps, moments - max_len * MINUTE, side="left")
    return start.astype(np.int64), np.maximum(end, start).astype(np.int64)


def moment_windows(
    matrix: FeatureMatrix, moments: np.ndarray, max_len: int, *, hint: str = "load more history"
) -> tuple[np.ndarray, np.ndarray]:
    """`(end, length)` of each moment's window; a moment with no usable candle closed by it is a `DataError`."""
    start, end = window_bounds(matrix.timestamps, moments, max_len)
    lengths = end - start
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        raise DataError(
            f"no usable candle closed by {format_time(moments[empty[0]])} (usable feature rows run from "
            f"{format_time(matrix.timestamps[0])} to {format_time(matrix.timestamps[-1])}, after the warm-up); "
            f"{hint}"
        )
    return end, lengths
