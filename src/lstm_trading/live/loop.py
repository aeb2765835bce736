"""Automatic trading: at each period boundary, ingest, predict, decide, place; and the replay that proves it.

One loop serves three modes. At each moment `t` (a multiple of `every`):

1. the feed brings the candles closed by `t` (live and paper: `data.exchange.ingest` into the candle store);
2. an open position is checked on the candles closed since the last check (paper: `backtest.execution.PositionWatch`,
   the backtest's fill code; live: the exchange's position), and closed at market once the maximum holding
   time is over;
3. the model's signal at `t` goes through `backtest.execution.Trader.consider` (one position at a time, threshold,
   SL and TP as prices from the open of the candle opening at `t`, sizing, maximum position, daily loss limit),
   the backtest's decision step;
4. the order goes to the broker (`live.brokers.PaperBroker` or `CcxtBroker`), and everything the period
   changed is committed to the state (`live/state.py`) in one transaction, with one JSON line in the log.

`replay` runs this loop over stored candles with no network and no clock. Its signals come from one batched
pass (`predict.predict_signals` through `backtest.simulation.period_signals`, the backtest's own call: the
window at each moment holds only candles closed by it), because a batch of one can differ from a batch of 64 in
the last bits of float32; everything after the model (candles arriving period by period, decisions, fills,
state, restarts) is the live loop's code. So the replay's `trades.csv` equals `lstm-trading backtest`'s for the
same bundle, candles and settings (`tests/test_live.py`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from lstm_trading.backtest.execution import (
    FLAT,
    SIDE_NAMES,
    CandleArrays,
    Costs,
    Fill,
    Order,
    PositionWatch,
    Thresholds,
    Trader,
    bracket_prices,
    decide,
)
from lstm_trading.backtest.funding import FundingSchedule
from lstm_trading.core.config import BacktestConfig
from lstm_trading.core.errors import ConfigError, DataError, LstmTradingError
from lstm_trading.core.timeutil import DAY, MINUTE, format_time
from lstm_trading.live.brokers import Broker, ExchangeUnavailable, PaperBroker, Retry, redact, redacted, short_error
from lstm_trading.live.feeds import Clock, DatabaseFeed, ExchangeFeed, Feed, ReplayFeed, next_moment
from lstm_trading.live.retraining import (
    MODEL_KEY,
    RETRAIN_KEY,
    SCHEDULE_KEY,
    BoundaryOutcome,
    LogWrite,
    ModelInUse,
    ModelSchedule,
    ReplaySchedule,
    Swap,
    log_swap,
)
from lstm_trading.live.signals import PAUSED, PrecomputedSignals, Signal, SignalSource
from lstm_trading.live.state import LiveState, Position, Step, fill_record

SETTLE_S = 5  # wait this long after a boundary: the exchange has closed the minute (ingest keeps a 3 s margin)
LOG_FILE = "live.jsonl"


class LiveStop(LstmTradingError):
    """A guard stopped the loop (too many consecutive errors); the state is saved, a restart resumes."""


# --- the decision log ---


class DecisionLog:
    """One JSON line per event in `LOG_FILE` (decisions, fills, guards, errors) and a short line on the console."""

    def __init__(
        self,
        out_dir: Path | None,
        echo: Callable[[str], None] | None = None,
        *,
        quiet: bool = False,
        fresh: bool = False,
    ) -> None:
        self.echo = echo
        self.quiet = quiet  # decisions only in the file; guards, fills and errors still on the console
        self.handle: IO[str] | None = None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            mode = "w" if fresh else "a"  # a restarted loop appends; a fresh replay starts the file over
            self.handle = open(out_dir / LOG_FILE, mode, encoding="utf-8")  # noqa: SIM115  (closed in close())

    def write(self, event: str, record: dict[str, Any], line: str) -> None:
        if self.handle is not None:
            text = json.dumps({"event": event, **record}, allow_nan=False, default=_plain)
            self.handle.write(redact(text) + "\n")
            self.handle.flush()
        if self.echo is not None and not (self.quiet and event == "decision"):
            self.echo(redact(line))

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def _plain(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# --- the loop ---


@dataclass(frozen=True)
class LoopSettings:
    """What the loop trades and its guards, resolved: the account and symbol named, no defaults (those are in
    `settings.LiveSettings`, which `runs/live.py` reads this from). Sizing, fills and the daily loss limit are in
    `config`."""

    account: str
    symbol: str
    config: BacktestConfig
    max_quantity: float | None  # units; larger orders are cut to it (printed); None: no cap
    quantity: float | None  # units per order instead of the sizing rule (`--qty`); None: the rule
    max_errors: int  # consecutive failed periods before the loop stops
    funding: FundingSchedule | None = None  # the symbol's funding (None: spot), charged to every fill
    # paper and live: a model whose training data ends longer ago opens no new position (`model_expired`);
    # None: no limit (a replay, which trades as the backtest does)
    max_model_age_s: int | None = None
    inputs: tuple[str, ...] = ()  # other symbols the model reads (`features.with_symbols`), ingested too


def client_order_id(account: str, symbol: str, at: int) -> str:
    """Stable per account, symbol and moment: a retry, a restart or a replayed moment reuses it (idempotent)."""
    digest = hashlib.sha256(f"{account}\n{symbol}".encode()).hexdigest()[:8]
    return f"lt{digest}-{at}"


def trader_record(trader: Trader, signals: int) -> dict[str, Any]:
    limit = trader.limit
    return {
        "equity": trader.equity,
        "flat_from": trader.flat_from,
        "day": limit.day,
        "day_start_equity": _finite(limit.day_start_equity),
        "skipped": dict(trader.skipped),
        "signals": signals,
    }


def restore_trader(config: BacktestConfig, record: dict[str, Any] | None) -> tuple[Trader, int]:
    trader = Trader(config)
    if record is None:
        return trader, 0
    trader.equity = float(record["equity"])
    trader.flat_from = int(record["flat_from"])
    trader.limit.day = record["day"]
    start = record["day_start_equity"]
    trader.limit.day_start_equity = math.nan if start is None else float(start)
    trader.skipped.update(record["skipped"])
    return trader, int(record["signals"])


@dataclass
class LiveLoop:
    """The period step shared by live, paper and replay; state in `state`, orders through `broker`."""

    settings: LoopSettings
    state: LiveState
    feed: Feed
    broker: Broker
    signals: SignalSource
    log: DecisionLog
    trader: Trader = field(init=False)
    signal_count: int = field(init=False)
    position: Position | None = field(init=False)
    errors: int = 0
    paused: bool = False  # inside the warm-up after a long gap (no new entries)
    kill_switch_day: int | None = None
    attempted: int | None = None  # the last moment stepped, done or skipped after an error
    # retraining: a model to swap in before a period, a training to start after it (None: RUN's model only)
    schedule: ModelSchedule | None = None
    initial_model: ModelInUse | None = None  # the model decided with until the state names one
    model: ModelInUse | None = field(init=False, default=None)
    model_named: bool = field(init=False, default=False)  # the state records the model in use
    expired: bool = False  # the model in use is older than max_model_age_s (no new entries)

    def __post_init__(self) -> None:
        self._reload(starting=True)

    def _reload(self, *, starting: bool = False) -> None:
        """The trader, counters, position and model as last committed: a failed period leaves no trace in memory.
        At the start the model is `initial_model` when given (the runs layer chose it: the one the state names,
        or RUN's when the account changes runs), and the state names it with the first period."""
        self.trader, self.signal_count = restore_trader(self.settings.config, self.state.meta("trader"))
        self.position = self._with_funding(self.state.position())
        if self.position is not None:
            self.trader.opened()
        named = self.state.meta(MODEL_KEY)
        recorded = None if named is None else ModelInUse.from_record(named)
        model = self.initial_model if recorded is None or (starting and self.initial_model is not None) else recorded
        self.model_named = recorded is not None and recorded == model
        if model != self.model:
            self._use(model)
        self.model = model

    def _use(self, model: ModelInUse | None) -> None:
        """Have the signal source predict with `model` (live and paper load its bundle; a replay's signals are
        stitched by model already)."""
        use = getattr(self.signals, "use", None)
        if use is not None and model is not None:
            use(model)

    def _with_funding(self, position: Position | None) -> Position | None:
        """The symbol's funding schedule on a position's watch: the state stores plain numbers, not the rates."""
        if position is not None and self.settings.funding is not None:
            position.watch.funding = self.settings.funding
        return position

    @property
    def config(self) -> BacktestConfig:
        return self.settings.config

    @property
    def last_moment(self) -> int | None:
        value = self.state.meta("last_moment")
        return None if value is None else int(value)

    def start(self, initial_equity: float | None = None) -> None:
        """Reconcile with the broker and mark orders sent before a crash as filled or not placed."""
        if self.state.meta("trader") is None and initial_equity is not None:
            self.trader.equity = initial_equity
        self._reconcile()

    def _reconcile(self) -> None:
        """Compare with the broker; an order left `sent` (a crash, or a placement whose answer never came) is
        looked up by its client order id and its position resumed, or it is marked not placed."""
        sent = self.state.orders("sent")
        position = self._with_funding(self.broker.reconcile(self.position, sent))
        updates = []
        for record in sent:
            adopted = position is not None and position.client_id == record["client_id"]
            updates.append((record["client_id"], "filled" if adopted else "not_placed", record))
        adopted_now = position is not None and self.position is None
        if adopted_now:
            assert position is not None
            self.trader.opened()
            self.log.write(
                "resume",
                {"client_id": position.client_id},
                f"resumed the position of order {position.client_id}, sent before the last stop",
            )
        self.position = position
        if updates or adopted_now:
            self.state.commit(
                Step(
                    at=self.last_moment or 0,
                    trader=trader_record(self.trader, self.signal_count),
                    position=self.position,
                    orders=tuple(updates),
                )
            )

    # --- one period ---

    def step(self, at: int) -> None:
        """Act at moment `at`; a network or exchange failure skips the period (logged), too many stop the loop."""
        self.attempted = at
        try:
            self._step(at)
        except (ExchangeUnavailable, DataError) as error:
            self._reload()  # nothing of the failed period counts; the next one starts from the committed state
            self.errors += 1
            self.log.write(
                "error",
                {"at": at, "at_utc": format_time(at), "error": short_error(error, 500), "consecutive": self.errors},
                f"{format_time(at)}  error, period skipped ({self.errors} in a row): {short_error(error)}",
            )
            if self.errors >= self.settings.max_errors:
                message = (
                    f"stopped after {self.errors} consecutive failed periods (--max-errors {self.settings.max_errors});"
                    f" last: {short_error(error)}; the state is saved, start again to resume"
                )
                self.log.write("guard", {"at": at, "guard": "max_errors", "message": message}, f"guard: {message}")
                raise LiveStop(message) from redacted(error)
            return
        self.errors = 0

    def _step(self, at: int) -> None:
        if self.state.orders("sent"):  # a placement failed last period: resolve it before anything new
            self._reconcile()
        self.feed.advance(at)
        fills: list[tuple[str, Fill]] = []
        orders: list[tuple[str, str, dict[str, Any]]] = []
        if self.position is not None:
            fill = self._check_position(at)
            if fill is not None:
                fills.append((self.position.client_id, fill))
                orders.append((self.position.client_id, "closed", self._order_row(self.position)))
                self.position = None
        previous, meta = self.model, {}
        swap = None if self.schedule is None else self.schedule.poll(at, self.model)
        if swap is not None:  # named in the state with this period's commit: a crash before it keeps the old one
            swap = self._swap_in(at, swap)
        if swap is not None:
            self.model = swap.model
            meta = {MODEL_KEY: None if swap.model is None else swap.model.record(), RETRAIN_KEY: swap.record}
        elif self.model is not None and not self.model_named:
            meta = {MODEL_KEY: self.model.record()}
        no_model = self.schedule is not None and self.model is None  # a replay whose first retraining was skipped
        signal = PAUSED if no_model else self.signals.at(at)
        self._pause(at, signal.paused and not no_model)
        self._expire(at)
        decided = decide(
            signal.proba, signal.stop_loss_pct, signal.take_profit_pct, self.config, thresholds=self._thresholds()
        )
        direction = FLAT if signal.paused or self.expired else int(decided.direction[0])
        probability = float(decided.probability[0])
        entry = None
        if direction != FLAT:
            self.signal_count += 1
            entry = self.feed.open_at(at)
        decision = self.trader.consider(at, direction, entry, signal.stop_loss_pct, signal.take_profit_pct, probability)
        order, reason = decision.order, decision.reason
        client_id = client_order_id(self.settings.account, self.settings.symbol, at)
        if order is not None:
            order, reason = self._guard_size(order)
        if order is not None:
            watch = PositionWatch(order, self.config.max_hold_seconds, Costs(self.config.fee, self.config.slippage))
            position = Position(client_id, watch)
            self._with_funding(position)
            self.state.order_sent(client_id, at, self._order_row(position))
            placed = self.broker.place(order, client_id)
            position.exchange_order_id, position.entry_executed = placed.order_id, placed.average
            self.trader.opened()
            self.position = position
            orders.append((client_id, "filled", self._order_row(position)))
        if signal.paused:
            reason = "no_model" if no_model else "gap_warm_up"
        elif self.expired:
            reason = "model_expired"
        if reason == "daily_loss_limit":
            self._kill_switch(at)
        record = self._decision_record(at, signal, direction, entry, order, reason, client_id)
        self.state.commit(
            Step(
                at=at,
                trader=trader_record(self.trader, self.signal_count),
                position=self.position,
                decision=record,
                fills=tuple(fills),
                orders=tuple(orders),
                equity=self.trader.equity,
                meta=meta,
            )
        )
        self.model_named = self.model_named or MODEL_KEY in meta
        self.log.write("decision", record, _decision_line(record))
        if swap is not None:
            log_swap(self.log.write, swap, previous)
        if self.schedule is not None:
            self.schedule.after(at, self.model)

    def _swap_in(self, at: int, swap: Swap) -> Swap | None:
        """Load the new model; one that no longer loads (its folder removed since its gate) keeps the current one."""
        try:
            self._use(swap.model)
        except LstmTradingError as error:
            reason = f"the new model does not load: {short_error(error, 300)}"
            self.state.set_meta(**{RETRAIN_KEY: {**swap.record, "status": "failed", "reason": reason}})
            name = None if self.model is None else self.model.name
            self.log.write("error", {"at": at, "error": reason}, f"{format_time(at)}  {reason}; {name} stays in use")
            return None
        return swap

    def _thresholds(self) -> Thresholds | None:
        """The model's own min-prob / min-EV (chosen on its validation period), else the settings'."""
        chosen = None if self.model is None else self.model.thresholds
        if chosen is None:
            return None
        return Thresholds(np.array([chosen[0]]), np.array([chosen[1]]))

    def _expire(self, at: int) -> None:
        """Stop new entries while the model in use is older than --max-model-age (logged when it starts and
        when a newer model ends it); an open position is still managed."""
        limit = self.settings.max_model_age_s
        expired = self.model is not None and self.model.expired(at, limit)
        if expired == self.expired:
            return
        self.expired = expired
        if expired:
            assert self.model is not None and self.model.data_end is not None and limit is not None
            age = (at - self.model.data_end) / DAY
            message = (
                f"model_expired: the model {self.model.name} was trained on data ending "
                f"{format_time(self.model.data_end)}, {age:.1f} days ago, more than --max-model-age {limit / DAY:g}d; "
                "no new entries until a newer model is in use (retrain it, or raise --max-model-age)"
            )
        else:
            message = "a model within --max-model-age is in use: new entries resume"
        self.log.write(
            "guard",
            {"at": at, "guard": "model_expired", "expired": expired, "model": getattr(self.model, "name", None)},
            f"guard: {message}",
        )

    def _pause(self, at: int, paused: bool) -> None:
        """Log when new entries stop after a long gap in the candles (the new segment's warm-up; an open
        position is still managed) and when they resume."""
        if paused == self.paused:
            return
        self.paused = paused
        message = (
            "new entries paused: a gap longer than features.max_gap_minutes restarted the indicators; trading "
            "resumes once the warm-up's candles have closed"
            if paused
            else "the warm-up after the gap is over: new entries resume"
        )
        self.log.write("guard", {"at": at, "guard": "gap_warm_up", "paused": paused}, f"guard: {message}")

    def _check_position(self, at: int) -> Fill | None:
        position = self.position
        assert position is not None
        candles = self.feed.closed(max(position.watch.last_time + 1, position.order.at), at)
        fill = self.broker.update(position, candles, at)
        if fill is None and at >= position.watch.horizon:
            fill = self.broker.close(position, at)
        if fill is not None:
            self.trader.settle(fill)
            self._log_fill(fill, position.client_id)
        return fill

    def _guard_size(self, order: Order) -> tuple[Order | None, str]:
        settings = self.settings
        quantity = order.quantity if settings.quantity is None else settings.quantity
        if settings.max_quantity is not None and quantity > settings.max_quantity:
            self.log.write(
                "guard",
                {"at": order.at, "guard": "max_position", "quantity": quantity, "max_quantity": settings.max_quantity},
                f"guard: max position: order of {quantity:g} cut to {settings.max_quantity:g} (--max-qty)",
            )
            quantity = settings.max_quantity
        quantity = self.broker.quantity(quantity)
        if quantity <= 0:
            return None, "below_lot_size"
        return (order if quantity == order.quantity else replace(order, quantity=quantity)), "order"

    def _kill_switch(self, at: int) -> None:
        day = at // DAY
        if self.kill_switch_day == day:
            return
        self.kill_switch_day = day
        limit = self.trader.limit
        message = (
            f"kill switch: daily loss limit of {100 * self.config.daily_loss_limit:g}% reached (equity "
            f"{self.trader.equity:,.2f}, {limit.day_start_equity:,.2f} at the day's start); no new trades until "
            f"{format_time((day + 1) * DAY)}"
        )
        self.log.write("guard", {"at": at, "guard": "daily_loss_limit", "message": message}, message)

    def _order_row(self, position: Position) -> dict[str, Any]:
        record = position.record()
        record["at"] = position.order.at
        return record

    def _decision_record(
        self,
        at: int,
        signal: Signal,
        direction: int,
        entry: float | None,
        order: Order | None,
        reason: str,
        client_id: str,
    ) -> dict[str, Any]:
        top = int(np.argmax(signal.proba))
        stop = target = None
        if order is not None:
            stop, target = order.stop, order.target
        elif direction != FLAT and entry is not None:
            stop, target = bracket_prices(direction, entry, signal.stop_loss_pct, signal.take_profit_pct)
        return {
            "at": at,
            "at_utc": format_time(at),
            "p_buy": float(signal.proba[0]),
            "p_sell": float(signal.proba[1]),
            "p_invalid": float(signal.proba[2]),
            "side": ("Buy", "Sell", "Invalid")[top],
            "signal": SIDE_NAMES.get(direction, "none"),
            "entry": entry,
            "stop_loss": stop,
            "take_profit": target,
            "stop_loss_pct": signal.stop_loss_pct,
            "take_profit_pct": signal.take_profit_pct,
            "quantity": None if order is None else order.quantity,
            "action": "open" if order is not None else ("hold" if self.position is not None else "none"),
            "reason": reason,
            "client_id": client_id if order is not None else None,
            "equity": self.trader.equity,
            "model": None if self.model is None else self.model.name,
        }

    def _log_fill(self, fill: Fill, client_id: str) -> None:
        record = {"client_id": client_id, **fill_record(fill)}
        record.pop("order")
        side = SIDE_NAMES[fill.order.direction]
        self.log.write(
            "fill",
            record,
            f"{format_time(fill.exit_time)}  closed {side} {fill.order.quantity:g} at {fill.exit_price:.2f} "
            f"({fill.reason}), P&L {fill.pnl:+,.2f}",
        )

    def finish(self, end: int) -> None:
        """The replay's end: check the last candles, then close an open position at the last close."""
        position = self.position
        if position is None:
            return
        candles = self.feed.closed(max(position.watch.last_time + 1, position.order.at), end)
        fill = self.broker.update(position, candles, end)
        if fill is None:
            fill = self.broker.close(position, end, end_of_data=True)
        self.trader.settle(fill)
        self._log_fill(fill, position.client_id)
        self.position = None
        self.state.commit(
            Step(
                at=end,
                trader=trader_record(self.trader, self.signal_count),
                position=None,
                fills=((position.client_id, fill),),
                orders=((position.client_id, "closed", self._order_row(position)),),
                equity=self.trader.equity,
            )
        )

    def run(self, moments: Iterable[int], *, max_periods: int | None = None) -> int:
        """Step through `moments` after the last one done; returns how many periods ran."""
        done = 0
        last = self.last_moment
        for moment in moments:
            if max_periods is not None and done >= max_periods:
                break
            if last is not None and moment <= last:
                continue
            self.step(int(moment))
            done += 1
        return done

    def run_clock(self, clock: Clock, *, max_periods: int | None = None) -> int:
        """The live schedule: wait for each boundary (plus `SETTLE_S`), then step; until `max_periods`."""
        done = 0
        every = self.config.every_seconds
        while max_periods is None or done < max_periods:
            done_until = max((m for m in (self.last_moment, self.attempted) if m is not None), default=None)
            moment = next_moment(clock.now(), every, done_until)
            clock.sleep(moment + SETTLE_S - clock.now())
            self.step(moment)
            done += 1
        return done


def _decision_line(record: dict[str, Any]) -> str:
    probabilities = f"P(B/S/I) {record['p_buy']:.2f}/{record['p_sell']:.2f}/{record['p_invalid']:.2f}"
    text = f"{record['at_utc']}  {probabilities}  {record['signal']:<4}  {record['action']}"
    if record["action"] == "open":
        side = record["signal"]
        text += (
            f" {side} {record['quantity']:g} at {record['entry']:.2f} SL {record['stop_loss']:.2f} "
            f"TP {record['take_profit']:.2f}"
        )
    elif record["reason"] not in ("no_signal", "order"):
        text += f" ({record['reason']})"
    return text


# --- start-up checks ---


def check_bundle(bundle: Any, symbol: str, now: float, max_age_s: int, *, live: bool) -> list[str]:
    """Refuse live trading on another symbol than the bundle's or with a stale model; warnings for paper."""
    data = bundle.training.data
    problems = []
    trained_on = data.symbol
    if trained_on and str(trained_on).upper() != symbol.upper():
        problems.append(
            f"the bundle was trained on {trained_on}, not {symbol}; "
            f"trade the bundle's symbol with --symbol {trained_on}"
        )
    last = data.last_timestamp
    if last is None:
        problems.append("the bundle records no data fingerprint (training period); retrain it with this version")
    elif now - int(last) > max_age_s:
        days = (now - int(last)) / DAY
        problems.append(
            f"the bundle's data ends {format_time(int(last))}, {days:.0f} days ago, more than --max-model-age "
            f"{max_age_s / DAY:g}d; retrain on recent candles (or raise --max-model-age)"
        )
    if live and problems:
        raise ConfigError(f"live mode refused: {problems[0]}")
    return problems


# --- the replay ---


@dataclass(frozen=True)
class RetrainedPeriod:
    """A replay's signals when it retrains: each moment decided by the model in force at it (trained before the
    replay by the runs layer), and the retraining at each boundary."""

    period: CandleArrays
    end: int
    moments: np.ndarray
    signals: PrecomputedSignals
    outcomes: list[BoundaryOutcome]
    settings: dict[str, Any]  # `RetrainSettings.record()`, for the state and live-status


@dataclass(frozen=True)
class ReplayResult:
    start: int
    end: int
    moments: int
    fills: list[Fill]
    trades_path: Path | None
    state: dict[str, Any]
    ran: int = 0  # periods decided by this call (fewer than `moments` when stopped by max_periods or resumed)
    finished: bool = True  # the period's end was reached, and trades.csv written


def replay(
    bundle: Any,
    candles: pd.DataFrame | None,
    *,
    db: Path,
    start: int,
    end: int,
    settings: LoopSettings,
    out_dir: Path | None = None,
    fresh: bool = True,
    max_periods: int | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    echo: Callable[[str], None] | None = None,
    quiet: bool = False,
    retrained: RetrainedPeriod | None = None,
) -> ReplayResult:
    """The live loop over `candles` (history before `start` included) from `start` to `end`, paper fills.

    `fresh` forgets the account's earlier state first; without it a stopped replay resumes where it stopped.
    `max_periods` stops after that many periods (the restart test). `trades.csv` is written once the period
    is done, in the backtest's format; with `retrained` (a replay that retrains: `bundle` is then only RUN's) the
    models come from it and trades.csv starts with the `model` that decided each trade, as walk-forward's.
    """
    from lstm_trading.backtest.simulation import period_signals, trades_frame

    if end <= start:
        raise ConfigError(f"--from {format_time(start)} is not before --to {format_time(end)}; the period is empty")
    if retrained is None:
        if candles is None:
            raise ValueError("replay without retraining needs the candles")
        traded = period_signals(
            bundle, candles, start, end, settings.config.every_seconds, batch_size=batch_size, workers=workers
        )
        period, end, moments = traded.period, traded.end, traded.moments
        batched = traded.signals.with_levels(settings.config.levels)  # as the backtest trades them
        signals = PrecomputedSignals(
            batched.at, batched.proba, batched.stop_loss_pct, batched.take_profit_pct, batched.usable
        )
    else:
        period, end, moments, signals = retrained.period, retrained.end, retrained.moments, retrained.signals
    with LiveState(db, settings.account) as state:
        if fresh:
            state.clear()
        state.set_meta(settings=_settings_record(settings, "replay"), period=[start, end])
        if retrained is not None:
            state.set_meta(**{SCHEDULE_KEY: {**retrained.settings, "anchor": start}})
        log = DecisionLog(out_dir, echo, quiet=quiet, fresh=fresh)
        try:
            schedule = None if retrained is None else ReplaySchedule(retrained.outcomes, state, log.write)
            loop = LiveLoop(settings, state, ReplayFeed(period), PaperBroker(), signals, log, schedule=schedule)
            loop.start()
            ran = loop.run(moments, max_periods=max_periods)
            finished = max_periods is None or ran < max_periods or loop.last_moment == int(moments[-1])
            if finished and loop.last_moment != end:
                loop.finish(end)
            fills = state.fills()
        finally:
            log.close()
        trades_path = None
        if finished and out_dir is not None:
            from lstm_trading.core.atomic import write_text_atomic

            trades_path = out_dir / "trades.csv"
            frame = trades_frame(fills)
            if retrained is not None:  # the model that decided each trade, as walk-forward's oos/trades.csv
                decided_by = {int(d["at"]): d.get("model") or "" for d in state.decisions()}
                frame.insert(0, "model", [decided_by.get(int(t), "") for t in frame["entry_time"]])
            write_text_atomic(trades_path, frame.to_csv(index=False))
        summary = status(state)
    return ReplayResult(start, end, len(moments), fills, trades_path, summary, ran=ran, finished=finished)


def _settings_record(settings: LoopSettings, mode: str) -> dict[str, Any]:
    return {"mode": mode, "symbol": settings.symbol, **asdict(settings.config)}


# --- the live and paper loop ---


def run_live(
    *,
    db: Path,
    settings: LoopSettings,
    mode: str,
    source: Any | None,
    broker: Broker,
    signals: SignalSource,
    clock: Clock,
    retry: Retry,
    out_dir: Path | None = None,
    max_periods: int | None = None,
    initial_equity: float | None = None,
    echo: Callable[[str], None] | None = None,
    quiet: bool = False,
    model: ModelInUse | None = None,
    retrain: Callable[[LiveState, LogWrite], ModelSchedule] | None = None,
    feed: str = "exchange",
    feed_wait_s: int | None = None,
) -> dict[str, Any]:
    """Run the loop on the clock (`mode` paper or live); returns the status at the end. `feed` is where its
    candles come from: `exchange` (`source`, ingested each period) or `db` (paper only: the database that
    `ingest exchange` keeps current from cron, each minute waited for up to `feed_wait_s`; no `source`).
    `model` is the one decided with until the state names another; `retrain` makes the loop's retraining
    schedule (`--retrain-every`) from its state and log."""
    candles: ExchangeFeed | DatabaseFeed
    if feed == "db":
        if feed_wait_s is None:
            raise ValueError("the database feed takes feed_wait_s (LiveSettings.feed_wait_s)")
        candles = DatabaseFeed(db, settings.symbol, clock, wait_s=feed_wait_s, others=settings.inputs)
        where = f"candles from {db} as `ingest exchange` writes them (--feed db)"
    elif source is None:
        raise ValueError("the exchange feed takes the exchange's source")
    else:
        candles = ExchangeFeed(db, source, settings.symbol, retry, others=settings.inputs)
        where = "candles from the exchange"
    log = DecisionLog(out_dir, echo, quiet=quiet)
    if isinstance(candles, DatabaseFeed):
        candles.write = log.write  # the log says why a decision had no entry
    try:
        with LiveState(db, settings.account) as state:
            state.set_meta(settings=_settings_record(settings, mode))
            schedule = None if retrain is None else retrain(state, log.write)
            loop = LiveLoop(settings, state, candles, broker, signals, log, schedule=schedule, initial_model=model)
            loop.start(initial_equity)
            log.write(
                "start",
                {
                    "mode": mode,
                    "symbol": settings.symbol,
                    "account": settings.account,
                    "feed": feed,
                    "equity": loop.trader.equity,
                },
                f"{mode} trading {settings.symbol} every {settings.config.every_seconds // MINUTE} min, {where} "
                f"(account {settings.account}, equity {loop.trader.equity:,.2f})",
            )
            loop.run_clock(clock, max_periods=max_periods)
            return status(state)
    finally:
        log.close()
        candles.close()


# --- status ---


def status(state: LiveState, *, now: float | None = None, last: int = 10) -> dict[str, Any]:
    """Position, today's and total P&L, equity and the last decisions of one account."""
    fills = state.fills()
    trader = state.meta("trader") or {}
    settings = state.meta("settings") or {}
    total = float(sum(f.pnl for f in fills))
    equity = trader.get("equity")
    # Equity is the start plus every fill's P&L; live mode starts from the exchange's balance, not the setting.
    initial = (
        float(settings.get("initial_equity", BacktestConfig().initial_equity)) if equity is None else equity - total
    )
    last_moment = state.meta("last_moment")
    # the account's own clock: a replay's day is its last moment's, a live account's the wall clock's
    clock = last_moment if settings.get("mode") == "replay" and last_moment is not None else now
    today = int((time.time() if clock is None else clock) // DAY)
    position = state.position()
    return {
        "account": state.account,
        "mode": settings.get("mode"),
        "symbol": settings.get("symbol"),
        "equity": equity,
        "total_pnl": total,
        "today_pnl": float(sum(f.pnl for f in fills if f.exit_time // DAY == today)),
        "trades": len(fills),
        "position": None if position is None else _position_summary(position),
        "last_moment": state.meta("last_moment"),
        "decisions": state.decisions(last),
        "initial_equity": initial,
        "model": state.meta(MODEL_KEY),
        "retraining": state.meta(RETRAIN_KEY),
        "next_retraining": _next_retraining(state, last_moment),
    }


def _next_retraining(state: LiveState, last_moment: int | None) -> int | None:
    """The next retraining boundary after the last period done (None without retraining, or past a replay's end)."""
    schedule = state.meta(SCHEDULE_KEY)
    if not schedule or not schedule.get("every_s") or last_moment is None:
        return None
    every, anchor = int(schedule["every_s"]), int(schedule.get("anchor") or 0)
    boundary = anchor + ((int(last_moment) - anchor) // every + 1) * every
    period = state.meta("period")
    if period is not None and boundary >= int(period[1]):
        return None
    return boundary


def _position_summary(position: Position) -> dict[str, Any]:
    order = position.order
    return {
        "side": SIDE_NAMES[order.direction],
        "quantity": order.quantity,
        "entry": order.entry,
        "stop_loss": order.stop,
        "take_profit": order.target,
        "opened": order.at,
        "opened_utc": format_time(order.at),
        "close_by_utc": format_time(position.watch.horizon),
        "client_id": position.client_id,
    }
