"""Prediction: bundle + candles + moments -> class probabilities, side, and SL / TP as prices.

Only candles closed by each moment are read (open time `s` with `s + 60 <= t`); many moments share one
feature computation and go through the model in length-bucketed batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from lstm_trading.cache import feature_matrix
from lstm_trading.errors import DataError
from lstm_trading.inference import Progress, run_windows
from lstm_trading.samples import BUY, CLASS_NAMES, INVALID, SELL, moment_windows
from lstm_trading.timeutil import MINUTE, format_time

if TYPE_CHECKING:
    from lstm_trading.bundle import Bundle
    from lstm_trading.model import LSTMModel

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


@torch.inference_mode()
def forward_windows(
    model: LSTMModel,
    scaled: np.ndarray,
    ends: np.ndarray,
    lengths: np.ndarray,
    *,
    batch_size: int = 64,
    workers: int | None = None,
    chunk_len: int | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Softmax probabilities (n, 3) and raw SL/TP head outputs (n,) for windows `[end - length, end)`.

    Length-bucketed batches, run in time chunks (bounded memory at any window length) and shared among
    `workers` one-thread processes (`None`: one per core when the work is worth it; 1: this process only);
    see `inference.run_windows`. Every worker count gives the same predictions.
    """
    return run_windows(
        model, scaled, ends, lengths, batch_size=batch_size, workers=workers, chunk_len=chunk_len, progress=progress
    )


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
) -> pd.DataFrame:
    """One row per moment with the columns of `PREDICTION_COLUMNS`.

    `entry` defaults to the close of the last candle closed by the moment (predict cannot know the next open).
    `workers` as in `forward_windows`; `cache_dir` (with `symbol`) reads and keeps the features in the cache.
    """
    if len(candles) == 0:
        raise DataError("no candles to predict from")
    timestamps = candles["timestamp"].to_numpy(dtype=np.int64)
    if at is None:
        moments = np.array([timestamps[-1] + MINUTE], dtype=np.int64)
    else:
        moments = np.atleast_1d(np.asarray(at, dtype=np.int64))
    matrix = feature_matrix(candles, bundle.feature_config, symbol=symbol, cache_dir=cache_dir)
    if tuple(matrix.names) != tuple(bundle.feature_names):
        raise DataError(f"features {matrix.names} differ from the bundle's {bundle.feature_names}")
    if len(matrix) == 0:
        raise DataError(
            f"{len(candles)} candles are fewer than the indicator warm-up of {bundle.feature_config.warmup_minutes} "
            "minutes; load more history"
        )
    end, lengths = moment_windows(matrix, moments, bundle.max_len)
    scaled = bundle.feature_scaler.transform(matrix.values)
    probabilities, sl, tp = forward_windows(bundle.model, scaled, end, lengths, batch_size=batch_size, workers=workers)
    sl_pct, tp_pct = bundle.target_scaler.inverse(sl, tp)
    sl_pct, tp_pct = np.maximum(sl_pct, MIN_DISTANCE_PCT), np.maximum(tp_pct, MIN_DISTANCE_PCT)
    side = probabilities.argmax(axis=1)
    if entry is None:
        last_closed = np.searchsorted(timestamps, moments - MINUTE, side="right") - 1
        entry_price = candles["close"].to_numpy(dtype=np.float64)[last_closed]
    else:
        entry_price = np.broadcast_to(np.asarray(entry, dtype=np.float64), moments.shape).copy()
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
    """One prediction as plain JSON-ready values (SL/TP prices are null for Invalid)."""
    trade = row["side"] != "Invalid"
    at = int(row["at"])
    # a moment inside a minute keeps its seconds: they decide which minute the window ends on
    at_utc = format_time(at) if at % 60 == 0 else format_time(at).replace(" UTC", f":{at % 60:02d} UTC")
    return {
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
