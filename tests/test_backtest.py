"""Backtest: batched predictions equal one-by-one ones, stored statistics, baselines, files and the command."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lstm_trading.backtest.execution import CandleArrays
from lstm_trading.backtest.results import run_backtest
from lstm_trading.backtest.simulation import (
    TRADE_COLUMNS,
    Simulation,
    account_run,
    buy_and_hold,
    decision_moments,
    equity_curve,
    moment_exits,
    random_entries,
    return_pct,
    simulate,
)
from lstm_trading.backtest.statistics import MINUTES_PER_YEAR, statistics
from lstm_trading.cli import app
from lstm_trading.core.config import BacktestConfig
from lstm_trading.data.synthetic import synthetic_candles
from lstm_trading.models.bundle import load_bundle
from lstm_trading.predict import predict_moments, predict_signals, scaled_features
from lstm_trading.runs.backtest import write_backtest

runner = CliRunner(env={"COLUMNS": "200"})  # tables on one line each


def candles(*rows: tuple[float, float, float, float]) -> CandleArrays:
    """Candles from (open, high, low, close) rows, one minute apart from 2024-01-01 00:00 UTC."""
    ohlc = np.array(rows, dtype=np.float64)
    timestamps = 1_704_067_200 + 60 * np.arange(len(rows), dtype=np.int64)
    return CandleArrays(timestamps, ohlc[:, 0], ohlc[:, 1], ohlc[:, 2], ohlc[:, 3])


@pytest.fixture(scope="module")
def seeded_market() -> CandleArrays:
    return CandleArrays.from_frame(synthetic_candles(3.0, seed=11))


def seeded_signals(market: CandleArrays) -> tuple[np.ndarray, ...]:
    at = decision_moments(int(market.timestamp[0]), int(market.timestamp[-1]) + 60, 900)
    rng = np.random.default_rng(5)
    direction = rng.choice([-1, 0, 1], size=len(at))
    return at, direction, rng.uniform(0.05, 0.4, len(at)), rng.uniform(0.08, 0.5, len(at))


def test_stored_statistics_for_a_fixed_seed(seeded_market: CandleArrays) -> None:
    """Computed once by this code and checked by hand for plausibility; a change here changes every report."""
    config = BacktestConfig(max_hold_seconds=6 * 3600)
    simulation = simulate(seeded_market, *seeded_signals(seeded_market), config)
    stats = statistics(simulation, seeded_market, config)
    expected = {
        "final_equity": 8554.689826938114,
        "total_return": -0.14453101730618856,
        "sharpe": None,  # 3 days: too short for annualised figures
        "sortino": None,
        "annualised_return": None,
        "max_drawdown": -0.14453101730618856,
        "trades": 98,
        "win_rate": 0.29591836734693877,
        "profit_factor": 0.21894269922123635,
        "exposure": 0.6817129629629629,
        "average_minutes_held": 30.051020408163264,
        "fees_paid": 997.7992684446668,
        "slippage_paid": 181.41804614716213,
        "costs_share_of_average_tp": 0.46007197731793853,
        "same_candle": 1,
        "signals": 197,
    }
    for key, value in expected.items():
        assert stats[key] == (None if value is None else pytest.approx(value, rel=1e-9)), key
    assert stats["skipped"]["position_open"] == 197 - 98
    assert sum(stats["exits"].values()) == 98
    optimistic = simulate(seeded_market, *seeded_signals(seeded_market), config, same_candle="target")
    assert statistics(optimistic, seeded_market, config)["pnl"] == pytest.approx(-1427.1332837946939, rel=1e-9)


def test_statistics_follow_their_definitions(seeded_market: CandleArrays) -> None:
    config = BacktestConfig(max_hold_seconds=6 * 3600)
    simulation = simulate(seeded_market, *seeded_signals(seeded_market), config)
    stats = statistics(simulation, seeded_market, config)
    series = np.concatenate([[config.initial_equity], simulation.equity])
    assert stats["max_drawdown"] == pytest.approx((series / np.maximum.accumulate(series) - 1).min())
    pnl = np.array([f.pnl for f in simulation.fills])
    assert stats["profit_factor"] == pytest.approx(pnl[pnl > 0].sum() / -pnl[pnl < 0].sum())
    assert stats["pnl"] == pytest.approx(pnl.sum())  # every trade is closed by the end of the period
    assert stats["fees_paid"] == pytest.approx(sum(f.fees for f in simulation.fills))
    tp = np.mean([f.order.take_profit_pct / 100 for f in simulation.fills])
    assert stats["costs_share_of_average_tp"] == pytest.approx(2 * (config.fee + config.slippage) / tp)


def a_flat_run(days: float, seed: int = 3) -> tuple[Simulation, CandleArrays]:
    """An equity path of `days` days of minutes (a random walk), starting mid-day, with no trades."""
    minutes = int(days * 1440)
    timestamps = 1_704_067_200 + 12 * 3600 + 60 * np.arange(minutes, dtype=np.int64)
    prices = np.full(minutes, 100.0)
    market = CandleArrays(timestamps, prices, prices, prices, prices)
    equity = 10_000 * np.exp(np.cumsum(np.random.default_rng(seed).normal(2e-6, 4e-4, minutes)))
    return Simulation("path", [], equity, np.zeros(minutes), 0, {}), market


def test_sharpe_and_sortino_are_daily_and_annualised_with_365_days() -> None:
    simulation, market = a_flat_run(45.0)
    stats = statistics(simulation, market, BacktestConfig())
    closes = pd.Series(simulation.equity, index=pd.to_datetime(market.timestamp, unit="s")).resample("1D").last()
    daily = np.diff(np.r_[10_000.0, closes.to_numpy()]) / np.r_[10_000.0, closes.to_numpy()][:-1]
    assert len(daily) == 46  # a half day at each end
    assert stats["sharpe"] == pytest.approx(daily.mean() / daily.std(ddof=1) * math.sqrt(365.25))
    downside = math.sqrt(np.mean(np.minimum(daily, 0) ** 2))
    assert stats["sortino"] == pytest.approx(daily.mean() / downside * math.sqrt(365.25))
    total = simulation.equity[-1] / 10_000
    assert stats["annualised_return"] == pytest.approx(total ** (MINUTES_PER_YEAR / len(simulation.equity)) - 1)


def test_annualised_figures_need_thirty_days() -> None:
    simulation, market = a_flat_run(28.0)  # 29 daily returns
    stats = statistics(simulation, market, BacktestConfig())
    assert stats["sharpe"] is None and stats["sortino"] is None and stats["annualised_return"] is None
    assert stats["total_return"] == pytest.approx(simulation.equity[-1] / 10_000 - 1)


def test_equity_is_marked_at_each_close_while_a_position_is_open() -> None:
    market = candles((100, 100.5, 99.5, 101), (101, 101.5, 100.5, 102), (102, 103.5, 101.5, 103), (103, 103, 103, 103))
    config = BacktestConfig(fee=0.001, slippage=0.0)
    simulation = simulate(market, market.timestamp[:1], np.array([1]), np.array([2.0]), np.array([3.0]), config)
    (trade,) = simulation.fills
    quantity, entry_fee = trade.order.quantity, 0.001 * trade.order.quantity * 100
    np.testing.assert_allclose(
        simulation.equity[:2], 10_000 - entry_fee + quantity * (np.array([101, 102]) - 100), rtol=1e-12
    )
    assert simulation.equity[2] == simulation.equity[3] == pytest.approx(10_000 + trade.pnl)
    assert simulation.position.tolist() == [1, 1, 1, 0]
    flat, position = equity_curve(market, [], 500.0)
    assert flat.tolist() == [500.0] * 4 and position.tolist() == [0] * 4


def test_buy_and_hold_by_hand() -> None:
    market = candles((100, 101, 99, 100), (100, 120, 50, 110), (110, 111, 109, 110))
    config = BacktestConfig(fee=0.001, slippage=0.0005)
    hold = buy_and_hold(market, config)
    quantity = 10_000 / (100.05 * 1.001)
    exit_price = 110 * 0.9995
    final = 10_000 + quantity * (exit_price - 100.05) - 0.001 * quantity * (100.05 + exit_price)
    assert hold.equity[-1] == pytest.approx(final)
    assert [f.reason for f in hold.fills] == ["end_of_data"]


def test_moments_without_a_window_never_become_random_entries(seeded_market: CandleArrays) -> None:
    """Inside a gap or its warm-up the model cannot trade (its placeholder take profit is tiny, but a zero-fee
    backtest would count it as paying the costs): such moments are left out of the random runs' candidates."""
    at, _, sl, tp = seeded_signals(seeded_market)
    config = BacktestConfig(fee=0.0, slippage=0.0)
    usable = np.arange(len(at)) % 3 != 0
    exits = moment_exits(seeded_market, at, sl, tp, config, usable=usable)
    every = moment_exits(seeded_market, at, sl, tp, config)
    assert set(exits.at.tolist()) == set(every.at.tolist()) - set(at[~usable].tolist())
    assert exits.eligible.all() and len(exits.at) < len(every.at)


