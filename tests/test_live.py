"""The live loop: replay equals the backtest (real candles, both commands), restarts never double an order and
end where an uninterrupted run ends, guards fire and say so, live mode refuses what it must, keys never leak.

Paper and live modes run days of periods against a fake ccxt exchange (`fake_ccxt.py`) on a simulated clock.
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path
from typing import Any

import ccxt
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from exchange_fake_runner import load_candles
from fake_ccxt import FakeCcxt, SimClock
from lstm_trading.backtest.execution import LONG, SHORT, CandleArrays, Costs, Order, PositionWatch, simulate_fill
from lstm_trading.backtest.simulation import trades_frame
from lstm_trading.cli import app
from lstm_trading.core.config import BacktestConfig
from lstm_trading.data.store import CandleStore
from lstm_trading.live import brokers as broker
from lstm_trading.live.feeds import ReplayFeed
from lstm_trading.live.loop import DecisionLog, LiveLoop, LiveStop, LoopSettings
from lstm_trading.live.settings import LiveSettings
from lstm_trading.live.signals import Signal
from lstm_trading.live.state import LiveState
from lstm_trading.models.bundle import load_bundle
from lstm_trading.predict import predict_moments
from lstm_trading.runs import live as live_runs
from lstm_trading.runs.live import live_run, replay_run

runner = CliRunner(env={"COLUMNS": "200"})
SECRET = "sEcReT-0123456789-do-not-leak"
KEY = "kEy-abcdef"
COSTS = Costs(0.00055, 0.0001)


# --- the fill step in pieces equals the backtest's fill ---


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    direction=st.sampled_from([LONG, SHORT]),
    hold=st.integers(1, 90),
    cuts=st.lists(st.integers(1, 40), min_size=1, max_size=30),
    drop=st.lists(st.integers(1, 119), max_size=10),
)
def test_position_watch_fed_in_pieces_gives_the_backtest_fill(
    seed: int, direction: int, hold: int, cuts: list[int], drop: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    n = 120
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    open_ = np.concatenate([[100.0], close[:-1]]) * (1 + rng.normal(0, 0.002, n))  # gaps between candles
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.002, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.002, n)))
    keep = np.ones(n, dtype=bool)
    keep[drop] = False  # missing minutes, never the entry candle
    t = 1_700_000_040 + 60 * np.arange(n, dtype=np.int64)
    candles = CandleArrays(t[keep], open_[keep], high[keep], low[keep], close[keep])
    stop, target = (open_[0] * 0.99, open_[0] * 1.012) if direction == LONG else (open_[0] * 1.01, open_[0] * 0.988)
    order = Order(int(t[0]), direction, 2.0, float(open_[0]), stop, target, 1.0, 1.2, 0.6)
    expected = simulate_fill(candles, 0, order, max_hold_seconds=hold * 60, costs=COSTS)
    watch = PositionWatch(order, hold * 60, COSTS)
    moment, fill = int(t[0]), None
    for cut in [*cuts, 10**6]:
        moment = min(moment + 60 * cut, int(t[-1]) + 60)
        fill = watch.feed(candles.between(watch.last_time + 1, moment - 59))
        if fill is None and moment >= watch.horizon:
            fill = watch.close_at_last()
        if fill is not None or moment == int(t[-1]) + 60:
            break
    fill = fill or watch.close_at_last(end_of_data=True)
    assert fill == expected


# --- replay against backtest, on real candles ---


@pytest.fixture(scope="module")
def real_db(bybit_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Nine thousand real Bybit minutes (the tiny bundle needs about 2,200 before its first moment)."""
    path = tmp_path_factory.mktemp("live_real") / "bybit.db"
    with CandleStore(path, create=True) as store:
        store.upsert("ETHUSDT", load_candles(bybit_csv, 0, 9000), source="bybit csv")
    return path


def real_period(db: Path) -> tuple[int, int]:
    with CandleStore(db) as store:
        held = store.time_range("ETHUSDT")
    assert held is not None
    return held[0] + 3000 * 60, held[1] - 7  # the end falls inside a minute, as a user's --to may


def replaying(db: Path, start: int, end: int, **settings: Any) -> LiveSettings:
    """A replay of `db` from `start` to `end` on one inference process."""
    return LiveSettings(replay=True, db=db, start=start, end=end, workers=1, **settings)


SETTINGS = [
    "--every",
    "10m",
    "--min-prob",
    "0.4",
    "--min-ev",
    "-1",
    "--max-hold",
    "20m",
    "--risk",
    "1%",
    "--daily-loss-limit",
    "2%",
]


