"""Windows as index ranges into the feature matrix: the window of a moment `t` holds the candles closed by `t`,
open time `s` with `t - max_len*60 <= s` and `s + 60 <= t` (DESIGN.md, "Window")."""

from __future__ import annotations

import numpy as np

from lstm_trading.core.errors import DataError, NoWindow
from lstm_trading.core.timeutil import MINUTE, format_time
from lstm_trading.features.matrix import FeatureMatrix


def window_bounds(
    timestamps: np.ndarray, moments: np.ndarray, max_len: int, max_gap_minutes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Row ranges `[start, end)` of the candles closed by each moment, at most `max_len` minutes back.

    Closed by `t` means `s + 60 <= t`; the window reaches back to open times `s >= t - max_len*60`. With
    `max_gap_minutes` (DESIGN.md, "Gaps"), a window never reaches back across a gap longer than that: it is cut
    at its segment's first usable row; and a moment whose newest usable row is more than that many minutes old
    (inside a data gap, or inside the warm-up of the segment after one) has no window (length 0).
    """
    moments = np.asarray(moments, dtype=np.int64)
    end = np.searchsorted(timestamps, moments - MINUTE, side="right")
    start = np.searchsorted(timestamps, moments - max_len * MINUTE, side="left")
    if max_gap_minutes is not None and len(timestamps):
        limit = (max_gap_minutes + 1) * MINUTE
        firsts = np.r_[0, np.flatnonzero(np.diff(timestamps) > limit) + 1]  # each segment's first usable row
        last = np.maximum(end - 1, 0)
        own_first = firsts[np.searchsorted(firsts, last, side="right") - 1]
        start = np.maximum(start, own_first)
        stale = (end == 0) | (moments - MINUTE - timestamps[last] > max_gap_minutes * MINUTE)
        start = np.where(stale, end, start)
    return start.astype(np.int64), np.maximum(end, start).astype(np.int64)


def moment_windows(
    matrix: FeatureMatrix, moments: np.ndarray, max_len: int, *, hint: str = "load more history"
) -> tuple[np.ndarray, np.ndarray]:
    """`(end, length)` of each moment's window; a moment with no usable candle closed by it is a `DataError`."""
    start, end = window_bounds(matrix.timestamps, moments, max_len, matrix.max_gap_minutes)
    lengths = end - start
    empty = np.flatnonzero(lengths == 0)
    stamps = matrix.timestamps
    gap_rule = matrix.max_gap_minutes is not None
    if len(empty) and len(stamps) and gap_rule and moments[empty[0]] > stamps[0] + MINUTE:
        moment = int(moments[empty[0]])
        newest = int(stamps[np.searchsorted(stamps, moment - MINUTE, side="right") - 1])
        following = stamps[stamps >= moment]
        resume = (
            f"; the first usable moment after it is {format_time(int(following[0]) + MINUTE)}" if len(following) else ""
        )
        raise NoWindow(
            f"no usable window at {format_time(moment)}: it lies inside a gap longer than {matrix.max_gap_minutes} "
            f"minutes or the indicator warm-up after one (the newest usable candle before it opened "
            f"{format_time(newest)}){resume}"
        )
    if len(empty):
        raise DataError(
            f"no usable candle closed by {format_time(moments[empty[0]])} (usable feature rows run from "
            f"{format_time(matrix.timestamps[0])} to {format_time(matrix.timestamps[-1])}, after the warm-up); "
            f"{hint}"
        )
    return end, lengths
