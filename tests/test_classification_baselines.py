"""Honest classification baselines: stratified random as its expectation with its spread, the class prior's
log-loss and the "no information" line, and `evaluate --against` on two runs over the same test trades."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from conftest import tiny_config
from lstm_trading.cli import app
from lstm_trading.data.journal import write_journal
from lstm_trading.evaluate.metrics import evaluation_document, no_information, stratified_random
from lstm_trading.models.bundle import load_bundle
from lstm_trading.report.tables import metric_rows
from lstm_trading.runs.train import prepare, train_run
from lstm_trading.samples.targets import Samples

runner = CliRunner(env={"COLUMNS": "250"})

PRIORS = np.array([0.2, 0.3, 0.5])


def _labels(n: int = 102, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).choice(3, size=n, p=[0.3, 0.25, 0.45])


def _independent_draws(y: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """Stratified random labels drawn the plain way, one draw per row: (draws, n)."""
    return np.random.default_rng(seed).choice(3, size=(draws, len(y)), p=PRIORS)


# --- the stratified-random expectation ---


def test_closed_form_accuracy_equals_the_mean_of_many_draws() -> None:
    y = _labels()
    expected = stratified_random(y, PRIORS)
    freq = np.bincount(y, minlength=3) / len(y)
    assert expected["accuracy"] == pytest.approx(float(PRIORS @ freq), abs=1e-12)
    drawn = _independent_draws(y, 4_000, seed=11)
    accuracies = (drawn == y).mean(axis=1)
    assert abs(expected["accuracy"] - accuracies.mean()) < 0.005
    assert expected["accuracy_std"] == pytest.approx(accuracies.std(), rel=0.1)


def test_macro_f1_is_a_mean_with_its_spread_over_seeded_draws() -> None:
    y = _labels()
    expected = stratified_random(y, PRIORS, draws=2_000, seed=0)
    assert expected["draws"] == 2_000 and expected["seed"] == 0
    # sklearn on independent draws: the same distribution
    f1s = np.array(
        [f1_score(y, d, labels=[0, 1, 2], average="macro", zero_division=0) for d in _independent_draws(y, 600, 3)]
    )
    assert abs(expected["macro_f1"] - f1s.mean()) < 4 * f1s.std() / np.sqrt(600)
    assert expected["macro_f1_std"] == pytest.approx(f1s.std(), rel=0.15)
    assert 0.02 < expected["macro_f1_std"] < 0.1  # about 0.045 on a 102-sample split: one draw is not the baseline
    # seeded: the same seed gives the same figures, another seed figures within the spread
    assert stratified_random(y, PRIORS, seed=0) == expected
    other = stratified_random(y, PRIORS, seed=1)
    assert abs(other["macro_f1"] - expected["macro_f1"]) < 4 * expected["macro_f1_std"] / np.sqrt(2_000)
    assert expected["per_class"]["Invalid"]["recall"] == pytest.approx(PRIORS[2], abs=0.01)  # recall_k = prior_k
    counts = np.bincount(y, minlength=3)
    np.testing.assert_allclose(expected["confusion"], counts[:, None] * PRIORS[None, :])


def test_a_class_the_prior_never_draws_scores_zero_and_large_splits_are_drawn_in_chunks() -> None:
    y = _labels(n=30_000)
    expected = stratified_random(y, np.array([0.0, 0.4, 0.6]), draws=300)
    assert expected["per_class"]["Buy"]["recall"] == 0 and expected["per_class"]["Buy"]["f1"] == 0
    assert expected["accuracy"] == pytest.approx(0.4 * np.mean(y == 1) + 0.6 * np.mean(y == 2), abs=1e-12)
    assert expected["macro_f1_std"] < 0.01  # 30,000 samples: little spread left


def _samples(label: np.ndarray) -> Samples:
    n = len(label)
    return Samples(
        end=np.arange(1, n + 1),
        length=np.ones(n, dtype=np.int64),
        label=label,
        stop_loss_pct=np.where(label < 2, 1.0, np.nan),
        take_profit_pct=np.where(label < 2, 1.5, np.nan),
        start_time=np.arange(n, dtype=np.int64) * 60,
        entry_price=np.full(n, 100.0),
        journal_row=np.arange(2, n + 2),
    )


def _document(y: np.ndarray, proba: np.ndarray) -> dict:  # type: ignore[type-arg]
    n = len(y)
    train_labels = np.repeat([0, 1, 2], [20, 30, 50])  # priors 0.2, 0.3, 0.5
    return evaluation_document(_samples(y), proba, np.ones(n), np.ones(n), train_labels=train_labels)


def test_the_table_shows_the_stratified_spread() -> None:
    y = _labels()
    document = _document(y, np.full((len(y), 3), 1 / 3))
    header, rows = metric_rows(document)
    column = header.index("stratified random")
    cells = {row[0]: row[column] for row in rows}
    random = document["baselines"]["stratified_random"]
    assert cells["macro-F1"] == f"{random['macro_f1']:.3f} ± {random['macro_f1_std']:.3f}"
    assert re.fullmatch(r"0\.\d{3} ± 0\.0\d{2}", cells["accuracy"]), cells["accuracy"]
    assert cells["log-loss"] == f"{document['class_prior']['log_loss']:.3f}"


# --- the class prior's log-loss and "no information" ---


def test_no_information_line() -> None:
    assert no_information(1.104, 1.064) == "no information: log-loss 1.104 is above the class prior's 1.064"
    assert no_information(1.0644, 1.0641) == "no information: log-loss 1.0644 is above the class prior's 1.0641"
    assert no_information(1.0, 1.064) is None
    assert no_information(1.064, 1.064) is None  # equal is not above
    assert no_information(None, 1.064) is None and no_information(float("nan"), 1.0) is None


def test_the_evaluation_carries_the_prior_log_loss_and_says_when_the_model_is_no_better() -> None:
    y = _labels()
    prior_loss = -np.mean(np.log(PRIORS[y]))
    flat = _document(y, np.full((len(y), 3), 1 / 3))  # 1/3 each: ln 3, above the skewed prior's log-loss
    assert flat["class_prior"]["log_loss"] == pytest.approx(prior_loss, rel=1e-9)
    assert flat["class_prior"]["probabilities"] == pytest.approx({"Buy": 0.2, "Sell": 0.3, "Invalid": 0.5})
    assert flat["model"]["log_loss"] == pytest.approx(np.log(3))
    assert flat["model"]["log_loss_vs_prior"] == pytest.approx(np.log(3) - prior_loss)
    assert flat["no_information"] == no_information(np.log(3), prior_loss)
    assert flat["no_information"].startswith(f"no information: log-loss {np.log(3):.3f} is above the class prior's")
    the_prior = _document(y, np.tile(PRIORS, (len(y), 1)))
    assert the_prior["no_information"] is None  # the prior itself is not above the prior
    informed = np.full((len(y), 3), 0.1)
    informed[np.arange(len(y)), y] = 0.8
    assert _document(y, informed)["no_information"] is None


# --- evaluate RUN --against OTHER ---


def _record_sources(run: Path, db: Path, journal: Path) -> None:
    bundle_json = run / "model" / "bundle.json"
    document = json.loads(bundle_json.read_text())
    document["training"]["sources"] = {
        "db": str(db),
        "symbol": "ETHUSDT",
        "journal": str(journal),
        "sheet": "tradesmain",
    }
    bundle_json.write_text(json.dumps(document))


def _gbm(candles: pd.DataFrame, trades: pd.DataFrame, out: Path, **split: float) -> Path:
    config = tiny_config()
    if split:
        config = config.with_overrides("split", **split)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(candles, trades, config, symbol="ETHUSDT")
    train_run(prepared, config, out, kind="gbm")
    return out


@pytest.fixture(scope="module")
def two_runs(tiny_run: Path, tiny_db: Path, tiny_candles: pd.DataFrame, tiny_trades: pd.DataFrame, tmp_path_factory):  # type: ignore[no-untyped-def]
    """The tiny LSTM run and a gbm run trained on the same candles and journal, both with their sources."""
    root = tmp_path_factory.mktemp("against")
    journal = root / "journal.xlsx"
    write_journal(journal, tiny_trades[["start_time", "entry_price", "side"]])
    lstm = Path(shutil.copytree(tiny_run, root / "lstm"))
    gbm = _gbm(tiny_candles, tiny_trades, root / "gbm")
    for run in (lstm, gbm):
        _record_sources(run, tiny_db, journal)
    return lstm, gbm


def test_evaluate_against_shows_both_runs_on_the_same_test_trades(two_runs) -> None:  # type: ignore[no-untyped-def]
    lstm, gbm = two_runs
    result = runner.invoke(app, ["evaluate", str(lstm), "--against", str(gbm)])
    assert result.exit_code == 0, result.output
    assert "class prior's log-loss" in result.output and "stratified random" in result.output
    metrics = json.loads((lstm / "metrics.json").read_text())
    against = metrics["against"]
    assert (metrics["kind"], against["kind"]) == ("lstm", "gbm")
    assert against["run"] == str(gbm) and against["split"] == "test"
    assert against["samples"] == metrics["samples"] == len(load_bundle(lstm).training.test_start_times)
    supports = [
        [part["model"]["per_class"][c]["support"] for c in ("Buy", "Sell", "Invalid")] for part in (metrics, against)
    ]
    assert supports[0] == supports[1]  # the same trades
    assert against["class_prior"] == metrics["class_prior"]  # the same training classes
    # each run's row: its kind and its own log-loss, ECE
    for part in (metrics, against):
        (row,) = [line for line in result.output.splitlines() if part["run"] in line and f" {part['kind']} " in line]
        assert f"{part['model']['log_loss']:.3f}" in row and f"{part['calibration']['ece']:.3f}" in row
        line = part["no_information"]
        assert (line is not None and line in result.output) == (
            part["model"]["log_loss"] > part["class_prior"]["log_loss"]
        )
    assert not (gbm / "metrics.json").exists()  # the other run's folder is left alone
    # alone, the gbm run gives the same figures on its own test split
    alone = runner.invoke(app, ["evaluate", str(gbm)])
    assert alone.exit_code == 0, alone.output
    own = json.loads((gbm / "metrics.json").read_text())
    assert own["model"]["log_loss"] == pytest.approx(against["model"]["log_loss"], abs=1e-6)
    assert own["model"]["accuracy"] == against["model"]["accuracy"]


def test_evaluate_against_refuses_runs_on_other_data_or_other_test_moments(
    two_runs, tiny_candles: pd.DataFrame, tiny_trades: pd.DataFrame, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    lstm, _ = two_runs
    shorter = tiny_candles.iloc[:-1_440].reset_index(drop=True)  # a day less of candles
    other_data = _gbm(
        shorter, tiny_trades[tiny_trades["start_time"] <= int(shorter["timestamp"].iloc[-1])], tmp_path / "short"
    )
    result = runner.invoke(app, ["evaluate", str(lstm), "--against", str(other_data)])
    assert result.exit_code == 2
    rows = len(tiny_candles)
    assert f"error: --against {other_data}: trained on other candle data than {lstm}" in result.output
    assert f"{len(shorter):,} rows against" in result.output and f"{rows:,} rows)" in result.output
    assert len(result.output.strip().splitlines()) == 1
    other_split = _gbm(tiny_candles, tiny_trades, tmp_path / "split", train=0.6, val=0.2, test=0.2)
    result = runner.invoke(app, ["evaluate", str(lstm), "--against", str(other_split)])
    assert result.exit_code == 2
    assert f"error: --against {other_split}: tested on other moments than {lstm}" in result.output
    n_lstm, n_other = (len(load_bundle(r).training.test_start_times) for r in (lstm, other_split))
    assert f"({n_other:,} test trades" in result.output and f"against {n_lstm:,} test trades" in result.output
