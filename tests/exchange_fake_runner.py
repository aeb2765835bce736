"""A fake exchange serving real candles, and a runner that puts it behind `lstm-trading ingest exchange`.

`FakeExchange` implements `OhlcvSource` like Bybit answers `fetch_ohlcv` with `since` and `until`: the candles
opened in that span, sorted, at most `limit` (and at most its page size), with injected faults.

Run as a script, it runs the real CLI in this process with the fake in place of ccxt, so a test can kill it:

    python tests/exchange_fake_runner.py CSV FIRST_ROW ROWS PAGE_LIMIT BLOCK_AT_CALL -- <lstm-trading args>

On fetch call number BLOCK_AT_CALL (1-based; 0: never) it prints `blocked at call N` and waits on stdin, so
every page before it is stored and the test can SIGKILL it at a known point.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lstm_trading.core.errors import ConfigError
from lstm_trading.core.timeutil import to_unix_seconds
from lstm_trading.data import exchange

FAKE_MARKETS = [
    {"id": "ETHUSDT", "symbol": "ETH/USDT:USDT", "base": "ETH", "quote": "USDT", "settle": "USDT", "swap": True,
     "linear": True},
    {"id": "ETHUSDT", "symbol": "ETH/USDT", "base": "ETH", "quote": "USDT", "settle": None, "spot": True},
    {"id": "BTCUSDT", "symbol": "BTC/USDT:USDT", "base": "BTC", "quote": "USDT", "settle": "USDT", "swap": True,
     "linear": True},
]  # fmt: skip


def load_candles(csv: Path, first_row: int, rows: int) -> pd.DataFrame:
    """A slice of a real candle CSV as a candle frame (open time in UTC seconds)."""
    frame = pd.read_csv(csv, skiprows=range(1, first_row + 1), nrows=rows)
    frame["timestamp"] = to_unix_seconds(frame["timestamp"])
    return frame.astype({"timestamp": np.int64}).reset_index(drop=True)


class FakeExchange:
    """Serves `candles` like an exchange; `faults[call]` is raised on that fetch call (1-based).

    `missing` open times are absent (a real gap on the exchange); `edit(call, rows)` may rewrite a page (bad rows);
    `now_ms` is the exchange's clock. Every request is recorded in `requests` as (since_ms, limit, until_ms).
    """

    exchange_id = "fakex"

    def __init__(
        self,
        candles: pd.DataFrame,
        *,
        now_ms: int,
        page_limit: int = 200,
        market: str = "linear",
        faults: dict[int, Exception] | None = None,
        missing: set[int] | None = None,
        edit: Callable[[int, list[list[Any]]], list[list[Any]]] | None = None,
        on_fetch: Callable[[int], None] | None = None,
    ) -> None:
        keep = ~candles["timestamp"].isin(sorted(missing or set()))
        self.candles = candles[keep].reset_index(drop=True)
        self.stamps_ms = self.candles["timestamp"].to_numpy(dtype=np.int64) * 1000
        self.now_ms = now_ms
        self.page_limit = page_limit
        self.market = market
        self.faults = dict(faults or {})
        self.edit = edit
        self.on_fetch = on_fetch
        self.calls = 0
        self.requests: list[tuple[int, int, int]] = []

    def resolve_symbol(self, name: str) -> str:
        return exchange.unified_symbol(FAKE_MARKETS, name, self.market, self.exchange_id)

    def fetch_ohlcv(self, symbol: str, since_ms: int, limit: int, until_ms: int) -> list[list[Any]]:
        self.calls += 1
        if self.on_fetch:
            self.on_fetch(self.calls)
        self.requests.append((since_ms, limit, until_ms))
        if self.calls in self.faults:
            raise self.faults[self.calls]
        if limit > self.page_limit:
            raise ConfigError(f"fake exchange: limit {limit} above its page size {self.page_limit}")
        lo = int(np.searchsorted(self.stamps_ms, since_ms, side="left"))
        hi = int(np.searchsorted(self.stamps_ms, until_ms, side="right"))
        hi = min(hi, lo + limit)
        page = self.candles.iloc[lo:hi]
        rows: list[list[Any]] = [
            [int(t) * 1000, float(o), float(h), float(lo_), float(c), float(v)]
            for t, o, h, lo_, c, v in page[["timestamp", "open", "high", "low", "close", "volume"]].itertuples(
                index=False
            )
        ]
        # Like Bybit, the exchange also serves the still-forming minute when the span reaches it.
        forming = (self.now_ms // 60_000) * 60_000
        if since_ms <= forming <= until_ms and len(rows) < limit and forming not in self.stamps_ms[lo:hi]:
            rows.append([forming, 1.0, 1.0, 1.0, 1.0, 1.0])
        return self.edit(self.calls, rows) if self.edit else rows

    def milliseconds(self) -> int:
        return self.now_ms


def _block(call: int, block_at: int) -> None:
    if call == block_at:
        print(f"blocked at call {call}", flush=True)
        sys.stdin.read()  # the test kills this process here


def main(argv: list[str]) -> None:
    csv, first_row, rows, page_limit, block_at = argv[:5]
    assert argv[5] == "--"
    candles = load_candles(Path(csv), int(first_row), int(rows))
    now_ms = int(candles["timestamp"].iloc[-1]) * 1000 + 30_000  # the last row is still forming
    fake = FakeExchange(
        candles, now_ms=now_ms, page_limit=int(page_limit), on_fetch=lambda call: _block(call, int(block_at))
    )
    exchange.source_factory = lambda exchange_id, market, page_limit=None: fake
    from lstm_trading.cli import app

    app(argv[6:], prog_name="lstm-trading")


if __name__ == "__main__":
    main(sys.argv[1:])
