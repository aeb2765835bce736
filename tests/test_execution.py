"""The decision-and-fill rules of DESIGN.md "Backtest fills", each checked by hand on a few constructed candles."""

from __future__ import annotations

import numpy as np
import pytest

from lstm_trading.backtest.execution import (
    LONG,
    SHORT,
    CandleArrays,
    Costs,
    DailyLossLimit,
    Order,
    Trader,
    bracket_prices,
    decide,
    decision_text,
    expected_value_pct,
    position_quantity,
    round_trip_pct,
    simulate_fill,
)
from lstm_trading.backtest.simulation import simulate
from lstm_trading.core.config import BacktestConfig

T0 = 1_704_067_200  # 2024-01-01 00:00 UTC
FREE = BacktestConfig(fee=0.0, slippage=0.0, max_hold_seconds=86_400)


def candles(*rows: tuple[float, float, float, float], start: int = T0) -> CandleArrays:
    """Candles from (open, high, low, close) rows, one minute apart from `start`."""
    ohlc = np.array(rows, dtype=np.float64)
    timestamps = start + 60 * np.arange(len(rows), dtype=np.int64)
    return CandleArrays(timestamps, ohlc[:, 0], ohlc[:, 1], ohlc[:, 2], ohlc[:, 3])


def order(direction: int, entry: float = 100.0, sl_pct: float = 2.0, tp_pct: float = 3.0, at: int = T0) -> Order:
    stop, target = bracket_prices(direction, entry, sl_pct, tp_pct)
    return Order(at, direction, 1.0, entry, stop, target, sl_pct, tp_pct, 0.9)


def fill(market: CandleArrays, chosen: Order, *, hold: int = 86_400, costs: Costs = Costs(0.0, 0.0), **kw):  # type: ignore[no-untyped-def]
    return simulate_fill(market, 0, chosen, max_hold_seconds=hold, costs=costs, **kw)


def test_levels_come_from_the_entry_open_on_the_right_sides() -> None:
    assert bracket_prices(LONG, 100.0, 2.0, 3.0) == pytest.approx((98.0, 103.0))
    assert bracket_prices(SHORT, 100.0, 2.0, 3.0) == pytest.approx((102.0, 97.0))


def test_take_profit_then_exit_at_the_target_price() -> None:
    market = candles((100, 101, 99.5, 100.5), (100.5, 103.5, 100, 103), (103, 110, 90, 100))
    result = fill(market, order(LONG))
    assert (result.reason, result.exit_index, result.exit_price) == ("take_profit", 1, pytest.approx(103.0))
    assert result.exit_time == T0 + 2 * 60  # the close of the exit candle
    assert result.pnl == pytest.approx(3.0)
    assert not result.same_candle


def test_stop_first_when_stop_and_target_fall_in_one_candle() -> None:
    market = candles((100, 101, 99.5, 100.5), (100.5, 104, 97, 101))
    pessimistic = fill(market, order(LONG))
    assert (pessimistic.reason, pessimistic.exit_price, pessimistic.same_candle) == ("stop_loss", 98.0, True)
    assert pessimistic.pnl == pytest.approx(-2.0)
    optimistic = fill(market, order(LONG), same_candle="target")
    assert (optimistic.reason, optimistic.exit_price, optimistic.same_candle) == ("take_profit", 103.0, True)
    short = fill(market, order(SHORT, sl_pct=3.5, tp_pct=2.5))  # stop 103.5, target 97.5: both inside candle 1
    assert (short.reason, short.exit_price, short.same_candle) == ("stop_loss", pytest.approx(103.5), True)


def test_the_entry_candle_itself_is_checked() -> None:
    market = candles((100, 100.5, 97.9, 99), (99, 200, 50, 99))
    result = fill(market, order(LONG))
    assert (result.reason, result.exit_index, result.exit_price) == ("stop_loss", 0, 98.0)


