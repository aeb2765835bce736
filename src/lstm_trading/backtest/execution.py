"""The one decision-and-fill module: signal -> order (sizing, maximum position, daily loss limit) -> fill.

The backtest, a replay and the live loop call the same functions, so what a backtest assumes is what trading
does. Fills follow DESIGN.md "Backtest fills", pessimistic wherever the candles cannot tell:

- a signal at `t` enters at the open of the candle opening at `t`; SL and TP are prices computed from that open
  with the predicted distances (slippage is a cost on the executed price, not a shift of the levels);
- SL and TP are checked on the high and low of every candle from the entry candle on; when both fall inside
  one candle the stop is assumed first (`same_candle="stop"`, counted; `"target"` gives the optimistic figure);
- a candle that opens beyond the stop fills at its open (the worse price); one that opens beyond the take
  profit fills at the take-profit price (a resting limit order, never better than its limit);
- otherwise the position is closed at the close of the last candle opened before `t + max_hold`;
- taker fee and slippage on both sides; one position at a time; no candle after the exit is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

from lstm_trading.core.config import BacktestConfig
from lstm_trading.core.errors import DataError
from lstm_trading.core.timeutil import DAY, MINUTE

LONG, SHORT, FLAT = 1, -1, 0
SIDE_NAMES = {LONG: "Buy", SHORT: "Sell"}

SameCandle = Literal["stop", "target"]
ExitReason = Literal["stop_loss", "take_profit", "max_hold", "end_of_data"]


class CandleArrays(NamedTuple):
    """Candle columns as float64 arrays (open times as int64): what the fill loop reads, without pandas."""

    timestamp: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray

    @classmethod
    def from_frame(cls, candles: pd.DataFrame) -> CandleArrays:
        return cls(
            candles["timestamp"].to_numpy(dtype=np.int64),
            *(candles[name].to_numpy(dtype=np.float64) for name in ("open", "high", "low", "close")),
        )

    def __len__(self) -> int:
        return len(self.timestamp)

    def between(self, start: int, end: int) -> CandleArrays:
        """The candles with open time in `[start, end)`."""
        first, last = np.searchsorted(self.timestamp, [start, end], side="left")
        return CandleArrays(*(column[first:last] for column in self))

    def index_at(self, moment: int) -> int | None:
        """Row of the candle opening exactly at `moment`, or None where the data has no such candle."""
        row = int(np.searchsorted(self.timestamp, moment, side="left"))
        return row if row < len(self.timestamp) and self.timestamp[row] == moment else None


@dataclass(frozen=True)
class Costs:
    """Taker fee and slippage, each a fraction of the traded price, paid on entry and on exit."""

    fee: float
    slippage: float

    def executed(self, direction: int, price: float, *, opening: bool) -> float:
        """The price actually paid or received: buying costs `slippage` more, selling gets it less."""
        buying = (direction == LONG) == opening
        return price * (1 + self.slippage) if buying else price * (1 - self.slippage)


def signal_direction(proba: np.ndarray, min_prob: float) -> np.ndarray:
    """+1 (Buy) or -1 (Sell) where the top class is Buy or Sell with probability at least `min_prob`, else 0.

    `proba` is (n, 3) in the model's class order Buy, Sell, Invalid.
    """
    proba = np.atleast_2d(np.asarray(proba, dtype=np.float64))
    top = proba.argmax(axis=1)
    confident = proba.max(axis=1) >= min_prob
    direction = np.where(top == 0, LONG, np.where(top == 1, SHORT, FLAT))
    return np.where(confident, direction, FLAT).astype(np.int64)


def bracket_prices(direction: int, entry: float, stop_loss_pct: float, take_profit_pct: float) -> tuple[float, float]:
    """Stop and target prices from distances in percent of the entry: a long's stop below, target above."""
    return entry * (1 - direction * stop_loss_pct / 100), entry * (1 + direction * take_profit_pct / 100)