def test_replay_trades_equal_backtest_trades_on_real_candles_through_both_commands(
    tiny_run: Path, real_db: Path, tmp_path: Path
) -> None:
    start, end = (str(t) for t in real_period(real_db))
    period = ["--db", str(real_db), "--from", start, "--to", end, *SETTINGS, "--workers", "1"]
    backtest = runner.invoke(
        app, ["backtest", str(tiny_run), *period, "--seeds", "1", "--no-progress", "--out", str(tmp_path / "bt")]
    )
    assert backtest.exit_code == 0, backtest.output
    replayed = runner.invoke(app, ["live", str(tiny_run), "--replay", *period, "-q", "--out", str(tmp_path / "rp")])
    assert replayed.exit_code == 0, replayed.output
    expected = (tmp_path / "bt" / "trades.csv").read_text()
    assert (tmp_path / "rp" / "trades.csv").read_text() == expected
    trades = pd.read_csv(tmp_path / "bt" / "trades.csv")
    assert len(trades) > 20 and set(trades["exit_reason"]) >= {"stop_loss", "take_profit", "max_hold"}
    stats = json.loads((tmp_path / "bt" / "stats.json").read_text())["model"]
    assert stats["skipped"]["daily_loss_limit"] > 0  # the kill switch took part, in both
    with LiveState(real_db, "replay") as state:
        assert state.meta("trader")["skipped"] == stats["skipped"]
        assert state.meta("trader")["signals"] == stats["signals"]
    assert f"{len(trades)} trades" in replayed.stdout
    assert "kill switch: daily loss limit of 2% reached" in replayed.stdout  # guards print even with -q
    assert "P(B/S/I)" not in replayed.stdout  # -q: decisions go to live.jsonl only


