"""A fake ccxt exchange for the live loop's tests: candles, orders with SL/TP, positions, faults on demand.

It answers the ccxt methods the ingest and `broker.CcxtBroker` call, like Bybit's linear perpetuals do: market
orders fill at once at the price of the moment; an entry's `stopLoss` / `takeProfit` trigger on later candles
(the exchange side of a bracket); orders are found again by `clientOrderId`. `faults[method]` is a list of
exceptions raised on that method's next calls; `accept_then_timeout` makes `create_order` place the order and
then raise `ccxt.RequestTimeout`, as when the answer is lost on the way back.
"""

from __future__ import annotations

import math
from typing import Any, cast

import ccxt
import numpy as np
import pandas as pd

from exchange_fake_runner import FAKE_MARKETS


class SimClock:
    """A clock that jumps: `sleep` moves time on at once and is recorded."""

    def __init__(self, now: float) -> None:
        self.time = float(now)
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += max(seconds, 0.0)


class FakeCcxt:
    id = "bybit"

    def __init__(self, candles: pd.DataFrame, clock: SimClock, *, balance: float = 10_000.0) -> None:
        self.candles = candles.reset_index(drop=True)
        self.stamps = self.candles["timestamp"].to_numpy(dtype=np.int64)
        self.clock = clock
        self.balance = balance
        self.faults: dict[str, list[Exception]] = {}
        self.accept_then_timeout = 0
        self.answer_ids_only = False  # answer `create_order` as Bybit v5 does: ids, no price, no filled amount
        self.trades_lag = 0  # the next calls of `fetch_my_trades` miss the newest trade (the list lags the fills)
        self.orders_lag = 0  # the next calls of `fetch_closed_orders` miss the newest order
        self.orders: list[dict[str, Any]] = []
        self.trades: list[dict[str, Any]] = []
        self.position: dict[str, Any] | None = None
        self.extra_open_orders: list[dict[str, Any]] = []
        self.calls: dict[str, int] = {}

    # --- plumbing ---

    def _call(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        pending = self.faults.get(name)
        if pending:
            raise pending.pop(0)

    def milliseconds(self) -> int:
        return int(self.clock.now() * 1000)

    def load_markets(self) -> dict[str, Any]:
        self._call("load_markets")
        markets = cast(list[dict[str, Any]], FAKE_MARKETS)  # plain dicts; mypy infers list[object]
        return {m["symbol"]: m for m in markets}

    def featureValueByType(self, *args: Any) -> Any:  # noqa: N802  (ccxt's name)
        raise NotImplementedError

    def amount_to_precision(self, symbol: str, amount: float) -> str:
        return f"{math.floor(amount * 1000) / 1000:.3f}"

    def price_to_precision(self, symbol: str, price: float) -> str:
        return f"{round(price, 2):.2f}"

    # --- market data ---

    def fetch_ohlcv(
        self, symbol: str, timeframe: str, since: int, limit: int, params: dict[str, Any] | None = None
    ) -> list[list[Any]]:
        self._call("fetch_ohlcv")
        until = (params or {}).get("until", since + limit * 60_000)
        now_ms = self.milliseconds()
        lo = int(np.searchsorted(self.stamps * 1000, since, side="left"))
        hi = int(np.searchsorted(self.stamps * 1000, until, side="right"))
        page = self.candles.iloc[lo : min(hi, lo + limit)]
        return [
            [int(t) * 1000, float(o), float(h), float(lw), float(c), float(v)]
            for t, o, h, lw, c, v in page[["timestamp", "open", "high", "low", "close", "volume"]].itertuples(
                index=False
            )
            if int(t) * 1000 <= now_ms  # the forming minute is served too, like Bybit
        ]

    def _price_now(self) -> float:
        """The open of the minute forming now: what a market order fills at."""
        row = int(np.searchsorted(self.stamps, int(self.clock.now()) // 60 * 60, side="right")) - 1
        return float(self.candles["open"].iloc[max(row, 0)])

    # --- the exchange side of a bracket ---

    def _trigger(self) -> None:
        position = self.position
        if position is None:
            return
        closed_by = int(self.clock.now()) // 60 * 60 - 60  # open time of the last closed minute
        frame = self.candles[
            (self.candles["timestamp"] >= position["opened"]) & (self.candles["timestamp"] <= closed_by)
        ]
        long = position["side"] == "long"
        for t, high, low in frame[["timestamp", "high", "low"]].itertuples(index=False):
            stop, target = position["stop"], position["target"]
            if (long and low <= stop) or (not long and high >= stop):
                self._close(stop, int(t) * 1000 + 30_000)
                return
            if (long and high >= target) or (not long and low <= target):
                self._close(target, int(t) * 1000 + 30_000)
                return

    def _close(self, price: float, timestamp: int) -> None:
        position = self.position
        assert position is not None
        side = "sell" if position["side"] == "long" else "buy"
        self.trades.append(
            {"side": side, "amount": position["contracts"], "price": price, "timestamp": timestamp,
             "fee": {"cost": 0.00055 * price * position["contracts"]}}
        )  # fmt: skip
        self.position = None

    # --- orders ---

    def create_order(
        self, symbol: str, type: str, side: str, amount: float, price: float | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        self._call("create_order")
        client_id = params.get("clientOrderId")
        if client_id is not None and any(o["clientOrderId"] == client_id for o in self.orders):
            raise ccxt.InvalidOrder(f'bybit {{"retCode":110072,"retMsg":"OrderLinkedID is duplicate"}} {client_id}')
        self._trigger()
        fill = self._price_now()
        order = {
            "id": f"ex{len(self.orders) + 1}",
            "clientOrderId": params.get("clientOrderId"),
            "symbol": symbol,
            "type": type,
            "side": side,
            "amount": amount,
            "filled": amount,
            "average": fill,
            "status": "closed",
            "params": dict(params),
        }
        self.orders.append(order)
        now_ms = self.milliseconds()
        if params.get("reduceOnly"):
            if self.position is not None:
                self._close(fill, now_ms)
        else:
            self.position = {
                "symbol": symbol,
                "side": "long" if side == "buy" else "short",
                "contracts": amount,
                "stop": params["stopLoss"]["triggerPrice"],
                "target": params["takeProfit"]["triggerPrice"],
                "opened": int(self.clock.now()) // 60 * 60,
            }
            self.trades.append(
                {
                    "side": side,
                    "amount": amount,
                    "price": fill,
                    "timestamp": now_ms,
                    "fee": {"cost": 0.00055 * fill * amount},
                }
            )
        if self.accept_then_timeout:
            self.accept_then_timeout -= 1
            raise ccxt.RequestTimeout("bybit POST /v5/order/create timed out after 10000 ms")
        if self.answer_ids_only:
            return {**order, "amount": None, "filled": None, "average": None, "status": None}
        return dict(order)

    def fetch_open_orders(self, symbol: str | None = None, *args: Any) -> list[dict[str, Any]]:
        self._call("fetch_open_orders")
        return [dict(o) for o in self.extra_open_orders]

    def fetch_closed_orders(self, symbol: str | None = None, *args: Any) -> list[dict[str, Any]]:
        self._call("fetch_closed_orders")
        orders = self.orders
        if self.orders_lag:
            self.orders_lag -= 1
            orders = orders[:-1]
        return [dict(o) for o in orders]

    def fetch_positions(self, symbols: list[str] | None = None, params: dict[str, Any] | None = None) -> list[Any]:
        self._call("fetch_positions")
        self._trigger()
        if self.position is None:
            return []
        return [
            {"symbol": self.position["symbol"], "side": self.position["side"], "contracts": self.position["contracts"]}
        ]

    def fetch_my_trades(self, symbol: str | None = None, since: int | None = None, *args: Any) -> list[dict[str, Any]]:
        self._call("fetch_my_trades")
        self._trigger()
        trades = self.trades
        if self.trades_lag:
            self.trades_lag -= 1
            trades = trades[:-1]
        return [dict(t) for t in trades if since is None or t["timestamp"] >= since]

    def fetch_balance(self) -> dict[str, Any]:
        self._call("fetch_balance")
        return {"USDT": {"total": self.balance, "free": self.balance}}

    def entries(self) -> list[dict[str, Any]]:
        """The entry orders placed (not the closing ones)."""
        return [o for o in self.orders if not o["params"].get("reduceOnly")]
