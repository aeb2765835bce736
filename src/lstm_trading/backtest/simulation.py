"""The position loop: signals at moments -> fills on 1-minute candles -> trades and equity; and the baselines.

A model is worth what it earns out of sample after costs, next to what simple strategies earn in the same
period under the same fills (`execution.py`): buy and hold; random entries at the same moments and rate with
the same SL/TP distances (several seeds: mean and spread); and, when given, the journal's own trades.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lstm_trading.backtest.execution import (
    FLAT,
    LONG,
    SHORT,
    SIDE_NAMES,
    CandleArrays,
    Costs,
    Fill,
    SameCandle,
    Trader,
    simulate_fill,
)
from lstm_trading.core.config import BacktestConfig
from lstm_trading.core.errors import DataError
from lstm_trading.core.timeutil import MINUTE, format_time
from lstm_trading.samples.targets import INVALID, build_samples

if TYPE_CHECKING:
    from lstm_trading.models.bundle import Bundle
from lstm_trading.predict import Features, Signals, predict_signals, scaled_features

DEFAULT_SEEDS = tuple(range(20))
Progress = Callable[[float, int], None]

TRADE_COLUMNS = (
    "entry_time",
    "entry_time_utc",
    "exit_time",
    "exit_time_utc",
    "side",
    "probability",
    "quantity",
    "entry_price",
    "entry_executed",
    "stop_loss",
    "take_profit",
    "stop_loss_pct",
    "take_profit_pct",
    "exit_reason",
    "exit_price",
    "exit_executed",
    "same_candle",
    "fees",
    "pnl",
    "return_pct",
    "minutes_held",
)


def decision_moments(start: int, end: int, every_seconds: int) -> np.ndarray:
    """Moments on whole multiples of `every_seconds` (UTC, from the epoch) in `[start, end)`."""
    first = -(-start // every_seconds) * every_seconds
    return np.arange(first, end, every_seconds, dtype=np.int64)


# --- the position loop ---


@dataclass(frozen=True)
class Simulation:
    """One strategy over the period: its closed trades and its equity at every candle's close."""

    name: str
    fills: list[Fill]
    equity: np.ndarray  # (candles,) marked to market at each close
    position: np.ndarray  # (candles,) +1 / -1 while a position is open during that candle, else 0
    signals: int
    skipped: dict[str, int]

    def trades(self) -> pd.DataFrame:
        return trades_frame(self.fills)


def simulate(
    candles: CandleArrays,
    at: np.ndarray,
    direction: np.ndarray,
    stop_loss_pct: np.ndarray,
    take_profit_pct: np.ndarray,
    config: BacktestConfig,
    *,
    probability: np.ndarray | None = None,
    same_candle: SameCandle = "stop",
    name: str = "model",
) -> Simulation:
    """Trade the signals in time order on `candles` (the backtest period only) with `execution.Trader`."""
    trader = Trader(config)
    costs = Costs(config.fee, config.slippage)
    fills: list[Fill] = []
    signals = 0
    order = np.argsort(at, kind="stable")
    for i in order:
        if direction[i] == FLAT:
            continue
        signals += 1
        row = candles.index_at(int(at[i]))  # None: no candle opens at the moment, nothing to enter at
        chosen = trader.consider(
            int(at[i]),
            int(direction[i]),
            None if row is None else float(candles.open[row]),
            float(stop_loss_pct[i]),
            float(take_profit_pct[i]),
            math.nan if probability is None else float(probability[i]),
        ).order
        if chosen is None or row is None:
            continue
        fill = simulate_fill(
            candles, row, chosen, max_hold_seconds=config.max_hold_seconds, costs=costs, same_candle=same_candle
        )
        trader.settle(fill)
        fills.append(fill)
    equity, position = equity_curve(candles, fills, config.initial_equity)
    return Simulation(name, fills, equity, position, signals, dict(trader.skipped))


def equity_curve(candles: CandleArrays, fills: Sequence[Fill], initial: float) -> tuple[np.ndarray, np.ndarray]:
    """Equity at each candle's close: cash, plus an open position marked at the close (entry fee paid)."""
    n = len(candles)
    realised = np.zeros(n)
    for fill in fills:
        realised[fill.exit_index] += fill.pnl
    equity = initial + np.cumsum(realised)
    position = np.zeros(n, dtype=np.int64)
    for fill in fills:
        held = slice(fill.entry_index, fill.exit_index)  # the exit candle already shows the booked result
        order = fill.order
        cash_before = equity[fill.entry_index - 1] if fill.entry_index > 0 else initial
        entry_fee = fill.fees * fill.entry_executed / (fill.entry_executed + fill.exit_executed)  # its share
        marked = order.direction * order.quantity * (candles.close[held] - fill.entry_executed)
        equity[held] = cash_before - entry_fee + marked
        position[fill.entry_index : fill.exit_index + 1] = order.direction
    return equity, position


