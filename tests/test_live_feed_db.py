"""`live --feed db`: paper mode decides on the candles another process (cron's `ingest exchange`) writes into
the database, waits for each period's last minute to land, enters at the stored open, and never touches the
network; a minute that never lands skips the period with the cron line named; the flags it cannot serve are
refused.

A simulated cron writes the candles: each minute lands `LAND_S` seconds after it closes, through a connection of
its own, whenever the loop's (simulated) clock passes that time.
"""

from __future__ import annotations

import json
import socket
from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import dump_tables
from fake_ccxt import SimClock
from lstm_trading.cli import app
from lstm_trading.core.config import BacktestConfig
from lstm_trading.core.errors import DataError
from lstm_trading.core.timeutil import DAY, MINUTE, format_time
from lstm_trading.data import exchange as exchange_data
from lstm_trading.data.store import CandleStore
from lstm_trading.live import brokers
from lstm_trading.live.feeds import DB_POLL_S, DatabaseFeed
from lstm_trading.live.loop import LiveStop
from lstm_trading.live.settings import LiveSettings
from lstm_trading.live.state import LiveState
from lstm_trading.runs.live import live_run

LAND_S = 7  # cron starts at the minute; `ingest exchange` stores the minute that just closed a few seconds later
EVERY = 1800
PAPER = BacktestConfig(every_seconds=EVERY, min_prob=0.0, min_ev=-1.0, max_hold_seconds=4 * 3600)
runner = CliRunner(env={"COLUMNS": "200"})


class CronClock(SimClock):
    """The loop's clock; while it sleeps, cron lands every minute closed `LAND_S` seconds before the new time,
    until `dead_from` (the open time of the first minute that never lands; None: cron never stops)."""

    def __init__(self, now: float, market: dict[str, Any], *, dead_from: int | None = None) -> None:
        super().__init__(now)
        self.db = market["db"]
        self.market = market["candles"]
        self.dead_from = dead_from
        self.landed_until = market["start"] - 600  # open times before it are stored

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        stamps = self.market["timestamp"]
        due = (stamps >= self.landed_until) & (stamps + MINUTE + LAND_S <= self.time)
        if self.dead_from is not None:
            due &= stamps < self.dead_from
        if due.any():
            with CandleStore(self.db) as cron:  # another writer than the loop's connections
                cron.upsert("ETHUSDT", self.market[due], source="cron", exchange="bybit", market="linear")
            self.landed_until = int(stamps[due].iloc[-1]) + MINUTE


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Making an exchange, ingesting or opening any socket fails the test."""

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("--feed db touched the network")

    monkeypatch.setattr(brokers, "exchange_factory", refused)
    monkeypatch.setattr(exchange_data, "ingest", refused)
    monkeypatch.setattr(socket.socket, "connect", refused)


@pytest.fixture
def market(tiny_candles: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A database holding the tiny market up to 10 minutes before the first moment: cron fills the rest. Named
    as a user names it, relative (the console cuts an error line at 200 characters)."""
    monkeypatch.chdir(tmp_path)
    candles = tiny_candles.reset_index(drop=True)
    start = int(candles["timestamp"].iloc[0]) + 2 * DAY
    db = Path("cron.db")
    with CandleStore(db, create=True) as store:
        history = candles[candles["timestamp"] < start - 600]
        store.upsert("ETHUSDT", history, source="history", exchange="bybit", market="linear")
    return {"candles": candles, "start": start, "db": db}


def events(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "live.jsonl").read_text().splitlines()]


def test_paper_on_the_database_decides_on_what_cron_writes_and_enters_at_the_stored_open(
    tiny_run: Path, market: dict[str, Any], no_network: None, tmp_path: Path
) -> None:
    start, db = market["start"], market["db"]
    clock = CronClock(start - 10, market)
    lines: list[str] = []
    settings = LiveSettings(db=db, feed="db", periods=12, out_dir=tmp_path / "log")
    summary = live_run(tiny_run, settings, config=PAPER, clock=clock, echo=lines.append)
    with LiveState(db, "paper") as state:
        decisions, fills = state.decisions(), state.fills()
    assert [d["at"] for d in decisions] == [start + i * EVERY for i in range(12)]  # every period decided
    with CandleStore(db) as store:
        stored = store.read("ETHUSDT").set_index("timestamp")["open"]
    entered = [d for d in decisions if d["signal"] != "none"]
    assert len(entered) >= 6 and all(d["entry"] == stored[d["at"]] for d in entered)
    assert fills and all(f.order.entry == stored[f.entry_time] for f in fills)
    assert summary["trades"] == len(fills)
    # it waited for cron (polls of DB_POLL_S seconds) rather than failing or deciding on older candles
    assert clock.sleeps.count(DB_POLL_S) >= 12
    log = events(tmp_path / "log")
    assert not [e for e in log if e["event"] in ("error", "feed")]
    (started,) = [e for e in log if e["event"] == "start"]
    assert started["feed"] == "db" and f"candles from {db} as `ingest exchange` writes them (--feed db)" in lines[1]


