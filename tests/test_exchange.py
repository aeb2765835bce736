"""Exchange ingestion against a fake exchange serving real Bybit candles (no network), with injected faults.

After every scenario the database must hold exactly the expected minutes, each once, and a rerun completes it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import ccxt
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from exchange_fake_runner import FAKE_MARKETS, FakeExchange, load_candles
from lstm_trading.cli import app
from lstm_trading.core.errors import ConfigError, DataError
from lstm_trading.data import exchange
from lstm_trading.data.candles import Gap
from lstm_trading.data.exchange import (
    CcxtSource,
    clean_page,
    ingest,
    make_ccxt_source,
    missing_intervals,
    unified_symbol,
)
from lstm_trading.data.store import CandleStore

FIRST_ROW = 1000  # a slice of the real file: 3,000 minutes from 2025-05-30 09:46 UTC
ROWS = 3000
PAGE = 200
RUNNER = Path(__file__).with_name("exchange_fake_runner.py")


@pytest.fixture(scope="module")
def candles(bybit_csv: Path) -> pd.DataFrame:
    return load_candles(bybit_csv, FIRST_ROW, ROWS)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "candles.db"


def now_of(candles: pd.DataFrame) -> int:
    """The exchange's clock: 30 s into the last minute of the slice, so that candle is still forming."""
    return int(candles["timestamp"].iloc[-1]) * 1000 + 30_000


def fake(candles: pd.DataFrame, **kwargs: Any) -> FakeExchange:
    kwargs.setdefault("now_ms", now_of(candles))
    kwargs.setdefault("page_limit", PAGE)
    return FakeExchange(candles, **kwargs)


def closed(candles: pd.DataFrame) -> np.ndarray:
    """Open times a full download must store: all but the still-forming last minute."""
    return candles["timestamp"].to_numpy()[:-1]


def first_of(candles: pd.DataFrame) -> int:
    return int(candles["timestamp"].iloc[0])


def run(db: Path, source: FakeExchange, **kwargs: Any) -> exchange.IngestResult:
    sleeps: list[float] = kwargs.pop("sleeps", [])
    with CandleStore(db, create=True) as store:
        return ingest(store, source, "ETHUSDT", sleep=sleeps.append, **kwargs)


def stored(db: Path) -> pd.DataFrame:
    with CandleStore(db) as store:
        return store.read("ETHUSDT")


def assert_holds(db: Path, expected: np.ndarray, candles: pd.DataFrame) -> None:
    """The store holds exactly `expected` minutes, once each, with the exchange's values."""
    frame = stored(db)
    assert frame["timestamp"].is_unique
    np.testing.assert_array_equal(frame["timestamp"].to_numpy(), np.sort(expected))
    want = candles.set_index("timestamp").loc[frame["timestamp"]].reset_index()
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), want, check_dtype=False)


# --- the download loop ---


