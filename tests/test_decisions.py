"""The decision rule end to end (DESIGN.md "Decision"): predict and backtest decide alike through one function,
the threshold sweep chooses on validation only, ATR levels are the labeller's, and the EV calibration table
accounts for every trade."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lstm_trading.backtest.execution import decide
from lstm_trading.backtest.simulation import period_signals
from lstm_trading.backtest.sweep import MIN_SWEEP_TRADES, SWEEP_MIN_EVS, SWEEP_MIN_PROBS
from lstm_trading.cli import app
from lstm_trading.core.config import BacktestConfig
from lstm_trading.features.compute import compute_features
from lstm_trading.models.bundle import load_bundle
from lstm_trading.predict import atr_levels, predict_moments, prediction_record
from lstm_trading.runs.predict import predict_run, with_decision

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture()
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def test_predict_and_backtest_take_the_same_decision_at_the_same_moment(tiny_run: Path, tiny_candles) -> None:  # type: ignore[no-untyped-def]
    bundle = load_bundle(tiny_run)
    start = int(min(bundle.training.test_start_times))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traded = period_signals(bundle, tiny_candles, start, start + 12 * 3600, 1800, workers=1)
    signals = traded.signals
    ev = decide(signals.proba, signals.stop_loss_pct, signals.take_profit_pct, BacktestConfig()).ev_pct
    config = BacktestConfig(min_prob=0.0, min_ev=float(np.median(ev)))  # about half the moments trade
    batch = decide(signals.proba, signals.stop_loss_pct, signals.take_profit_pct, config, signals.usable)
    rows = predict_moments(bundle, tiny_candles, signals.at, workers=1)
    decided = [with_decision(prediction_record(row), config) for _, row in rows.iterrows()]
    names = {1: "Buy", -1: "Sell", 0: "no trade"}
    assert [d["decision"] for d in decided] == [names[int(d)] for d in batch.direction]
    np.testing.assert_allclose([d["ev_pct"] for d in decided], batch.ev_pct, rtol=1e-4, atol=1e-6)
    assert len({d["decision"] for d in decided}) > 1  # the case distinguishes trades from refusals


def test_predict_prints_the_decision_and_its_reason(run_copy: Path, tiny_db: Path) -> None:
    result = runner.invoke(app, ["predict", str(run_copy), "--db", str(tiny_db), "--min-prob", "0.9"])
    assert result.exit_code == 0, result.output
    assert "decision: no trade: " in result.output and "(most likely: " in result.output
    record = json.loads(
        runner.invoke(app, ["predict", str(run_copy), "--db", str(tiny_db), "--json", "--min-prob", "0.9"]).stdout
    )
    assert record["decision"] == "no trade" and record["reason"].startswith("no trade: ")
    free = predict_run(run_copy, db=tiny_db, trading=BacktestConfig(min_prob=0.0, min_ev=-5.0, fee=0.0, slippage=0.0))
    assert free["decision"] in ("Buy", "Sell")
    assert free["reason"].startswith(free["decision"] + ": EV ")
    below = free["stop_loss"] < free["entry"] < free["take_profit"]
    assert below if free["decision"] == "Buy" else free["take_profit"] < free["entry"] < free["stop_loss"]


def test_atr_levels_are_k_times_the_atr_of_the_last_closed_candle(tiny_run: Path, tiny_candles) -> None:  # type: ignore[no-untyped-def]
    bundle = load_bundle(tiny_run)
    features = compute_features(tiny_candles, bundle.feature_config)
    from lstm_trading.features.matrix import FeatureMatrix

    matrix = FeatureMatrix.from_frame(features, bundle.feature_config.max_gap_minutes)
    moment = int(tiny_candles["timestamp"].iloc[-100])
    sl, tp = atr_levels(matrix, tiny_candles, np.array([moment]), bundle.target_config)
    atr = float(features.loc[moment - 60, "atr"])
    close = float(tiny_candles.set_index("timestamp").loc[moment - 60, "close"])
    assert sl[0] == pytest.approx(100 * bundle.target_config.k_sl * atr / close, rel=1e-9)
    assert tp[0] == pytest.approx(100 * bundle.target_config.k_tp * atr / close, rel=1e-9)
    predicted = predict_moments(bundle, tiny_candles, [moment], levels="atr", workers=1)
    assert predicted["stop_loss_pct"].iloc[0] == pytest.approx(sl[0])


def test_backtest_with_atr_levels_trades_them_and_the_model_levels_backtest_shows_them_as_a_baseline(
    run_copy: Path, tiny_db: Path
) -> None:
    common = ["backtest", str(run_copy), "--db", str(tiny_db), "--min-prob", "0", "--min-ev", "-1", "--no-progress"]
    result = runner.invoke(app, [*common, "--random-runs", "50"])
    assert result.exit_code == 0, result.output
    assert "same signals, k x ATR levels" in result.output and "moments not traded" in result.output
    stats = json.loads((run_copy / "backtest" / "stats.json").read_text())
    assert stats["baselines"]["atr_levels"]["trades"] > 0
    calibration = stats["model"]["ev_calibration"]
    assert sum(row["trades"] for row in calibration) == stats["model"]["trades"]
    assert [row["mean_ev_pct"] for row in calibration] == sorted(row["mean_ev_pct"] for row in calibration)
    assert sum(stats["not_traded"].values()) + stats["signals"]["Buy"] + stats["signals"]["Sell"] == stats["moments"]
    result = runner.invoke(app, [*common, "--random-runs", "50", "--levels", "atr", "--out", str(run_copy / "atr")])
    assert result.exit_code == 0, result.output
    trades = pd.read_csv(run_copy / "atr" / "trades.csv")
    assert len(trades) > 0
    bundle = load_bundle(run_copy)
    ratio = trades["take_profit_pct"] / trades["stop_loss_pct"]
    np.testing.assert_allclose(ratio, bundle.target_config.k_tp / bundle.target_config.k_sl, rtol=1e-9)


def test_the_sweep_chooses_on_validation_and_reports_the_test_at_that_threshold_only(
    run_copy: Path, tiny_db: Path
) -> None:
    args = ["backtest", str(run_copy), "--db", str(tiny_db), "--every", "5m", "--max-hold", "1h", "--no-progress"]
    result = runner.invoke(app, [*args, "--random-runs", "20", "--sweep"])
    assert result.exit_code == 0, result.output
    assert "--sweep on the validation period" in result.output
    stats = json.loads((run_copy / "backtest" / "stats.json").read_text())
    sweep = stats["sweep"]
    assert len(sweep["grid"]) == len(SWEEP_MIN_PROBS) * len(SWEEP_MIN_EVS)
    bundle = load_bundle(run_copy)
    assert sweep["validation_period"][1] <= stats["period"]["start"]  # no peeking
    assert sweep["validation_period"][0] == min(bundle.training.val_start_times)
    eligible = [cell for cell in sweep["grid"] if cell["trades"] >= MIN_SWEEP_TRADES]
    if eligible:
        best = max(eligible, key=lambda cell: cell["expectancy_pct"])
        assert sweep["chosen"] == {"min_prob": best["min_prob"], "min_ev": best["min_ev"]}
        assert (stats["settings"]["min_prob"], stats["settings"]["min_ev"]) == (best["min_prob"], best["min_ev"])
    else:
        assert sweep["chosen"] is None and stats["model"]["trades"] == 0 and "not traded" in sweep["note"]
    start_inside = str(min(bundle.training.val_start_times) + 3600)
    refused = runner.invoke(app, [*args, "--sweep", "--from", start_inside])
    assert refused.exit_code != 0 and "overlaps it" in refused.output