def position_quantity(equity: float, direction: int, entry: float, stop: float, config: BacktestConfig) -> float:
    """Units to trade: a share of equity, or the quantity that loses `config.risk` of equity at the stop.

    The risk sizing counts the stop's slippage and both fees; either way the position's value at entry is
    capped at `position_share` of equity (the maximum position; 1.0 means no leverage). A stop that gaps
    loses more than the risk budget: the cap, not the budget, bounds that.
    """
    if equity <= 0 or entry <= 0:
        return 0.0
    costs = Costs(config.fee, config.slippage)
    entry_exec = costs.executed(direction, entry, opening=True)
    largest = config.position_share * equity / (entry_exec * (1 + config.fee))
    if config.risk <= 0:
        return largest
    stop_exec = costs.executed(direction, stop, opening=False)
    loss_per_unit = direction * (entry_exec - stop_exec) + config.fee * (entry_exec + stop_exec)
    if loss_per_unit <= 0:
        return largest
    return min(largest, config.risk * equity / loss_per_unit)


@dataclass
class DailyLossLimit:
    """Refuses new entries for the rest of a UTC day once equity is `limit` below the day's starting equity.

    A day's starting equity is the equity at the first decision of that day. An open position is never closed
    by the limit (its stop bounds it); 0 turns the limit off.
    """

    limit: float
    day: int | None = None
    day_start_equity: float = math.nan

    def allows(self, moment: int, equity: float) -> bool:
        day = moment // DAY
        if day != self.day:
            self.day, self.day_start_equity = day, equity
        return self.limit <= 0 or equity > self.day_start_equity * (1 - self.limit)


@dataclass(frozen=True)
class Order:
    """An entry decided at `at`: direction, quantity and the bracket (stop and target prices)."""

    at: int
    direction: int
    quantity: float
    entry: float  # the market price the levels are measured from (the open of the candle opening at `at`)
    stop: float
    target: float
    stop_loss_pct: float
    take_profit_pct: float
    probability: float


@dataclass(frozen=True)
class Fill:
    """A closed trade. Prices are market levels (`entry`, `exit`) and what was paid (`*_executed`)."""

    order: Order
    entry_index: int
    exit_index: int
    entry_time: int  # open time of the entry candle (= the signal's moment)
    exit_time: int  # close time of the exit candle: the first moment the account is flat again
    entry_executed: float
    exit_price: float
    exit_executed: float
    reason: ExitReason
    same_candle: bool  # stop and target both inside the exit candle (resolved by `same_candle`)
    fees: float
    pnl: float  # after fees and slippage

    @property
    def slippage_cost(self) -> float:
        return self.order.quantity * (
            abs(self.entry_executed - self.order.entry) + abs(self.exit_executed - self.exit_price)
        )


class Exit(NamedTuple):
    """The first candle (an offset into the candles given) where the stop or the target fills, and how."""

    offset: int
    price: float
    reason: ExitReason
    same_candle: bool


def first_exit(
    direction: int,
    stop: float,
    target: float,
    opens: np.ndarray,
    highs: np.ndarray,
    lows: np.ndarray,
    same_candle: SameCandle = "stop",
) -> Exit | None:
    """The first candle whose range reaches the stop or the target, with the fill rules above; None if none does."""
    if direction == LONG:
        gap_stop, gap_target = opens <= stop, opens >= target
        hit_stop, hit_target = lows <= stop, highs >= target
    else:
        gap_stop, gap_target = opens >= stop, opens <= target
        hit_stop, hit_target = highs >= stop, lows <= target
    events = hit_stop | hit_target
    if not events.any():
        return None
    k = int(np.argmax(events))
    if gap_stop[k]:
        return Exit(k, float(opens[k]), "stop_loss", False)  # opened beyond the stop: the worse price
    if gap_target[k]:
        return Exit(k, target, "take_profit", False)  # a limit order fills at its limit, never better
    if hit_stop[k] and hit_target[k]:  # the candle cannot say which came first
        if same_candle == "stop":
            return Exit(k, stop, "stop_loss", True)
        return Exit(k, target, "take_profit", True)
    if hit_stop[k]:
        return Exit(k, stop, "stop_loss", False)
    return Exit(k, target, "take_profit", False)


