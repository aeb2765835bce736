"""The gradient-boosting baseline (`--model gbm`): its window summary, training, bundle (LightGBM text files with
checksums, nothing pickled) and the commands that read a bundle (predict, backtest, live --replay) on it."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import tiny_config
from lstm_trading.cli import app
from lstm_trading.core.config import dump_config
from lstm_trading.core.errors import ModelFileError
from lstm_trading.data.journal import write_journal
from lstm_trading.models.bundle import CHECKSUM_KEY, content_sha256, load_bundle
from lstm_trading.models.gbm.features import CloseColumn, summary_names, summary_width, window_summary
from lstm_trading.models.gbm.predictor import MODEL_FILES, GbmPredictor
from lstm_trading.models.gbm.training import GbmSettings, fit_gbm
from lstm_trading.models.kinds import LOADERS
from lstm_trading.predict import predict_moments, predict_windows
from lstm_trading.runs.train import Prepared, prepare

runner = CliRunner(env={"COLUMNS": "200"})


# --- the window summary ---


def _matrix(rows: int = 3_000, features: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, features)).astype(np.float32)


CLOSE = CloseColumn(index=1, offset=0.01, scale=0.2)  # close_pct = scaled * 0.2 + 0.01 percent


def test_the_summary_is_last_row_statistics_and_compounded_close_returns() -> None:
    scaled = _matrix()
    end, length = 2_500, 2_000
    (row,) = window_summary(scaled, np.array([end]), np.array([length]), CLOSE)
    window = scaled[end - length : end].astype(np.float64)
    n = scaled.shape[1]
    np.testing.assert_array_equal(row[:n], window[-1])
    np.testing.assert_allclose(row[n : 2 * n], window.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(row[2 * n : 3 * n], window.std(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(row[3 * n : 4 * n], window.min(axis=0))
    np.testing.assert_array_equal(row[4 * n : 5 * n], window.max(axis=0))
    pct = window[:, 1] * 0.2 + 0.01
    for k, rows in enumerate((60, 240, 1_440)):
        expected = 100 * (np.prod(1 + pct[-rows:] / 100) - 1)
        assert row[5 * n + k] == pytest.approx(expected, rel=1e-9)
    assert len(row) == summary_width(n) == len(summary_names(["a", "b", "c", "d"])) == 5 * n + 3


def test_a_short_window_returns_over_the_rows_it_has() -> None:
    scaled = _matrix()
    (row,) = window_summary(scaled, np.array([1_000]), np.array([100]), CLOSE)
    pct = scaled[900:1_000, 1].astype(np.float64) * 0.2 + 0.01
    whole = 100 * (np.prod(1 + pct / 100) - 1)
    assert row[-2] == pytest.approx(whole, rel=1e-9) and row[-1] == pytest.approx(whole, rel=1e-9)  # 240, 1440
    assert row[-3] == pytest.approx(100 * (np.prod(1 + pct[-60:] / 100) - 1), rel=1e-9)


def test_the_summary_reads_only_its_own_window() -> None:
    """No look-ahead and no look-behind: rows outside `[end - length, end)` change nothing."""
    scaled = _matrix()
    ends, lengths = np.array([1_200, 2_000]), np.array([500, 1_500])
    before = window_summary(scaled, ends, lengths, CLOSE)
    changed = scaled.copy()
    changed[:700] = 99.0  # before the first window
    changed[1_200:] = -99.0  # from the first window's end on: the second window changes
    after = window_summary(changed, ends, lengths, CLOSE)
    np.testing.assert_array_equal(after[0], before[0])
    assert not np.array_equal(after[1], before[1])


def test_batched_threaded_and_one_at_a_time_summaries_are_equal() -> None:
    scaled = _matrix(rows=5_000)
    rng = np.random.default_rng(1)
    ends = rng.integers(1_500, 5_001, size=40)
    lengths = np.minimum(rng.integers(1, 1_500, size=40), ends)
    batched = window_summary(scaled, ends, lengths, CLOSE, workers=1)
    threaded = window_summary(scaled, ends, lengths, CLOSE, workers=3)
    alone = np.vstack([window_summary(scaled, ends[i : i + 1], lengths[i : i + 1], CLOSE) for i in range(40)])
    np.testing.assert_array_equal(threaded, batched)
    np.testing.assert_array_equal(alone, batched)


# --- training and the bundle ---


@pytest.fixture(scope="module")
def prepared(tiny_candles: pd.DataFrame, tiny_trades: pd.DataFrame) -> Prepared:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare(tiny_candles, tiny_trades, tiny_config(), symbol="ETHUSDT")


def _fit(prepared: Prepared, seed: int = 42) -> GbmPredictor:
    split = prepared.split
    result = fit_gbm(
        prepared.scaled,
        split.train,
        split.val,
        prepared.matrix.names,
        prepared.feature_scaler,
        prepared.target_scaler,
        seed=seed,
    )
    return result.predictor


def test_a_seed_gives_the_same_trees(prepared: Prepared) -> None:
    one, two = _fit(prepared), _fit(prepared)
    for role, booster in one.boosters().items():
        assert booster.model_to_string() == two.boosters()[role].model_to_string(), role


@pytest.fixture(scope="module")
def gbm_cli(tiny_trades: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gbm_cli")
    journal = folder / "val.xlsx"
    write_journal(journal, tiny_trades[["start_time", "entry_price", "side"]], {"horizon_seconds": 6 * 3600})
    config = folder / "tiny.toml"
    config.write_text(dump_config(tiny_config()))
    return {"journal": journal, "config": config}


def _train_args(db: Path, files: dict[str, Path], out: Path) -> list[str]:
    return ["train", "--db", str(db), "--trades", str(files["journal"]), "--config", str(files["config"])] + [
        "--out",
        str(out),
        "--model",
        "gbm",
        "--no-progress",
    ]


@pytest.fixture(scope="module")
def gbm_run(tiny_db: Path, gbm_cli: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gbm run trained by the command (read-only for tests: copy it before changing anything)."""
    out = tmp_path_factory.mktemp("gbm_runs") / "gbm"
    result = runner.invoke(app, _train_args(tiny_db, gbm_cli, out))
    assert result.exit_code == 0, result.output
    assert "Samples by split" in result.stdout
    assert "boosting round" in result.stdout and "epoch" not in result.stdout
    return out


