"""Prediction: only candles closed by the moment matter; batched equals one by one; CLI equals API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lstm_trading.cli import app
from lstm_trading.core.errors import DataError
from lstm_trading.core.timeutil import format_time
from lstm_trading.models.bundle import load_bundle
from lstm_trading.predict import predict_moments


def test_prediction_ignores_candles_at_or_after_the_moment(tiny_run: Path, tiny_candles: pd.DataFrame) -> None:
    bundle = load_bundle(tiny_run)
    at = int(tiny_candles["timestamp"].iloc[-500])
    before = predict_moments(bundle, tiny_candles, at)
    changed = tiny_candles.copy()
    future = changed["timestamp"] >= at
    changed.loc[future, ["open", "high", "low", "close"]] *= 1.5
    changed.loc[future, "volume"] *= 10
    after = predict_moments(bundle, changed, at)
    pd.testing.assert_frame_equal(before, after)
    truncated = predict_moments(bundle, tiny_candles[~future], at)
    pd.testing.assert_frame_equal(before, truncated)


def test_batched_moments_equal_one_at_a_time(tiny_run: Path, tiny_candles: pd.DataFrame) -> None:
    bundle = load_bundle(tiny_run)
    moments = tiny_candles["timestamp"].to_numpy()[[-3000, -2000, -1000, -7]] + 30  # off-boundary too
    together = predict_moments(bundle, tiny_candles, moments, batch_size=3)
    alone = pd.concat([predict_moments(bundle, tiny_candles, int(m)) for m in moments], ignore_index=True)
    pd.testing.assert_frame_equal(together, alone, rtol=1e-5)
    # 30 s past a boundary, the window's first minute (opened at t - 60 min - 30 s) falls out: 59 rows
    assert list(together["window_minutes"]) == [59, 59, 59, 59]
    on_boundary = predict_moments(bundle, tiny_candles, moments - 30)
    assert list(on_boundary["window_minutes"]) == [60, 60, 60, 60]


def test_levels_sit_on_the_right_side_of_the_entry(tiny_run: Path, tiny_candles: pd.DataFrame) -> None:
    bundle = load_bundle(tiny_run)
    moments = tiny_candles["timestamp"].to_numpy()[-4000::97]
    result = predict_moments(bundle, tiny_candles, moments)
    probabilities = result[["p_buy", "p_sell", "p_invalid"]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    buy, sell = result[result["side"] == "Buy"], result[result["side"] == "Sell"]
    assert (buy["stop_loss"] < buy["entry"]).all() and (buy["entry"] < buy["take_profit"]).all()
    assert (sell["take_profit"] < sell["entry"]).all() and (sell["entry"] < sell["stop_loss"]).all()
    assert result.loc[result["side"] == "Invalid", "stop_loss"].isna().all()
    assert (result["stop_loss_pct"] > 0).all() and (result["take_profit_pct"] > 0).all()
    # entry defaults to the last close before the moment
    last_close = tiny_candles.set_index("timestamp")["close"]
    np.testing.assert_allclose(result["entry"], last_close.loc[moments - 60].to_numpy())


def test_entry_price_is_used_for_levels(tiny_run: Path, tiny_candles: pd.DataFrame) -> None:
    bundle = load_bundle(tiny_run)
    result = predict_moments(bundle, tiny_candles, entry=1234.5)
    assert result["entry"].iloc[0] == 1234.5
    assert result["at"].iloc[0] == tiny_candles["timestamp"].iloc[-1] + 60


def test_moment_before_the_usable_candles_is_a_clear_error(tiny_run: Path, tiny_candles: pd.DataFrame) -> None:
    bundle = load_bundle(tiny_run)
    first = int(tiny_candles["timestamp"].iloc[0])
    with pytest.raises(DataError, match=f"no usable candle closed by {format_time(first + 600)}"):
        predict_moments(bundle, tiny_candles, first + 600)


def test_cli_and_api_agree(tiny_run: Path, tiny_db: Path, tiny_candles: pd.DataFrame) -> None:
    at = int(tiny_candles["timestamp"].iloc[-1234])
    result = CliRunner().invoke(app, ["predict", str(tiny_run), "--db", str(tiny_db), "--at", str(at), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    bundle = load_bundle(tiny_run)
    # the CLI loads exactly the window plus the warm-up before `at`; give the API the same history
    history = tiny_candles[tiny_candles["timestamp"] >= at - bundle.history_minutes * 60]
    api = predict_moments(bundle, history, at).iloc[0]
    assert printed["side"] == api["side"] and printed["at"] == at
    assert printed["probabilities"]["Buy"] == pytest.approx(api["p_buy"], rel=1e-6)
    assert printed["entry"] == pytest.approx(api["entry"])
    if printed["side"] != "Invalid":
        assert printed["stop_loss"] == pytest.approx(api["stop_loss"], rel=1e-6)
    table = CliRunner().invoke(app, ["predict", str(tiny_run), "--db", str(tiny_db)])
    assert table.exit_code == 0 and "decision:" in table.stdout


def test_cli_names_a_broken_model_in_one_line(tmp_path: Path, tiny_db: Path) -> None:
    result = CliRunner().invoke(app, ["predict", str(tmp_path), "--db", str(tiny_db)])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "bundle.json: missing" in result.stderr


def test_cli_refuses_a_moment_after_the_data_instead_of_predicting_on_stale_candles(
    tiny_run: Path, tiny_db: Path, tiny_candles: pd.DataFrame
) -> None:
    # regression: `--at` a day after the last candle predicted from a partial, day-old window without a word
    last = int(tiny_candles["timestamp"].iloc[-1])
    ok = CliRunner().invoke(app, ["predict", str(tiny_run), "--db", str(tiny_db), "--at", str(last + 60)])
    assert ok.exit_code == 0, ok.output
    late = CliRunner().invoke(app, ["predict", str(tiny_run), "--db", str(tiny_db), "--at", str(last + 86_400)])
    assert late.exit_code == 2
    assert late.stderr.strip() == (
        f"error: --at {format_time(last + 86_400)} is after the last ETHUSDT candle in {tiny_db} "
        f"({format_time(last)}, closed at {format_time(last + 60)}); ingest newer candles or give an earlier --at"
    )


def test_cli_names_the_data_range_for_a_moment_before_the_data(
    tiny_run: Path, tiny_db: Path, tiny_candles: pd.DataFrame
) -> None:
    # regression: the message blamed the symbol ("choose them with --symbol") when --at was the problem
    first, last = int(tiny_candles["timestamp"].iloc[0]), int(tiny_candles["timestamp"].iloc[-1])
    result = CliRunner().invoke(app, ["predict", str(tiny_run), "--db", str(tiny_db), "--at", "2001-01-01"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {tiny_db}: no ETHUSDT candles before --at 2001-01-01 00:00 UTC; "
        f"they run from {format_time(first)} to {format_time(last)}: give an --at within them"
    )


def test_cli_shows_the_seconds_of_a_moment_inside_a_minute(
    tiny_run: Path, tiny_db: Path, tiny_candles: pd.DataFrame
) -> None:
    # regression: `--at 12:00:30` printed "at 12:00 UTC (59 minutes of history)", hiding why a minute was missing
    at = int(tiny_candles["timestamp"].iloc[-1234]) + 30
    result = CliRunner().invoke(app, ["predict", str(tiny_run), "--db", str(tiny_db), "--at", str(at), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["at_utc"] == format_time(at - 30).replace(" UTC", ":30 UTC")
    on_minute = CliRunner().invoke(
        app, ["predict", str(tiny_run), "--db", str(tiny_db), "--at", str(at - 30), "--json"]
    )
    assert json.loads(on_minute.stdout)["at_utc"] == format_time(at - 30)


def test_cli_reads_the_database_the_run_was_trained_on_by_default(
    tiny_run: Path, tiny_db: Path, tmp_path: Path
) -> None:
    # regression: `predict RUN` without --db looked for bybit1min.db and said "import candles first", while
    # evaluate and backtest read the run's own database
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    bundle_json = run / "model" / "bundle.json"
    document = json.loads(bundle_json.read_text())
    document["training"]["sources"] = {"db": str(tiny_db), "symbol": "ETHUSDT"}
    bundle_json.write_text(json.dumps(document))
    default = CliRunner().invoke(app, ["predict", str(run), "--json"])
    assert default.exit_code == 0, default.output
    given = CliRunner().invoke(app, ["predict", str(run), "--db", str(tiny_db), "--json"])
    assert json.loads(default.stdout) == json.loads(given.stdout)
    unrecorded = CliRunner().invoke(app, ["predict", str(tiny_run)])
    assert unrecorded.exit_code == 2
    assert unrecorded.stderr == f"error: {tiny_run / 'model'}: the run records no candle database; give one with --db\n"