def buy_and_hold(candles: CandleArrays, config: BacktestConfig) -> Simulation:
    """Buy at the first open with `position_share` of equity, hold, sell at the last close (costs both ways)."""
    if len(candles) == 0:
        raise DataError("no candles in the backtest period")
    long_config = replace(config, risk=0.0, daily_loss_limit=0.0, max_hold_seconds=10**12)
    direction = np.array([LONG])
    huge = np.array([1e9])  # levels no price reaches: only the end of the data closes it
    return simulate(
        candles,
        candles.timestamp[:1],
        direction,
        np.array([99.999]),
        huge,
        long_config,
        name="buy_and_hold",
    )


def random_entries(
    candles: CandleArrays,
    signals: Signals,
    direction: np.ndarray,
    config: BacktestConfig,
    seeds: Sequence[int] = DEFAULT_SEEDS,
) -> list[Simulation]:
    """Per seed: as many signals as the model gave, at moments drawn from the same moments, sides drawn with
    the model's Buy share, and the model's predicted SL/TP distances at the drawn moments."""
    count = int(np.count_nonzero(direction))
    buys = int(np.count_nonzero(direction == LONG))
    buy_share = buys / count if count else 0.5
    runs = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        drawn = np.sort(rng.choice(len(signals), size=count, replace=False)) if count else np.zeros(0, np.int64)
        sides = np.where(rng.random(count) < buy_share, LONG, SHORT)
        chosen = np.zeros(len(signals), dtype=np.int64)
        chosen[drawn] = sides
        runs.append(
            simulate(
                candles,
                signals.at,
                chosen,
                signals.stop_loss_pct,
                signals.take_profit_pct,
                config,
                name=f"random_seed{seed}",
            )
        )
    return runs


def journal_signals(features: Features, trades: pd.DataFrame, bundle: Bundle) -> tuple[np.ndarray, ...]:
    """The journal's Buy and Sell trades as signals: start time, direction, and their targets' distances
    (their own SL/TP, else `k * ATR`, exactly as training reads them)."""
    trades = trades[trades["label"] != INVALID]
    if trades.empty:
        return (np.zeros(0, np.int64),) * 2 + (np.zeros(0),) * 2
    samples, _ = build_samples(features.matrix, trades, bundle.target_config)
    direction = np.where(samples.label == 0, LONG, SHORT)
    return samples.start_time, direction, samples.stop_loss_pct, samples.take_profit_pct


@dataclass(frozen=True)
class PeriodSignals:
    """What a backtest and a replay of a period trade on, computed by one function so both see the same."""

    period: CandleArrays  # the candles of the period
    end: int  # the period's end, clamped to its last candle's close
    moments: np.ndarray  # decision moments
    features: Features
    signals: Signals  # the model's batched output at each moment


def period_signals(
    bundle: Bundle,
    candles: pd.DataFrame,
    start: int,
    end: int,
    every_seconds: int,
    *,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Progress | None = None,
) -> PeriodSignals:
    """The candles of `[start, end)` (history before `start` in `candles` too), its decision moments every
    `every_seconds` and the model's signals there; the period ends with its last candle."""
    period = CandleArrays.from_frame(candles).between(start, end)
    if len(period) == 0:
        raise DataError(
            f"no candles from {format_time(start)} to {format_time(end)}; choose --from/--to inside the data"
        )
    end = min(end, int(period.timestamp[-1]) + MINUTE)
    moments = decision_moments(start, end, every_seconds)
    if len(moments) == 0:
        raise DataError(f"no decision moment (every {every_seconds} s) from {format_time(start)} to {format_time(end)}")
    features = scaled_features(bundle, candles)
    signals = predict_signals(bundle, features, moments, batch_size=batch_size, workers=workers, progress=progress)
    return PeriodSignals(period, end, moments, features, signals)


def trades_frame(fills: Sequence[Fill]) -> pd.DataFrame:
    """One row per closed trade, columns `TRADE_COLUMNS` (prices as levels and as executed)."""
    rows = []
    for f in fills:
        o = f.order
        notional = o.quantity * f.entry_executed
        rows.append(
            (
                f.entry_time,
                format_time(f.entry_time),
                f.exit_time,
                format_time(f.exit_time),
                SIDE_NAMES[o.direction],
                o.probability,
                o.quantity,
                o.entry,
                f.entry_executed,
                o.stop,
                o.target,
                o.stop_loss_pct,
                o.take_profit_pct,
                f.reason,
                f.exit_price,
                f.exit_executed,
                f.same_candle,
                f.fees,
                f.pnl,
                100 * f.pnl / notional if notional else math.nan,
                (f.exit_time - f.entry_time) // MINUTE,
            )
        )
    return pd.DataFrame(rows, columns=list(TRADE_COLUMNS))