def test_random_entries_make_the_models_trade_counts_with_its_distances(seeded_market: CandleArrays) -> None:
    at, direction, sl, tp = seeded_signals(seeded_market)
    config = BacktestConfig(max_hold_seconds=6 * 3600)
    model = simulate(seeded_market, at, direction, sl, tp, config)
    buys = sum(f.order.direction == 1 for f in model.fills)
    exits = moment_exits(seeded_market, at, sl, tp, config)
    baseline = random_entries(exits, model.fills, runs=3, seed=0)
    assert baseline.draws.trades.tolist() == [len(model.fills)] * 3 and baseline.draws.short == 0
    distances = dict(zip(at.tolist(), zip(sl.tolist(), tp.tolist(), strict=True), strict=True))
    round_trip_pct = 100 * 2 * (config.fee + config.slippage)
    entries = []
    for run in range(3):
        simulation = baseline.simulation(run, seeded_market, config)
        assert len(simulation.fills) == len(model.fills)
        assert sum(f.order.direction == 1 for f in simulation.fills) == buys
        for before, after in zip(simulation.fills, simulation.fills[1:], strict=False):
            assert after.entry_time >= before.exit_time  # one position at a time
        for fill in simulation.fills:
            assert distances[fill.order.at] == (fill.order.stop_loss_pct, fill.order.take_profit_pct)
            assert fill.order.take_profit_pct > round_trip_pct
        entries.append([f.entry_time for f in simulation.fills])
    assert entries[0] != entries[1]
    again = random_entries(exits, model.fills, runs=2, seed=0).simulation(1, seeded_market, config)
    assert [f.entry_time for f in again.fills] == entries[1]  # run r is the same whatever the number of runs


