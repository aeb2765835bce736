"""Where orders go: `PaperBroker` (the backtest's fills on the candles as they arrive) or `CcxtBroker` (an exchange).

Why it is built this way:

- **Paper fills are the backtest's.** `PaperBroker` checks an open position with `execution.PositionWatch`, the
  code the backtest's `simulate_fill` runs, on each period's new candles; so a replay's trades equal the
  backtest's, and live paper trading assumes what the backtest assumed, funding included.
- **Exchange orders are idempotent.** Every entry and exit carries a client order id derived from the account
  and the moment. After a timeout the broker first looks the order up by that id (open and closed orders)
  and only places it again when the exchange does not know it, so a retry never doubles a position.
- **Brackets live on the exchange.** The market entry carries ccxt's unified `stopLoss` / `takeProfit`
  parameters (Bybit attaches them to the position), so the stop holds even while this process is down. A
  triggered stop fills at market: live exits can be worse than the paper fill at the stop price.
- **Keys from the environment only** (`API_KEY_ENV`, `API_SECRET_ENV`), handed to ccxt and nowhere else.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

import ccxt

from lstm_trading.backtest.execution import LONG, CandleArrays, Costs, Fill, Order
from lstm_trading.core.errors import ConfigError, DataError, LstmTradingError
from lstm_trading.core.timeutil import MINUTE, format_time
from lstm_trading.live.state import Position

API_KEY_ENV = "LSTM_TRADING_API_KEY"
API_SECRET_ENV = "LSTM_TRADING_API_SECRET"
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (ccxt.NetworkError,)  # timeouts, rate limits, unavailable
MAX_BACKOFF_S = 60.0
QUANTITY_TOLERANCE = 0.01  # exchange and state quantities agree within 1 % (lot-size rounding)

T = TypeVar("T")


class ExchangeUnavailable(LstmTradingError):
    """Network or exchange errors outlasted the retries: the loop skips the period and tries again later."""


class ReconciliationError(LstmTradingError):
    """The exchange's positions or orders differ from the state in a way the loop cannot explain."""


@dataclass(frozen=True)
class Credentials:
    """API key and secret; `repr` never shows them, so no log line or traceback can."""

    api_key: str = field(repr=False)
    secret: str = field(repr=False)


_SECRETS: set[str] = set()  # the keys in use, blanked out of every message this package writes


def redact(text: str) -> str:
    """`text` with the API key and secret replaced by `***` (an exchange's error may echo a request)."""
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    return text


def credentials_from_env(environ: Mapping[str, str] | None = None) -> Credentials:
    """The keys from `API_KEY_ENV` and `API_SECRET_ENV`; a clear error when either is missing."""
    env = os.environ if environ is None else environ
    missing = [name for name in (API_KEY_ENV, API_SECRET_ENV) if not env.get(name, "").strip()]
    if missing:
        raise ConfigError(
            f"live mode needs the exchange API keys in the environment: {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set (keys are read from {API_KEY_ENV} and "
            f"{API_SECRET_ENV} only, never from flags or files)"
        )
    credentials = Credentials(env[API_KEY_ENV].strip(), env[API_SECRET_ENV].strip())
    _SECRETS.update((credentials.api_key, credentials.secret))
    return credentials


def make_exchange(exchange_id: str, market: str, credentials: Credentials | None = None) -> Any:
    """The ccxt exchange (no network until the first request); with credentials it can trade."""
    from lstm_trading.data.exchange import ccxt_options, make_ccxt_source

    exchange_id = exchange_id.strip().lower()
    make_ccxt_source(exchange_id, market)  # checks the exchange and market names with "did you mean"
    settings = ccxt_options(exchange_id, market)
    if credentials is not None:
        settings = {**settings, "apiKey": credentials.api_key, "secret": credentials.secret}
    return getattr(ccxt, exchange_id)(settings)


# The live command builds its exchange through this name, so tests can put a fake exchange in its place.
exchange_factory: Callable[[str, str, Credentials | None], Any] = make_exchange


def redacted(error: BaseException) -> BaseException:
    """A copy of `error` with the keys blanked out, to chain our errors to: a `--debug` traceback prints the
    cause's message, and an exchange's error may echo a signed request."""
    text = redact(str(error))
    try:
        copy: BaseException = type(error)(text)
    except Exception:  # an exception class that does not take one message
        copy = RuntimeError(f"{type(error).__name__}: {text}")
    return copy.with_traceback(error.__traceback__)


