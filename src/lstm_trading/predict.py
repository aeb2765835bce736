"""Prediction: bundle + candles + moments -> class probabilities, side, and SL / TP as prices.

Only candles closed by each moment are read (open time `s` with `s + 60 <= t`); many moments share one
feature computation and go through the model in length-bucketed batches.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from lstm_trading.core.config import FeatureConfig, TargetConfig
from lstm_trading.core.errors import ConfigError, DataError, ModelFileError, NoWindow
from lstm_trading.core.jsonio import json_safe
from lstm_trading.core.timeutil import MINUTE, format_time
from lstm_trading.features.cache import feature_matrix
from lstm_trading.features.compute import compute_features, rows_dropped, segment_bounds
from lstm_trading.features.matrix import FeatureMatrix
from lstm_trading.models.base import Progress
from lstm_trading.samples.targets import BUY, CLASS_NAMES, INVALID, SELL, prior_corrected
from lstm_trading.samples.windows import moment_windows, window_bounds

if TYPE_CHECKING:
    from lstm_trading.models.bundle import Bundle

MIN_DISTANCE_PCT = 0.01  # predicted SL/TP distances are floored here when turned into prices

PREDICTION_COLUMNS = (
    "at",
    "p_buy",
    "p_sell",
    "p_invalid",
    "side",
    "entry",
    "stop_loss",
    "take_profit",
    "stop_loss_pct",
    "take_profit_pct",
    "window_minutes",
)


class WindowPredictions(NamedTuple):
    """One row per window: prior-corrected class probabilities (n, 3), SL/TP distances in % of entry (floored)."""

    proba: np.ndarray
    stop_loss_pct: np.ndarray
    take_profit_pct: np.ndarray


def predict_windows(
    bundle: Bundle,
    scaled: np.ndarray,
    ends: np.ndarray,
    lengths: np.ndarray,
    *,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Progress | None = None,
) -> WindowPredictions:
    """The one way from a bundle to its outputs, for every command: the model kind's forward pass over windows
    `[end - length, end)` of `scaled`, the probabilities corrected for the training's class weights (so that
    they estimate the label frequencies: DESIGN.md "Probabilities"), the target scaler's inverse, and the
    `MIN_DISTANCE_PCT` floor.

    `workers`: one-thread processes (`None`: one per core when the work is worth it; 1: this process only);
    every worker count gives the same predictions (`models/lstm/inference.py`).
    """
    out = bundle.model.predict_windows(scaled, ends, lengths, batch_size=batch_size, workers=workers, progress=progress)
    sl_pct, tp_pct = bundle.target_scaler.inverse(out.sl, out.tp)
    _require_finite_outputs(bundle, scaled, ends, lengths, (out.proba, sl_pct, tp_pct))
    proba = prior_corrected(out.proba, bundle.class_weights)
    return WindowPredictions(proba, np.maximum(sl_pct, MIN_DISTANCE_PCT), np.maximum(tp_pct, MIN_DISTANCE_PCT))


def _require_finite_outputs(
    bundle: Bundle, scaled: np.ndarray, ends: np.ndarray, lengths: np.ndarray, outputs: tuple[np.ndarray, ...]
) -> None:
    """NaN probabilities would argmax to Buy and NaN levels never trigger: stop instead, blaming the input rows
    when they are not finite, else the bundle (its weights or scaler numbers)."""
    bad = np.zeros(len(ends), dtype=bool)
    for values in outputs:
        finite = np.isfinite(values)
        bad |= ~(finite.all(axis=1) if finite.ndim == 2 else finite)
    if not bad.any():
        return
    first = int(np.argmax(bad))
    rows = scaled[int(ends[first]) - int(lengths[first]) : int(ends[first])]  # the window: [end - length, end)
    if not np.isfinite(rows).all():
        raise DataError(
            f"{int(bad.sum())} of {len(bad)} windows hold NaN or infinite scaled features (the first ends at "
            f"feature row {int(ends[first])}); the model cannot predict from them"
        )
    raise ModelFileError(
        f"{bundle.json_path}: the model gave NaN or infinite outputs for {int(bad.sum())} of {len(bad)} windows "
        "of finite features; its weights or scaler numbers are damaged: retrain, or restore the run from a copy"
    )


def _require_bundle_features(bundle: Bundle, names: Sequence[str]) -> None:
    """The computed features must be the ones the model was trained on, in order; else the bundle is at fault:
    its feature configuration computes these names, so different names in it were edited or mismatched."""
    if tuple(names) == tuple(bundle.feature_names):
        return
    renamed = [f"{b!r} (computed: {c!r})" for b, c in zip(bundle.feature_names, names, strict=False) if b != c]
    raise ModelFileError(
        f"{bundle.json_path}: its features.names differ from the features its features.config computes "
        f"({len(bundle.feature_names)} names, {len(names)} computed; differing: {', '.join(renamed) or 'none'}); "
        "the file was edited or comes from another lstm-trading: restore it or retrain"
    )


def _require_entry_prices(entry: np.ndarray) -> None:
    bad = ~(np.isfinite(entry) & (entry > 0))
    if bad.any():
        raise ConfigError(f"entry price {entry[bad][0]:g} is not a positive, finite price")


def levels_from_distances(
    side: np.ndarray, entry: np.ndarray, stop_loss_pct: np.ndarray, take_profit_pct: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """SL and TP prices: Buy SL below and TP above the entry; Sell mirrors; Invalid has none (NaN)."""
    sign = np.where(side == BUY, 1.0, np.where(side == SELL, -1.0, np.nan))
    return entry * (1 - sign * stop_loss_pct / 100), entry * (1 + sign * take_profit_pct / 100)


def predict_moments(
    bundle: Bundle,
    candles: pd.DataFrame,
    at: int | Sequence[int] | np.ndarray | None = None,
    *,
    entry: float | Sequence[float] | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    cache_dir: Path | None = None,
    symbol: str = "",
    levels: str = "model",
) -> pd.DataFrame:
    """One row per moment with the columns of `PREDICTION_COLUMNS`.

    `entry` defaults to the close of the last candle closed by the moment (predict cannot know the next open).
    `workers` as in `predict_windows`; `cache_dir` (with `symbol`) reads and keeps the features in the cache;
    `levels` as `Signals.with_levels` (`atr`: k x ATR instead of the heads' distances).
    """
    if len(candles) == 0:
        raise DataError("no candles to predict from")
    timestamps = candles["timestamp"].to_numpy(dtype=np.int64)
    if at is None:
        moments = np.array([timestamps[-1] + MINUTE], dtype=np.int64)
    else:
        moments = np.atleast_1d(np.asarray(at, dtype=np.int64))
    if entry is not None:
        entry_price = np.broadcast_to(np.asarray(entry, dtype=np.float64), moments.shape).copy()
        _require_entry_prices(entry_price)
    matrix = feature_matrix(candles, bundle.feature_config, symbol=symbol, cache_dir=cache_dir)
    _require_bundle_features(bundle, matrix.names)
    if len(matrix) == 0:
        raise too_short(candles, bundle.feature_config)
    end, lengths = moment_windows(matrix, moments, bundle.max_len)
    scaled = bundle.feature_scaler.transform(matrix.values)
    probabilities, sl_pct, tp_pct = predict_windows(
        bundle, scaled, end, lengths, batch_size=batch_size, workers=workers
    )
    if levels == "atr":
        sl_pct, tp_pct = atr_levels(matrix, candles, moments, bundle.target_config)
    elif levels != "model":
        raise ConfigError(f"levels must be 'model' or 'atr', got {levels!r}")
    side = probabilities.argmax(axis=1)
    if entry is None:
        last_closed = np.searchsorted(timestamps, moments - MINUTE, side="right") - 1
        entry_price = candles["close"].to_numpy(dtype=np.float64)[last_closed]
    stop_loss, take_profit = levels_from_distances(side, entry_price, sl_pct, tp_pct)
    return pd.DataFrame(
        {
            "at": moments,
            "p_buy": probabilities[:, BUY],
            "p_sell": probabilities[:, SELL],
            "p_invalid": probabilities[:, INVALID],
            "side": np.asarray(CLASS_NAMES, dtype=object)[side],
            "entry": entry_price,
            "stop_loss": stop_loss,
            "take_profit": take_profit,
            "stop_loss_pct": sl_pct,
            "take_profit_pct": tp_pct,
            "window_minutes": lengths,
        },
        columns=list(PREDICTION_COLUMNS),
    )


def prediction_record(row: pd.Series) -> dict[str, Any]:
    """One prediction as plain JSON-ready values (SL/TP prices are null for Invalid): strict JSON, never NaN."""
    trade = row["side"] != "Invalid"
    at = int(row["at"])
    # a moment inside a minute keeps its seconds: they decide which minute the window ends on
    at_utc = format_time(at) if at % 60 == 0 else format_time(at).replace(" UTC", f":{at % 60:02d} UTC")
    record = {
        "at": at,
        "at_utc": at_utc,
        "side": str(row["side"]),
        "probabilities": {"Buy": float(row["p_buy"]), "Sell": float(row["p_sell"]), "Invalid": float(row["p_invalid"])},
        "entry": float(row["entry"]),
        "stop_loss": float(row["stop_loss"]) if trade else None,
        "take_profit": float(row["take_profit"]) if trade else None,
        "stop_loss_pct": float(row["stop_loss_pct"]),
        "take_profit_pct": float(row["take_profit_pct"]),
        "window_minutes": int(row["window_minutes"]),
    }
    return json_safe(record)  # NaN never reaches JSON; the checks before it keep NaN out of predictions too


# --- batched prediction ---


@dataclass(frozen=True)
class Signals:
    """The model's output at each decision moment: class probabilities and predicted SL/TP distances (%)."""

    at: np.ndarray
    proba: np.ndarray  # (n, 3): Buy, Sell, Invalid
    stop_loss_pct: np.ndarray
    take_profit_pct: np.ndarray
    usable: np.ndarray | None = None  # False where a moment had no window (a gap or its warm-up); None: all
    # k_sl / k_tp x ATR at each moment (`atr_levels`), the levels `backtest.levels = "atr"` trades; None: not known
    atr_stop_loss_pct: np.ndarray | None = None
    atr_take_profit_pct: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.at)

    def with_levels(self, levels: str) -> Signals:
        """These signals with the SL/TP distances `levels` names: `model` (the heads, as predicted) or `atr`."""
        if levels == "model":
            return self
        if levels != "atr":
            raise ConfigError(f"levels must be 'model' or 'atr', got {levels!r}")
        if self.atr_stop_loss_pct is None or self.atr_take_profit_pct is None:
            raise DataError("these signals carry no ATR levels (computed without the candles)")
        return replace(self, stop_loss_pct=self.atr_stop_loss_pct, take_profit_pct=self.atr_take_profit_pct)

    def concatenated(self, other: Signals) -> Signals:
        """Both signals' moments in one (a walk-forward's folds, in time order)."""

        def join(a: np.ndarray | None, b: np.ndarray | None, fill: bool = False) -> np.ndarray | None:
            if a is None and b is None:
                return None
            if fill:
                a = np.ones(len(self), dtype=bool) if a is None else a
                b = np.ones(len(other), dtype=bool) if b is None else b
            if a is None or b is None:
                return None
            return np.concatenate([a, b])

        return Signals(
            at=np.concatenate([self.at, other.at]),
            proba=np.concatenate([self.proba, other.proba]),
            stop_loss_pct=np.concatenate([self.stop_loss_pct, other.stop_loss_pct]),
            take_profit_pct=np.concatenate([self.take_profit_pct, other.take_profit_pct]),
            usable=join(self.usable, other.usable, fill=True),
            atr_stop_loss_pct=join(self.atr_stop_loss_pct, other.atr_stop_loss_pct),
            atr_take_profit_pct=join(self.atr_take_profit_pct, other.atr_take_profit_pct),
        )