def test_random_runs_reuse_exits_that_equal_the_models_fills(seeded_market: CandleArrays) -> None:
    # the random runs book precomputed exits at the account's sizes: traded at the model's own entries they must
    # give the model's trades exactly, as the backtest's position loop fills them
    at, direction, sl, tp = seeded_signals(seeded_market)
    config = BacktestConfig(max_hold_seconds=6 * 3600, risk=0.01, position_share=0.5)
    model = simulate(seeded_market, at, direction, sl, tp, config)
    exits = moment_exits(seeded_market, at, sl, tp, config)
    rows = np.searchsorted(exits.at, [f.entry_time for f in model.fills])
    sides = np.array([0 if f.order.direction == 1 else 1 for f in model.fills])
    replayed = account_run(seeded_market, exits, rows, sides, config, name="model again")
    pd.testing.assert_frame_equal(
        replayed.trades().drop(columns="probability"), model.trades().drop(columns="probability")
    )
    np.testing.assert_array_equal(replayed.equity, model.equity)
    for fill, row, side in zip(model.fills, rows, sides, strict=True):
        assert exits.return_pct[row, side] == pytest.approx(return_pct(fill), rel=1e-12)
        assert exits.exit_time[row, side] == fill.exit_time


def test_batched_signals_equal_predict_at_each_moment(tiny_run: Path, tiny_candles: pd.DataFrame) -> None:
    bundle = load_bundle(tiny_run)
    moments = decision_moments(int(tiny_candles["timestamp"].iloc[-1500]), int(tiny_candles["timestamp"].iloc[-1]), 900)
    seen: list[tuple[float, int]] = []
    signals = predict_signals(
        bundle, scaled_features(bundle, tiny_candles), moments, batch_size=8, progress=lambda d, n: seen.append((d, n))
    )
    one_by_one = predict_moments(bundle, tiny_candles, moments)
    np.testing.assert_allclose(signals.proba, one_by_one[["p_buy", "p_sell", "p_invalid"]].to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(signals.stop_loss_pct, one_by_one["stop_loss_pct"], rtol=1e-5)
    np.testing.assert_allclose(signals.take_profit_pct, one_by_one["take_profit_pct"], rtol=1e-5)
    assert seen[-1] == (len(moments), len(moments))


@pytest.fixture(scope="module")
def tiny_result(tiny_run: Path, tiny_candles: pd.DataFrame, tiny_trades: pd.DataFrame):  # type: ignore[no-untyped-def]
    bundle = load_bundle(tiny_run)
    start = int(min(bundle.training.test_start_times))
    end = int(tiny_candles["timestamp"].iloc[-1]) + 60
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_backtest(
            bundle,
            tiny_candles,
            start=start,
            end=end,
            config=BacktestConfig(min_prob=0.0, min_ev=-1.0),
            journal=tiny_trades,
        )


def test_backtest_trades_only_inside_its_period_one_at_a_time(tiny_result) -> None:  # type: ignore[no-untyped-def]
    fills = tiny_result.model.fills
    assert fills, "the tiny model should trade where its take profit pays the costs (min-ev -1 %)"
    for before, after in zip(fills, fills[1:], strict=False):
        assert after.entry_time >= before.exit_time
    assert fills[0].entry_time >= tiny_result.start and fills[-1].exit_time <= tiny_result.end
    stats = tiny_result.stats
    assert stats["model"]["trades"] == len(fills)
    assert stats["signals"]["Buy"] + stats["signals"]["Sell"] == tiny_result.model.signals
    assert stats["moments"] == len(tiny_result.signals)
    random = stats["baselines"]["random"]
    assert random["runs"] == 1000 and random["significance"]["trades_wanted"] == len(fills)
    assert random["trades"]["mean"] <= len(fills)  # the account may refuse some (daily loss limit), never add
    assert len(tiny_result.random) == 20  # the equity band's runs
    journal = stats["baselines"]["journal"]
    assert journal["trades"] > 0 and journal["win_rate"] > 0.5  # first-touch labels are winners by construction
    for strategy in (stats["model"], stats["baselines"]["buy_and_hold"], journal):
        assert strategy["significance"]["trades"] == strategy["trades"]
        assert strategy["significance"]["verdict"] in {
            "edge",
            "timing without profit",
            "too few trades to judge",
            "no evidence of an edge",
        }
    model = stats["model"]["significance"]
    returns = [return_pct(f) for f in fills]
    assert model["expectancy_pct"] == pytest.approx(np.mean(returns))
    assert model["random_runs"] == 1000 and 1 / 1001 <= model["p_random_entries"] <= 1
    assert stats["baselines"]["buy_and_hold"]["significance"]["p_random_entries"] is None
    assert journal["significance"]["p_random_entries"] < 0.05  # hindsight labels time the market


def test_backtest_files(tiny_result, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    written = write_backtest(tiny_result, tmp_path)
    assert {p.name for p in written} == {
        "trades.csv",
        "equity.csv",
        "stats.json",
        "equity.png",
        "pnl_distribution.png",
        "price.png",
    }
    trades = pd.read_csv(tmp_path / "trades.csv")
    assert tuple(trades.columns) == TRADE_COLUMNS and len(trades) == tiny_result.stats["model"]["trades"]
    equity = pd.read_csv(tmp_path / "equity.csv")
    assert {"timestamp", "close", "model", "buy_and_hold", "random_mean", "journal"} <= set(equity.columns)
    assert len(equity) == tiny_result.stats["period"]["minutes"]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["model"]["final_equity"] == pytest.approx(equity["model"].iloc[-1])


@pytest.fixture()
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def test_backtest_command(run_copy: Path, tiny_db: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["backtest", str(run_copy), "--db", str(tiny_db), "--min-prob", "0.4", "--fee", "0.04%", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    for name in ("model", "buy and hold", "random entries (1000 runs)", "p vs random", "verdict: "):
        assert name in result.output
    stats = json.loads((run_copy / "backtest" / "stats.json").read_text())
    assert stats["settings"]["fee"] == pytest.approx(0.0004)
    assert stats["settings"]["min_prob"] == 0.4
    bundle = load_bundle(run_copy)
    assert stats["period"]["start"] == min(bundle.training.test_start_times)
    out = tmp_path / "elsewhere"
    result = runner.invoke(
        app,
        ["backtest", str(run_copy), "--db", str(tiny_db), "--every", "1h", "--risk", "1%", "--max-hold", "2h"]
        + ["--from", "2024-01-06T12:00", "--to", "2024-01-06T18:00", "--out", str(out), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["moments"] == 6 and stats["settings"]["risk"] == pytest.approx(0.01)
    assert stats["period"]["start_utc"] == "2024-01-06 12:00 UTC"


def test_backtest_command_errors(run_copy: Path, tiny_db: Path) -> None:
    empty = runner.invoke(
        app, ["backtest", str(run_copy), "--db", str(tiny_db), "--from", "2024-01-06", "--to", "2024-01-05"]
    )
    assert empty.exit_code == 2
    assert "error: --from 2024-01-06 00:00 UTC is not before --to 2024-01-05 00:00 UTC" in empty.output
    bad = runner.invoke(app, ["backtest", str(run_copy), "--db", str(tiny_db), "--every", "soon"])
    assert bad.exit_code == 2 and "--every: not a duration: 'soon'" in bad.output
    no_db = runner.invoke(app, ["backtest", str(run_copy)])
    assert no_db.exit_code == 2 and "the run records no candle database; give one with --db" in no_db.output


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--every", "7"], "--every: must be at least one minute (backtest.every_seconds = 7)"),
        (["--fee", "5"], "--fee: must be a fraction in [0, 0.1) (backtest.fee = 5.0)"),
        (["--max-hold", "30s"], "--max-hold: must be at least one minute (backtest.max_hold_seconds = 30)"),
    ],
)
def test_an_out_of_range_flag_is_named_as_the_flag_not_the_config_key(
    tiny_run: Path, tiny_db: Path, flags: list[str], message: str
) -> None:
    # regression: `--every 7` said "backtest.every_seconds: must be at least one minute", a key the user never typed
    result = runner.invoke(app, ["backtest", str(tiny_run), "--db", str(tiny_db), *flags])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {message}"


def test_a_period_after_the_data_names_the_data_end_not_a_to_never_given(run_copy: Path, tiny_db: Path) -> None:
    # regression: without --to, "--from 2024-02-01 is not before --to 2024-01-07" named a flag the user never typed
    late = runner.invoke(app, ["backtest", str(run_copy), "--db", str(tiny_db), "--from", "2024-02-01"])
    assert late.exit_code == 2
    assert late.stderr == (  # one line: no blank line left by the progress bar on a stderr that is no terminal
        f"error: --from 2024-02-01 00:00 UTC is not before the end of the ETHUSDT candles in {tiny_db} "
        "(2024-01-07 00:00 UTC); give an earlier --from or another --db\n"
    )


def test_a_short_period_says_why_sharpe_is_blank(run_copy: Path, tiny_db: Path, tmp_path: Path) -> None:
    # regression: a 6-hour backtest printed '-' for Sharpe with no word on why (annualised only for 30 days or more)
    args = ["backtest", str(run_copy), "--db", str(tiny_db), "--from", "2024-01-06T12:00", "--to", "2024-01-06T18:00"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "bt"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (
        "Sharpe and Sortino ('-') come from daily returns of periods of 30 days or more; this one has 0.2 days"
        in result.stdout.splitlines()
    )