def test_a_gap_through_the_stop_fills_at_the_open() -> None:
    long_gap = candles((100, 100.5, 99.5, 100), (96, 97, 95, 96.5))
    result = fill(long_gap, order(LONG))
    assert (result.reason, result.exit_price) == ("stop_loss", 96.0)  # the worse price, not the stop's 98
    assert result.pnl == pytest.approx(-4.0)
    short_gap = candles((100, 100.5, 99.5, 100), (104, 105, 103.5, 104))
    result = fill(short_gap, order(SHORT))
    assert (result.reason, result.exit_price) == ("stop_loss", 104.0)
    assert result.pnl == pytest.approx(-4.0)


def test_a_gap_through_the_target_fills_at_the_target_never_better() -> None:
    market = candles((100, 100.5, 99.5, 100), (105, 106, 96, 105))  # opens above 103; the low would hit the stop
    result = fill(market, order(LONG))
    assert (result.reason, result.exit_price, result.same_candle) == ("take_profit", 103.0, False)


def test_exit_at_the_close_after_the_maximum_holding_time() -> None:
    market = candles((100, 101, 99, 100), (100, 101, 99, 100.5), (100.5, 101, 99, 101.25), (101, 150, 50, 120))
    result = fill(market, order(LONG), hold=180)  # three candles: opened at t, t+60, t+120
    assert (result.reason, result.exit_index, result.exit_price) == ("max_hold", 2, 101.25)
    assert result.exit_time == T0 + 180
    assert result.pnl == pytest.approx(1.25)


def test_running_out_of_candles_is_told_apart_from_the_time_limit() -> None:
    market = candles((100, 101, 99, 100), (100, 101, 99, 100.5))
    result = fill(market, order(LONG), hold=3600)
    assert (result.reason, result.exit_index, result.exit_price) == ("end_of_data", 1, 100.5)


def test_no_candle_after_the_exit_is_read() -> None:
    base = [(100, 101, 99.5, 100.5), (100.5, 103.5, 100, 103), (103, 104, 102, 103.5), (103.5, 104, 103, 104)]
    before = fill(candles(*base), order(LONG))
    assert before.exit_index == 1
    for wild in ((1, 1e6, 1e-6, 1), (np.nan, np.nan, np.nan, np.nan)):
        changed = fill(candles(*base[:2], wild, wild), order(LONG))
        assert changed == before


def test_fees_and_slippage_on_both_sides() -> None:
    market = candles((100, 101, 99.5, 100.5), (100.5, 103.5, 100, 103))
    config = BacktestConfig(fee=0.001, slippage=0.0005)
    quantity = position_quantity(10_000, LONG, 100.0, 98.0, config)
    # 100 % of equity buys at 100.05 (slippage) and pays 0.1 % fee on top: 10,000 / (100.05 * 1.001)
    assert quantity == pytest.approx(99.850175, rel=1e-7)
    stop, target = bracket_prices(LONG, 100.0, 2.0, 3.0)
    result = simulate_fill(
        market,
        0,
        Order(T0, LONG, quantity, 100.0, stop, target, 2.0, 3.0, 0.9),
        max_hold_seconds=86_400,
        costs=Costs(0.001, 0.0005),
    )
    assert result.entry_executed == pytest.approx(100.05)
    assert result.exit_executed == pytest.approx(102.9485)  # sold at the target less slippage
    fees = 0.001 * quantity * (100.05 + 102.9485)
    assert result.fees == pytest.approx(fees) == pytest.approx(20.269436, rel=1e-6)
    assert result.pnl == pytest.approx(quantity * (102.9485 - 100.05) - fees) == pytest.approx(269.146296, rel=1e-6)
    assert result.slippage_cost == pytest.approx(quantity * (0.05 + 0.0515))
    short = simulate_fill(
        candles((100, 100.5, 96, 97)),
        0,
        Order(T0, SHORT, 1.0, 100.0, 102.0, 97.0, 2.0, 3.0, 0.9),
        max_hold_seconds=86_400,
        costs=Costs(0.001, 0.0005),
    )
    assert short.entry_executed == pytest.approx(99.95)  # a short sells: slippage lowers its price
    assert short.exit_executed == pytest.approx(97.0485)  # and buys back higher
    assert short.pnl == pytest.approx(99.95 - 97.0485 - 0.001 * (99.95 + 97.0485))