def book_fill(
    order: Order,
    costs: Costs,
    *,
    entry_index: int,
    exit_index: int,
    exit_time: int,
    exit_price: float,
    reason: ExitReason,
    same_candle: bool,
) -> Fill:
    """The closed trade: executed prices after slippage, fees on both sides, P&L."""
    direction, quantity = order.direction, order.quantity
    entry_executed = costs.executed(direction, order.entry, opening=True)
    exit_executed = costs.executed(direction, exit_price, opening=False)
    fees = costs.fee * quantity * (entry_executed + exit_executed)
    pnl = direction * quantity * (exit_executed - entry_executed) - fees
    return Fill(
        order=order,
        entry_index=entry_index,
        exit_index=exit_index,
        entry_time=order.at,
        exit_time=exit_time,
        entry_executed=entry_executed,
        exit_price=exit_price,
        exit_executed=exit_executed,
        reason=reason,
        same_candle=same_candle,
        fees=fees,
        pnl=pnl,
    )


@dataclass
class PositionWatch:
    """An open position checked against candles as they close, in pieces of any size.

    The backtest feeds it the whole holding period at once (`simulate_fill`); the live loop and the replay feed
    it the candles each period brings. Fed the same candles, any cut into pieces gives the same fill
    (`tests/test_live.py` checks it), so a replay's paper fills are the backtest's. Its fields are plain
    numbers, so the live loop can store it and resume after a restart.
    """

    order: Order
    max_hold_seconds: int
    costs: Costs
    same_candle: SameCandle = "stop"
    entry_index: int = 0
    checked: int = 0  # candles checked so far, the entry candle first
    last_time: int = -(2**62)  # open time of the last candle checked
    last_close: float = math.nan

    @property
    def horizon(self) -> int:
        """Candles opening at or after this are past the maximum holding time."""
        return self.order.at + self.max_hold_seconds

    def feed(self, candles: CandleArrays) -> Fill | None:
        """Check the candles not checked yet and opened before the horizon; the fill if one exits the position."""
        ts = candles.timestamp
        first, last = np.searchsorted(ts, [self.last_time + 1, self.horizon], side="left")
        if last <= first:
            return None
        if self.checked == 0 and int(ts[first]) != self.order.at:
            raise DataError(
                f"the position entered at {self.order.at} needs its entry candle first, got one opened at {ts[first]}"
            )
        window = slice(int(first), int(last))
        hit = first_exit(
            self.order.direction,
            self.order.stop,
            self.order.target,
            candles.open[window],
            candles.high[window],
            candles.low[window],
            self.same_candle,
        )
        if hit is not None:
            return book_fill(
                self.order,
                self.costs,
                entry_index=self.entry_index,
                exit_index=self.entry_index + self.checked + hit.offset,
                exit_time=int(ts[first + hit.offset]) + MINUTE,
                exit_price=hit.price,
                reason=hit.reason,
                same_candle=hit.same_candle,
            )
        self.checked += int(last - first)
        self.last_time = int(ts[last - 1])
        self.last_close = float(candles.close[last - 1])
        return None

    def close_at_last(self, *, end_of_data: bool = False) -> Fill:
        """Close at the last checked candle's close: the maximum holding time is over (`end_of_data`: the
        candles ran out; that is `max_hold` anyway when the last candle closed at the horizon)."""
        if self.checked == 0:
            raise DataError(f"the position entered at {self.order.at} has no candle checked yet to close at")
        ran_out = end_of_data and self.last_time + MINUTE < self.horizon
        return book_fill(
            self.order,
            self.costs,
            entry_index=self.entry_index,
            exit_index=self.entry_index + self.checked - 1,
            exit_time=self.last_time + MINUTE,
            exit_price=self.last_close,
            reason="end_of_data" if ran_out else "max_hold",
            same_candle=False,
        )