def test_fresh_download_stores_every_closed_minute_once_page_by_page(db: Path, candles: pd.DataFrame) -> None:
    source = fake(candles)
    seen: list[tuple[int, int]] = []
    result = run(db, source, since=first_of(candles), progress=lambda done, total: seen.append((done, total)))
    assert_holds(db, closed(candles), candles)
    assert result.added == ROWS - 1 and result.missing_minutes == ROWS - 1
    assert result.pages == len(source.requests) == -(-(ROWS - 1) // PAGE)
    assert result.held == (first_of(candles), int(closed(candles)[-1]), ROWS - 1)
    assert result.gaps == [] and result.dropped == {}
    assert all(limit <= PAGE for _, limit, _ in source.requests)
    assert seen[0] == (0, ROWS - 1) and seen[-1] == (ROWS - 1, ROWS - 1)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_still_forming_minute_is_never_stored(db: Path, candles: pd.DataFrame) -> None:
    last = int(candles["timestamp"].iloc[-1])
    run(db, fake(candles, now_ms=last * 1000 + 59_999), since=first_of(candles))
    assert stored(db)["timestamp"].max() == last - 60
    # Once the minute has closed, the next run takes it, and only it.
    source = fake(candles, now_ms=(last + 60) * 1000)
    result = run(db, source)
    assert result.added == 1
    assert source.requests == [((last) * 1000, 1, (last + 60) * 1000 - 1)]
    assert_holds(db, candles["timestamp"].to_numpy(), candles)


def test_run_without_since_continues_after_the_last_stored_minute(db: Path, candles: pd.DataFrame) -> None:
    middle = int(candles["timestamp"].iloc[1234])
    run(db, fake(candles), since=first_of(candles), until=middle)
    assert stored(db)["timestamp"].max() == middle - 60
    source = fake(candles)
    result = run(db, source)
    assert source.requests[0][0] == middle * 1000
    assert result.added == ROWS - 1 - 1234
    assert_holds(db, closed(candles), candles)


def test_since_fills_only_the_missing_minutes_and_skips_pages_held(db: Path, candles: pd.DataFrame) -> None:
    stamps = candles["timestamp"].to_numpy()
    held = np.ones(len(stamps), dtype=bool)
    held[100:130] = held[700:1400] = held[2990:] = False  # two holes and the recent end
    with CandleStore(db, create=True) as store:
        store.register_symbol("ETHUSDT", "fakex", "linear")
        store.upsert("ETHUSDT", candles[held].reset_index(drop=True))
    source = fake(candles)
    result = run(db, source, since=first_of(candles))
    assert result.added == result.missing_minutes == 30 + 700 + 9
    # Every request lies inside a hole: nothing already held is asked for.
    holes = set(stamps[~held].tolist())
    for since_ms, _, until_ms in source.requests:
        assert set(range(since_ms // 1000, (until_ms + 1) // 1000, 60)) <= holes
    assert len(source.requests) == 1 + 4 + 1
    assert_holds(db, closed(candles), candles)
    # Held completely: the next run asks the exchange nothing.
    again = fake(candles)
    assert run(db, again, since=first_of(candles)).pages == 0
    assert again.requests == []


# --- faults ---


def test_page_that_fails_twice_then_succeeds_is_retried_with_backoff(db: Path, candles: pd.DataFrame) -> None:
    source = fake(candles, faults={2: ccxt.RequestTimeout("timed out"), 3: ccxt.ExchangeNotAvailable("502")})
    sleeps: list[float] = []
    result = run(db, source, since=first_of(candles), sleeps=sleeps)
    assert sleeps == [1.0, 2.0]
    assert source.requests[1] == source.requests[2] == source.requests[3]
    assert result.added == ROWS - 1
    assert_holds(db, closed(candles), candles)


def test_rate_limit_error_waits_and_goes_on(db: Path, candles: pd.DataFrame) -> None:
    source = fake(candles, faults={5: ccxt.RateLimitExceeded("too many visits")})
    sleeps: list[float] = []
    run(db, source, since=first_of(candles), sleeps=sleeps, backoff_s=2.5)
    assert sleeps == [2.5]
    assert_holds(db, closed(candles), candles)


def test_retries_exhausted_stop_with_a_clear_error_and_keep_earlier_pages(db: Path, candles: pd.DataFrame) -> None:
    down = {call: ccxt.NetworkError("connection reset") for call in range(3, 9)}
    source = fake(candles, faults=down)
    sleeps: list[float] = []
    with pytest.raises(DataError) as error:
        run(db, source, since=first_of(candles), sleeps=sleeps)
    start = candles["timestamp"].iloc[2 * PAGE]
    assert str(error.value) == (
        "fakex: fetching ETHUSDT (ETH/USDT:USDT) candles from "
        f"{pd.Timestamp(start, unit='s'):%Y-%m-%d %H:%M} UTC failed 6 times (last: NetworkError: connection "
        "reset); the 2 earlier pages (400 rows added) are stored; run the command again to resume"
    )
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert_holds(db, candles["timestamp"].to_numpy()[: 2 * PAGE], candles)
    run(db, fake(candles))
    assert_holds(db, closed(candles), candles)


def test_non_transient_exchange_error_stops_at_once(db: Path, candles: pd.DataFrame) -> None:
    source = fake(candles, faults={2: ccxt.ExchangeError("bybit {'retCode': 10001, 'retMsg': 'params error'}")})
    sleeps: list[float] = []
    with pytest.raises(
        DataError, match=r"refused with ExchangeError: .*params error.*the 1 earlier page \(200 rows added\) is stored$"
    ):
        run(db, source, since=first_of(candles), sleeps=sleeps)
    assert sleeps == []
    assert_holds(db, candles["timestamp"].to_numpy()[:PAGE], candles)


def test_bad_rows_are_dropped_with_one_warning_per_page_and_never_stored(db: Path, candles: pd.DataFrame) -> None:
    now_ms = now_of(candles)

    def corrupt(call: int, rows: list[list[Any]]) -> list[list[Any]]:
        if call != 2:
            return rows
        rows = [list(row) for row in rows]
        late = rows.pop(10)  # served after later minutes: out of order
        rows[20][4] = float("nan")
        rows[40][2] = rows[40][3] / 2  # high below low
        return (
            rows
            + [
                list(rows[5]),  # the same minute twice
                late,
                [(now_ms // 60_000 + 2) * 60_000, 1.0, 1.0, 1.0, 1.0, 1.0],  # in the future
                [rows[30][0] + 1_500, *rows[30][1:]],  # not on the minute
            ]
        )

    source = fake(candles, edit=corrupt)
    with pytest.warns(UserWarning) as caught:
        result = run(db, source, since=first_of(candles))
    start = int(candles["timestamp"].iloc[PAGE])
    assert [str(w.message) for w in caught] == [
        f"fakex ETHUSDT page from {pd.Timestamp(start, unit='s'):%Y-%m-%d %H:%M} UTC: dropped 6 bad rows "
        "(1 non-minute timestamp, 1 duplicate, 1 out-of-order, 1 in the future, 1 NaN, 1 invalid OHLC); "
        "they are not stored"
    ]
    assert caught[0].filename == __file__  # the warning names ingest's caller (`run` here), not exchange.py
    assert result.dropped == {
        "non-minute timestamp": 1,
        "duplicate": 1,
        "out-of-order": 1,
        "in the future": 1,
        "NaN": 1,
        "invalid OHLC": 1,
    }
    dropped_minutes = {start + 10 * 60, start + 21 * 60, start + 41 * 60}
    expected = np.array([t for t in closed(candles) if t not in dropped_minutes])
    assert_holds(db, expected, candles)
    assert result.gaps == [Gap(t, t, 1) for t in sorted(dropped_minutes)]
    # A rerun over the range fetches the three minutes again (the exchange now serves them cleanly).
    again = fake(candles)
    assert run(db, again, since=first_of(candles)).added == 3
    assert len(again.requests) == 3
    assert_holds(db, closed(candles), candles)


def test_real_gap_on_the_exchange_stays_a_gap_and_a_rerun_ends(db: Path, candles: pd.DataFrame) -> None:
    stamps = candles["timestamp"].to_numpy()
    short = stamps[450:480]  # 30 minutes inside a page
    long = stamps[1000:1700]  # 700 minutes: whole pages with nothing
    source = fake(candles, missing=set(short.tolist()) | set(long.tolist()))
    result = run(db, source, since=first_of(candles))
    expected = np.setdiff1d(closed(candles), np.concatenate([short, long]))
    assert_holds(db, expected, candles)
    assert result.gaps == [
        Gap(int(short[0]), int(short[-1]), 30),
        Gap(int(long[0]), int(long[-1]), 700),
    ]
    rerun = fake(candles, missing=set(short.tolist()) | set(long.tolist()))
    result = run(db, rerun, since=first_of(candles))
    assert result.added == 0
    assert len(rerun.requests) == 1 + 4  # each missing span once, page by page; then done
    assert_holds(db, expected, candles)


def test_second_run_during_a_run_corrupts_nothing(db: Path, candles: pd.DataFrame) -> None:
    # Deterministic interleaving: while the first run waits for its 4th page, a second one downloads everything.
    def second_run(call: int) -> None:
        if call == 4:
            run(db, fake(candles), since=first_of(candles))

    first = run(db, fake(candles, on_fetch=second_run), since=first_of(candles))
    assert first.added == 3 * PAGE
    assert first.already_present == ROWS - 1 - 3 * PAGE
    assert first.conflicts == 0
    assert_holds(db, closed(candles), candles)


def test_killed_process_keeps_exactly_the_finished_pages_and_a_rerun_completes(
    db: Path, candles: pd.DataFrame, bybit_csv: Path
) -> None:
    since = str(first_of(candles))
    command = [sys.executable, str(RUNNER), str(bybit_csv), str(FIRST_ROW), str(ROWS), str(PAGE)]
    cli = ["ingest", "exchange", "--db", str(db), "--since", since, "--exchange", "fakex", "--quiet"]
    process = subprocess.Popen([*command, "4", "--", *cli], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "blocked at call 4\n"  # pages 1 to 3 are stored by now
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert_holds(db, candles["timestamp"].to_numpy()[: 3 * PAGE], candles)
    rerun = fake(candles)
    run(db, rerun)  # continues after the last stored minute
    assert rerun.requests[0][0] == int(candles["timestamp"].iloc[3 * PAGE]) * 1000
    assert_holds(db, closed(candles), candles)


# --- pages, intervals, symbols ---


def test_clean_page_ignores_rows_outside_the_window_without_counting_them() -> None:
    rows = [[60_000 * k, 10.0, 11.0, 9.0, 10.5, 1.0] for k in range(10, 16)]
    page = clean_page(rows, start=660, end=840, now_ms=15 * 60_000 + 30_000)
    assert page.candles["timestamp"].tolist() == [660, 720, 780]
    assert page.candles.dtypes.astype(str).tolist() == ["int64"] + ["float64"] * 5
    assert page.dropped == {} and page.reached == 780


def test_clean_page_tolerates_a_minute_of_clock_skew_before_calling_a_row_future() -> None:
    now_ms = 15 * 60_000 + 1_000  # the minute opened at 900 s is forming
    rows = [[60_000 * k, 10.0, 11.0, 9.0, 10.5, 1.0] for k in (14, 15, 16, 17)]
    page = clean_page(rows, start=0, end=900, now_ms=now_ms)
    assert page.candles["timestamp"].tolist() == [840]
    assert page.dropped == {"in the future": 1}  # only the row opened at 17 min


def test_clean_page_counts_malformed_and_none_values() -> None:
    rows: list[list[Any]] = [[60_000, 1.0, 1.0, 1.0, 1.0, None], [120_000, "x", 1, 1, 1, 1], [180_000, 1.0]]
    page = clean_page(rows, start=0, end=600, now_ms=10**9)
    assert len(page.candles) == 0
    assert page.dropped == {"NaN": 1, "malformed": 2}


def test_missing_intervals_are_the_complement_of_the_held_minutes() -> None:
    held = np.array([120, 180, 360, 420])
    assert missing_intervals(held, 60, 600) == [(60, 120), (240, 360), (480, 600)]
    assert missing_intervals(held, 120, 240) == []
    assert missing_intervals(np.array([], dtype=np.int64), 0, 120) == [(0, 120)]


def test_unknown_symbol_fails_with_close_matches() -> None:
    with pytest.raises(ConfigError) as error:
        unified_symbol(FAKE_MARKETS, "ETHUSD", "linear", "bybit")
    assert str(error.value) == (
        "unknown symbol 'ETHUSD' among bybit's 2 linear markets: did you mean ETHUSDT, BTCUSDT? "
        "(--symbol takes the store name, e.g. ETHUSDT)"
    )


def test_unknown_exchange_fails_at_once_with_close_matches() -> None:
    with pytest.raises(ConfigError, match=r"^--exchange: unknown exchange 'bybt': did you mean bybit"):
        make_ccxt_source("bybt")


def test_unknown_market_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^--market: unknown market 'perp'; use linear \(USDT perpetual\) or spot"):
        make_ccxt_source("bybit", "perp")


BYBIT_MARKETS = [
    {**market, "type": "swap" if market.get("swap") else "spot", "spot": bool(market.get("spot")),
     "swap": bool(market.get("swap")), "future": False, "option": False, "contract": bool(market.get("swap")),
     "inverse": False if market.get("swap") else None, "active": True, "baseId": market["base"],
     "quoteId": market["quote"], "settleId": market["settle"], "precision": {}, "limits": {}}
    for market in FAKE_MARKETS
]  # fmt: skip


def offline_bybit(monkeypatch: pytest.MonkeyPatch, market: str) -> CcxtSource:
    source = make_ccxt_source("bybit", market)
    monkeypatch.setattr(source.exchange, "fetch", lambda *args, **kwargs: pytest.fail("network used"))
    source.exchange.set_markets(BYBIT_MARKETS)
    return source


def test_real_ccxt_bybit_is_built_for_linear_perpetuals_without_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    source = offline_bybit(monkeypatch, "linear")
    bybit = source.exchange
    assert isinstance(bybit, ccxt.bybit)
    assert bybit.enableRateLimit is True
    assert bybit.options["defaultType"] == "swap" and bybit.options["defaultSubType"] == "linear"
    assert bybit.options["fetchMarkets"]["types"] == ["linear"]
    assert source.page_limit == 1000
    assert source.resolve_symbol("ETHUSDT") == "ETH/USDT:USDT"
    assert source.resolve_symbol("ethusdt") == "ETH/USDT:USDT"

    # The request ccxt sends for one page: Bybit's linear category, bounded by start and end.
    sent: list[dict[str, Any]] = []
    since = 1_748_600_000 // 60 * 60 * 1000

    def kline(request: dict[str, Any]) -> dict[str, Any]:
        sent.append(request)
        rows = [[str(since + 60_000 * k), "2600", "2601", "2599", "2600.5", "12.5", "32500"] for k in (1, 0)]
        return {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "symbol": "ETHUSDT", "list": rows}}

    monkeypatch.setattr(bybit, "publicGetV5MarketKline", kline)
    rows = source.fetch_ohlcv("ETH/USDT:USDT", since, 1000, since + 1000 * 60_000 - 1)
    assert sent == [
        {
            "symbol": "ETHUSDT",
            "category": "linear",
            "interval": "1",
            "start": since,
            "end": since + 1000 * 60_000 - 1,
            "limit": 1000,
        }
    ]
    assert rows == [
        [since, 2600.0, 2601.0, 2599.0, 2600.5, 12.5],
        [since + 60_000, 2600.0, 2601.0, 2599.0, 2600.5, 12.5],
    ]


def test_real_ccxt_bybit_under_the_download_loop(
    monkeypatch: pytest.MonkeyPatch, db: Path, candles: pd.DataFrame
) -> None:
    # Bybit's kline endpoint, played from the real candles: rows in [start, end], newest first, at most `limit`.
    source = offline_bybit(monkeypatch, "linear")
    stamps_ms = candles["timestamp"].to_numpy() * 1000

    def kline(request: dict[str, Any]) -> dict[str, Any]:
        assert request["category"] == "linear" and request["limit"] <= 1000
        inside = np.flatnonzero((stamps_ms >= request["start"]) & (stamps_ms <= request["end"]))[::-1]
        rows = [[str(stamps_ms[i]), *map(str, candles.iloc[i, 1:].tolist()), "0"] for i in inside]
        return {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "symbol": "ETHUSDT", "list": rows}}

    monkeypatch.setattr(source.exchange, "publicGetV5MarketKline", kline)
    monkeypatch.setattr(source.exchange, "milliseconds", lambda: now_of(candles) + exchange.CLOCK_MARGIN_MS)
    with CandleStore(db, create=True) as store:
        result = ingest(store, source, "ETHUSDT", since=first_of(candles), sleep=pytest.fail)
    assert result.pages == 3 and result.exchange_symbol == "ETH/USDT:USDT"
    assert_holds(db, closed(candles), candles)


def test_real_ccxt_bybit_spot_maps_to_the_spot_symbol(monkeypatch: pytest.MonkeyPatch) -> None:
    source = offline_bybit(monkeypatch, "spot")
    assert source.exchange.options["defaultType"] == "spot"
    assert source.resolve_symbol("ETHUSDT") == "ETH/USDT"
    with pytest.raises(ConfigError, match=r"unknown symbol 'BTCUSDT' among bybit's 1 spot markets: did you mean ETHU"):
        source.resolve_symbol("BTCUSDT")
    with pytest.raises(ConfigError, match=r"unknown symbol 'SOLEUR' among bybit's 1 spot markets: no close matches"):
        source.resolve_symbol("SOLEUR")


def test_page_limit_comes_from_ccxt_features_or_the_option() -> None:
    assert make_ccxt_source("okx").page_limit == 300
    assert make_ccxt_source("bybit", page_limit=500).page_limit == 500
    with pytest.raises(ConfigError, match=r"^--page-limit 2000 is above bybit's maximum of 1000 candles per request"):
        make_ccxt_source("bybit", page_limit=2000)


# --- the command ---

runner = CliRunner()


@pytest.fixture
def cli_source(monkeypatch: pytest.MonkeyPatch, candles: pd.DataFrame) -> dict[str, FakeExchange]:
    """The CLI's exchange is the fake; `holder["source"]` may be replaced before a run."""
    holder = {"source": fake(candles)}
    monkeypatch.setattr(exchange, "source_factory", lambda exchange_id, market, page_limit=None: holder["source"])
    return holder


def test_cli_downloads_prints_a_summary_and_is_silent_when_nothing_is_left(
    db: Path, candles: pd.DataFrame, cli_source: dict[str, FakeExchange]
) -> None:
    args = ["ingest", "exchange", "--db", str(db), "--since", str(first_of(candles))]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    last = int(closed(candles)[-1])
    assert result.stdout.splitlines() == [
        f"ETHUSDT (fakex linear, ETH/USDT:USDT): {ROWS - 1:,} rows added from 15 requests",
        f"held: {pd.Timestamp(first_of(candles), unit='s'):%Y-%m-%d %H:%M} UTC to "
        f"{pd.Timestamp(last, unit='s'):%Y-%m-%d %H:%M} UTC, {ROWS - 1:,} minutes",
        "no gaps",
    ]
    cli_source["source"] = fake(candles)
    again = runner.invoke(app, ["ingest", "exchange", "--db", str(db)])
    assert again.exit_code == 0 and again.stdout == "" and again.stderr == ""
    assert cli_source["source"].requests == []


def test_cli_reports_remaining_gaps(db: Path, candles: pd.DataFrame, cli_source: dict[str, FakeExchange]) -> None:
    stamps = candles["timestamp"].to_numpy()
    cli_source["source"] = fake(candles, missing=set(stamps[450:480].tolist()))
    result = runner.invoke(app, ["ingest", "exchange", "--db", str(db), "--since", str(first_of(candles))])
    assert result.exit_code == 0, result.output
    first = f"{pd.Timestamp(stamps[450], unit='s'):%Y-%m-%d %H:%M} UTC"
    assert result.stdout.splitlines()[-1] == (
        f"1 gap, 30 missing minutes; largest: 30 min from {first} "
        f"(`lstm-trading gaps --db {db} --symbol ETHUSDT` lists them; --since fetches them again)"
    )


def test_cli_quiet_prints_only_warnings(db: Path, candles: pd.DataFrame, cli_source: dict[str, FakeExchange]) -> None:
    cli_source["source"] = fake(candles, edit=lambda call, rows: rows + rows[-1:] if call == 1 else rows)
    result = runner.invoke(app, ["ingest", "exchange", "--db", str(db), "--since", str(first_of(candles)), "-q"])
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr.startswith("warning: fakex ETHUSDT page from ")
    assert "dropped 1 bad row (1 duplicate); they are not stored" in result.stderr


def test_cli_retries_exhausted_exit_2_and_keep_earlier_pages(
    db: Path, candles: pd.DataFrame, cli_source: dict[str, FakeExchange]
) -> None:
    cli_source["source"] = fake(
        candles, faults={2: ccxt.RequestTimeout("read timeout"), 3: ccxt.RequestTimeout("again")}
    )
    args = [
        "ingest",
        "exchange",
        "--db",
        str(db),
        "--since",
        str(first_of(candles)),
        "--retries",
        "1",
        "--backoff",
        "0",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: fakex: fetching ETHUSDT (ETH/USDT:USDT) candles from ")
    assert result.stderr.endswith(
        "failed 2 times (last: RequestTimeout: again); the 1 earlier page (200 rows added) is stored; "
        "run the command again to resume\n"
    )
    assert_holds(db, candles["timestamp"].to_numpy()[:PAGE], candles)


def test_cli_ctrl_c_keeps_the_finished_pages_and_says_how_to_resume(
    db: Path, candles: pd.DataFrame, cli_source: dict[str, FakeExchange]
) -> None:
    def interrupt(call: int) -> None:
        if call == 3:
            raise KeyboardInterrupt

    cli_source["source"] = fake(candles, on_fetch=interrupt)
    result = runner.invoke(app, ["ingest", "exchange", "--db", str(db), "--since", str(first_of(candles))])
    assert result.exit_code == 130
    assert result.stderr == "interrupted: every finished page is stored; run the command again to resume\n"
    assert_holds(db, candles["timestamp"].to_numpy()[: 2 * PAGE], candles)
    cli_source["source"] = fake(candles)
    assert runner.invoke(app, ["ingest", "exchange", "--db", str(db), "-q"]).exit_code == 0
    assert_holds(db, closed(candles), candles)


def test_cli_until_before_since_is_refused(db: Path, cli_source: dict[str, FakeExchange]) -> None:
    args = ["ingest", "exchange", "--db", str(db), "--since", "2025-06-02", "--until", "2025-06-01"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr == "error: --until 2025-06-01 00:00 UTC is not after --since 2025-06-02 00:00 UTC\n"


def test_cli_first_run_without_since_says_how_to_start(db: Path, cli_source: dict[str, FakeExchange]) -> None:
    result = runner.invoke(app, ["ingest", "exchange", "--db", str(db)])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: the store holds no ETHUSDT candles yet: give --since (e.g. --since 2024-01-01) for the first "
        "download; later runs continue from the last stored minute\n"
    )
    assert cli_source["source"].requests == []


def test_cli_unknown_symbol_exit_2_with_close_matches(db: Path, cli_source: dict[str, FakeExchange]) -> None:
    result = runner.invoke(
        app, ["ingest", "exchange", "--db", str(db), "--symbol", "ETHUSDTT", "--since", "2025-05-31"]
    )
    assert result.exit_code == 2
    assert "unknown symbol 'ETHUSDTT' among fakex's 2 linear markets: did you mean ETHUSDT" in result.stderr
    with CandleStore(db) as store:
        assert store.symbol_info("ETHUSDTT") is None  # nothing recorded for a name the exchange does not know


def test_another_market_under_a_stored_name_is_refused(db: Path, candles: pd.DataFrame) -> None:
    run(db, fake(candles), since=first_of(candles), until=int(candles["timestamp"].iloc[100]))
    spot = fake(candles, market="spot")
    with pytest.raises(DataError, match=r"ETHUSDT holds fakex linear candles, not fakex spot"):
        run(db, spot)
    assert spot.requests == []
