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
- taker fee and slippage on both sides; one position at a time; no candle after the exit is read;
- on perpetuals, funding for every funding time the position was open across (`funding.py`), booked with the
  fill; spot symbols get no schedule and pay none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

from lstm_trading.backtest.funding import NO_FUNDING, FundingSchedule
from lstm_trading.core.config import BacktestConfig, round_trip
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


def round_trip_pct(config: BacktestConfig) -> float:
    """Fees and slippage of entering and leaving, in % of the entry price: what a trade must earn to break even."""
    return 100 * round_trip(config.fee, config.slippage)


TRADE = "trade"
# Why a moment's signal was not traded, in the order `decide` checks them (`Trader.skipped` adds the account's).
DECISION_SKIPS = ("no_window", "tp_below_costs", "ev_below_min", "prob_below_min")


class Thresholds(NamedTuple):
    """Per-moment min-prob and min-EV (% of entry), where they differ between moments."""

    min_prob: np.ndarray
    min_ev: np.ndarray


class Decisions(NamedTuple):
    """What `decide` made of each moment's probabilities and levels."""

    direction: np.ndarray  # (n,) LONG, SHORT or FLAT
    probability: np.ndarray  # (n,) the considered side's label probability (the side with the larger EV)
    ev_pct: np.ndarray  # (n,) its expected value after costs, in % of entry
    reason: np.ndarray  # (n,) TRADE or a key of DECISION_SKIPS

    def skipped(self) -> dict[str, int]:
        return {key: int(np.count_nonzero(self.reason == key)) for key in DECISION_SKIPS}


def expected_value_pct(
    p: np.ndarray, stop_loss_pct: np.ndarray, take_profit_pct: np.ndarray, cost_pct: float
) -> np.ndarray:
    """`EV = p * TP - (1 - p) * SL - c` in % of entry (DESIGN.md "Decision"): every non-win counted as a full
    stop, so a lower bound where p is the probability that the target is touched first within the horizon."""
    return p * take_profit_pct - (1 - p) * stop_loss_pct - cost_pct


def decide(
    proba: np.ndarray,
    stop_loss_pct: np.ndarray | float,
    take_profit_pct: np.ndarray | float,
    config: BacktestConfig,
    usable: np.ndarray | None = None,
    thresholds: Thresholds | None = None,
) -> Decisions:
    """The one decision rule, for predict, backtest, replay and live: for each side its (prior-corrected) label
    probability p (long: P(Buy), short: P(Sell)) and the EV of its levels after the round-trip costs; the side
    with the larger EV is traded when its take profit pays the costs, its EV exceeds `min_ev` and its p reaches
    `min_prob`. `proba` is (n, 3) in the class order Buy, Sell, Invalid; `usable` False where a moment had no
    window (never traded); `thresholds` per moment replace `config`'s min-prob and min-EV (a walk-forward's
    folds, each with the thresholds its validation period chose)."""
    proba = np.atleast_2d(np.asarray(proba, dtype=np.float64))
    sl = np.broadcast_to(np.asarray(stop_loss_pct, dtype=np.float64), (len(proba),))
    tp = np.broadcast_to(np.asarray(take_profit_pct, dtype=np.float64), (len(proba),))
    cost = round_trip_pct(config)
    ev_long = expected_value_pct(proba[:, 0], sl, tp, cost)
    ev_short = expected_value_pct(proba[:, 1], sl, tp, cost)
    long_better = ev_long >= ev_short
    side = np.where(long_better, LONG, SHORT)
    p = np.where(long_better, proba[:, 0], proba[:, 1])
    ev = np.where(long_better, ev_long, ev_short)
    reason = np.full(len(proba), TRADE, dtype=object)
    min_prob, min_ev = (config.min_prob, config.min_ev) if thresholds is None else thresholds
    checks = (
        ("prob_below_min", p < min_prob),
        ("ev_below_min", ev <= min_ev),
        ("tp_below_costs", tp <= cost),
        ("no_window", np.zeros(len(proba), dtype=bool) if usable is None else ~np.asarray(usable, dtype=bool)),
    )
    for key, failed in checks:  # the last assignment wins: the first check in DECISION_SKIPS order is named
        reason[failed] = key
    direction = np.where(reason == TRADE, side, FLAT).astype(np.int64)
    return Decisions(direction, p, ev, reason)