def atr_levels(
    matrix: FeatureMatrix, candles: pd.DataFrame, moments: np.ndarray, config: TargetConfig
) -> tuple[np.ndarray, np.ndarray]:
    """`k_sl` and `k_tp` times the ATR of the last candle closed by each moment, in % of that candle's close (the
    labeller's levels, DESIGN.md "Targets"; the close stands in for the entry, which is not known yet);
    floored at `MIN_DISTANCE_PCT`, and at it where no feature row is closed by the moment."""
    moments = np.asarray(moments, dtype=np.int64)
    row = np.searchsorted(matrix.timestamps, moments - MINUTE, side="right") - 1
    timestamps = candles["timestamp"].to_numpy(dtype=np.int64)
    closes = candles["close"].to_numpy(dtype=np.float64)
    last = np.searchsorted(timestamps, moments - MINUTE, side="right") - 1
    known = (row >= 0) & (last >= 0)
    atr_share = np.zeros(len(moments))
    atr_share[known] = matrix.atr[row[known]] / closes[last[known]]
    atr_share = np.where(np.isfinite(atr_share), atr_share, 0.0)
    sl = np.maximum(100 * config.k_sl * atr_share, MIN_DISTANCE_PCT)
    tp = np.maximum(100 * config.k_tp * atr_share, MIN_DISTANCE_PCT)
    return sl, tp