def test_train_model_gbm_writes_a_run_folder_with_three_text_model_files(gbm_run: Path) -> None:
    assert (gbm_run / "config.toml").is_file() and not (gbm_run / "checkpoints").exists()
    document = json.loads((gbm_run / "model" / "bundle.json").read_text())
    assert document["kind"] == "gbm"
    files = document["weights"]["files"]
    assert {entry["file"] for entry in files.values()} == set(MODEL_FILES.values())
    for entry in files.values():
        path = gbm_run / "model" / entry["file"]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert path.read_text().startswith("tree\n")
    assert sorted(p.name for p in (gbm_run / "model").iterdir()) == sorted(["bundle.json", *MODEL_FILES.values()])
    validation = document["validation"]
    # early stopping on the validation split ended each booster before the round limit
    for role in MODEL_FILES:
        assert 1 <= validation[f"{role}_best_round"] < GbmSettings().max_rounds - GbmSettings().early_stopping_rounds
    assert validation["best_val_loss"] == validation["classifier_val_multi_logloss"]
    log = pd.read_csv(gbm_run / "logs" / "metrics.csv")
    assert set(log["booster"]) == set(MODEL_FILES) and {"round", "metric", "train", "val"} <= set(log.columns)


def test_save_and_load_give_the_same_probabilities(prepared: Prepared, tmp_path: Path) -> None:
    from lstm_trading.models.bundle import save_bundle
    from lstm_trading.models.training_record import TrainingRecord

    model = _fit(prepared)
    config = tiny_config()
    save_bundle(
        tmp_path,
        model,
        model_config=config.model,
        feature_config=config.features,
        target_config=config.targets,
        feature_names=prepared.matrix.names,
        feature_scaler=prepared.feature_scaler,
        target_scaler=prepared.target_scaler,
        training=TrainingRecord(),
        validation={},
    )
    bundle = load_bundle(tmp_path)
    assert bundle.kind == "gbm" and isinstance(bundle.model, GbmPredictor)
    test = prepared.split.test
    before = model.predict_windows(prepared.scaled, test.end, test.length)
    after = bundle.model.predict_windows(prepared.scaled, test.end, test.length)
    for name, values in before._asdict().items():
        np.testing.assert_array_equal(getattr(after, name), values, err_msg=name)
    np.testing.assert_allclose(before.proba.sum(axis=1), 1.0, rtol=1e-12)
    prices = predict_windows(bundle, prepared.scaled, test.end, test.length)
    assert prices.proba.shape == (len(test), 3) and (prices.stop_loss_pct > 0).all()


