"""Evaluation: the rebuilt test split is the training run's, figures beside baselines, levels, calibration, CLI."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import tiny_config
from lstm_trading.cli import app
from lstm_trading.core.errors import DataError
from lstm_trading.core.timeutil import format_time
from lstm_trading.data.journal import write_journal
from lstm_trading.evaluate.metrics import evaluate_bundle, evaluation_document, labels_from_counts, reliability_table
from lstm_trading.features.compute import compute_features
from lstm_trading.models.bundle import load_bundle
from lstm_trading.predict import predict_windows
from lstm_trading.runs.evaluate import select_test_trades
from lstm_trading.runs.train import prepare
from lstm_trading.samples.targets import Samples

runner = CliRunner(env={"COLUMNS": "200"})


def _samples(label: list[int], sl: list[float], tp: list[float]) -> Samples:
    n = len(label)
    return Samples(
        end=np.arange(1, n + 1),
        length=np.ones(n, dtype=np.int64),
        label=np.array(label),
        stop_loss_pct=np.array(sl, dtype=np.float64),
        take_profit_pct=np.array(tp, dtype=np.float64),
        start_time=np.arange(n, dtype=np.int64) * 60,
        entry_price=np.full(n, 100.0),
        journal_row=np.arange(2, n + 2),
    )


def test_reliability_table_and_ece_by_hand() -> None:
    proba = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.6, 0.3, 0.1]])
    table, ece = reliability_table(np.array([0, 1, 0]), proba, bins=10)
    assert [(row["low"], row["count"], row["accuracy"]) for row in table] == [
        (pytest.approx(0.6), 1, 1.0),
        (pytest.approx(0.9), 2, 0.5),
    ]
    # |0.6 - 1| * 1/3 + |0.9 - 0.5| * 2/3
    assert ece == pytest.approx(0.4)


def test_evaluation_document_by_hand() -> None:
    samples = _samples([0, 0, 1, 2], [1.0, 2.0, 1.5, np.nan], [2.0, 3.0, 2.0, np.nan])
    proba = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    predicted_sl, predicted_tp = np.array([1.5, 2.0, 1.0, 9.0]), np.array([2.0, 2.0, 2.5, 9.0])
    rule = (np.array([1.0, np.nan, 2.5, np.nan]), np.array([1.0, np.nan, 2.0, np.nan]))
    document = evaluation_document(
        samples, proba, predicted_sl, predicted_tp, train_labels=np.array([0, 1, 2, 2]), rule_pct=rule
    )
    model = document["model"]
    assert model["accuracy"] == pytest.approx(0.75)
    assert model["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert model["levels"]["Buy"]["stop_loss"] == {"mean_abs": 0.25, "median_abs": 0.25, "count": 2}
    assert model["levels"]["Sell"]["take_profit"]["mean_abs"] == pytest.approx(0.5)
    assert model["levels"]["all"]["take_profit"]["mean_abs"] == pytest.approx(1.5 / 3)  # the Invalid row is no trade
    assert model["stop_loss_error_pct"]["count"] == 3
    assert set(document["baselines"]) == {"majority", "always_invalid", "stratified_random"}
    assert document["baselines"]["always_invalid"]["accuracy"] == pytest.approx(0.25)
    rule_levels = document["atr_rule"]["levels"]
    assert document["atr_rule"]["samples"] == 2
    assert rule_levels["all"]["stop_loss"]["mean_abs"] == pytest.approx((0.0 + 1.0) / 2)
    assert rule_levels["all"]["take_profit"]["mean_abs"] == pytest.approx((1.0 + 0.0) / 2)
    assert document["atr_rule"]["model_levels"]["Sell"]["stop_loss"]["mean_abs"] == pytest.approx(0.5)
    without = evaluation_document(samples, proba, predicted_sl, predicted_tp, train_labels=np.array([0, 1, 2, 2]))
    assert without["atr_rule"] is None


def test_labels_from_counts() -> None:
    assert labels_from_counts({"Buy": 2, "Sell": 0, "Invalid": 1}).tolist() == [0, 0, 2]


def test_selecting_the_test_trades(tiny_trades: pd.DataFrame) -> None:
    times = tiny_trades["start_time"].to_numpy()[-5:]
    assert select_test_trades(tiny_trades, times)["start_time"].tolist() == times.tolist()
    with pytest.raises(DataError, match="none of the journal's trades starts at one of the run's test start times"):
        select_test_trades(tiny_trades, [12])
    with pytest.raises(DataError, match="the run records no test start times"):
        select_test_trades(tiny_trades, [])


def test_rebuilt_test_split_is_the_one_training_held_out(
    tiny_run: Path, tiny_candles: pd.DataFrame, tiny_trades: pd.DataFrame
) -> None:
    bundle = load_bundle(tiny_run)
    test_times = bundle.training.test_start_times
    history_start = int(min(test_times)) - bundle.history_minutes * 60
    candles = tiny_candles[tiny_candles["timestamp"] >= history_start].reset_index(drop=True)
    document = evaluate_bundle(bundle, candles, select_test_trades(tiny_trades, test_times))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(tiny_candles, tiny_trades, tiny_config(), symbol="ETHUSDT")
    test = prepared.split.test
    assert document["samples"] == len(test) == len(test_times)
    counts = np.bincount(test.label, minlength=3)
    assert [document["model"]["per_class"][c]["support"] for c in ("Buy", "Sell", "Invalid")] == counts.tolist()
    proba, _, _ = predict_windows(bundle, prepared.scaled, test.end, test.length)
    # features from a later history start differ only by the indicators' warm-up residue
    from lstm_trading.evaluate.metrics import classification_metrics

    expected = classification_metrics(test.label, proba.argmax(axis=1), proba)
    assert document["model"]["log_loss"] == pytest.approx(expected["log_loss"], abs=0.02)


def test_the_atr_rule_is_measured_where_the_journal_has_its_own_levels(
    tiny_run: Path, tiny_candles: pd.DataFrame, tiny_trades: pd.DataFrame
) -> None:
    bundle = load_bundle(tiny_run)
    trades = tiny_trades.tail(40).copy()
    buy, sell = trades["side"] == "Buy", trades["side"] == "Sell"
    trades.loc[buy, "stop_loss"] = trades.loc[buy, "entry_price"] * 0.995  # 0.5 % below, 1 % above
    trades.loc[buy, "take_profit"] = trades.loc[buy, "entry_price"] * 1.01
    trades.loc[sell, "stop_loss"] = trades.loc[sell, "entry_price"] * 1.005
    trades.loc[sell, "take_profit"] = trades.loc[sell, "entry_price"] * 0.99
    document = evaluate_bundle(bundle, tiny_candles, trades)
    features = compute_features(tiny_candles, bundle.feature_config)
    chosen = trades[buy | sell]
    atr = features["atr"].reindex(chosen["start_time"] - 60).to_numpy()  # the last candle closed by t
    rule_sl = 100 * bundle.target_config.k_sl * atr / chosen["entry_price"].to_numpy()
    rule = document["atr_rule"]["levels"]["all"]["stop_loss"]
    assert rule["count"] == len(chosen)
    assert rule["mean_abs"] == pytest.approx(np.mean(np.abs(rule_sl - 0.5)), rel=1e-9)
    assert document["model"]["levels"]["all"]["take_profit"]["count"] == len(chosen)


@pytest.fixture()
def recorded_run(tiny_run: Path, tiny_db: Path, tiny_trades: pd.DataFrame, tmp_path: Path) -> Path:
    """The tiny run with its sources recorded, as `train` records them."""
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    journal = tmp_path / "journal.xlsx"
    write_journal(journal, tiny_trades[["start_time", "entry_price", "side", "stop_loss", "take_profit"]])
    bundle_json = run / "model" / "bundle.json"
    document = json.loads(bundle_json.read_text())
    document["training"]["sources"] = {
        "db": str(tiny_db),
        "symbol": "ETHUSDT",
        "journal": str(journal),
        "sheet": "tradesmain",
    }
    bundle_json.write_text(json.dumps(document))
    return run


def test_evaluate_command_on_the_recorded_test_split(recorded_run: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(recorded_run)])
    assert result.exit_code == 0, result.output
    for text in ("macro-F1", "majority", "always invalid", "stratified random", "ECE", "confusion", "k * ATR rule"):
        assert text in result.output, text
    assert " ± " in result.output  # stratified random as mean ± std over its draws, not one draw
    metrics = json.loads((recorded_run / "metrics.json").read_text())
    assert metrics["split"] == "test"
    prior = metrics["class_prior"]["log_loss"]
    assert prior == metrics["baselines"]["stratified_random"]["log_loss"]
    assert (metrics["no_information"] is not None) == (metrics["model"]["log_loss"] > prior)
    if metrics["no_information"] is not None:
        assert metrics["no_information"] in result.output
    assert metrics["samples"] == len(load_bundle(recorded_run).training.test_start_times)
    assert metrics["calibration"]["table"] and 0 <= metrics["calibration"]["ece"] <= 1
    assert (recorded_run / "confusion_matrix.png").exists() and (recorded_run / "calibration.png").exists()


def test_evaluate_command_on_another_journal(recorded_run: Path, tiny_trades: pd.DataFrame, tmp_path: Path) -> None:
    other = tmp_path / "other.xlsx"
    write_journal(other, tiny_trades.tail(20)[["start_time", "entry_price", "side"]])
    result = runner.invoke(app, ["evaluate", str(recorded_run), "--trades", str(other)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((recorded_run / "metrics.json").read_text())
    assert metrics["split"] == "journal other.xlsx" and metrics["samples"] == 20
    assert metrics["atr_rule"] is None  # no levels of its own: its targets are the rule itself


def test_evaluate_command_errors(tiny_run: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(tiny_run)])
    assert result.exit_code == 2
    assert "the run records no journal; give the trades to evaluate with --trades FILE" in result.output
    missing = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert missing.exit_code == 2 and "error:" in missing.output


def test_evaluate_warns_when_the_journal_holds_training_trades(
    recorded_run: Path, tiny_trades: pd.DataFrame, tmp_path: Path
) -> None:
    # regression: `evaluate RUN --trades` on the run's own journal scored its training trades without a word
    journal = tmp_path / "all.xlsx"
    write_journal(journal, tiny_trades[["start_time", "entry_price", "side"]])
    first, last = load_bundle(recorded_run).training.train_period
    seen = int((tiny_trades["start_time"] <= last + 60).sum())  # `last` opens the last candle the training saw
    assert seen == load_bundle(recorded_run).training.split_sizes["train"]
    result = runner.invoke(app, ["evaluate", str(recorded_run), "--trades", str(journal)])
    assert result.exit_code == 0, result.output
    assert (
        f"warning: {seen:,} of the {len(tiny_trades):,} trades in {journal} fall in the run's training period "
        f"({format_time(first)} to {format_time(last)}); the model was fitted on them, so these metrics flatter it"
    ) in result.stderr
    later = tmp_path / "later.xlsx"
    write_journal(later, tiny_trades[tiny_trades["start_time"] > last + 60][["start_time", "entry_price", "side"]])
    assert "warning" not in runner.invoke(app, ["evaluate", str(recorded_run), "--trades", str(later)]).stderr
