"""Where the live loop's candles and time come from: the wall clock or a simulated one, the exchange (ingested
into the candle store each period), the candle store as another process keeps it current (`--feed db`), or
stored candles (the replay)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from lstm_trading.backtest.execution import CandleArrays
from lstm_trading.core.errors import DataError
from lstm_trading.core.timeutil import MINUTE, format_time
from lstm_trading.live.brokers import ExchangeUnavailable, Retry, redact, redacted

LATE_GRACE_S = 30  # a loop that starts this soon after a boundary still acts on it
FEEDS = ("exchange", "db")  # `--feed`: ingest from the exchange each period, or read what cron ingests
DB_POLL_S = 5.0  # the database feed looks for a minute this often while it waits for it to land


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The wall clock: the live loop waits for each period boundary."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


def next_moment(now: float, every: int, after: int | None) -> int:
    """The first boundary to act on: not one long past (the market moved on), and after the last one done."""
    moment = -(-int(now - LATE_GRACE_S) // every) * every
    if after is not None and moment <= after:
        moment = after + every
    return moment


# --- where candles come from ---


class Feed(Protocol):
    def advance(self, now: int) -> None:
        """Bring the candles closed by `now` within reach."""
        ...

    def closed(self, start: int, now: int) -> CandleArrays:
        """The candles opened at or after `start` and closed by `now`."""
        ...

    def open_at(self, at: int) -> float | None:
        """The open of the candle opening at `at` (the entry price of a decision at `at`); None if it has none."""
        ...


class ReplayFeed:
    """Stored candles as if they arrived live: only candles closed by each moment are ever handed out."""

    def __init__(self, period: CandleArrays) -> None:
        self.period = period

    def advance(self, now: int) -> None:
        return None

    def closed(self, start: int, now: int) -> CandleArrays:
        return self.period.between(start, now - MINUTE + 1)

    def open_at(self, at: int) -> float | None:
        row = self.period.index_at(at)
        return None if row is None else float(self.period.open[row])


class ExchangeFeed:
    """The candle store kept current from the exchange (`data.exchange.ingest`), one request per period: for the
    traded symbol and for each symbol the model reads beside it (`others`, `features.with_symbols`)."""

    def __init__(self, db: Path, source: Any, symbol: str, retry: Retry, others: Sequence[str] = ()) -> None:
        from lstm_trading.data.store import CandleStore

        self.db = db
        self.source = source
        self.symbol = symbol
        self.others = tuple(others)
        self.retry = retry
        self.store = CandleStore(db, create=True)
        self._exchange_symbol: str | None = None

    @property
    def exchange_symbol(self) -> str:
        if self._exchange_symbol is None:
            self._exchange_symbol = self.retry("loading the markets", lambda: self.source.resolve_symbol(self.symbol))
        return self._exchange_symbol

    def advance(self, now: int) -> None:
        from lstm_trading.data.exchange import ingest

        for symbol in (self.symbol, *self.others):
            try:
                ingest(
                    self.store,
                    self.source,
                    symbol,
                    retries=self.retry.retries,
                    backoff_s=self.retry.backoff_s,
                    sleep=self.retry.sleep,
                )
            except DataError as error:
                where = "" if symbol == self.symbol else f" {symbol}"
                raise ExchangeUnavailable(f"ingest{where}: {redact(str(error))}") from redacted(error)

    def closed(self, start: int, now: int) -> CandleArrays:
        return CandleArrays.from_frame(self.store.read(self.symbol, start, now - MINUTE + 1))

    def open_at(self, at: int) -> float | None:
        symbol = self.exchange_symbol
        rows = self.retry(
            f"fetching the {self.symbol} candle opening at {format_time(at)}",
            lambda: self.source.fetch_ohlcv(symbol, at * 1000, 1, at * 1000),
        )
        for row in rows:
            if int(row[0]) == at * 1000:
                return float(row[1])
        return None

    def close(self) -> None:
        self.store.close()


class DatabaseFeed:
    """The candle store as another process keeps it current (`ingest exchange` from cron): no network at all.

    A period waits until its last minute (the candle opening at `now - 60`) has landed for the traded symbol and
    each of `others`, polling on the loop's clock, up to `wait_s` after that minute closed; the entry waits the
    same way for the candle opening at the moment, which lands about a minute later. The connection reads in
    autocommit mode, so each poll sees what the other process committed since (SQLite's WAL).
    """

    def __init__(
        self,
        db: Path,
        symbol: str,
        clock: Clock,
        *,
        wait_s: float,
        others: Sequence[str] = (),
        write: Callable[[str, dict[str, Any], str], None] | None = None,
        poll_s: float = DB_POLL_S,
    ) -> None:
        from lstm_trading.data.store import CandleStore

        self.db = db
        self.symbol = symbol
        self.others = tuple(others)
        self.clock = clock
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.write = write  # the loop's log (`DecisionLog.write`): says why a decision had no entry
        self.store = CandleStore(db)  # not created: the loop checked that it holds the symbol's candles

    def advance(self, now: int) -> None:
        minute = now - MINUTE  # the period's last minute: the window at `now` ends with it
        missing = self._wait_for((self.symbol, *self.others), minute)
        if missing is not None:
            raise DataError(f"{self._not_landed(missing, minute)}; no decision this period")

    def closed(self, start: int, now: int) -> CandleArrays:
        return CandleArrays.from_frame(self.store.read(self.symbol, start, now - MINUTE + 1))

    def open_at(self, at: int) -> float | None:
        if self._wait_for((self.symbol,), at) is None:
            rows = self.store.read(self.symbol, at, at + MINUTE)
            if not rows.empty:
                return float(rows["open"].iloc[0])
            message = (  # a later minute landed first: the exchange has none at `at` (no trade in it)
                f"the {self.symbol} candle opening at {format_time(at)} is not in {self.db}, and later ones are: "
                "the exchange has none; no entry (reason no_candle)"
            )
        else:
            message = f"{self._not_landed(self.symbol, at, opening=True)}; no entry (reason no_candle)"
        if self.write is not None:
            self.write(
                "feed",
                {"at": at, "at_utc": format_time(at), "symbol": self.symbol, "wait_s": self.wait_s, "message": message},
                f"{format_time(at)}  {message}",
            )
        return None

    def close(self) -> None:
        self.store.close()

    def _settled(self, symbol: str, minute: int) -> bool:
        """The candle opening at `minute` is stored, or a later one is: `ingest exchange` stores closed minutes in
        order, so the exchange has none at `minute` (a minute without trades) and waiting would not bring it."""
        newest = self.store.read_last(symbol, 1)  # one indexed row, not a count over years of minutes
        return not newest.empty and int(newest["timestamp"].iloc[-1]) >= minute

    def _wait_for(self, symbols: Sequence[str], minute: int) -> str | None:
        """Poll until the minute opening at `minute` is settled (`_settled`) for every symbol, at most until
        `wait_s` after it closed; the first symbol still waited for then, None when all are settled."""
        deadline = minute + MINUTE + self.wait_s
        missing = list(symbols)
        while True:
            missing = [symbol for symbol in missing if not self._settled(symbol, minute)]
            if not missing:
                return None
            left = deadline - self.clock.now()
            if left <= 0:
                return missing[0]
            self.clock.sleep(min(self.poll_s, left))

    def _not_landed(self, symbol: str, minute: int, *, opening: bool = False) -> str:
        """Which minute did not land, and the cron line that should have written it (first: the console cuts
        an error's line at 200 characters)."""
        which = (
            f"candle opening at {format_time(minute)}"
            if opening
            else f"minute closed at {format_time(minute + MINUTE)}"
        )
        held = self.store.time_range(symbol)
        newest = "none stored" if held is None else f"newest: closed at {format_time(held[1] + MINUTE)}"
        return (
            f"the {symbol} {which} did not land within --feed-wait {self.wait_s:g}s: is "
            f"`lstm-trading ingest exchange --db {self.db} --symbol {symbol} -q` in cron? ({newest})"
        )
