"""The position loop: signals at moments -> fills on 1-minute candles -> trades and equity; and the baselines.

A model is worth what it earns out of sample after costs, next to what simple strategies earn in the same
period under the same fills (`execution.py`): buy and hold; random entries with the model's trade counts and
SL/TP distances (`significance.py` draws them, over exits computed here once per moment and side); and, when
given, the journal's own trades.
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
    Order,
    SameCandle,
    Trader,
    book_fill,
    bracket_prices,
    round_trip_pct,
    simulate_fill,
)
from lstm_trading.backtest.funding import FundingSchedule
from lstm_trading.backtest.significance import BUY, RandomEntries, draw_random_entries, entry_rate
from lstm_trading.core.config import BacktestConfig
from lstm_trading.core.errors import DataError
from lstm_trading.core.timeutil import MINUTE, format_time
from lstm_trading.samples.targets import INVALID, build_samples

if TYPE_CHECKING:
    from lstm_trading.models.bundle import Bundle
from lstm_trading.predict import Features, Signals, atr_levels, predict_signals, scaled_features

DEFAULT_RANDOM_RUNS = 1_000  # random-entry runs: a p-value resolves down to 1 / 1,001
BAND_RUNS = 20  # random runs whose equity curves equity.csv keeps (mean and 5-95 % band)
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
    "funding",
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
    funding: FundingSchedule | None = None,
) -> Simulation:
    """Trade the signals in time order on `candles` (the backtest period only) with `execution.Trader`;
    `funding` is the symbol's schedule (None: spot, no funding)."""
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
            candles,
            row,
            chosen,
            max_hold_seconds=config.max_hold_seconds,
            costs=costs,
            same_candle=same_candle,
            funding=funding,
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


def buy_and_hold(candles: CandleArrays, config: BacktestConfig, funding: FundingSchedule | None = None) -> Simulation:
    """Buy at the first open with `position_share` of equity, hold, sell at the last close (costs both ways,
    and on a perpetual the funding of every period held)."""
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
        funding=funding,
    )


@dataclass(frozen=True)
class MomentExits:
    """Where one unit bought (column `BUY`) or sold (`SELL`) at each decision moment would exit, with the moment's
    SL/TP distances and the fill rules of `execution.simulate_fill`: computed once, reused by every random run.

    Moments without a candle to enter at are left out. A trade's return in % of entry notional does not depend on
    its quantity, so these exits give every run's returns; `account_run` books them at the account's sizes.
    """

    at: np.ndarray  # (M,) moments with a candle opening at them
    stop_loss_pct: np.ndarray  # (M,)
    take_profit_pct: np.ndarray  # (M,)
    fills: list[tuple[Fill, Fill]]  # per moment: the Buy's and the Sell's fill, quantity 1
    exit_time: np.ndarray  # (M, 2) when each is flat again
    return_pct: np.ndarray  # (M, 2) net return in % of entry notional
    eligible: np.ndarray  # (M,) take profit above the round-trip costs: where random entries may enter
    funding: FundingSchedule | None = None  # the symbol's funding, in the exits and in `account_run`'s fills


def return_pct(fill: Fill) -> float:
    """Net return of a closed trade in % of its entry notional (what trades.csv's `return_pct` holds)."""
    notional = fill.order.quantity * fill.entry_executed
    return 100 * fill.pnl / notional if notional else math.nan


def moment_exits(
    candles: CandleArrays,
    at: np.ndarray,
    stop_loss_pct: np.ndarray,
    take_profit_pct: np.ndarray,
    config: BacktestConfig,
    *,
    same_candle: SameCandle = "stop",
    usable: np.ndarray | None = None,
    funding: FundingSchedule | None = None,
) -> MomentExits:
    """Each moment's Buy and Sell exit with its own SL/TP distances (see `MomentExits`). Moments without a
    usable window (`Signals.usable`: inside a gap or the warm-up after one) are left out: no strategy can trade
    there, so no random run may either."""
    costs = Costs(config.fee, config.slippage)
    cost_pct = round_trip_pct(config)
    kept, fills = [], []
    for i in np.argsort(at, kind="stable"):
        row = candles.index_at(int(at[i]))
        if row is None or (usable is not None and not usable[i]):
            continue
        entry, sl, tp = float(candles.open[row]), float(stop_loss_pct[i]), float(take_profit_pct[i])
        pair = []
        for direction in (LONG, SHORT):
            stop, target = bracket_prices(direction, entry, sl, tp)  # as `Trader.consider` places them
            order = Order(int(at[i]), direction, 1.0, entry, stop, target, sl, tp, math.nan)
            pair.append(
                simulate_fill(
                    candles,
                    row,
                    order,
                    max_hold_seconds=config.max_hold_seconds,
                    costs=costs,
                    same_candle=same_candle,
                    funding=funding,
                )
            )
        kept.append(i)
        fills.append((pair[0], pair[1]))
    rows = np.asarray(kept, dtype=np.int64)
    exit_time = np.array([[f.exit_time for f in pair] for pair in fills], dtype=np.int64).reshape(len(rows), 2)
    returns = np.array([[return_pct(f) for f in pair] for pair in fills], dtype=np.float64).reshape(len(rows), 2)
    take_profit = np.asarray(take_profit_pct, dtype=np.float64)[rows]
    return MomentExits(
        at=np.asarray(at, dtype=np.int64)[rows],
        stop_loss_pct=np.asarray(stop_loss_pct, dtype=np.float64)[rows],
        take_profit_pct=take_profit,
        fills=fills,
        exit_time=exit_time,
        return_pct=returns,
        eligible=take_profit > cost_pct,
        funding=funding,
    )