def test_risk_sizing_loses_the_budget_at_the_stop_and_stays_under_the_cap() -> None:
    config = BacktestConfig(fee=0.0, slippage=0.0, risk=0.01)
    assert position_quantity(10_000, LONG, 100.0, 98.0, config) == pytest.approx(50.0)  # 2 per unit, 100 at risk
    assert position_quantity(10_000, SHORT, 100.0, 102.0, config) == pytest.approx(50.0)
    capped = BacktestConfig(fee=0.0, slippage=0.0, risk=0.5, position_share=0.5)
    assert position_quantity(10_000, LONG, 100.0, 98.0, capped) == pytest.approx(50.0)  # 5,000 at most
    costly = BacktestConfig(fee=0.001, slippage=0.0005, risk=0.01)
    quantity = position_quantity(10_000, LONG, 100.0, 98.0, costly)
    loss = quantity * ((100.05 - 98 * 0.9995) + 0.001 * (100.05 + 98 * 0.9995))
    assert loss == pytest.approx(100.0)
    assert position_quantity(0.0, LONG, 100.0, 98.0, config) == 0.0


def test_the_ev_rule_by_hand() -> None:
    """EV = p TP - (1 - p) SL - c: p 0.5, TP 0.6 %, SL 0.3 %, costs 2 x (0.05 % + 0.01 %) = 0.12 % -> +0.03 %."""
    config = BacktestConfig(fee=0.0005, slippage=0.0001, min_prob=0.0, min_ev=0.0)
    assert round_trip_pct(config) == pytest.approx(0.12)
    assert expected_value_pct(np.array(0.5), np.array(0.3), np.array(0.6), 0.12) == pytest.approx(0.03)
    proba = np.array([[0.5, 0.2, 0.3], [0.2, 0.5, 0.3], [0.4, 0.1, 0.5]])
    decided = decide(proba, np.full(3, 0.3), np.full(3, 0.6), config)
    assert decided.direction.tolist() == [1, -1, 0]  # 0.4 * 0.6 - 0.6 * 0.3 - 0.12 = -0.06: no trade
    np.testing.assert_allclose(decided.ev_pct, [0.03, 0.03, -0.06])
    assert decided.reason.tolist() == ["trade", "trade", "ev_below_min"]
    assert decision_text(decided, 2, config, 0.6) == "no trade: EV -0.060 % <= min-ev 0 %"


def test_a_take_profit_that_does_not_pay_the_costs_is_never_traded() -> None:
    """The labeller refuses such moments; so does the rule, whatever min-ev and min-prob allow."""
    config = BacktestConfig(fee=0.00055, slippage=0.0001, min_prob=0.0, min_ev=-50.0)
    decided = decide(np.array([[0.99, 0.0, 0.01]]), np.array([0.103]), np.array([0.028]), config)
    assert decided.direction.tolist() == [0]
    assert decided.reason.tolist() == ["tp_below_costs"]
    assert "does not pay the costs 0.130 %" in decision_text(decided, 0, config, 0.028)


def test_min_prob_and_no_window_refuse_with_their_reasons_in_order() -> None:
    config = BacktestConfig(fee=0.0, slippage=0.0, min_prob=0.5)
    proba = np.array([[0.34, 0.33, 0.33], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05]])
    decided = decide(proba, np.full(3, 0.2), np.full(3, 0.6), config, usable=np.array([True, True, False]))
    assert decided.reason.tolist() == ["prob_below_min", "trade", "no_window"]
    assert decision_text(decided, 0, config, 0.6) == "no trade: P 0.34 < min-prob 0.5"
    assert decided.skipped() == {"no_window": 1, "tp_below_costs": 0, "ev_below_min": 0, "prob_below_min": 1}


