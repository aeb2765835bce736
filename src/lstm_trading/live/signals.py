"""The model's signal at each moment for the live loop: predicted from the stored candles (live, paper), or
handed out from the backtest's batched pass (the replay); a moment without a usable window pauses entries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np
import pandas as pd

from lstm_trading.core.errors import DataError, NoWindow
from lstm_trading.core.timeutil import MINUTE, format_time
from lstm_trading.features.symbols import symbol_column


class Signal(NamedTuple):
    """The model's output at one moment: probabilities (Buy, Sell, Invalid) and SL/TP distances in %."""

    proba: np.ndarray
    stop_loss_pct: float
    take_profit_pct: float
    paused: bool = False  # the moment has no usable window (a gap or its warm-up): no new entry


PAUSED = Signal(np.array([0.0, 0.0, 1.0]), 0.0, 0.0, paused=True)


class SignalSource(Protocol):
    def at(self, moment: int) -> Signal: ...


class ModelSignals:
    """Predict at each moment from the candles stored by then (the live modes).

    `read(moment)` gives the candles opened before `moment` that its window and warm-up need: the one candle
    loader's live read (`runs/candles.latest_candles`), so live sees what the other commands see.
    """

    def __init__(self, bundle: Any, read: Callable[[int], pd.DataFrame], symbol: str, levels: str = "model") -> None:
        self.bundle = bundle
        self.read = read
        self.symbol = symbol
        self.levels = levels  # `backtest.levels`: the heads' SL/TP or k x ATR, as the backtest trades them
        self.path: str | None = None  # the run folder of the bundle in use, once a retraining schedule names it

    def use(self, model: Any) -> None:
        """Predict with `model`'s bundle (`retraining.ModelInUse`: the state names it) from now on."""
        from lstm_trading.models.bundle import load_bundle

        if model.path != self.path:
            self.bundle = load_bundle(model.path)
            self.path = model.path

    def at(self, moment: int) -> Signal:
        from lstm_trading.predict import predict_moments

        candles = self.read(moment)
        last = int(candles["timestamp"].iloc[-1])
        if last != moment - MINUTE:
            # The backtest's window at `moment` ends with this minute; deciding without it is not what it tested.
            raise DataError(
                f"the {self.symbol} minute closed at {format_time(moment)} is not stored (the newest closed at "
                f"{format_time(last + MINUTE)}): the exchange has not published it; no decision this period"
            )
        for other in self.bundle.feature_config.with_symbols:  # the same for each symbol the model reads
            close = candles[symbol_column(other, "close")]
            if not np.isfinite(close.iloc[-1]):
                raise DataError(
                    f"the {other} minute closed at {format_time(moment)} is not stored (the model reads {other} "
                    f"beside {self.symbol}): the exchange has not published it; no decision this period"
                )
        try:
            row = predict_moments(self.bundle, candles, [moment], workers=1, levels=self.levels).iloc[0]
        except NoWindow:  # after a long gap in the exchange's candles: wait out the new segment's warm-up
            return PAUSED
        proba = np.array([row["p_buy"], row["p_sell"], row["p_invalid"]], dtype=np.float64)
        return Signal(proba, float(row["stop_loss_pct"]), float(row["take_profit_pct"]))


class PrecomputedSignals:
    """The backtest's batched signals, handed out one moment at a time (the replay)."""

    def __init__(
        self,
        at: np.ndarray,
        proba: np.ndarray,
        stop_loss_pct: np.ndarray,
        take_profit_pct: np.ndarray,
        usable: np.ndarray | None = None,
    ):
        self.index = {int(t): i for i, t in enumerate(at)}
        self.proba, self.sl, self.tp = proba, stop_loss_pct, take_profit_pct
        self.usable = usable

    def at(self, moment: int) -> Signal:
        i = self.index[moment]
        if self.usable is not None and not self.usable[i]:
            return PAUSED
        return Signal(self.proba[i], float(self.sl[i]), float(self.tp[i]))
