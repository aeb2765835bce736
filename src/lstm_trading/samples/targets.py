"""Samples: a journal's trades as targets (label, SL and TP in % of entry) and windows into the feature matrix.

A window is never copied: a sample is `(end, length)` into the contiguous `float32` feature matrix, and batches
are cut from the (scaled) matrix on demand. The window of a trade at `t` holds the candles closed by `t`:
open time `s` with `t - max_len*60 <= s` and `s + 60 <= t` (DESIGN.md, "Window").
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from lstm_trading.core.config import TargetConfig
from lstm_trading.core.errors import DataError
from lstm_trading.core.timeutil import MINUTE, format_time
from lstm_trading.features.matrix import FeatureMatrix
from lstm_trading.samples.windows import window_bounds

CLASS_NAMES = ("Buy", "Sell", "Invalid")
BUY, SELL, INVALID = 0, 1, 2


@dataclass(frozen=True)
class Samples:
    """One row per usable trade: its window `[end - length, end)` and its targets (SL/TP in % of entry)."""

    end: np.ndarray
    length: np.ndarray
    label: np.ndarray
    stop_loss_pct: np.ndarray
    take_profit_pct: np.ndarray
    start_time: np.ndarray
    entry_price: np.ndarray
    journal_row: np.ndarray

    def __len__(self) -> int:
        return len(self.end)

    def subset(self, index: np.ndarray | slice) -> Samples:
        return Samples(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @property
    def is_trade(self) -> np.ndarray:
        """Buy and Sell samples: the only ones with a stop loss and take profit to learn."""
        return self.label != INVALID

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.label, minlength=len(CLASS_NAMES))
        return {name: int(n) for name, n in zip(CLASS_NAMES, counts, strict=True)}


@dataclass(frozen=True)
class SampleReport:
    """What `build_samples` left out and why, for the commands to print."""

    skipped_no_history: int
    skipped_short_history: int
    skipped_after_data: int
    candle_range: tuple[int, int]
    skipped_in_gap: int = 0  # inside a gap longer than max_gap_minutes, or the warm-up after one
    long_gaps: int = 0  # gaps longer than max_gap_minutes among the usable rows
    longest_gap_minutes: int = 0

    @property
    def skipped(self) -> int:
        return self.skipped_no_history + self.skipped_short_history + self.skipped_after_data + self.skipped_in_gap


def build_samples(
    matrix: FeatureMatrix, trades: pd.DataFrame, config: TargetConfig = TargetConfig()
) -> tuple[Samples, SampleReport]:
    """Turn journal trades (`start_time`, `entry_price`, `label`, optional SL/TP prices) into samples.

    Targets (DESIGN.md "Targets"): distances from the entry in percent of it, from the journal's own SL/TP when
    it has them, else `100 * k * ATR / entry` with the ATR of the last candle closed by `t`. Trades with no
    closed candle before them, fewer than `min_history` rows, or after the last candle are skipped and counted
    (one warning); if none is left that is a `DataError`.
    """
    if len(matrix) == 0:
        raise DataError("no feature rows: the candles are shorter than the indicator warm-up")
    moments = trades["start_time"].to_numpy(dtype=np.int64)
    start, end = window_bounds(matrix.timestamps, moments, config.max_len, matrix.max_gap_minutes)
    length = end - start
    last_close = int(matrix.timestamps[-1]) + MINUTE
    after_data = moments > last_close
    in_gap = (length == 0) & ~after_data & (moments > int(matrix.timestamps[0]) + MINUTE)
    no_history = (length == 0) & ~after_data & ~in_gap
    short = (length > 0) & (length < config.min_history) & ~after_data
    keep = ~(after_data | no_history | short | in_gap)
    candle_range = (int(matrix.timestamps[0]), int(matrix.timestamps[-1]))
    gaps = long_gaps(matrix)
    report = SampleReport(
        int(no_history.sum()),
        int(short.sum()),
        int(after_data.sum()),
        candle_range,
        skipped_in_gap=int(in_gap.sum()),
        long_gaps=len(gaps),
        longest_gap_minutes=max(gaps, default=0),
    )
    if not keep.all():
        warnings.warn(
            f"skipped {int((~keep).sum())} of {len(trades)} trades outside the usable candles "
            f"({format_time(candle_range[0])} to {format_time(candle_range[1])}, after the indicator warm-up): "
            f"{report.skipped_no_history} with no closed candle before them, {report.skipped_short_history} "
            f"with fewer than {config.min_history} minutes of history, {report.skipped_after_data} after the data"
            + (
                f", {report.skipped_in_gap} inside one of {len(gaps)} long gaps or the warm-up after it"
                if report.skipped_in_gap
                else ""
            ),
            stacklevel=2,
        )
    if not keep.any():
        raise DataError(
            f"none of the {len(trades)} trades falls inside the usable candles "
            f"({format_time(candle_range[0])} to {format_time(candle_range[1])}); load candles that cover the "
            "journal's start times, plus the indicator warm-up before them"
        )
    kept = trades.loc[keep]
    end, length = end[keep], length[keep]
    label = kept["label"].to_numpy(dtype=np.int64)
    entry = kept["entry_price"].to_numpy(dtype=np.float64)
    atr = matrix.atr[end - 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        sl_pct = 100.0 * config.k_sl * atr / entry
        tp_pct = 100.0 * config.k_tp * atr / entry
        if "stop_loss" in kept and "take_profit" in kept:
            own_sl = kept["stop_loss"].to_numpy(dtype=np.float64)
            own_tp = kept["take_profit"].to_numpy(dtype=np.float64)
            has_own = np.isfinite(own_sl) & np.isfinite(own_tp)
            sl_pct = np.where(has_own, 100.0 * np.abs(entry - own_sl) / entry, sl_pct)
            tp_pct = np.where(has_own, 100.0 * np.abs(own_tp - entry) / entry, tp_pct)
    trade = label != INVALID
    sl_pct = np.where(trade, sl_pct, np.nan)
    tp_pct = np.where(trade, tp_pct, np.nan)
    row = kept["row"].to_numpy(dtype=np.int64) if "row" in kept else np.flatnonzero(keep) + 2
    samples = Samples(
        end=end,
        length=length,
        label=label,
        stop_loss_pct=sl_pct,
        take_profit_pct=tp_pct,
        start_time=kept["start_time"].to_numpy(dtype=np.int64),
        entry_price=np.where(trade, entry, np.nan),
        journal_row=row,
    )
    return samples, report


def class_weights(labels: np.ndarray, weighting: str = "inverse", n_classes: int = len(CLASS_NAMES)) -> np.ndarray:
    """The classification loss's class weights (every model kind uses these): `inverse` class frequency,
    normalised so the average weight over the training samples is 1; `none`: all 1."""
    return class_weights_from_counts(np.bincount(labels, minlength=n_classes), weighting)


def class_weights_from_counts(counts: np.ndarray, weighting: str = "inverse") -> np.ndarray:
    """`class_weights` from the training class counts (what an older bundle records instead of its weights)."""
    counts = np.asarray(counts, dtype=np.float64)
    if weighting == "none":
        return np.ones(len(counts))
    if weighting != "inverse":
        raise ValueError(f"class weighting must be 'inverse' or 'none', got {weighting!r}")
    total = counts.sum()
    weights = np.where(counts > 0, total / (len(counts) * np.maximum(counts, 1)), 0.0)
    mean = float((weights * counts).sum() / total) if total else 1.0
    return weights / mean


def prior_corrected(proba: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """Undo the class weighting's tilt: a model trained with weights w outputs q_k proportional to w_k p_k, so
    `p_k = (q_k / w_k) / sum_j (q_j / w_j)` (DESIGN.md "Probabilities"). A class with weight 0 (absent from
    training) keeps probability 0; `None` or equal weights change nothing."""
    proba = np.asarray(proba, dtype=np.float64)
    if weights is None:
        return proba
    weights = np.asarray(weights, dtype=np.float64)
    inverse = np.divide(1.0, weights, out=np.zeros_like(weights), where=weights > 0)
    tilted = proba * inverse
    total = tilted.sum(axis=-1, keepdims=True)
    return np.divide(tilted, total, out=np.full_like(tilted, 1.0 / proba.shape[-1]), where=total > 0)


def long_gaps(matrix: FeatureMatrix) -> list[int]:
    """Missing minutes of each gap between usable rows longer than the matrix's `max_gap_minutes` (the gap
    itself plus the warm-up dropped after it): what split the history into segments."""
    if matrix.max_gap_minutes is None or len(matrix) < 2:
        return []
    steps = np.diff(matrix.timestamps) // MINUTE - 1
    return [int(m) for m in steps[steps > matrix.max_gap_minutes]]