def simulate_fill(
    candles: CandleArrays,
    entry_index: int,
    order: Order,
    *,
    max_hold_seconds: int,
    costs: Costs,
    same_candle: SameCandle = "stop",
) -> Fill:
    """Walk the candles from the entry candle to the first exit; nothing after the exit candle is read."""
    watch = PositionWatch(order, max_hold_seconds, costs, same_candle, entry_index=entry_index)
    horizon_end = int(np.searchsorted(candles.timestamp, watch.horizon, side="left"))
    held = CandleArrays(*(column[entry_index : max(horizon_end, entry_index + 1)] for column in candles))
    fill = watch.feed(held)
    if fill is not None:
        return fill
    return watch.close_at_last(end_of_data=horizon_end >= len(candles))


OPEN_UNTIL_SETTLED = 2**62


class Decision(NamedTuple):
    """What `Trader.consider` made of a signal: the order (or None) and the reason."""

    order: Order | None
    reason: str


@dataclass
class Trader:
    """One account: turns signals into orders under the sizing rules, one position at a time.

    `consider` is what the backtest and the live loop call at each moment (with the price they would enter at);
    `settle` books a closed trade. `skipped` counts signals that did not become orders, by reason.
    """

    config: BacktestConfig
    equity: float = math.nan
    flat_from: int = -(2**62)  # the first moment with no open position
    limit: DailyLossLimit = field(init=False)
    skipped: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        if math.isnan(self.equity):
            self.equity = self.config.initial_equity
        self.limit = DailyLossLimit(self.config.daily_loss_limit)
        self.skipped = {"position_open": 0, "daily_loss_limit": 0, "no_equity": 0, "no_candle": 0}

    @property
    def costs(self) -> Costs:
        return Costs(self.config.fee, self.config.slippage)

    def consider(
        self,
        at: int,
        direction: int,
        entry: float | None,
        stop_loss_pct: float,
        take_profit_pct: float,
        probability: float = math.nan,
    ) -> Decision:
        """The order for a signal at `at` and why: the one decision step the backtest and the live loop share.

        `entry` is the open of the candle opening at `at` (None where there is no such candle: nothing to enter
        at). The reason is `order`, `no_signal`, or a key of `skipped`, in the order the rules are checked.
        """
        if direction == FLAT:
            return Decision(None, "no_signal")
        if direction not in (LONG, SHORT):
            raise DataError(f"direction must be 1 (Buy), -1 (Sell) or 0, got {direction}")
        reason = self._refusal(at, entry)
        if reason is not None:
            self.skipped[reason] += 1
            return Decision(None, reason)
        assert entry is not None
        stop, target = bracket_prices(direction, entry, stop_loss_pct, take_profit_pct)
        quantity = position_quantity(self.equity, direction, entry, stop, self.config)
        if quantity <= 0:
            self.skipped["no_equity"] += 1
            return Decision(None, "no_equity")
        order = Order(at, direction, quantity, entry, stop, target, stop_loss_pct, take_profit_pct, probability)
        return Decision(order, "order")

    def _refusal(self, at: int, entry: float | None) -> str | None:
        if entry is None:
            return "no_candle"  # a gap, or past the data: nothing to enter at
        if at < self.flat_from:
            return "position_open"
        if not self.limit.allows(at, self.equity):
            return "daily_loss_limit"
        return None

    def opened(self) -> None:
        """A position is open and its exit not known yet (live): no entry until it is settled."""
        self.flat_from = OPEN_UNTIL_SETTLED

    def settle(self, fill: Fill) -> None:
        self.equity += fill.pnl
        self.flat_from = fill.exit_time
