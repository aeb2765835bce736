"""Samples: targets, windows as index ranges into one feature matrix, the time split, and the scalers.

A window is never copied: a sample is `(end, length)` into the contiguous `float32` feature matrix, and batches
are cut from the (scaled) matrix on demand. The window of a trade at `t` holds the candles closed by `t`:
open time `s` with `t - max_len*60 <= s` and `s + 60 <= t` (DESIGN.md, "Window").
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import Any, Self

import numpy as np
import pandas as pd
from sklearn.preprocessing import MinMaxScaler

from lstm_trading.config import SplitConfig, TargetConfig
from lstm_trading.errors import DataError, ModelFileError
from lstm_trading.timeutil import MINUTE, format_time

CLASS_NAMES = ("Buy", "Sell", "Invalid")
BUY, SELL, INVALID = 0, 1, 2
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class FeatureMatrix:
    """The feature rows of one history: `values` (N, F) float32, `timestamps` (N,) int64 open times, `atr`."""

    values: np.ndarray
    timestamps: np.ndarray
    atr: np.ndarray
    names: tuple[str, ...]

    @classmethod
    def from_frame(cls, features: pd.DataFrame) -> FeatureMatrix:
        """From `compute_features`' frame: the feature columns in order, then `atr`."""
        names = tuple(str(c) for c in features.columns if c != "atr")
        return cls(
            values=np.ascontiguousarray(features[list(names)].to_numpy(dtype=np.float32)),
            timestamps=features.index.to_numpy(dtype=np.int64),
            atr=features["atr"].to_numpy(dtype=np.float64),
            names=names,
        )

    def __len__(self) -> int:
        return len(self.timestamps)

    def with_values(self, values: np.ndarray) -> FeatureMatrix:
        return FeatureMatrix(values=values, timestamps=self.timestamps, atr=self.atr, names=self.names)


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
    start, end = window_bounds(matrix.timestamps, moments, config.max_len)
    length = end - start
    last_close = int(matrix.timestamps[-1]) + MINUTE
    after_data = moments > last_close
    no_history = (length == 0) & ~after_data
    short = (length > 0) & (length < config.min_history) & ~after_data
    keep = ~(after_data | no_history | short)
    candle_range = (int(matrix.timestamps[0]), int(matrix.timestamps[-1]))
    report = SampleReport(int(no_history.sum()), int(short.sum()), int(after_data.sum()), candle_range)
    if not keep.all():
        warnings.warn(
            f"skipped {int((~keep).sum())} of {len(trades)} trades outside the usable candles "
            f"({format_time(candle_range[0])} to {format_time(candle_range[1])}, after the indicator warm-up): "
            f"{report.skipped_no_history} with no closed candle before them, {report.skipped_short_history} "
            f"with fewer than {config.min_history} minutes of history, {report.skipped_after_data} after the data",
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


@dataclass(frozen=True)
class FeatureScaler:
    """Feature scaling fitted on training rows only; plain numbers so it saves as JSON.

    `standard` (default): clip each feature to its training 0.1 % / 99.9 % quantiles, then standardise.
    `minmax`: the seed's MinMaxScaler to [0, 1] (DESIGN.md "Scalers" says why it is not the default).
    """

    kind: str
    lower: np.ndarray
    upper: np.ndarray
    offset: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, rows: np.ndarray, kind: str = "standard") -> FeatureScaler:
        rows = np.asarray(rows, dtype=np.float64)
        if len(rows) == 0:
            raise DataError("cannot fit the feature scaler: the training period has no feature rows")
        if kind == "standard":
            lower, upper = np.quantile(rows, [0.001, 0.999], axis=0)
            clipped = np.clip(rows, lower, upper)
            offset, scale = clipped.mean(axis=0), clipped.std(axis=0)
        elif kind == "minmax":
            fitted = MinMaxScaler(feature_range=(0.0, 1.0)).fit(rows)
            lower, upper = np.full(rows.shape[1], -np.inf), np.full(rows.shape[1], np.inf)
            offset, scale = fitted.data_min_, fitted.data_range_
        else:
            raise DataError(f"unknown scaler {kind!r}; use 'standard' or 'minmax'")
        scale = np.where(scale > 1e-12, scale, 1.0)
        return cls(kind=kind, lower=lower, upper=upper, offset=offset, scale=scale)

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Scaled float32 copy: (clip(x) - offset) / scale."""
        clipped = np.clip(values, self.lower.astype(np.float32), self.upper.astype(np.float32))
        return ((clipped - self.offset.astype(np.float32)) / self.scale.astype(np.float32)).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "lower": _finite_or_none(self.lower),
            "upper": _finite_or_none(self.upper),
            "offset": self.offset.tolist(),
            "scale": self.scale.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], n_features: int) -> Self:
        try:
            kind = str(data["kind"])
            lower = np.array([-np.inf if v is None else v for v in data["lower"]], dtype=np.float64)
            upper = np.array([np.inf if v is None else v for v in data["upper"]], dtype=np.float64)
            offset = np.asarray(data["offset"], dtype=np.float64)
            scale = np.asarray(data["scale"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as error:
            raise ModelFileError(f"feature_scaler: missing or malformed entry ({error})") from None
        if any(len(a) != n_features for a in (lower, upper, offset, scale)):
            raise ModelFileError(f"feature_scaler: expected {n_features} numbers per entry")
        if kind not in ("standard", "minmax") or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ModelFileError("feature_scaler: unknown kind or non-positive scale")
        return cls(kind=kind, lower=lower, upper=upper, offset=offset, scale=scale)


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


@dataclass(frozen=True)
class TargetScaler:
    """The seed's MinMaxScaler for stop loss and take profit distances, fitted on training Buy/Sell trades."""

    data_min: np.ndarray  # (2,): stop loss, take profit
    data_range: np.ndarray

    @classmethod
    def fit(cls, samples: Samples) -> TargetScaler:
        trade = samples.is_trade
        if not trade.any():
            raise DataError("the training split has no Buy or Sell trade: nothing to learn stop losses from")
        pairs = np.column_stack([samples.stop_loss_pct[trade], samples.take_profit_pct[trade]])
        fitted = MinMaxScaler().fit(pairs)
        data_range = np.where(fitted.data_range_ > 1e-12, fitted.data_range_, 1.0)
        return cls(data_min=fitted.data_min_.astype(np.float64), data_range=data_range.astype(np.float64))

    def transform(self, stop_loss_pct: np.ndarray, take_profit_pct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            (stop_loss_pct - self.data_min[0]) / self.data_range[0],
            (take_profit_pct - self.data_min[1]) / self.data_range[1],
        )

    def inverse(self, stop_loss: np.ndarray, take_profit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            stop_loss * self.data_range[0] + self.data_min[0],
            take_profit * self.data_range[1] + self.data_min[1],
        )

    def to_json(self) -> dict[str, Any]:
        return {"data_min": self.data_min.tolist(), "data_range": self.data_range.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        try:
            data_min = np.asarray(data["data_min"], dtype=np.float64)
            data_range = np.asarray(data["data_range"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as error:
            raise ModelFileError(f"target_scaler: missing or malformed entry ({error})") from None
        if data_min.shape != (2,) or data_range.shape != (2,) or np.any(data_range <= 0):
            raise ModelFileError("target_scaler: expected two numbers each, with positive ranges")
        return cls(data_min=data_min, data_range=data_range)