def short_error(error: BaseException, limit: int = 200) -> str:
    """One line of an error's message, keys blanked out, cut to `limit` characters."""
    text = redact(" ".join(str(error).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Retry:
    """Exponential backoff for transient exchange errors; `sleep` is injected so tests never wait. The counts
    have no defaults here: the live loop's are in `settings.LiveSettings` (`--retries`, `--backoff`)."""

    retries: int
    backoff_s: float
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] | None = None

    def __call__(self, what: str, call: Callable[[], T], *, before_retry: Callable[[], T | None] | None = None) -> T:
        """`call()` until it succeeds; before each retry `before_retry()` may return the result instead (an
        order found by its client id after a timeout)."""
        for attempt in range(self.retries + 1):
            try:
                if attempt > 0 and before_retry is not None:
                    found = before_retry()
                    if found is not None:
                        return found
                return call()
            except TRANSIENT_ERRORS as error:
                if attempt == self.retries:
                    tries = "once" if self.retries == 0 else f"{self.retries + 1} times"
                    raise ExchangeUnavailable(
                        f"{what} failed {tries} (last: {type(error).__name__}: {short_error(error)})"
                    ) from redacted(error)
                wait = min(self.backoff_s * 2**attempt, MAX_BACKOFF_S)
                if self.log is not None:
                    self.log(f"{what}: {type(error).__name__}; retry {attempt + 1} of {self.retries} in {wait:g} s")
                self.sleep(wait)
            except ccxt.BaseError as error:
                raise DataError(
                    f"{what} refused by the exchange: {type(error).__name__}: {short_error(error)}"
                ) from redacted(error)
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class Placement:
    """An entry the broker made: the exchange's order id, quantity and average price (NaN where unknown)."""

    order_id: str
    quantity: float
    average: float = math.nan


class Broker(Protocol):
    """What the live loop asks of where orders go."""

    mode: str

    def quantity(self, quantity: float) -> float:
        """The quantity the venue accepts (its lot size), at most `quantity`."""
        ...

    def place(self, order: Order, client_id: str) -> Placement:
        """Enter `order` with its stop loss and take profit attached."""
        ...

    def update(self, position: Position, candles: CandleArrays, now: int) -> Fill | None:
        """The fill if the position closed (stop, target) on `candles`, the candles closed since the last check."""
        ...

    def close(self, position: Position, now: int, *, end_of_data: bool = False) -> Fill:
        """Close the position now: the maximum holding time is over (or a replay's candles ran out)."""
        ...

    def reconcile(self, position: Position | None, sent: list[dict[str, Any]]) -> Position | None:
        """Compare the state with the venue at start; the position to resume (an order sent before a crash may
        turn out filled). Raises `ReconciliationError` on what it cannot explain."""
        ...


class PaperBroker:
    """Simulated fills with the backtest's rules, fees and slippage on the candles as they arrive."""

    mode = "paper"

    def quantity(self, quantity: float) -> float:
        return quantity

    def place(self, order: Order, client_id: str) -> Placement:
        return Placement(f"paper-{client_id}", order.quantity)

    def update(self, position: Position, candles: CandleArrays, now: int) -> Fill | None:
        return position.watch.feed(candles)

    def close(self, position: Position, now: int, *, end_of_data: bool = False) -> Fill:
        return position.watch.close_at_last(end_of_data=end_of_data)

    def reconcile(self, position: Position | None, sent: list[dict[str, Any]]) -> Position | None:
        return position  # nothing outside this process to compare with; a `sent` order never left it


def _average_price(trades: list[dict[str, Any]]) -> float:
    """The volume-weighted price of `trades`; NaN when there are none."""
    amount = sum(float(t["amount"]) for t in trades)
    if amount <= 0:
        return math.nan
    return sum(float(t["amount"]) * float(t["price"]) for t in trades) / amount


def _unfilled(order: Mapping[str, Any]) -> bool:
    """An order the exchange ended without a fill (cancelled by price protection, rejected for margin)."""
    return order.get("status") in ("canceled", "rejected", "expired") and not float(order.get("filled") or 0)


def _side(direction: int) -> str:
    return "buy" if direction == LONG else "sell"


class CcxtBroker:
    """Market orders with exchange-side stop loss and take profit through ccxt (Bybit linear perpetuals).

    Parameters
    ----------
    exchange
        A ccxt exchange with keys (or a fake with the same methods).
    symbol
        ccxt's unified symbol, e.g. `ETH/USDT:USDT`.
    costs
        Fee and slippage the paper fills assume; live fills report their own fees where the exchange gives them.
    retry
        The retries and backoff of every exchange call (the loop's, so one setting governs them all).
    """

    mode = "live"

    def __init__(self, exchange: Any, symbol: str, costs: Costs, retry: Retry) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.costs = costs
        self.retry = retry

    # --- looking things up ---

    def find_order(self, client_id: str) -> dict[str, Any] | None:
        """The order with this client order id among the open and closed orders, or None."""
        for fetch in (self.exchange.fetch_open_orders, self.exchange.fetch_closed_orders):
            for order in fetch(self.symbol):
                if order.get("clientOrderId") == client_id:
                    return dict(order)
        return None

    def open_position(self) -> dict[str, Any] | None:
        """The exchange's open position in the symbol (contracts above zero), or None."""
        positions = self.retry("fetching positions", lambda: self.exchange.fetch_positions([self.symbol]))
        for entry in positions:
            if entry.get("symbol") == self.symbol and float(entry.get("contracts") or 0) > 0:
                return dict(entry)
        return None

    def balance(self, currency: str = "USDT") -> float:
        """The account's total in the quote currency: the equity the sizing starts from."""
        balance = self.retry("fetching the balance", lambda: self.exchange.fetch_balance())
        total = (balance.get(currency) or {}).get("total")
        if total is None:
            raise DataError(f"the exchange reports no {currency} balance; fund the account or choose another symbol")
        return float(total)

    # --- orders ---

    def quantity(self, quantity: float) -> float:
        try:
            return float(self.exchange.amount_to_precision(self.symbol, quantity))
        except ccxt.BaseError:  # below the market's smallest lot: ccxt refuses to round it
            return 0.0

    def _submit(self, client_id: str, what: str, create: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        return self.retry(what, create, before_retry=lambda: self.find_order(client_id))

    def place(self, order: Order, client_id: str) -> Placement:
        params = {
            "clientOrderId": client_id,
            "stopLoss": {"triggerPrice": float(self.exchange.price_to_precision(self.symbol, order.stop))},
            "takeProfit": {"triggerPrice": float(self.exchange.price_to_precision(self.symbol, order.target))},
        }
        placed = self._submit(
            client_id,
            f"placing {_side(order.direction)} {order.quantity:g} {self.symbol} ({client_id})",
            lambda: self.exchange.create_order(
                self.symbol, "market", _side(order.direction), order.quantity, None, params
            ),
        )
        if _unfilled(placed):  # found after a timeout, but the exchange cancelled it: nothing is open
            status = placed.get("status")
            raise DataError(f"order {client_id} was {status} by the exchange unfilled; no position opened")
        average = placed.get("average") or placed.get("price")
        filled = placed.get("filled") or placed.get("amount") or order.quantity
        return Placement(str(placed.get("id", "")), float(filled), math.nan if average is None else float(average))

    def _trades(self, position: Position) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The account's opening and closing trades since the entry (one position at a time: all this one's)."""
        since_ms = position.order.at * 1000
        trades = self.retry(
            "fetching the account's trades", lambda: self.exchange.fetch_my_trades(self.symbol, since_ms)
        )
        trades = [t for t in trades if int(t.get("timestamp") or 0) >= since_ms]
        closing = _side(-position.order.direction)
        return [t for t in trades if t.get("side") != closing], [t for t in trades if t.get("side") == closing]

    def _closing_trades(self, position: Position) -> list[dict[str, Any]]:
        return self._trades(position)[1]

    def _fill(self, position: Position, trades: list[dict[str, Any]], reason: str) -> Fill:
        order = position.order
        exit_price = _average_price(trades)
        opening = self._trades(position)[0]
        fees = sum(float((t.get("fee") or {}).get("cost") or 0.0) for t in [*opening, *trades])  # both sides
        # The entry's own trades are the price paid: Bybit answers a market order with its ids only (no average).
        entry = _average_price(opening)
        if math.isnan(entry):
            entry = position.entry_executed if math.isfinite(position.entry_executed) else order.entry
        last_ms = max(int(t["timestamp"]) for t in trades)
        exit_time = (last_ms // 1000 // MINUTE) * MINUTE + MINUTE
        if reason == "stop_or_target":
            nearer_stop = abs(exit_price - order.stop) <= abs(exit_price - order.target)
            reason = "stop_loss" if nearer_stop else "take_profit"
        # The account's trades carry no funding (exchanges book it apart): charged as the backtest charges it, at
        # the stored or constant rate on the notional at entry, an estimate of what the exchange booked.
        funding = position.watch.funding.charge(order.direction, order.quantity * entry, order.at, exit_time)
        return Fill(
            order=order,
            entry_index=-1,
            exit_index=-1,
            entry_time=order.at,
            exit_time=exit_time,
            entry_executed=entry,
            exit_price=exit_price,
            exit_executed=exit_price,
            reason=reason,  # type: ignore[arg-type]
            same_candle=False,
            fees=fees,
            pnl=order.direction * order.quantity * (exit_price - entry) - fees - funding,
            funding=funding,
        )

    def update(self, position: Position, candles: CandleArrays, now: int) -> Fill | None:
        if self.open_position() is not None:
            return None
        trades = self._closing_trades(position)
        if not trades:
            # The trade list can lag the position by a moment: skip the period and look again at the next one;
            # `--max-errors` such periods in a row stop the loop with this message.
            raise ExchangeUnavailable(
                f"the {self.symbol} position entered at {format_time(position.order.at)} ({position.client_id}) is "
                "gone from the exchange, but no closing trade was found yet; if this persists, check the account "
                "and the exchange's order history"
            )
        reason = "stop_or_target"
        if now >= position.watch.horizon:  # our own close at the maximum holding time, booked a period late?
            closer = f"{position.client_id}x"
            if self.retry(f"looking up order {closer}", partial(self.find_order, closer)) is not None:
                reason = "max_hold"
        return self._fill(position, trades, reason)

    def close(self, position: Position, now: int, *, end_of_data: bool = False) -> Fill:
        client_id = f"{position.client_id}x"
        order = position.order
        self._submit(
            client_id,
            f"closing the {self.symbol} position ({client_id})",
            lambda: self.exchange.create_order(
                self.symbol,
                "market",
                _side(-order.direction),
                order.quantity,
                None,
                {"clientOrderId": client_id, "reduceOnly": True},
            ),
        )
        trades = self._closing_trades(position)
        if not trades:
            raise ExchangeUnavailable(  # the trade list lags the order: the next period's update books the exit
                f"closed the {self.symbol} position ({client_id}) but found no closing trade yet"
            )
        return self._fill(position, trades, "max_hold")

    # --- start-up ---

    def reconcile(self, position: Position | None, sent: list[dict[str, Any]]) -> Position | None:
        held = self.open_position()
        open_orders = self.retry("fetching open orders", lambda: self.exchange.fetch_open_orders(self.symbol))
        if position is None and sent:
            adopted = self._adopt(sent, held)
            if adopted is not None:
                return adopted
        if held is None:
            if open_orders:
                ids = ", ".join(str(o.get("clientOrderId") or o.get("id")) for o in open_orders)
                raise ReconciliationError(
                    f"the exchange has {len(open_orders)} open {self.symbol} order(s) ({ids}) but no position, which "
                    "the state cannot explain; cancel them on the exchange (or find who placed them) and start again"
                )
            return position  # a position in the state closed while the loop was down: the next update books it
        side = "long" if held.get("side") == "long" else "short"
        contracts = float(held.get("contracts") or 0)
        if position is None:
            raise ReconciliationError(
                f"the exchange holds a {side} {self.symbol} position of {contracts:g} that the state does not "
                "know; close it on the exchange (or use another account) before starting the live loop"
            )
        expected = "long" if position.order.direction == LONG else "short"
        if side != expected or not math.isclose(contracts, position.order.quantity, rel_tol=QUANTITY_TOLERANCE):
            raise ReconciliationError(
                f"the exchange holds a {side} {self.symbol} position of {contracts:g}, the state a {expected} one of "
                f"{position.order.quantity:g} ({position.client_id}); settle the difference on the exchange first"
            )
        return position

    def _adopt(self, sent: list[dict[str, Any]], held: dict[str, Any] | None) -> Position | None:
        """An order the state sent just before a crash (or whose answer was lost): if the exchange has it,
        resume its position."""
        from lstm_trading.backtest.execution import PositionWatch
        from lstm_trading.live.state import order_from

        for record in reversed(sent):
            client_id = record["client_id"]
            # Through the retry like every other request: a timeout here skips the period, never crashes the loop.
            found = self.retry(f"looking up order {client_id}", partial(self.find_order, client_id))
            if found is None:
                continue  # never reached the exchange: the loop marks it not placed
            if _unfilled(found):
                continue  # reached it but never filled (price protection, margin): no position to resume
            order = order_from(record["order"])
            if held is not None and (held.get("side") == "long") != (order.direction == LONG):
                raise ReconciliationError(
                    f"order {record['client_id']} ({_side(order.direction)}) was filled on the exchange, which now "
                    f"holds a {held.get('side')} {self.symbol} position; settle the difference on the exchange first"
                )
            # With no position left, its stop or target has closed it since: the next update books that exit
            # from the account's trades (and stops if it finds none).
            watch = PositionWatch(order, int(record["max_hold_seconds"]), self.costs)
            average = found.get("average")
            return Position(record["client_id"], watch, str(found.get("id", "")), float(average or math.nan))
        return None
