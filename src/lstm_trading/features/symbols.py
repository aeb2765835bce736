"""Other symbols as inputs (`features.with_symbols`): their candles ride in the main candle frame as columns.

The candle loader (`runs/candles.py`) reads each other symbol over the main symbol's span and joins it here on
the open time, as columns `BTCUSDT.open`, ..., `BTCUSDT.volume`, NaN where that symbol has no candle. The main
columns keep every one of the main symbol's candles (the backtest fills on them); `compute_features` computes
each symbol's features on its own candles and keeps the minutes where every symbol has a feature row (the
intersection), so a minute missing in either is missing from the matrix and the gap rule treats it as a gap.

Passing one frame, not a frame and a dict of frames, is what lets every command that hands candles to the
features (train, evaluate, predict, backtest, replay, live) carry the other symbols without a new argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lstm_trading.core.errors import DataError

OHLCV = ("open", "high", "low", "close", "volume")


def symbol_column(symbol: str, column: str) -> str:
    """The name of another symbol's candle column (or feature) in a joined frame: `BTCUSDT.close`."""
    return f"{symbol}.{column}"


def join_symbols(candles: pd.DataFrame, others: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """`candles` with each other symbol's OHLCV as columns `SYMBOL.open` ..., aligned on the open time.

    Every row of `candles` stays (NaN where another symbol has no candle at that minute); another symbol's
    candles at minutes `candles` lacks are dropped: features exist only where every symbol has a candle.
    """
    joined = candles.reset_index(drop=True).copy()
    stamps = joined["timestamp"].to_numpy(dtype=np.int64)
    for symbol, frame in others.items():
        other = frame["timestamp"].to_numpy(dtype=np.int64)  # sorted, unique: as the store returns them
        if len(other):
            at = np.minimum(np.searchsorted(other, stamps), len(other) - 1)
            found = other[at] == stamps
        else:
            at, found = np.zeros(len(stamps), dtype=np.int64), np.zeros(len(stamps), dtype=bool)
        for column in OHLCV:
            values = np.full(len(stamps), np.nan)
            values[found] = frame[column].to_numpy(dtype=np.float64)[at[found]]
            joined[symbol_column(symbol, column)] = values
    return joined


def require_joined(candles: pd.DataFrame, symbols: Sequence[str]) -> list[str]:
    """The other symbols' columns of a joined frame, in order; a `DataError` when a symbol's are missing."""
    columns = [symbol_column(s, c) for s in symbols for c in OHLCV]
    missing = sorted({c.rpartition(".")[0] for c in columns if c not in candles.columns})
    if missing:
        raise DataError(
            f"the candles lack the {', '.join(missing)} columns that features.with_symbols needs: this command "
            "does not load other symbols yet (the candle loader, runs/candles.py, joins them given with_symbols)"
        )
    return columns


def other_candles(candles: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """Another symbol's candles out of a joined frame: its minutes only, as a plain candle frame."""
    columns = require_joined(candles, [symbol])
    values = candles[columns].to_numpy(dtype=np.float64)
    held = np.isfinite(values).all(axis=1)
    frame = pd.DataFrame(values[held], columns=list(OHLCV))
    frame.insert(0, "timestamp", candles["timestamp"].to_numpy(dtype=np.int64)[held])
    return frame