def ev_note(settings: dict[str, object]) -> str:
    """What the EV means with these settings (said once by backtest): exact in meaning only with the labeller's
    levels (`--levels atr`) and a holding time equal to its horizon; with the heads' levels a heuristic."""
    if settings.get("levels") == "atr":
        return (
            "EV uses k x ATR levels, the labeller's: a lower bound on the expected net return when --max-hold "
            "equals the labeller's horizon"
        )
    return (
        "EV uses the model's predicted stop and target (--levels model): a heuristic, since the labels' p was "
        "measured at k x ATR levels (--levels atr trades those)"
    )


def decision_text(decisions: Decisions, i: int, config: BacktestConfig, take_profit_pct: float) -> str:
    """One moment's decision in words, as `predict` prints it: "Buy: EV 0.12 % > 0 ..." or "no trade: ..."."""
    reason, p, ev = decisions.reason[i], float(decisions.probability[i]), float(decisions.ev_pct[i])
    if reason == TRADE:
        side = SIDE_NAMES[int(decisions.direction[i])]
        return f"{side}: EV {ev:+.3f} % > {config.min_ev:g} % and P {p:.2f} >= min-prob {config.min_prob:g}"
    if reason == "no_window":
        return "no trade: no usable window (inside a gap or the warm-up after one)"
    if reason == "tp_below_costs":
        return f"no trade: take profit {take_profit_pct:.3f} % does not pay the costs {round_trip_pct(config):.3f} %"
    if reason == "ev_below_min":
        return f"no trade: EV {ev:+.3f} % <= min-ev {config.min_ev:g} %"
    return f"no trade: P {p:.2f} < min-prob {config.min_prob:g}"


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
    pnl: float  # after fees, slippage and funding
    funding: float = 0.0  # funding paid over the holding time (negative: received); 0 on spot

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
    funding: FundingSchedule | None = None,
) -> Fill:
    """The closed trade: executed prices after slippage, fees on both sides, funding (None: a spot symbol,
    none), P&L. Funding is charged on the notional at entry, `quantity * entry_executed`."""
    direction, quantity = order.direction, order.quantity
    entry_executed = costs.executed(direction, order.entry, opening=True)
    exit_executed = costs.executed(direction, exit_price, opening=False)
    fees = costs.fee * quantity * (entry_executed + exit_executed)
    paid = 0.0 if funding is None else funding.charge(direction, quantity * entry_executed, order.at, exit_time)
    pnl = direction * quantity * (exit_executed - entry_executed) - fees - paid
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
        funding=paid,
    )


@dataclass
class PositionWatch:
    """An open position checked against candles as they close, in pieces of any size.

    The backtest feeds it the whole holding period at once (`simulate_fill`); the live loop and the replay feed
    it the candles each period brings. Fed the same candles, any cut into pieces gives the same fill
    (`tests/test_live.py` checks it), so a replay's paper fills are the backtest's. Its fields are plain
    numbers, so the live loop can store it and resume after a restart; `funding`, the symbol's schedule, is not
    stored but attached again by the loop after loading.
    """

    order: Order
    max_hold_seconds: int
    costs: Costs
    same_candle: SameCandle = "stop"
    entry_index: int = 0
    checked: int = 0  # candles checked so far, the entry candle first
    last_time: int = -(2**62)  # open time of the last candle checked
    last_close: float = math.nan
    funding: FundingSchedule = NO_FUNDING

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
                funding=self.funding,
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
            funding=self.funding,
        )


def simulate_fill(
    candles: CandleArrays,
    entry_index: int,
    order: Order,
    *,
    max_hold_seconds: int,
    costs: Costs,
    same_candle: SameCandle = "stop",
    funding: FundingSchedule | None = None,
) -> Fill:
    """Walk the candles from the entry candle to the first exit; nothing after the exit candle is read."""
    watch = PositionWatch(order, max_hold_seconds, costs, same_candle, entry_index=entry_index)
    if funding is not None:
        watch.funding = funding
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
