"""Brokers: the order an exchange gets (side, size, SL, TP, client order id), retries that never double an order,
reconciliation at start, exits booked from the exchange's trades, keys only from the environment."""

from __future__ import annotations

import math
import traceback
from typing import Any

import ccxt
import numpy as np
import pandas as pd
import pytest

from fake_ccxt import FakeCcxt, SimClock
from lstm_trading.backtest.execution import LONG, SHORT, CandleArrays, Costs, Order, PositionWatch, simulate_fill
from lstm_trading.core.errors import ConfigError, DataError
from lstm_trading.live.brokers import (
    API_KEY_ENV,
    API_SECRET_ENV,
    CcxtBroker,
    Credentials,
    ExchangeUnavailable,
    PaperBroker,
    ReconciliationError,
    Retry,
    credentials_from_env,
)
from lstm_trading.live.loop import client_order_id
from lstm_trading.live.state import Position

T0 = 1_717_200_000  # 2024-06-01 00:00 UTC
SYMBOL = "ETH/USDT:USDT"
COSTS = Costs(0.00055, 0.0001)


def market(minutes: int = 120, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 3000 * np.exp(np.cumsum(rng.normal(0, 0.001, minutes)))
    open_ = np.concatenate([[3000.0], close[:-1]])
    spread = np.abs(rng.normal(0, 2, minutes))
    return pd.DataFrame(
        {
            "timestamp": T0 + 60 * np.arange(minutes, dtype=np.int64),
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": 1.0,
        }
    )


def order(at: int = T0 + 600, direction: int = LONG, quantity: float = 1.234, entry: float = 3000.0) -> Order:
    stop, target = (entry * 0.99, entry * 1.015) if direction == LONG else (entry * 1.01, entry * 0.985)
    return Order(at, direction, quantity, entry, stop, target, 1.0, 1.5, 0.7)


def broker_for(fake: FakeCcxt, sleeps: list[float] | None = None, retries: int = 3) -> CcxtBroker:
    sleeps = sleeps if sleeps is not None else []
    return CcxtBroker(fake, SYMBOL, COSTS, Retry(retries, 1.0, sleeps.append))


def position_of(chosen: Order, client_id: str = "cid-1") -> Position:
    return Position(client_id, PositionWatch(chosen, 3600, COSTS))


@pytest.fixture
def fake() -> FakeCcxt:
    return FakeCcxt(market(), SimClock(T0 + 605))


def test_market_order_carries_side_size_stop_target_and_client_id(fake: FakeCcxt) -> None:
    placed = broker_for(fake).place(order(direction=SHORT), "lt0001-1717200600")
    (sent,) = fake.orders
    assert (sent["symbol"], sent["type"], sent["side"], sent["amount"]) == (SYMBOL, "market", "sell", 1.234)
    assert sent["params"] == {
        "clientOrderId": "lt0001-1717200600",
        "stopLoss": {"triggerPrice": 3030.0},
        "takeProfit": {"triggerPrice": 2955.0},
    }
    assert placed.order_id == "ex1" and placed.quantity == 1.234 and placed.average == fake._price_now()


def test_timeout_after_the_exchange_took_the_order_finds_it_and_never_places_it_twice(fake: FakeCcxt) -> None:
    fake.accept_then_timeout = 1
    sleeps: list[float] = []
    placed = broker_for(fake, sleeps).place(order(), "cid-7")
    assert len(fake.entries()) == 1 and placed.order_id == "ex1"
    assert sleeps == [1.0] and fake.calls["fetch_closed_orders"] == 1  # looked up before any second try


def test_timeout_before_the_exchange_took_the_order_places_it_once_on_retry(fake: FakeCcxt) -> None:
    fake.faults["create_order"] = [ccxt.RequestTimeout("timed out"), ccxt.NetworkError("connection reset")]
    sleeps: list[float] = []
    broker_for(fake, sleeps).place(order(), "cid-8")
    assert [o["clientOrderId"] for o in fake.orders] == ["cid-8"]
    assert sleeps == [1.0, 2.0]  # exponential backoff


def test_retries_exhausted_raise_exchange_unavailable_naming_the_order(fake: FakeCcxt) -> None:
    fake.faults["create_order"] = [ccxt.RequestTimeout("timed out")] * 3
    with pytest.raises(ExchangeUnavailable, match=r"placing buy 1.234 ETH/USDT:USDT \(cid-9\) failed 3 times"):
        broker_for(fake, retries=2).place(order(), "cid-9")
    assert fake.orders == []


def test_refused_order_is_a_data_error_without_retry(fake: FakeCcxt) -> None:
    fake.faults["create_order"] = [ccxt.InsufficientFunds("ab not enough for new order")]
    with pytest.raises(DataError, match="refused by the exchange: InsufficientFunds: ab not enough"):
        broker_for(fake).place(order(), "cid-10")


def test_position_closed_by_the_exchange_stop_is_booked_from_its_trades() -> None:
    candles = market()
    chosen = order(at=T0 + 600, entry=float(candles["open"].iloc[10]))
    candles.loc[20, "low"] = chosen.stop - 5  # the stop triggers in the minute opened at T0 + 1200
    fake = FakeCcxt(candles, SimClock(T0 + 605))
    broker = broker_for(fake)
    placed = broker.place(chosen, "cid-2")
    position = position_of(chosen, "cid-2")
    position.entry_executed = placed.average
    fake.clock.time = T0 + 900
    assert broker.update(position, CandleArrays.from_frame(candles.iloc[:0]), T0 + 900) is None  # still open
    fake.clock.time = T0 + 1800
    fill = broker.update(position, CandleArrays.from_frame(candles.iloc[:0]), T0 + 1800)
    assert fill is not None and fill.reason == "stop_loss" and fill.exit_price == pytest.approx(chosen.stop, abs=0.01)
    assert fill.exit_time == T0 + 1260
    fees = 0.00055 * chosen.quantity * (placed.average + fill.exit_price)  # the entry's and the exit's
    assert fill.fees == pytest.approx(fees)
    assert fill.pnl == pytest.approx(chosen.quantity * (fill.exit_price - placed.average) - fees)


def test_close_at_max_hold_is_a_reduce_only_market_order(fake: FakeCcxt) -> None:
    broker = broker_for(fake)
    chosen = order(entry=fake._price_now(), quantity=0.5)
    chosen = Order(chosen.at, LONG, 0.5, chosen.entry, 1.0, 1e9, 1.0, 1.0, 0.6)  # levels nothing reaches
    broker.place(chosen, "cid-3")
    fake.clock.time = T0 + 3600 + 5
    fill = broker.close(position_of(chosen, "cid-3"), T0 + 3600)
    closing = fake.orders[-1]
    assert closing["side"] == "sell" and closing["params"] == {"clientOrderId": "cid-3x", "reduceOnly": True}
    assert fill.reason == "max_hold" and fake.position is None


def test_reconcile_resumes_a_matching_position(fake: FakeCcxt) -> None:
    broker = broker_for(fake)
    chosen = order()
    broker.place(chosen, "cid-4")
    position = position_of(chosen, "cid-4")
    assert broker.reconcile(position, []) is position


def test_reconcile_stops_on_a_position_the_state_does_not_know(fake: FakeCcxt) -> None:
    broker_for(fake).place(order(), "someone-else")
    with pytest.raises(ReconciliationError) as caught:
        broker_for(fake).reconcile(None, [])
    assert str(caught.value) == (
        "the exchange holds a long ETH/USDT:USDT position of 1.234 that the state does not know; close it on the "
        "exchange (or use another account) before starting the live loop"
    )


def test_reconcile_stops_on_another_size_or_side(fake: FakeCcxt) -> None:
    broker_for(fake).place(order(quantity=2.0), "cid-5")
    with pytest.raises(ReconciliationError, match=r"position of 2, the state a long one of 1.234 \(cid-5\)"):
        broker_for(fake).reconcile(position_of(order(), "cid-5"), [])


def test_reconcile_stops_on_open_orders_without_a_position(fake: FakeCcxt) -> None:
    fake.extra_open_orders = [{"id": "x1", "clientOrderId": "manual-1", "symbol": SYMBOL}]
    with pytest.raises(ReconciliationError, match=r"1 open ETH/USDT:USDT order\(s\) \(manual-1\) but no position"):
        broker_for(fake).reconcile(None, [])


def test_reconcile_adopts_an_order_sent_just_before_a_crash(fake: FakeCcxt) -> None:
    chosen = order()
    broker_for(fake).place(chosen, "cid-6")  # the exchange filled it; the state only wrote `sent`
    sent = [{"client_id": "cid-6", **position_of(chosen, "cid-6").record()}]
    adopted = broker_for(fake).reconcile(None, sent)
    assert adopted is not None and adopted.client_id == "cid-6" and adopted.order == chosen
    assert len(fake.entries()) == 1


def test_reconcile_ignores_a_sent_order_the_exchange_never_got(fake: FakeCcxt) -> None:
    sent = [{"client_id": "cid-lost", **position_of(order(), "cid-lost").record()}]
    assert broker_for(fake).reconcile(None, sent) is None


def test_paper_broker_fills_as_the_backtest_in_any_cut_of_the_candles() -> None:
    candles = CandleArrays.from_frame(market(300, seed=4))
    chosen = order(at=int(candles.timestamp[5]), entry=float(candles.open[5]))
    expected = simulate_fill(candles, 5, chosen, max_hold_seconds=3600, costs=COSTS)
    position = position_of(chosen)
    paper = PaperBroker()
    fill = None
    for cut in range(5, 300, 7):
        fill = paper.update(
            position, candles.between(int(candles.timestamp[cut]), int(candles.timestamp[cut]) + 420), 0
        )
        if fill is not None:
            break
    fill = fill or paper.close(position, 0)
    assert (fill.exit_time, fill.exit_price, fill.reason, fill.pnl) == (
        expected.exit_time,
        expected.exit_price,
        expected.reason,
        expected.pnl,
    )


def test_missing_api_key_is_a_clear_error_naming_the_variables() -> None:
    with pytest.raises(ConfigError) as caught:
        credentials_from_env({API_SECRET_ENV: "s3cr3t"})
    assert str(caught.value) == (
        "live mode needs the exchange API keys in the environment: LSTM_TRADING_API_KEY is not set (keys are read "
        "from LSTM_TRADING_API_KEY and LSTM_TRADING_API_SECRET only, never from flags or files)"
    )
    with pytest.raises(ConfigError, match="LSTM_TRADING_API_KEY and LSTM_TRADING_API_SECRET are not set"):
        credentials_from_env({})


def test_credentials_never_show_in_their_repr() -> None:
    credentials = credentials_from_env({API_KEY_ENV: "key-abc", API_SECRET_ENV: "secret-xyz"})
    assert credentials == Credentials("key-abc", "secret-xyz")
    assert "secret-xyz" not in repr(credentials) and "key-abc" not in repr(credentials)


def test_client_order_ids_are_stable_short_and_distinct() -> None:
    a = client_order_id("live", "ETHUSDT", T0)
    assert a == client_order_id("live", "ETHUSDT", T0) and len(a) <= 36  # Bybit's orderLinkId limit
    assert len({a, client_order_id("paper", "ETHUSDT", T0), client_order_id("live", "ETHUSDT", T0 + 900)}) == 3


def test_exchange_errors_that_echo_the_keys_are_blanked_out(fake: FakeCcxt) -> None:
    credentials_from_env({API_KEY_ENV: "key-echoed-1", API_SECRET_ENV: "secret-echoed-2"})
    fake.faults["create_order"] = [ccxt.AuthenticationError("bybit POST apiKey=key-echoed-1 sign=secret-echoed-2")]
    with pytest.raises(DataError) as caught:
        broker_for(fake).place(order(), "cid-11")
    assert str(caught.value).endswith("AuthenticationError: bybit POST apiKey=*** sign=***")


@pytest.mark.parametrize(
    "fault",
    [
        ccxt.AuthenticationError("bybit POST apiKey=key-debug-1 sign=secret-debug-2"),  # refused: no retry
        ccxt.RequestTimeout("bybit POST apiKey=key-debug-1 sign=secret-debug-2 timed out"),  # retried, then given up
    ],
)
def test_a_debug_traceback_of_an_exchange_error_shows_no_key(fake: FakeCcxt, fault: Exception) -> None:
    """`--debug` prints the whole chain of causes: the exchange's own error must come blanked out too."""
    credentials_from_env({API_KEY_ENV: "key-debug-1", API_SECRET_ENV: "secret-debug-2"})
    fake.faults["create_order"] = [fault] * 10
    fake.faults["fetch_open_orders"] = [fault] * 10
    fake.faults["fetch_closed_orders"] = [fault] * 10
    with pytest.raises((DataError, ExchangeUnavailable)) as caught:
        broker_for(fake).place(order(), "cid-12")
    printed = "".join(traceback.format_exception(caught.value))
    assert type(fault).__name__ in printed and "apiKey=*** sign=***" in printed
    assert "key-debug-1" not in printed and "secret-debug-2" not in printed


def test_a_quantity_below_the_lot_size_rounds_to_zero_not_an_error(
    fake: FakeCcxt, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = broker_for(fake)
    assert broker.quantity(1.23456) == 1.234

    def refuse(symbol: str, amount: float) -> str:
        raise ccxt.InvalidOrder("bybit amount of ETH/USDT:USDT must be greater than minimum amount precision of 0.01")

    monkeypatch.setattr(fake, "amount_to_precision", refuse)
    assert broker.quantity(0.001) == 0.0


def test_reconcile_stops_when_a_sent_order_filled_but_the_exchange_holds_the_other_side(fake: FakeCcxt) -> None:
    chosen = order(direction=LONG)
    broker_for(fake).place(chosen, "cid-12")
    fake.position = {**fake.position, "side": "short"}  # type: ignore[dict-item]
    sent = [{"client_id": "cid-12", **position_of(chosen, "cid-12").record()}]
    with pytest.raises(ReconciliationError, match=r"order cid-12 \(buy\) was filled on the exchange, which now holds"):
        broker_for(fake).reconcile(None, sent)


def test_an_adopted_order_whose_stop_closed_it_meanwhile_is_booked_from_the_trades() -> None:
    candles = market()
    chosen = order(at=T0 + 600, entry=float(candles["open"].iloc[10]))
    candles.loc[12, "low"] = chosen.stop - 5
    fake = FakeCcxt(candles, SimClock(T0 + 605))
    broker_for(fake).place(chosen, "cid-13")
    fake.clock.time = T0 + 1500  # the stop triggered while the loop did not know the order was placed
    sent = [{"client_id": "cid-13", **position_of(chosen, "cid-13").record()}]
    adopted = broker_for(fake).reconcile(None, sent)
    assert adopted is not None
    fill = broker_for(fake).update(adopted, CandleArrays.from_frame(candles.iloc[:0]), T0 + 1500)
    assert fill is not None and fill.reason == "stop_loss" and fill.exit_time == T0 + 780


def test_a_timeout_while_looking_up_a_sent_order_is_retried_not_raised(fake: FakeCcxt) -> None:
    chosen = order()
    broker_for(fake).place(chosen, "cid-14")
    fake.faults["fetch_closed_orders"] = [ccxt.RequestTimeout("timed out")]  # the look-up by client id times out
    sleeps: list[float] = []
    sent = [{"client_id": "cid-14", **position_of(chosen, "cid-14").record()}]
    adopted = broker_for(fake, sleeps).reconcile(None, sent)
    assert adopted is not None and adopted.client_id == "cid-14" and sleeps == [1.0]
    fake.faults["fetch_closed_orders"] = [ccxt.RequestTimeout("timed out")] * 4
    with pytest.raises(ExchangeUnavailable, match="looking up order cid-14 failed 4 times"):
        broker_for(fake).reconcile(None, sent)


def test_live_pnl_counts_the_price_the_entry_filled_at_when_the_order_answer_has_none() -> None:
    candles = market()
    chosen = order(at=T0 + 600, entry=3000.0)  # the levels' reference; the market fills elsewhere
    candles.loc[20, "low"] = chosen.stop - 5
    fake = FakeCcxt(candles, SimClock(T0 + 605))
    fake.answer_ids_only = True  # Bybit's create answer: ids only
    broker = broker_for(fake)
    placed = broker.place(chosen, "cid-15")
    assert placed.order_id == "ex1" and math.isnan(placed.average)
    position = position_of(chosen, "cid-15")
    position.entry_executed = placed.average
    fake.clock.time = T0 + 1800
    fill = broker.update(position, CandleArrays.from_frame(candles.iloc[:0]), T0 + 1800)
    paid = fake.trades[0]["price"]
    assert paid != chosen.entry and fill is not None and fill.entry_executed == paid
    assert fill.pnl == pytest.approx(chosen.quantity * (fill.exit_price - paid) - fill.fees)


def test_an_exit_missing_from_a_lagging_trade_list_skips_the_period_and_is_booked_next_time() -> None:
    candles = market()
    chosen = order(at=T0 + 600, entry=float(candles["open"].iloc[10]))
    candles.loc[20, "low"] = chosen.stop - 5
    fake = FakeCcxt(candles, SimClock(T0 + 605))
    broker = broker_for(fake)
    broker.place(chosen, "cid-16")
    position = position_of(chosen, "cid-16")
    none = CandleArrays.from_frame(candles.iloc[:0])
    fake.clock.time = T0 + 1800
    fake.trades_lag = 1  # the stop's trade is not listed yet
    with pytest.raises(ExchangeUnavailable, match=r"is gone from the exchange, but no closing trade was found yet"):
        broker.update(position, none, T0 + 1800)
    fill = broker.update(position, none, T0 + 2100)
    assert fill is not None and fill.reason == "stop_loss"


def test_a_max_hold_close_whose_trade_is_not_listed_yet_skips_the_period(fake: FakeCcxt) -> None:
    broker = broker_for(fake)
    chosen = Order(T0 + 600, LONG, 0.5, fake._price_now(), 1.0, 1e9, 1.0, 1.0, 0.6)  # levels nothing reaches
    broker.place(chosen, "cid-17")
    fake.clock.time = T0 + 4200 + 5  # the horizon: entry at T0 + 600, held 1 h
    fake.trades_lag = 1
    with pytest.raises(ExchangeUnavailable, match=r"closed the ETH/USDT:USDT position \(cid-17x\) but found no"):
        broker.close(position_of(chosen, "cid-17"), T0 + 4200)
    assert fake.position is None
    fill = broker.update(position_of(chosen, "cid-17"), CandleArrays.from_frame(market().iloc[:0]), T0 + 4500)
    assert fill is not None and fill.exit_price == fake.trades[-1]["price"] and fill.reason == "max_hold"


def test_an_order_not_yet_listed_after_a_timeout_is_refused_as_a_duplicate_and_adopted_later(fake: FakeCcxt) -> None:
    """The last guard against a double order: the retry reuses the client order id, which the exchange refuses."""
    chosen = order()
    fake.accept_then_timeout = 1
    fake.orders_lag = 1  # the look-up before the retry does not see the order yet
    with pytest.raises(DataError, match="refused by the exchange: InvalidOrder: .*OrderLinkedID is duplicate"):
        broker_for(fake).place(chosen, "cid-18")
    assert len(fake.entries()) == 1
    sent = [{"client_id": "cid-18", **position_of(chosen, "cid-18").record()}]
    adopted = broker_for(fake).reconcile(None, sent)
    assert adopted is not None and adopted.client_id == "cid-18" and len(fake.entries()) == 1


def test_a_sent_order_the_exchange_cancelled_unfilled_is_not_resumed(fake: FakeCcxt) -> None:
    chosen = order()
    broker_for(fake).place(chosen, "cid-19")
    fake.orders[-1].update(status="canceled", filled=0.0)  # e.g. Bybit's price protection on a market order
    fake.position, fake.trades = None, []
    sent = [{"client_id": "cid-19", **position_of(chosen, "cid-19").record()}]
    assert broker_for(fake).reconcile(None, sent) is None


def test_an_order_found_cancelled_after_a_timeout_opens_no_position(fake: FakeCcxt) -> None:
    create = fake.create_order

    def taken_then_cancelled(*args: Any) -> dict[str, Any]:
        try:
            return create(*args)
        finally:
            fake.orders[-1].update(status="canceled", filled=0.0)
            fake.position, fake.trades = None, []

    fake.create_order = taken_then_cancelled  # type: ignore[method-assign,assignment]
    fake.accept_then_timeout = 1
    with pytest.raises(DataError, match="order cid-20 was canceled by the exchange unfilled; no position opened"):
        broker_for(fake).place(order(), "cid-20")
    assert len(fake.orders) == 1