def test_a_minute_that_never_lands_skips_the_period_naming_the_cron_line_then_max_errors_stops(
    tiny_run: Path, market: dict[str, Any], no_network: None, tmp_path: Path
) -> None:
    start, db = market["start"], market["db"]
    second = start + EVERY
    clock = CronClock(start - 10, market, dead_from=second - 2 * MINUTE)  # cron dies mid-period
    settings = LiveSettings(db=db, feed="db", max_errors=2, out_dir=tmp_path / "log")
    live_run(tiny_run, LiveSettings(db=db, feed="db", periods=1, out_dir=tmp_path / "log"), config=PAPER, clock=clock)
    before = {name: rows for name, rows in dump_tables(db).items() if name.startswith("live_")}
    lines: list[tuple[float, str]] = []
    with pytest.raises(LiveStop, match=r"stopped after 2 consecutive failed periods \(--max-errors 2\)"):
        live_run(tiny_run, settings, config=PAPER, clock=clock, echo=lambda line: lines.append((clock.time, line)))
    errors = [(at, line) for at, line in lines if "error, period skipped" in line]
    assert [at for at, _ in errors] == [second + 120, second + EVERY + 120]  # each waited --feed-wait, then gave up
    first = errors[0][1]
    assert f"the ETHUSDT minute closed at {format_time(second)} did not land within --feed-wait 120s: is " in first
    assert "`lstm-trading ingest exchange --db cron.db --symbol ETHUSDT -q` in cron?" in first
    after = {name: rows for name, rows in dump_tables(db).items() if name.startswith("live_")}
    assert after == before  # the failed periods left the state as the first one committed it
    with LiveState(db, "paper") as state:
        assert [d["at"] for d in state.decisions()] == [start]


def test_an_other_symbols_missing_minute_is_named_and_a_missing_open_is_no_entry_said_in_the_log(
    tiny_candles: pd.DataFrame, tmp_path: Path
) -> None:
    db = tmp_path / "two.db"
    candles = tiny_candles.reset_index(drop=True).iloc[:120]
    at = int(candles["timestamp"].iloc[100])
    with CandleStore(db, create=True) as store:
        store.upsert("ETHUSDT", candles, source="test")
        store.upsert("BTCUSDT", candles[candles["timestamp"] < at - 2 * MINUTE], source="test")
    clock = SimClock(at + 5)
    written: list[tuple[str, dict[str, Any], str]] = []
    feed = DatabaseFeed(db, "ETHUSDT", clock, wait_s=60, others=("BTCUSDT",), write=lambda *e: written.append(e))
    try:
        with pytest.raises(DataError) as caught:
            feed.advance(at)
        assert str(caught.value) == (
            f"the BTCUSDT minute closed at {format_time(at)} did not land within --feed-wait 60s: is "
            f"`lstm-trading ingest exchange --db {db} --symbol BTCUSDT -q` in cron? (newest: closed at "
            f"{format_time(at - 2 * MINUTE)}); no decision this period"
        )
        assert clock.time == at + 60  # waited until --feed-wait after the minute closed, polling
        assert feed.open_at(at) == float(candles["open"].iloc[100])
        end = int(candles["timestamp"].iloc[-1]) + MINUTE
        assert feed.open_at(end) is None  # never lands
        ((event, record, line),) = written
        assert event == "feed" and record["at"] == end and line.endswith("; no entry (reason no_candle)")
        assert f"the ETHUSDT candle opening at {format_time(end)} did not land" in line
    finally:
        feed.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--db", "x.db", "--feed", "db", "--mode", "live"],
            "--feed db is for --mode paper, not --mode live: real orders need the exchange (its prices, position and "
            "fills); drop --feed db",
        ),
        (
            ["--feed", "db", "--replay", "--from", "2024-01-01"],
            "--feed db is for --mode paper, not --replay: a replay already reads the stored candles (no network)",
        ),
        (
            ["--db", "x.db", "--feed", "db", "--retries", "2"],
            "--retries is for the exchange feed: --feed db reads the database and never the network",
        ),
        (
            ["--db", "x.db", "--feed-wait", "60s"],
            "--feed-wait is for --feed db: the exchange feed fetches each period's minutes itself",
        ),
        (
            ["--db", "x.db", "--feed", "cron"],
            "--feed: unknown feed 'cron'; use exchange (ingest each period, the default) or db (read the candles "
            "`ingest exchange` writes from cron)",
        ),
    ],
)
def test_flags_the_database_feed_cannot_serve_are_refused_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["live", str(tmp_path / "no-run"), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {message}\n"


def test_the_help_names_the_feed_wait_default() -> None:
    default = {f.name: f.default for f in fields(LiveSettings)}["feed_wait_s"]
    result = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["live", "--help"])
    assert f"wait for it to land (default {default}s)" in " ".join(result.stdout.split())


def test_a_minute_the_exchange_never_had_is_not_waited_for(tiny_candles: pd.DataFrame, tmp_path: Path) -> None:
    """A minute without trades has no candle, and cron stores the later ones: the period decides at once (the
    window has its gap, as the exchange feed's would) and an entry there has no price, said at once too."""
    db = tmp_path / "thin.db"
    candles = tiny_candles.reset_index(drop=True).iloc[:120]
    at = int(candles["timestamp"].iloc[100])
    thin = candles[~candles["timestamp"].isin([at - MINUTE, at])]  # the period's last minute and the entry's
    with CandleStore(db, create=True) as store:
        store.upsert("ETHUSDT", thin, source="test")
    clock = SimClock(at + 5)
    written: list[tuple[str, dict[str, Any], str]] = []
    feed = DatabaseFeed(db, "ETHUSDT", clock, wait_s=60, write=lambda *e: written.append(e))
    try:
        feed.advance(at)
        assert feed.open_at(at) is None
        assert clock.time == at + 5  # nothing waited for
        ((event, record, line),) = written
        assert event == "feed" and "the exchange has none; no entry (reason no_candle)" in line
    finally:
        feed.close()
