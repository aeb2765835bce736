"""Where the live loop's candles and time come from: the wall clock or a simulated one, the exchange (ingested
into the candle store each period) or stored candles (the replay)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from lstm_trading.backtest.execution import CandleArrays
from lstm_trading.core.errors import DataError
from lstm_trading.core.timeutil import MINUTE, format_time
from lstm_trading.live.brokers import ExchangeUnavailable, Retry, redact, redacted

LATE_GRACE_S = 30  # a loop that starts this soon after a boundary still acts on it


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