@dataclass(frozen=True)
class RandomBaseline:
    """The random-entry runs over one set of moment exits; `draws` picks rows of the eligible moments."""

    exits: MomentExits
    draws: RandomEntries

    @property
    def rows(self) -> np.ndarray:
        """Rows of `exits` the draws' picks refer to (the eligible moments)."""
        return np.flatnonzero(self.exits.eligible)

    def simulation(self, run: int, candles: CandleArrays, config: BacktestConfig) -> Simulation:
        """Run `run` traded through the account (sizing, daily loss limit), its equity marked at each close."""
        rows = self.rows[self.draws.picks[run]]
        return account_run(candles, self.exits, rows, self.draws.sides[run], config, name=f"random_run{run}")


def random_entries(
    exits: MomentExits, fills: Sequence[Fill], *, runs: int = DEFAULT_RANDOM_RUNS, seed: int = 0
) -> RandomBaseline:
    """`runs` random-entry runs with exactly the Buy and Sell counts of `fills` (a strategy's executed trades),
    entered at eligible moments where the run is flat, at the strategy's own entry rate per flat moment
    (`significance.draw_random_entries`)."""
    buys = sum(f.order.direction == LONG for f in fills)
    eligible = exits.eligible
    starts = exits.at[eligible]
    rate = entry_rate(starts, np.array([f.entry_time for f in fills]), np.array([f.exit_time for f in fills]))
    draws = draw_random_entries(
        starts,
        exits.exit_time[eligible],
        exits.return_pct[eligible],
        buys=buys,
        sells=len(fills) - buys,
        runs=runs,
        rate=rate,
        seed=seed,
    )
    return RandomBaseline(exits, draws)


def account_run(
    candles: CandleArrays,
    exits: MomentExits,
    rows: np.ndarray,
    sides: np.ndarray,
    config: BacktestConfig,
    *,
    name: str,
) -> Simulation:
    """Trade entries chosen in advance (rows of `exits`, in time order, on sides `BUY` / `SELL`) through
    `execution.Trader`: the exits are the precomputed ones, booked at the quantity the account sizes."""
    trader = Trader(config)
    costs = Costs(config.fee, config.slippage)
    booked: list[Fill] = []
    for row, side in zip(rows.tolist(), sides.tolist(), strict=True):
        unit = exits.fills[row][side]
        direction = LONG if side == BUY else SHORT
        order = trader.consider(
            unit.order.at, direction, unit.order.entry, unit.order.stop_loss_pct, unit.order.take_profit_pct
        ).order
        if order is None:
            continue
        fill = book_fill(
            order,
            costs,
            entry_index=unit.entry_index,
            exit_index=unit.exit_index,
            exit_time=unit.exit_time,
            exit_price=unit.exit_price,
            reason=unit.reason,
            same_candle=unit.same_candle,
            funding=exits.funding,
        )
        trader.settle(fill)
        booked.append(fill)
    equity, position = equity_curve(candles, booked, config.initial_equity)
    return Simulation(name, booked, equity, position, len(rows), dict(trader.skipped))


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
    atr_sl, atr_tp = atr_levels(features.matrix, candles, moments, bundle.target_config)
    signals = replace(signals, atr_stop_loss_pct=atr_sl, atr_take_profit_pct=atr_tp)
    return PeriodSignals(period, end, moments, features, signals)


def trades_frame(fills: Sequence[Fill]) -> pd.DataFrame:
    """One row per closed trade, columns `TRADE_COLUMNS` (prices as levels and as executed)."""
    rows = []
    for f in fills:
        o = f.order
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
                f.funding,
                f.pnl,
                return_pct(f),
                (f.exit_time - f.entry_time) // MINUTE,
            )
        )
    return pd.DataFrame(rows, columns=list(TRADE_COLUMNS))