@dataclass(frozen=True)
class Features:
    """The feature rows of a candle history and their scaled copy, computed once for every moment."""

    matrix: FeatureMatrix
    scaled: np.ndarray


def too_short(candles: pd.DataFrame, config: FeatureConfig) -> DataError:
    """Why candles gave no feature row: too few for the warm-up, or (after a long gap) too few since the gap."""
    timestamps = candles["timestamp"].to_numpy(dtype=np.int64)
    bounds = segment_bounds(timestamps, config.max_gap_minutes)
    if len(bounds) > 1:
        first = int(timestamps[bounds[-1][0]])
        return NoWindow(
            f"no usable window: the candles since the last gap longer than {config.max_gap_minutes} minutes (it "
            f"ended at {format_time(first)}) are {bounds[-1][1] - bounds[-1][0]:,}, fewer than the indicator "
            f"warm-up of {rows_dropped(config):,} minutes; the first usable moment is "
            f"{rows_dropped(config):,} candles after {format_time(first)}"
        )
    return DataError(
        f"{len(candles)} candles are fewer than the indicator warm-up of {config.warmup_minutes} minutes; "
        "load more history"
    )


def scaled_features(bundle: Bundle, candles: pd.DataFrame) -> Features:
    """Features of the whole history (warm-up included), scaled once with the bundle's scaler."""
    config = bundle.feature_config
    matrix = FeatureMatrix.from_frame(compute_features(candles, config), config.max_gap_minutes)
    if len(matrix) == 0:
        raise too_short(candles, config)
    _require_bundle_features(bundle, matrix.names)
    scaled = bundle.feature_scaler.transform(matrix.values)
    bad = ~np.isfinite(scaled)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        name, at = matrix.names[column], format_time(matrix.timestamps[row])
        if np.isfinite(matrix.values[row, column]):  # a finite feature scaled to NaN: the scaler's numbers
            raise ModelFileError(f"{bundle.json_path}: its feature_scaler turns feature {name} at {at} into NaN")
        raise DataError(f"non-finite feature {name} at {at}")
    return Features(matrix, scaled)