def test_the_bundle_holds_no_pickle_and_loading_unpickles_nothing(
    gbm_run: Path, tiny_candles: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    for path in (gbm_run / "model").iterdir():
        data = path.read_bytes()
        assert not data.startswith(b"\x80"), path  # every pickle protocol >= 2 begins so
        assert data.decode("utf-8").startswith("tree\n" if path.suffix == ".txt" else "{"), path

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model file was unpickled")

    for name in ("load", "loads"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    bundle = load_bundle(gbm_run)
    predict_moments(bundle, tiny_candles)


def _copy(gbm_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(gbm_run, tmp_path / "run"))


def test_a_tampered_tree_file_is_refused_by_its_checksum(gbm_run: Path, tiny_db: Path, tmp_path: Path) -> None:
    run = _copy(gbm_run, tmp_path)
    path = run / "model" / MODEL_FILES["classifier"]
    text = path.read_text()
    at = text.index("leaf_value=") + len("leaf_value=")
    path.write_text(text[:at] + "9" + text[at:])  # one leaf's value, changed
    with pytest.raises(ModelFileError) as caught:
        load_bundle(run)
    assert str(caught.value) == (
        f"{path}: checksum differs from bundle.json; the model file is truncated or was replaced"
    )
    result = runner.invoke(app, ["predict", str(run), "--db", str(tiny_db)])
    assert result.exit_code == 2 and result.stderr == f"error: {caught.value}\n"


def test_a_planted_pickle_with_its_checksum_fixed_never_runs(gbm_run: Path, tiny_db: Path, tmp_path: Path) -> None:
    from test_no_code_in_model_files import payload

    run = _copy(gbm_run, tmp_path)
    marker = tmp_path / "pwned.txt"
    path = run / "model" / MODEL_FILES["stop_loss"]
    path.write_bytes(payload(marker))
    bundle_json = run / "model" / "bundle.json"
    document = json.loads(bundle_json.read_text())
    document["weights"]["files"]["stop_loss"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    document[CHECKSUM_KEY] = content_sha256(document)  # every checksum fixed: only the loader stands in the way
    bundle_json.write_text(json.dumps(document))
    result = runner.invoke(app, ["predict", str(run), "--db", str(tiny_db)])
    assert not marker.exists()
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {path}: not a readable LightGBM model file (it does not begin with a 'tree' header)\n"
    )


def test_a_missing_tree_file_is_named(gbm_run: Path, tmp_path: Path) -> None:
    run = _copy(gbm_run, tmp_path)
    (run / "model" / MODEL_FILES["take_profit"]).unlink()
    with pytest.raises(ModelFileError, match=f"{MODEL_FILES['take_profit']}: missing; a gbm bundle holds"):
        load_bundle(run)


# --- the commands that read a bundle ---


def test_predict_backtest_and_replay_run_on_a_gbm_bundle(gbm_run: Path, tiny_db: Path, tmp_path: Path) -> None:
    run = _copy(gbm_run, tmp_path)
    predicted = runner.invoke(app, ["predict", str(run), "--db", str(tiny_db), "--json"])
    assert predicted.exit_code == 0, predicted.output
    printed = json.loads(predicted.stdout)
    assert sum(printed["probabilities"].values()) == pytest.approx(1.0)
    assert printed["side"] in ("Buy", "Sell", "Invalid")
    period = ["--db", str(tiny_db), "--from", "2024-01-05T00:00", "--to", "2024-01-06T23:00", "--every", "30m"]
    settings = ["--min-prob", "0.34", "--max-hold", "2h", "--workers", "1"]
    backtest = runner.invoke(
        app, ["backtest", str(run), *period, *settings, "--seeds", "1", "--no-progress", "--out", str(tmp_path / "bt")]
    )
    assert backtest.exit_code == 0, backtest.output
    replayed = runner.invoke(
        app, ["live", str(run), "--replay", *period, *settings, "-q", "--out", str(tmp_path / "rp")]
    )
    assert replayed.exit_code == 0, replayed.output
    trades = pd.read_csv(tmp_path / "bt" / "trades.csv")
    assert len(trades) > 0
    assert (tmp_path / "rp" / "trades.csv").read_text() == (tmp_path / "bt" / "trades.csv").read_text()


def test_gbm_predictions_in_one_batch_equal_one_moment_at_a_time(gbm_run: Path, tiny_candles: pd.DataFrame) -> None:
    bundle = load_bundle(gbm_run)
    last = int(tiny_candles["timestamp"].iloc[-1]) + 60
    moments = [last - 3_600 * k for k in range(5)]
    together = predict_moments(bundle, tiny_candles, at=moments)
    alone = pd.concat([predict_moments(bundle, tiny_candles, at=[m]) for m in moments], ignore_index=True)
    pd.testing.assert_frame_equal(together, alone)


# --- the command's refusals ---


def test_the_registry_knows_gbm() -> None:
    assert set(LOADERS) == {"lstm", "gbm"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "xgboost"], "error: --model: must be one of gbm, lstm, got 'xgboost'\n"),
        (
            ["--resume"],
            "error: --resume: a gbm model trains in seconds and keeps no checkpoints; "
            "train it again with --overwrite\n",
        ),
    ],
)
def test_train_refuses_an_unknown_kind_and_resuming_a_gbm(
    tiny_db: Path, gbm_cli: dict[str, Path], tmp_path: Path, extra: list[str], message: str
) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, _train_args(tiny_db, gbm_cli, out) + extra)
    assert result.exit_code == 2 and result.stderr == message
    assert not out.exists()