def test_the_side_with_the_larger_ev_is_considered() -> None:
    """Sell's p is larger, so Sell is traded although Buy's p also passes min-prob and its EV is positive."""
    config = BacktestConfig(fee=0.0, slippage=0.0, min_prob=0.3)
    decided = decide(np.array([[0.4, 0.55, 0.05]]), np.array([0.2]), np.array([0.4]), config)
    assert decided.direction.tolist() == [-1]
    assert decided.probability[0] == pytest.approx(0.55)


def test_daily_loss_limit_blocks_entries_until_the_next_utc_day() -> None:
    limit = DailyLossLimit(0.02)
    assert limit.allows(T0 + 60, 10_000)
    assert limit.allows(T0 + 120, 9_801)
    assert not limit.allows(T0 + 180, 9_800)
    assert limit.allows(T0 + 86_400, 9_800)  # a new day starts from its own equity
    assert DailyLossLimit(0.0).allows(T0, 1.0)


def test_one_position_at_a_time_and_the_next_entry_after_the_exit_candle() -> None:
    rows = [(100, 100.5, 99.5, 100)] * 3 + [(100, 103.5, 99.5, 103)] + [(103, 103.5, 102.5, 103)] * 4
    market = candles(*rows)
    at = T0 + 60 * np.array([0, 1, 4, 5])
    result = simulate(market, at, np.array([1, 1, 1, -1]), np.full(4, 2.0), np.full(4, 3.0), FREE)
    first, second = result.fills
    assert (first.entry_time, first.exit_time, first.reason) == (T0, T0 + 4 * 60, "take_profit")
    assert second.entry_time == T0 + 4 * 60  # flat from the exit candle's close: the next moment may enter
    assert second.order.direction == LONG and second.order.entry == 103.0  # the open of the candle at t
    assert result.skipped["position_open"] == 2  # at t+60 (first still open) and t+300 (second still open)


def test_a_moment_without_its_candle_is_skipped_not_moved() -> None:
    market = candles((100, 100.5, 99.5, 100), (100, 100.5, 99.5, 100))
    result = simulate(market, np.array([T0 + 30, T0 + 600]), np.array([1, -1]), np.ones(2), np.ones(2), FREE)
    assert result.fills == [] and result.skipped["no_candle"] == 2


def test_the_daily_limit_inside_the_position_loop() -> None:
    # Day 1: a long stopped out at -2 % (the whole equity in it), then a second signal the same day is refused.
    losing = [(100, 100.5, 97, 98)] + [(98, 98.5, 97.5, 98)] * 3
    market = candles(*losing, start=T0)
    next_day = candles((98, 98.5, 97.5, 98), start=T0 + 86_400)
    both = CandleArrays(*(np.concatenate([a, b]) for a, b in zip(market, next_day, strict=True)))
    config = BacktestConfig(fee=0.0, slippage=0.0, daily_loss_limit=0.015)
    at = np.array([T0, T0 + 120, T0 + 86_400])
    result = simulate(both, at, np.array([1, 1, 1]), np.full(3, 2.0), np.full(3, 3.0), config)
    assert [f.entry_time for f in result.fills] == [T0, T0 + 86_400]
    assert result.skipped["daily_loss_limit"] == 1
    assert result.fills[0].pnl == pytest.approx(-200.0)


def test_trader_refuses_what_is_not_a_side() -> None:
    trader = Trader(FREE)
    assert trader.consider(T0, 0, 100.0, 1.0, 1.0).order is None
    with pytest.raises(Exception, match="direction must be 1"):
        trader.consider(T0, 2, 100.0, 1.0, 1.0)
