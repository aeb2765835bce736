"""Funding on perpetuals: charged once per funding time a position is open across (entry < F <= exit), with the
right sign, at stored rates where `ingest funding` stored them; never on spot; the replay charges what the
backtest charges.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import dump_tables
from exchange_fake_runner import FAKE_MARKETS
from lstm_trading.backtest.execution import LONG, SHORT, CandleArrays, Costs, Order, PositionWatch, simulate_fill
from lstm_trading.backtest.funding import FundingSchedule, funding_times
from lstm_trading.cli import app
from lstm_trading.core.errors import ConfigError
from lstm_trading.core.timeutil import parse_moment
from lstm_trading.data import exchange
from lstm_trading.data.exchange import CcxtSource, ingest_funding, make_ccxt_source
from lstm_trading.data.store import CandleStore
from lstm_trading.live.state import fill_from, fill_record
from lstm_trading.runs.candles import symbol_funding

runner = CliRunner(env={"COLUMNS": "200"})
HOUR = 3600
DAY0 = parse_moment("2024-01-01T00:00", option="test")  # a UTC midnight: a funding time
COSTS = Costs(0.00055, 0.0001)
RATE = 0.0001


def flat_candles(start: int, minutes: int, price: float = 100.0) -> CandleArrays:
    """Candles that never move: no stop or target is hit, so a position closes at the maximum holding time."""
    t = start + 60 * pd.RangeIndex(minutes).to_numpy()
    same = [price] * minutes
    return CandleArrays(t, *(pd.Series(same).to_numpy(dtype=float) for _ in range(4)))


def held(direction: int, entry: int, hold_minutes: int, funding: FundingSchedule | None) -> Any:
    """A 2-unit position entered at `entry` on flat candles and closed at its maximum holding time."""
    candles = flat_candles(entry, hold_minutes + 5)
    stop, target = (90.0, 110.0) if direction == LONG else (110.0, 90.0)
    order = Order(entry, direction, 2.0, 100.0, stop, target, 10.0, 10.0, 0.6)
    return simulate_fill(candles, 0, order, max_hold_seconds=hold_minutes * 60, costs=COSTS, funding=funding)


# --- the charge ---


def test_a_position_held_across_0800_pays_exactly_one_charge_longs_pay_and_shorts_receive() -> None:
    entry = DAY0 + 7 * HOUR + 30 * 60  # 07:30, out at 08:30
    schedule = FundingSchedule(RATE)
    for direction in (LONG, SHORT):
        fill = held(direction, entry, 60, schedule)
        free = held(direction, entry, 60, None)
        assert fill.exit_time == DAY0 + 8 * HOUR + 30 * 60 and fill.reason == "max_hold"
        notional = 2.0 * fill.entry_executed  # quantity * the executed entry price
        assert fill.funding == pytest.approx(direction * RATE * notional, rel=1e-12)
        assert fill.pnl == pytest.approx(free.pnl - direction * RATE * notional, rel=1e-12)
        assert free.funding == 0.0
    assert held(LONG, entry, 60, schedule).funding > 0 > held(SHORT, entry, 60, schedule).funding


def test_entered_at_0800_exactly_and_out_before_1600_pays_none_and_out_at_1600_pays_one() -> None:
    schedule = FundingSchedule(RATE)
    eight = DAY0 + 8 * HOUR
    before = held(LONG, eight, 7 * 60 + 59, schedule)  # flat again at 15:59
    assert before.exit_time == DAY0 + 16 * HOUR - 60 and before.funding == 0.0
    at_sixteen = held(LONG, eight, 8 * 60, schedule)  # open through 16:00 exactly
    assert at_sixteen.exit_time == DAY0 + 16 * HOUR
    assert at_sixteen.funding == pytest.approx(RATE * 2.0 * at_sixteen.entry_executed)
    assert list(funding_times(eight, eight + 8 * HOUR)) == [eight + 8 * HOUR]
    assert list(funding_times(eight - 1, eight)) == [eight]
    assert len(funding_times(DAY0 + 1, DAY0 + 24 * HOUR)) == 3  # 08:00, 16:00, midnight


def test_zero_funding_and_no_schedule_charge_nothing() -> None:
    entry = DAY0 + 7 * HOUR
    assert held(LONG, entry, 120, FundingSchedule(0.0)).funding == 0.0
    assert held(LONG, entry, 120, None) == held(LONG, entry, 120, FundingSchedule(0.0))


def test_stored_rates_replace_the_constant_and_a_hole_inside_them_falls_back_and_is_counted() -> None:
    eight, sixteen = DAY0 + 8 * HOUR, DAY0 + 16 * HOUR
    stored = FundingSchedule(RATE, {DAY0: 0.0003, eight: -0.0005, DAY0 + 24 * HOUR: 0.0002})
    across_eight = held(LONG, eight - 1800, 60, stored)
    assert across_eight.funding == pytest.approx(-0.0005 * 2.0 * across_eight.entry_executed)  # a long receives
    across_sixteen = held(SHORT, sixteen - 1800, 60, stored)  # no rate stored for 16:00: the constant
    assert across_sixteen.funding == pytest.approx(-RATE * 2.0 * across_sixteen.entry_executed)
    assert stored.missing(DAY0 - 1, DAY0 + 48 * HOUR) == [sixteen]
    assert stored.outside(DAY0 - 1, DAY0 + 48 * HOUR) == 3  # 08:00, 16:00 and midnight of the next day
    with pytest.raises(ConfigError, match=r"^funding: must be a fraction per 8-hour period in \(-0.1, 0.1\)"):
        FundingSchedule(0.5)


def test_a_position_fed_in_pieces_pays_what_the_backtest_fill_pays_and_the_state_keeps_it() -> None:
    entry = DAY0 + 7 * HOUR
    schedule = FundingSchedule(RATE, {DAY0 + 8 * HOUR: 0.0004})
    expected = held(LONG, entry, 10 * 60, schedule)
    candles = flat_candles(entry, 10 * 60 + 5)
    watch = PositionWatch(expected.order, 10 * 60 * 60, COSTS, funding=schedule)
    for cut in range(entry + 3600, entry + 12 * 3600, 3600):
        assert watch.feed(candles.between(watch.last_time + 1, cut - 59)) is None
    fill = watch.close_at_last()
    assert fill == expected  # 07:00 to 17:00: 08:00 at its stored rate, 16:00 at the constant
    assert fill.funding == pytest.approx((0.0004 + RATE) * 2.0 * fill.entry_executed)
    assert fill_from(fill_record(fill)) == fill  # the live state stores and reads the charge
    old = fill_record(fill)
    del old["funding"]
    assert fill_from(old).funding == 0.0  # a fill stored before funding existed reads as none


# --- which symbols pay: the store decides ---


def _store(path: Path, candles: pd.DataFrame, market: str | None) -> Path:
    with CandleStore(path, create=True) as store:
        if market is None:
            store.upsert("ETHUSDT", candles)
        else:
            store.upsert("ETHUSDT", candles, exchange="bybit", market=market)
    return path


def test_spot_and_unrecorded_symbols_pay_nothing_perpetuals_pay_the_constant_or_stored_rates(
    tiny_candles: pd.DataFrame, tmp_path: Path
) -> None:
    candles = tiny_candles.iloc[:100]
    spot = symbol_funding(_store(tmp_path / "spot.db", candles, "spot"), "ETHUSDT", RATE)
    assert spot.schedule is None and spot.description == "none (spot)"
    unknown = symbol_funding(_store(tmp_path / "csv.db", candles, None), "ETHUSDT", RATE)
    assert unknown.schedule is None and "market is not recorded" in unknown.description
    perpetual = _store(tmp_path / "perp.db", candles, "linear")
    constant = symbol_funding(perpetual, "ETHUSDT", RATE)
    assert constant.schedule == FundingSchedule(RATE) and constant.description == "0.0100 % per 8 h (constant)"
    assert symbol_funding(perpetual, "ETHUSDT", 0.0).schedule is None  # --funding 0 turns it off
    with CandleStore(perpetual) as store:
        store.upsert_funding("ETHUSDT", pd.DataFrame({"timestamp": [DAY0, DAY0 + 16 * HOUR], "rate": [2e-4, 3e-4]}))
    with pytest.warns(UserWarning, match=r"1 funding times of ETHUSDT from 2024-01-01 08:00 UTC .* no stored rate"):
        stored = symbol_funding(perpetual, "ETHUSDT", RATE, start=DAY0 - 1, end=DAY0 + 24 * HOUR)
    assert stored.schedule is not None and dict(stored.schedule.stored) == {DAY0: 2e-4, DAY0 + 16 * HOUR: 3e-4}
    assert stored.description.startswith("stored rates (2 from 2024-01-01 00:00 UTC to 2024-01-01 16:00 UTC")
    assert stored.missing == (DAY0 + 8 * HOUR,)


# --- the replay charges what the backtest charges ---


def test_backtest_and_replay_charge_the_same_funding_and_spot_pays_none(
    tiny_run: Path, tiny_candles: pd.DataFrame, tmp_path: Path
) -> None:
    perpetual = _store(tmp_path / "perp.db", tiny_candles, "linear")
    with CandleStore(perpetual) as store:  # stored rates for the first day of the period, the constant after
        first = parse_moment("2024-01-05T00:00", option="test")
        stamps = [first + 8 * HOUR * k for k in range(4)]
        store.upsert_funding("ETHUSDT", pd.DataFrame({"timestamp": stamps, "rate": [3e-4, -2e-4, 5e-4, 1e-4]}))
    period = ["--from", "2024-01-05T00:00", "--to", "2024-01-06T23:00", "--every", "30m"]
    # min-ev below any loss: the tiny model has no edge, and this test is about what its trades pay
    settings = ["--min-prob", "0.34", "--min-ev=-5", "--max-hold", "12h", "--funding", "0.02%", "--workers", "1"]

    def backtest(db: Path, out: str) -> tuple[pd.DataFrame, str]:
        args = ["backtest", str(tiny_run), "--db", str(db), *period, *settings, "--seeds", "3", "--no-progress"]
        result = runner.invoke(app, [*args, "--out", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
        return pd.read_csv(tmp_path / out / "trades.csv"), result.stdout

    trades, printed = backtest(perpetual, "bt")
    assert "funding: stored rates (4 from 2024-01-05 00:00 UTC to 2024-01-06 00:00 UTC" in printed
    replay = ["live", str(tiny_run), "--replay", "--db", str(perpetual), *period, *settings, "-q"]
    replayed = runner.invoke(app, [*replay, "--out", str(tmp_path / "rp")])
    assert replayed.exit_code == 0, replayed.output
    assert (tmp_path / "rp" / "trades.csv").read_text() == (tmp_path / "bt" / "trades.csv").read_text()

    # every trade pays for exactly the funding times it was open across, at the stored rate or else the constant
    schedule = FundingSchedule(0.0002, dict(zip(stamps, [3e-4, -2e-4, 5e-4, 1e-4], strict=True)))
    side = trades["side"].map({"Buy": LONG, "Sell": SHORT})
    notional = trades["quantity"] * trades["entry_executed"]
    spans = list(zip(trades["entry_time"], trades["exit_time"], strict=True))
    expected = [
        d * n * sum(schedule.rate_at(f) for f in funding_times(a, b))
        for d, n, (a, b) in zip(side, notional, spans, strict=True)
    ]
    assert trades["funding"].tolist() == pytest.approx(expected, rel=1e-9)
    assert sum(len(funding_times(a, b)) > 0 for a, b in spans) > 0, "some 12-hour holds should cross a funding time"
    assert (trades["funding"] != 0).tolist() == [len(funding_times(a, b)) > 0 for a, b in spans]

    spot_trades, printed = backtest(_store(tmp_path / "spot.db", tiny_candles, "spot"), "spot")
    assert "funding: none (spot)" in printed
    assert (spot_trades["funding"] == 0).all()
    assert spot_trades["entry_time"].tolist() == trades["entry_time"].tolist()  # the same decisions, no charge


# --- ingest funding: ccxt's Bybit without the network ---

BYBIT_MARKETS = [
    {**market, "type": "swap" if market.get("swap") else "spot", "spot": bool(market.get("spot")),
     "swap": bool(market.get("swap")), "future": False, "option": False, "contract": bool(market.get("swap")),
     "inverse": False if market.get("swap") else None, "active": True, "baseId": market["base"],
     "quoteId": market["quote"], "settleId": market["settle"], "precision": {}, "limits": {}, "info": {}}
    for market in FAKE_MARKETS
]  # fmt: skip
RATES = {DAY0 + 8 * HOUR * k: round(0.0001 * (1 + k % 3) - 0.00005 * (k % 5 == 4), 8) for k in range(120)}  # 40 days


class BybitFunding:
    """Bybit's funding history endpoint played from `RATES`: rows in [startTime, endTime], newest first, at most
    `limit`, only those settled by `now_ms`; a few stamped a millisecond late, as exchanges do at times."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        assert request["category"] == "linear" and request["symbol"] == "ETHUSDT" and request["limit"] <= 200
        inside = [
            t for t in sorted(RATES, reverse=True)
            if request["startTime"] <= t * 1000 <= request["endTime"] and t * 1000 <= self.now_ms
        ][: request["limit"]]  # fmt: skip
        rows = [
            {
                "symbol": "ETHUSDT",
                "fundingRate": str(RATES[t]),
                "fundingRateTimestamp": str(t * 1000 + (t // (8 * HOUR)) % 2),
            }
            for t in inside
        ]
        return {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": rows}}


@pytest.fixture
def bybit(monkeypatch: pytest.MonkeyPatch) -> tuple[CcxtSource, BybitFunding]:
    """ccxt's real Bybit class, its network replaced by `BybitFunding`; `ingest funding` uses it."""
    source = make_ccxt_source("bybit", "linear")
    monkeypatch.setattr(source.exchange, "fetch", lambda *args, **kwargs: pytest.fail("network used"))
    source.exchange.set_markets(BYBIT_MARKETS)
    endpoint = BybitFunding(now_ms=(DAY0 + 20 * 24 * HOUR + 60) * 1000)  # twenty days in
    monkeypatch.setattr(source.exchange, "publicGetV5MarketFundingHistory", endpoint)
    monkeypatch.setattr(source.exchange, "milliseconds", lambda: endpoint.now_ms + exchange.CLOCK_MARGIN_MS)
    monkeypatch.setattr(exchange, "funding_source_factory", lambda exchange_id: source)
    return source, endpoint


def stored_rates(db: Path) -> dict[int, float]:
    with CandleStore(db) as store:
        frame = store.read_funding("ETHUSDT")
    return dict(zip(frame["timestamp"].tolist(), frame["rate"].tolist(), strict=True))


def test_ingest_funding_stores_the_rates_a_rerun_changes_nothing_and_a_later_run_appends_only_newer_ones(
    bybit: tuple[CcxtSource, BybitFunding], tiny_candles: pd.DataFrame, tmp_path: Path
) -> None:
    _, endpoint = bybit
    db = _store(tmp_path / "perp.db", tiny_candles.iloc[:10], "linear")
    args = ["ingest", "funding", "--db", str(db), "--symbol", "ETHUSDT", "--since", "2024-01-01"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    first_days = {t: r for t, r in RATES.items() if t <= DAY0 + 20 * 24 * HOUR}
    assert stored_rates(db) == first_days  # on the second, though some came a millisecond late
    assert first.stdout.splitlines() == [
        f"ETHUSDT funding (bybit, ETH/USDT:USDT): {len(first_days)} rates added from {len(endpoint.requests)} requests",
        f"held: 2024-01-01 00:00 UTC to 2024-01-21 00:00 UTC, {len(first_days)} rates",
    ]
    assert len(endpoint.requests) == 2  # paginated: 50 funding periods (16.7 days) per request
    tables = dump_tables(db)

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "0 rates added" in again.stdout and dump_tables(db) == tables

    endpoint.now_ms = (DAY0 + 40 * 24 * HOUR) * 1000  # twenty days later
    endpoint.requests.clear()
    later = runner.invoke(app, ["ingest", "funding", "--db", str(db), "--symbol", "ETHUSDT"])
    assert later.exit_code == 0, later.output
    assert endpoint.requests[0]["startTime"] > (DAY0 + 20 * 24 * HOUR) * 1000  # only after the last stored
    assert stored_rates(db) == RATES
    assert f"{len(RATES) - len(first_days)} rates added" in later.stdout


def test_ingest_funding_refuses_spot_symbols_and_a_first_run_without_since(
    bybit: tuple[CcxtSource, BybitFunding], tiny_candles: pd.DataFrame, tmp_path: Path
) -> None:
    spot = _store(tmp_path / "spot.db", tiny_candles.iloc[:10], "spot")
    refused = runner.invoke(app, ["ingest", "funding", "--db", str(spot), "--since", "2024-01-01"])
    assert refused.exit_code == 2
    assert refused.stderr.startswith(f"error: {spot}: ETHUSDT holds bybit spot candles, which pay no funding")
    perpetual = _store(tmp_path / "perp.db", tiny_candles.iloc[:10], "linear")
    no_since = runner.invoke(app, ["ingest", "funding", "--db", str(perpetual)])
    assert (
        no_since.exit_code == 2 and "give --since (e.g. --since 2024-01-01) for the first download" in no_since.stderr
    )
    assert stored_rates(spot) == {} and stored_rates(perpetual) == {}


def test_a_full_page_is_asked_again_over_half_the_window(tmp_path: Path, tiny_candles: pd.DataFrame) -> None:
    """An hourly funding schedule: 50 periods of 8 h hold 400 rates, more than a page; nothing may be skipped."""
    hourly = {DAY0 + HOUR * k: 1e-5 * (k % 7) for k in range(24 * 5)}

    class Hourly:
        exchange_id, market = "bybit", "linear"

        def resolve_symbol(self, name: str) -> str:
            return "ETH/USDT:USDT"

        def fetch_funding_rates(self, symbol: str, since_ms: int, limit: int, until_ms: int) -> list[dict[str, Any]]:
            inside = [t for t in sorted(hourly, reverse=True) if since_ms <= t * 1000 <= until_ms][:limit]
            return [{"timestamp": t * 1000, "fundingRate": hourly[t]} for t in sorted(inside)]

        def milliseconds(self) -> int:
            return (DAY0 + 5 * 24 * HOUR) * 1000

    db = _store(tmp_path / "perp.db", tiny_candles.iloc[:10], "linear")
    with CandleStore(db) as store, warnings.catch_warnings():
        warnings.simplefilter("error")
        result = ingest_funding(store, Hourly(), "ETHUSDT", since=DAY0, sleep=pytest.fail)
    assert stored_rates(db) == hourly and result.added == len(hourly)


def test_a_symbol_funding_every_four_hours_pays_at_each_stored_time() -> None:
    """Stored rates every 4 h (some perpetuals fund that often): each one inside the position is charged, the
    8-hour times among them once, and past the stored history the constant at the 8-hour times."""
    four = {DAY0 + i * 4 * HOUR: (i + 1) / 10_000 for i in range(6)}  # 00:00 to 20:00
    schedule = FundingSchedule(RATE, four)
    across = held(LONG, DAY0 + 3 * HOUR, 10 * 60, schedule)  # 03:00 to 13:00: 04:00, 08:00 and 12:00
    assert [t for t, _ in schedule.events(DAY0 + 3 * HOUR, DAY0 + 13 * HOUR)] == [DAY0 + h * HOUR for h in (4, 8, 12)]
    assert across.funding == pytest.approx((0.0002 + 0.0003 + 0.0004) * 2.0 * across.entry_executed)
    late = schedule.events(DAY0 + 19 * HOUR, DAY0 + 33 * HOUR)  # 20:00 stored, then the next day's 00:00 and 08:00
    assert late == [(DAY0 + 20 * HOUR, 0.0006), (DAY0 + 24 * HOUR, RATE), (DAY0 + 32 * HOUR, RATE)]
    assert schedule.missing(DAY0 - 1, DAY0 + 20 * HOUR) == []