def test_replay_stopped_and_resumed_ends_with_the_uninterrupted_trades(
    tiny_run: Path, real_db: Path, tmp_path: Path
) -> None:
    start, end = real_period(real_db)
    config = BacktestConfig(min_prob=0.0, min_ev=-1.0, every_seconds=600, max_hold_seconds=3600)
    whole = replay_run(tiny_run, replaying(real_db, start, end, account="whole", out_dir=tmp_path), config=config)
    assert whole.trades_path is not None
    parts = [150, 1, 200, None]  # stops after 150 periods, then 1, then 200, then the rest
    for i, periods in enumerate(parts):
        settings_ = replaying(real_db, start, end, account="parts", periods=periods, out_dir=tmp_path / "parts")
        result = replay_run(tiny_run, settings_, config=config, fresh=i == 0)
        if i == 0:
            with LiveState(real_db, "parts") as state:
                assert state.meta("last_moment") == -(-start // 600) * 600 + 149 * 600
    assert trades_frame(result.fills).equals(trades_frame(whole.fills))
    with LiveState(real_db, "parts") as state:
        orders = state.orders()
    assert len({o["client_id"] for o in orders}) == len(orders) == len(whole.fills)
    assert {o["status"] for o in orders} == {"closed"}


def test_kill_switch_is_printed_once_a_day_when_it_fires(tiny_run: Path, real_db: Path, tmp_path: Path) -> None:
    start, end = real_period(real_db)
    lines: list[str] = []
    config = BacktestConfig(min_prob=0.0, min_ev=-1.0, daily_loss_limit=0.001)
    replay_run(tiny_run, replaying(real_db, start, end, out_dir=tmp_path), config=config, echo=lines.append)
    fired = [line for line in lines if line.startswith("kill switch: daily loss limit of 0.1% reached")]
    days = {line.rsplit("until ", 1)[1] for line in fired}
    assert fired and len(fired) == len(days)
    events = [json.loads(line) for line in (tmp_path / "live.jsonl").read_text().splitlines()]
    guards = [e for e in events if e["event"] == "guard"]
    assert [g["guard"] for g in guards] == ["daily_loss_limit"] * len(fired)
    assert any(e["event"] == "decision" and e["reason"] == "daily_loss_limit" for e in events)


class AlwaysBuy:
    """Signals that trade at every moment, with tight levels: positions open and close all the time."""

    def at(self, moment: int) -> Signal:
        return Signal(np.array([0.8, 0.1, 0.1]), 0.05, 0.08)


class FlakyFeed(ReplayFeed):
    """Stored candles, but the entry price cannot be fetched at the moments in `failing`."""

    def __init__(self, period: CandleArrays, failing: set[int]) -> None:
        super().__init__(period)
        self.failing = failing

    def open_at(self, at: int) -> float | None:
        if at in self.failing:
            raise broker.ExchangeUnavailable(f"fetching the candle opening at {at} failed 4 times")
        return super().open_at(at)


def test_a_failed_period_loses_no_fill_and_counts_nothing(real_db: Path, tmp_path: Path) -> None:
    with CandleStore(real_db) as store:
        candles = store.read("ETHUSDT")
    period = CandleArrays.from_frame(candles).between(*real_period(real_db))
    config = BacktestConfig(every_seconds=300, max_hold_seconds=3600, fee=0.0, slippage=0.0)  # TP 0.08 % pays no fees
    moments = [int(t) for t in period.timestamp[::5][:200]]
    failing = set(moments[3::4])  # every fourth period fails after its position check
    settings_ = LoopSettings(
        account="flaky", symbol="ETHUSDT", config=config, max_quantity=None, quantity=None, max_errors=2
    )
    with LiveState(real_db, "flaky") as state:
        state.clear()
        loop = LiveLoop(
            settings_, state, FlakyFeed(period, failing), broker.PaperBroker(), AlwaysBuy(), DecisionLog(None)
        )
        loop.run(moments)
        fills, orders, trader = state.fills(), state.orders(), state.meta("trader")
        decided = [d["at"] for d in state.decisions()]
    assert len(fills) > 20 and decided == [m for m in moments if m not in failing]
    assert trader["equity"] == pytest.approx(config.initial_equity + sum(f.pnl for f in fills), rel=1e-12)
    closed = [o["client_id"] for o in orders if o["status"] == "closed"]
    assert len(closed) == len(fills) and len(orders) - len(closed) <= 1  # at most the open one
    assert trader["signals"] == len(decided)  # a failed period's signal is not counted


# --- paper and live modes against the fake exchange ---

DAY = 86_400


@pytest.fixture(scope="module")
def tiny_market(tiny_candles: pd.DataFrame) -> pd.DataFrame:
    return tiny_candles.reset_index(drop=True)


def tiny_start(candles: pd.DataFrame) -> int:
    return int(candles["timestamp"].iloc[0]) + 2 * DAY


@pytest.fixture
def exchange(tiny_market: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """A database with two days of the tiny market, and a fake exchange serving all six on a simulated clock."""
    start = tiny_start(tiny_market)
    db = tmp_path / "live.db"
    with CandleStore(db, create=True) as store:
        store.upsert("ETHUSDT", tiny_market[tiny_market["timestamp"] < start], source="tiny")
    clock = SimClock(start - 10)
    fake = FakeCcxt(tiny_market, clock)
    made: list[tuple[str, str, Any]] = []

    def factory(exchange_id: str, market: str, credentials: broker.Credentials | None) -> FakeCcxt:
        made.append((exchange_id, market, credentials))
        return fake

    monkeypatch.setattr(broker, "exchange_factory", factory)
    monkeypatch.setattr(live_runs, "clock_factory", lambda: clock)
    return {"db": db, "clock": clock, "fake": fake, "made": made, "start": start}


PAPER = BacktestConfig(every_seconds=1800, min_prob=0.0, min_ev=-1.0, max_hold_seconds=4 * 3600)


def paper(
    ex: dict[str, Any],
    periods: int | None,
    *,
    run: Path,
    config: BacktestConfig = PAPER,
    environ: dict[str, str] | None = None,
    echo: Any = None,
    **settings: Any,
) -> dict[str, Any]:
    """`live_run` on the fake exchange: its database and clock, 2 retries, the log beside the database."""
    settings.setdefault("retries", 2)
    settings.setdefault("out_dir", ex["db"].parent / "live-log")
    chosen = LiveSettings(db=ex["db"], periods=periods, **settings)
    return live_run(run, chosen, config=config, clock=ex["clock"], environ=environ, echo=echo)


def test_paper_mode_runs_three_days_on_the_fake_exchange_and_logs_every_decision(
    tiny_run: Path, exchange: dict[str, Any], tmp_path: Path
) -> None:
    summary = paper(exchange, 144, run=tiny_run, out_dir=tmp_path / "out")  # 3 days of 30-minute periods
    with LiveState(exchange["db"], "paper") as state:
        decisions, fills = state.decisions(), state.fills()
    assert len(decisions) == 144 and decisions[0]["at"] == exchange["start"]
    assert np.all(np.diff([d["at"] for d in decisions]) == 1800)
    assert fills and all(b.entry_time >= a.exit_time for a, b in zip(fills, fills[1:], strict=False))
    assert summary["trades"] == len(fills) and summary["total_pnl"] == pytest.approx(sum(f.pnl for f in fills))
    assert exchange["fake"].orders == []  # paper mode never sends an order
    lines = [json.loads(line) for line in (tmp_path / "out" / "live.jsonl").read_text().splitlines()]
    logged = [line for line in lines if line["event"] == "decision"]
    assert len(logged) == 144
    for line in logged:
        assert {"at", "p_buy", "p_sell", "p_invalid", "side", "stop_loss", "take_profit", "action", "reason"} <= set(
            line
        )
        assert math.isclose(line["p_buy"] + line["p_sell"] + line["p_invalid"], 1.0, rel_tol=1e-5)
    opened = [line for line in logged if line["action"] == "open"]
    assert len(opened) == len(fills) + (summary["position"] is not None)
    with CandleStore(exchange["db"]) as store:  # the loop kept the candles current, closed minutes only
        held = store.time_range("ETHUSDT")
        assert held is not None and held[1] == exchange["start"] + 143 * 1800 - 60


def test_paper_restart_resumes_the_open_position_and_ends_as_an_uninterrupted_run(
    tiny_run: Path, exchange: dict[str, Any], tiny_market: pd.DataFrame, tmp_path: Path
) -> None:
    config = BacktestConfig(every_seconds=300, min_prob=0.0, min_ev=-1.0, max_hold_seconds=3600)
    paper(exchange, 100, run=tiny_run, account="whole", config=config)
    with LiveState(exchange["db"], "whole") as state:
        whole = state.fills()
    # the first period at which the uninterrupted run held a position it entered earlier
    holding = next(f for f in whole if f.exit_time - f.entry_time > 300)
    cut = (holding.entry_time - exchange["start"]) // 300 + 1
    exchange["clock"].time = exchange["start"] - 10
    paper(exchange, cut, run=tiny_run, account="parts", config=config)
    with LiveState(exchange["db"], "parts") as state:
        position = state.position()
        assert position is not None and position.order.at == holding.entry_time
    paper(exchange, 100 - cut, run=tiny_run, account="parts", config=config)  # the clock went on from the stop
    with LiveState(exchange["db"], "parts") as state:
        assert trades_frame(state.fills()).equals(trades_frame(whole))
        orders = state.orders()
    assert len({o["client_id"] for o in orders}) == len(orders)


def test_network_errors_back_off_skip_the_period_and_the_loop_goes_on(
    tiny_run: Path, exchange: dict[str, Any], tmp_path: Path
) -> None:
    fake: FakeCcxt = exchange["fake"]
    fake.faults["fetch_ohlcv"] = [ccxt.RequestTimeout("timed out")] * 3  # the first period's ingest: 1 + 2 retries
    lines: list[str] = []
    paper(exchange, 3, run=tiny_run, out_dir=tmp_path, echo=lines.append, backoff_s=1.0)
    assert [s for s in exchange["clock"].sleeps if 0 < s < 10] == [1.0, 2.0]
    errors = [line for line in lines if "error, period skipped (1 in a row)" in line]
    assert len(errors) == 1 and "RequestTimeout" in errors[0]
    events = [json.loads(line) for line in (tmp_path / "live.jsonl").read_text().splitlines()]
    (failed,) = [e["at"] for e in events if e["event"] == "error"]
    moments = [exchange["start"] + i * 1800 for i in range(3)]
    with LiveState(exchange["db"], "paper") as state:
        assert [d["at"] for d in state.decisions()] == [m for m in moments if m != failed]  # skipped, then on


def test_a_period_whose_last_minute_is_not_published_is_skipped_not_decided_on_older_candles(
    tiny_run: Path, exchange: dict[str, Any], tmp_path: Path
) -> None:
    fake: FakeCcxt = exchange["fake"]
    late = exchange["start"] + 1800 - 60  # the minute that closes at the second moment never arrives
    fake.candles = fake.candles[fake.candles["timestamp"] != late].reset_index(drop=True)
    fake.stamps = fake.candles["timestamp"].to_numpy(dtype=np.int64)
    lines: list[str] = []
    paper(exchange, 3, run=tiny_run, echo=lines.append)
    with LiveState(exchange["db"], "paper") as state:
        decided = [d["at"] for d in state.decisions()]
    assert decided == [exchange["start"], exchange["start"] + 3600]
    (error,) = [line for line in lines if "error, period skipped" in line]
    assert "the ETHUSDT minute closed at" in error and "is not stored" in error


def test_sigterm_stops_the_command_with_the_state_saved_and_a_rerun_resumes(
    tiny_run: Path, exchange: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock: SimClock = exchange["clock"]
    waits = {"n": 0}
    sleep = clock.sleep

    def terminated_on_the_third_wait(seconds: float) -> None:
        waits["n"] += 1
        if waits["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # systemd or docker stop, while the loop waits for a boundary
        sleep(seconds)

    monkeypatch.setattr(clock, "sleep", terminated_on_the_third_wait)
    args = ["live", str(tiny_run), "--db", str(exchange["db"]), "--every", "30m", "--out", str(tmp_path), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 130, result.output
    assert "stopped: the state is saved; run the same command to resume" in result.stderr
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    with LiveState(exchange["db"], "paper") as state:
        assert [d["at"] for d in state.decisions()] == [exchange["start"], exchange["start"] + 1800]
    monkeypatch.setattr(clock, "sleep", sleep)
    assert runner.invoke(app, [*args, "--periods", "2"]).exit_code == 0
    with LiveState(exchange["db"], "paper") as state:
        assert [d["at"] for d in state.decisions()] == [exchange["start"] + i * 1800 for i in range(4)]


def test_too_many_consecutive_errors_stop_the_command_with_a_message(
    tiny_run: Path, exchange: dict[str, Any], tmp_path: Path
) -> None:
    exchange["fake"].faults["fetch_ohlcv"] = [ccxt.ExchangeNotAvailable("maintenance")] * 100
    args = ["live", str(tiny_run), "--db", str(exchange["db"]), "--max-errors", "3", "--retries", "1"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "error: stopped after 3 consecutive failed periods (--max-errors 3); last: ingest:" in result.stderr
    assert "the state is saved, start again to resume" in result.stderr
    assert result.stdout.count("error, period skipped") == 3 and "guard: stopped after 3" in result.stdout
    with pytest.raises(LiveStop):
        paper(exchange, None, run=tiny_run, max_errors=2)


# --- live mode: refusals, keys, orders, reconciliation ---


def live_args(tiny_run: Path, db: Path, *extra: str) -> list[str]:
    return ["live", str(tiny_run), "--db", str(db), "--mode", "live", "--out", str(db.parent / "out"), *extra]


def test_live_mode_refuses_without_the_confirmation_flag(tiny_run: Path, exchange: dict[str, Any]) -> None:
    result = runner.invoke(app, live_args(tiny_run, exchange["db"]), env={broker.API_KEY_ENV: KEY})
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: live mode places real orders with real money; add --i-understand-live-trading to confirm "
        "(try --mode paper first)"
    )
    assert exchange["made"] == []


@pytest.mark.parametrize("flag", ["--qty", "--max-qty"])
def test_a_zero_order_size_is_refused_not_a_loop_that_never_trades(
    tiny_run: Path, exchange: dict[str, Any], flag: str
) -> None:
    result = runner.invoke(app, ["live", str(tiny_run), "--db", str(exchange["db"]), flag, "0"])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {flag} 0: must be above 0 (units of the base currency, e.g. 0.5 ETH)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2025-06-01"], "--from is for --replay: the live and paper loops start now and run until stopped"),
        (["--to", "2025-06-02"], "--to is for --replay: the live and paper loops start now and run until stopped"),
        (
            ["--replay", "--from", "2025-06-01", "--qty", "1"],
            "--qty is for the live and paper loops: a replay sizes orders as the backtest does (--risk or "
            "--position-share), so that its trades equal the backtest's",
        ),
    ],
)
def test_flags_of_the_other_mode_are_refused_not_ignored(
    tiny_run: Path, exchange: dict[str, Any], args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["live", str(tiny_run), "--db", str(exchange["db"]), *args])
    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n"
    assert exchange["made"] == []


@pytest.mark.parametrize(("flag", "value"), [("--risk", "0.5%"), ("--position-share", "20%")])
def test_qty_with_another_sizing_flag_is_refused_not_silently_overriding_it(
    tiny_run: Path, exchange: dict[str, Any], flag: str, value: str
) -> None:
    """Regression: `--qty 1 --risk 0.5%` traded 1 unit per order and ignored the risk the user asked for."""
    result = runner.invoke(app, ["live", str(tiny_run), "--db", str(exchange["db"]), "--qty", "1", flag, value])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: give --qty or {flag}, not both: --qty 1 sets every order's size, so {flag} {value} would be ignored\n"
    )
    assert exchange["made"] == []


def test_decisions_between_minute_boundaries_are_refused(tiny_run: Path, exchange: dict[str, Any]) -> None:
    result = runner.invoke(app, ["live", str(tiny_run), "--db", str(exchange["db"]), "--every", "90s"])
    assert result.exit_code == 2 and "backtest.every_seconds" in result.stderr and "whole minutes" in result.stderr


def test_live_mode_refuses_spot_markets(tiny_run: Path, exchange: dict[str, Any]) -> None:
    result = runner.invoke(app, live_args(tiny_run, exchange["db"], "--i-understand-live-trading", "--market", "spot"))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: live mode trades linear perpetuals only (stop loss and take profit held on the exchange's position);"
        " --market spot can run with --mode paper"
    )


def test_live_mode_refuses_another_symbol_than_the_bundles(tiny_run: Path, exchange: dict[str, Any]) -> None:
    args = live_args(tiny_run, exchange["db"], "--i-understand-live-trading", "--symbol", "BTCUSDT")
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: live mode refused: the bundle was trained on ETHUSDT, not BTCUSDT; trade the bundle's symbol with "
        "--symbol ETHUSDT"
    )


def test_live_mode_refuses_a_stale_model(tiny_run: Path, exchange: dict[str, Any]) -> None:
    exchange["clock"].time += 40 * DAY
    result = runner.invoke(app, live_args(tiny_run, exchange["db"], "--i-understand-live-trading"))
    assert result.exit_code == 2
    assert "error: live mode refused: the bundle's data ends 2024-01-06 23:59 UTC, 36 days ago" in result.stderr
    assert "more than --max-model-age 30d; retrain on recent candles (or raise --max-model-age)" in result.stderr
    relaxed = live_args(tiny_run, exchange["db"], "--i-understand-live-trading", "--max-model-age", "60d")
    result = runner.invoke(app, relaxed, env={broker.API_KEY_ENV: "", broker.API_SECRET_ENV: ""})
    assert result.exit_code == 2 and "LSTM_TRADING_API_KEY and LSTM_TRADING_API_SECRET are not set" in result.stderr


def test_live_mode_without_keys_is_a_clear_error(tiny_run: Path, exchange: dict[str, Any]) -> None:
    args = live_args(tiny_run, exchange["db"], "--i-understand-live-trading")
    result = runner.invoke(app, args, env={broker.API_KEY_ENV: KEY, broker.API_SECRET_ENV: ""})
    assert result.exit_code == 2
    assert result.stderr.startswith("error: live mode needs the exchange API keys in the environment: ")
    assert "LSTM_TRADING_API_SECRET is not set" in result.stderr and exchange["made"] == []


def test_live_mode_places_bracket_orders_and_the_secret_is_in_no_output_log_or_file(
    tiny_run: Path, exchange: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    fake: FakeCcxt = exchange["fake"]
    echoed = ccxt.ExchangeNotAvailable(f"bybit GET /v5/market/kline?api_key={KEY}&sign={SECRET} 503")
    fake.faults["fetch_ohlcv"] = [echoed]  # an error that echoes the request: logged with the keys blanked out
    args = live_args(
        tiny_run, exchange["db"], "--i-understand-live-trading", "--every", "30m", "--min-prob", "0.0", "--min-ev", "-1"
    )
    env = {broker.API_KEY_ENV: KEY, broker.API_SECRET_ENV: SECRET}
    options = ["--periods", "96", "--out", str(out), "--max-qty", "1.5", "--retries", "0"]
    result = runner.invoke(app, [*args, *options], env=env)
    assert result.exit_code == 0, result.output
    # the first request fails (here the entry candle of a first-period signal): named, with the keys blanked out
    assert "error, period skipped (1 in a row): " in result.stdout and "api_key=***&sign=***" in result.stdout
    (_, _, credentials), *_ = exchange["made"]
    assert credentials == broker.Credentials(KEY, SECRET)  # handed to ccxt, and nowhere else:
    for text in (result.stdout, result.stderr):
        assert SECRET not in text and KEY not in text
    files = [p for p in [*tmp_path.rglob("*"), *exchange["db"].parent.rglob("*")] if p.is_file()]
    assert any(p.name == "live.jsonl" for p in files)
    for path in files:
        data = path.read_bytes()
        assert SECRET.encode() not in data and KEY.encode() not in data, path
    entries = fake.entries()
    assert entries and len({o["clientOrderId"] for o in entries}) == len(entries)
    with LiveState(exchange["db"], "live") as state:
        placed = {o["client_id"]: o for o in state.orders()}
    for entry in entries:
        mine = placed[entry["clientOrderId"]]["order"]
        assert entry["side"] == ("buy" if mine["direction"] == LONG else "sell") and entry["amount"] <= 1.5
        assert entry["params"]["stopLoss"]["triggerPrice"] == round(mine["stop"], 2)
        assert entry["params"]["takeProfit"]["triggerPrice"] == round(mine["target"], 2)
    assert "guard: max position: order of" in result.stdout


def test_live_restart_resumes_the_exchange_position_without_a_second_order(
    tiny_run: Path, exchange: dict[str, Any]
) -> None:
    fake: FakeCcxt = exchange["fake"]
    fake.accept_then_timeout = 1  # the first entry reaches the exchange, its answer is lost
    keys = {broker.API_KEY_ENV: KEY, broker.API_SECRET_ENV: SECRET}
    lines: list[str] = []
    run = {"run": tiny_run, "mode": "live", "confirmed": True, "environ": keys, "echo": lines.append}
    periods = 0
    while fake.position is None:  # run until the exchange holds a position, one period at a time
        paper(exchange, 1, **run)
        periods += 1
        assert periods < 96, "the tiny model should trade within two days"
    assert len(fake.entries()) == 1 and any("RequestTimeout; retry 1 of 2" in line for line in lines)
    placed = len(fake.entries())
    paper(exchange, 1, **run)  # restart: reconcile, resume, no new entry while the position is open
    assert len(fake.entries()) == placed or fake.position is None
    paper(exchange, 20, **run)
    with LiveState(exchange["db"], "live") as state:
        orders = state.orders()
        fills = state.fills()
    assert len(fake.entries()) == len(orders) and len({o["client_id"] for o in orders}) == len(orders)
    assert len(fills) == len(orders) - (fake.position is not None)


def test_a_crash_after_the_order_left_resumes_its_position_without_placing_it_again(
    tiny_run: Path, exchange: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake: FakeCcxt = exchange["fake"]
    keys = {broker.API_KEY_ENV: KEY, broker.API_SECRET_ENV: SECRET}
    lines: list[str] = []
    run = {"run": tiny_run, "mode": "live", "confirmed": True, "environ": keys, "echo": lines.append}
    commit = LiveState.commit

    def killed_after_sending(self: LiveState, step: Any) -> None:
        if any(status == "filled" for _, status, _ in step.orders):
            raise KeyboardInterrupt  # the process dies after the exchange took the order, before the state knew
        commit(self, step)

    monkeypatch.setattr(LiveState, "commit", killed_after_sending)
    with pytest.raises(KeyboardInterrupt):
        paper(exchange, 96, **run)
    (entry,) = fake.entries()
    with LiveState(exchange["db"], "live") as state:
        assert state.position() is None and [o["status"] for o in state.orders()] == ["sent"]
    monkeypatch.setattr(LiveState, "commit", commit)
    paper(exchange, 1, **run)  # the restart redoes the interrupted moment
    assert f"resumed the position of order {entry['clientOrderId']}, sent before the last stop" in lines
    with LiveState(exchange["db"], "live") as state:
        orders = state.orders()
        position = state.position()
    assert orders[0]["client_id"] == entry["clientOrderId"] and orders[0]["status"] in ("filled", "closed")
    assert fake.entries()[0] is entry and len(fake.entries()) == len(orders)
    assert position is None or position.client_id in {o["client_id"] for o in orders}


def test_a_placement_lost_in_timeouts_is_found_by_its_client_id_in_the_next_period(
    tiny_run: Path, exchange: dict[str, Any]
) -> None:
    fake: FakeCcxt = exchange["fake"]
    create = fake.create_order

    def first_answer_lost(*args: Any) -> dict[str, Any]:
        if not fake.orders:  # the first entry is taken, its answer lost, and the look-ups time out too
            fake.accept_then_timeout = 1
            fake.faults["fetch_open_orders"] = [ccxt.RequestTimeout("timed out")] * 2
        return create(*args)

    fake.create_order = first_answer_lost  # type: ignore[method-assign,assignment]
    keys = {broker.API_KEY_ENV: KEY, broker.API_SECRET_ENV: SECRET}
    lines: list[str] = []
    paper(exchange, 30, run=tiny_run, mode="live", confirmed=True, environ=keys, echo=lines.append)
    first = fake.orders[0]["clientOrderId"]
    assert any("error, period skipped (1 in a row): placing" in line and "failed 3 times" in line for line in lines)
    assert f"resumed the position of order {first}, sent before the last stop" in lines
    with LiveState(exchange["db"], "live") as state:
        orders = state.orders()
    assert [o["clientOrderId"] for o in fake.entries()] == [o["client_id"] for o in orders]  # each placed once
    assert orders[0]["client_id"] == first and orders[0]["status"] in ("filled", "closed")


def test_live_mode_starts_from_the_exchange_balance(tiny_run: Path, exchange: dict[str, Any]) -> None:
    exchange["fake"].balance = 5_000.0
    keys = {broker.API_KEY_ENV: KEY, broker.API_SECRET_ENV: SECRET}
    summary = paper(exchange, 2, run=tiny_run, mode="live", confirmed=True, environ=keys)
    assert summary["initial_equity"] == pytest.approx(5_000.0)
    assert summary["equity"] == pytest.approx(5_000.0 + summary["total_pnl"])


def test_live_start_stops_on_an_exchange_position_the_state_cannot_explain(
    tiny_run: Path, exchange: dict[str, Any]
) -> None:
    fake: FakeCcxt = exchange["fake"]
    fake.position = {"symbol": "ETH/USDT:USDT", "side": "short", "contracts": 3.0, "stop": 1e9, "target": 0.0,
                     "opened": exchange["start"] - 600}  # fmt: skip
    args = live_args(tiny_run, exchange["db"], "--i-understand-live-trading")
    result = runner.invoke(app, args, env={broker.API_KEY_ENV: KEY, broker.API_SECRET_ENV: SECRET})
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: the exchange holds a short ETH/USDT:USDT position of 3 that the state does not know; close it on "
        "the exchange (or use another account) before starting the live loop"
    )
    assert fake.entries() == []


def test_live_status_prints_position_pnl_and_last_decisions(tiny_run: Path, exchange: dict[str, Any]) -> None:
    paper(exchange, 40, run=tiny_run)
    result = runner.invoke(app, ["live-status", "--db", str(exchange["db"]), "--last", "5"])
    assert result.exit_code == 0, result.output
    with LiveState(exchange["db"], "paper") as state:
        fills, position, decisions = state.fills(), state.position(), state.decisions(5)
    total = sum(f.pnl for f in fills)
    assert f"account paper (paper, ETHUSDT): equity {10_000 + total:,.2f}" in result.stdout
    assert f"total {total:+,.2f} over {len(fills)} trades" in result.stdout
    if position is None:
        assert "position: none" in result.stdout
    else:
        assert f"position: {'Buy' if position.order.direction == LONG else 'Sell'} " in result.stdout
    assert "last 5 decisions" in result.stdout
    for decision in decisions:
        assert decision["at_utc"] in result.stdout
    missing = runner.invoke(app, ["live-status", "--db", str(exchange["db"]), "--account", "nope"])
    assert missing.exit_code == 2 and "no account 'nope'; it holds paper" in missing.stderr


def test_live_status_decisions_are_not_cut_at_80_columns(tiny_run: Path, exchange: dict[str, Any]) -> None:
    # regression: piped, the 9-column table squeezed the time to "2025-…" and wrapped each decision over 3 lines
    paper(exchange, 40, run=tiny_run)
    result = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["live-status", "--db", str(exchange["db"]), "--last", "5"])
    assert result.exit_code == 0, result.output
    with LiveState(exchange["db"], "paper") as state:
        decisions = state.decisions(5)
    lines = result.stdout.splitlines()
    header = lines.index("last 5 decisions") + 1
    assert lines[header].split() == [
        "time",
        "P(Buy)",
        "P(Sell)",
        "P(Invalid)",
        "signal",
        "SL",
        "TP",
        "action",
        "reason",
    ]
    rows = lines[header + 2 : header + 2 + len(decisions)]
    assert [row[: len(d["at_utc"])] for row, d in zip(rows, decisions, strict=True)] == [d["at_utc"] for d in decisions]
    assert all(row.split()[-1] == d["reason"] for row, d in zip(rows, decisions, strict=True))


def test_the_shared_run_folder_is_left_as_it_was(tiny_run: Path) -> None:
    """Last in this file: no test above wrote a log or a replay into the session's trained run."""
    assert not [p.name for p in tiny_run.iterdir() if p.name.startswith(("live-", "replay"))]


def test_paper_decisions_see_only_closed_candles_and_enter_at_the_moments_open(
    tiny_run: Path, exchange: dict[str, Any], tiny_market: pd.DataFrame
) -> None:
    """The live path (ingest at each boundary, then predict from the store) decides at `t` on exactly the
    candles closed by `t`, final values, as the backtest does: recomputed afterwards from the market's own
    candles, every probability is equal. A forming candle in the window or a missing last minute would show
    here, and the entry is the open of the candle opening at `t`."""
    paper(exchange, 48, run=tiny_run)
    with LiveState(exchange["db"], "paper") as state:
        decisions = state.decisions()
    bundle = load_bundle(tiny_run)
    stamps = tiny_market["timestamp"].to_numpy()
    for decision in decisions:
        at = decision["at"]
        closed = tiny_market[stamps < at].tail(bundle.history_minutes)  # open s with s + 60 <= at
        expected = predict_moments(bundle, closed, [at], workers=1).iloc[0]
        got = [decision["p_buy"], decision["p_sell"], decision["p_invalid"]]
        assert got == [float(expected["p_buy"]), float(expected["p_sell"]), float(expected["p_invalid"])], at
        if decision["signal"] != "none":
            assert decision["entry"] == float(tiny_market["open"][stamps == at].iloc[0])
    assert sum(d["action"] == "open" for d in decisions) >= 3 and sum(d["signal"] == "none" for d in decisions)


def test_live_status_without_db_reads_the_default_database_and_says_when_it_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["live-status"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: bybit1min.db: no such database; give the candle database the live loop ran on with --db\n"
    )
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_a_replay_stopped_by_periods_says_how_far_it_got(tiny_run: Path, real_db: Path, tmp_path: Path) -> None:
    """`live --replay --periods 40` printed "replayed 120 moments ... wrote None" after 40 decisions."""
    start, end = (str(t) for t in real_period(real_db))
    args = ["live", str(tiny_run), "--replay", "--db", str(real_db), "--from", start, "--to", end, *SETTINGS]
    args += ["--workers", "1", "-q", "--account", "partial", "--out", str(tmp_path / "rp")]
    stopped = runner.invoke(app, [*args, "--periods", "3"])
    assert stopped.exit_code == 0, stopped.output
    line = stopped.stdout.strip().splitlines()[-1]
    assert line.startswith("replayed 3 of ") and "(stopped by --periods)" in line and "None" not in line, line
    assert not (tmp_path / "rp" / "trades.csv").exists()
    finished = runner.invoke(app, args)
    assert finished.exit_code == 0, finished.output
    assert f"wrote {tmp_path / 'rp' / 'trades.csv'}" in finished.stdout