def predict_signals(
    bundle: Bundle,
    features: Features,
    moments: np.ndarray,
    *,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Signals:
    """One batched pass over the windows of all moments (the candles closed by each moment, DESIGN.md).

    Batches run through `predict_windows` (time-chunked, shared among one-thread worker processes;
    `workers=None` is one per core); `progress(done, total)` is called after every batch of windows.
    """
    matrix = features.matrix
    moments = np.asarray(moments, dtype=np.int64)
    start, end = window_bounds(matrix.timestamps, moments, bundle.max_len, matrix.max_gap_minutes)
    usable = end > start
    if not usable.any():  # the error names the first moment and the usable rows
        moment_windows(matrix, moments, bundle.max_len, hint="start the backtest later or load more history")
    if not usable.all():
        warnings.warn(
            f"{int((~usable).sum()):,} of {len(moments):,} decision moments have no usable window (inside a gap "
            f"longer than {matrix.max_gap_minutes} minutes or the warm-up after one): no trade is taken there",
            stacklevel=2,
        )
    proba, sl_pct, tp_pct = predict_windows(
        bundle, features.scaled, end[usable], (end - start)[usable], batch_size=batch_size, workers=workers,
        progress=progress,
    )  # fmt: skip
    n = len(moments)
    all_proba = np.tile(np.array([0.0, 0.0, 1.0]), (n, 1))  # certain Invalid where no window: never traded
    all_sl, all_tp = np.full(n, MIN_DISTANCE_PCT), np.full(n, MIN_DISTANCE_PCT)
    all_proba[usable], all_sl[usable], all_tp[usable] = proba, sl_pct, tp_pct
    return Signals(at=moments, proba=all_proba, stop_loss_pct=all_sl, take_profit_pct=all_tp, usable=usable)
