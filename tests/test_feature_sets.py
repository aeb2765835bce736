"""Feature sets and other symbols as inputs: `seed` is the original 13 to the byte; `levels` is finite, bounded
where the README says, causal and restarts after a long gap; `--with SYMBOL` joins another symbol on the minute,
the bundle records both, predict and the paper loop read them, and a missing symbol names the ingest command."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import TINY_DAYS, tiny_config
from exchange_fake_runner import load_candles
from fake_ccxt import FakeCcxt, SimClock
from lstm_trading.cli import app
from lstm_trading.core.config import BacktestConfig, FeatureConfig, dump_config
from lstm_trading.core.errors import DataError, NoWindow
from lstm_trading.data.journal import write_journal
from lstm_trading.data.store import CandleStore
from lstm_trading.data.synthetic import synthetic_candles
from lstm_trading.features.cache import FeatureCache
from lstm_trading.features.compute import (
    FEATURE_NAMES,
    LEVELS_NAMES,
    compute_features,
    feature_names,
    rows_dropped,
)
from lstm_trading.features.matrix import FeatureMatrix
from lstm_trading.features.symbols import join_symbols
from lstm_trading.live import brokers
from lstm_trading.live.settings import LiveSettings
from lstm_trading.live.state import LiveState
from lstm_trading.models.bundle import load_bundle
from lstm_trading.models.gbm.features import CloseColumn, window_summary
from lstm_trading.predict import predict_moments
from lstm_trading.runs import live as live_runs
from lstm_trading.runs.candles import candles_before
from lstm_trading.samples.labels import label_first_touch
from lstm_trading.samples.scalers import FeatureScaler
from lstm_trading.samples.windows import moment_windows

runner = CliRunner()
TINY = FeatureConfig(warmup_minutes=2_000)
LEVELS = FeatureConfig(warmup_minutes=2_000, feature_set="levels")
DAY, HOUR = 86_400, 3_600


def gapped(candles: pd.DataFrame) -> pd.DataFrame:
    """The candles with a 3-hour gap after day 2 (a new segment) and a 10-minute one in the first segment."""
    first = int(candles["timestamp"].iloc[0])
    stamps = candles["timestamp"]
    kept = candles[(stamps < first + 2 * DAY) | (stamps >= first + 2 * DAY + 3 * HOUR)]
    return kept.drop(index=kept.index[5_000:5_010]).reset_index(drop=True)


def digest(features: pd.DataFrame) -> str:
    data = hashlib.sha256(np.ascontiguousarray(features.index.to_numpy()).tobytes())
    data.update(np.ascontiguousarray(features.to_numpy(dtype=np.float64)).tobytes())
    return data.hexdigest()


# --- the sets ---


def test_seed_set_is_the_original_13_features_byte_for_byte(tiny_candles: pd.DataFrame) -> None:
    """The checksum was taken from the features module before feature sets existed, on the same candles."""
    features = compute_features(gapped(tiny_candles), TINY)
    assert tuple(features.columns) == (*FEATURE_NAMES, "atr") and feature_names(TINY) == FEATURE_NAMES
    assert (features[list(FEATURE_NAMES)].dtypes == np.float32).all() and len(features) == 4_252
    assert digest(features) == "7786469fcde495f0a602e21e944db9dc57ab0e40c0968ed573667e5f6aa0a739"


def levels_bounds(features: pd.DataFrame, config: FeatureConfig) -> None:
    """Every levels feature finite, and within the bounds the README claims."""
    values = features[list(LEVELS_NAMES)]
    assert np.isfinite(values.to_numpy()).all()
    for name in ("open_ret", "high_ret", "low_ret", "close_ret"):
        assert (values[name] > -1).all(), name
    assert (values["high_ret"] >= values["low_ret"]).all()
    assert values["RSI_14h_frac"].between(0, 1).all()
    band = np.sqrt(config.bollinger - 1) / (2 * config.bollinger_sigma)
    assert values["BB_position"].between(0.5 - band, 0.5 + band).all()
    assert values["volume_z"].abs().max() <= np.sqrt(config.volume_window - 1)
    assert (values["BB_width"] >= 0).all() and (values["ATR_14h_close"] >= 0).all()
    # levels against price, not first differences: the band position spreads over the band, ATR is a share
    assert 0.1 < values["BB_position"].std() < 1 and values["ATR_14h_close"].median() < 0.01


def test_levels_features_are_finite_and_bounded_on_synthetic_and_real_candles(
    tiny_candles: pd.DataFrame, bybit_csv: Path
) -> None:
    synthetic = compute_features(tiny_candles, LEVELS)
    assert tuple(synthetic.columns) == (*LEVELS_NAMES, "atr")
    levels_bounds(synthetic, LEVELS)
    real = load_candles(bybit_csv, 0, 12_000)
    features = compute_features(real, LEVELS)
    levels_bounds(features, LEVELS)
    # the same ATR level as the seed set: targets and labels do not depend on the set
    pd.testing.assert_series_equal(features["atr"], compute_features(real, TINY)["atr"])
    flat = real.assign(volume=5.0, high=real["close"], low=real["close"], open=real["close"])
    assert compute_features(flat, LEVELS)["volume_z"].eq(0).all()  # constant volume: z-score 0, not NaN


def test_levels_features_at_t_ignore_every_candle_after_t(tiny_candles: pd.DataFrame) -> None:
    full = compute_features(tiny_candles, LEVELS)
    for rows in (2_500, 4_321, 7_000):
        prefix = compute_features(tiny_candles.iloc[:rows], LEVELS)
        pd.testing.assert_frame_equal(prefix, full.loc[: prefix.index[-1]])
        assert prefix.index[-1] == tiny_candles["timestamp"].iloc[rows - 1]


def test_levels_features_restart_after_a_long_gap_and_carry_through_a_short_one(tiny_candles: pd.DataFrame) -> None:
    candles = gapped(tiny_candles)
    features = compute_features(candles, LEVELS)
    resume = int(tiny_candles["timestamp"].iloc[0]) + 2 * DAY + 3 * HOUR
    after = candles[candles["timestamp"] >= resume]
    # the segment after the gap: its own indicators from its first candle, its own warm-up dropped
    pd.testing.assert_frame_equal(features.loc[resume:], compute_features(after, LEVELS))
    assert features.loc[resume:].index[0] == after["timestamp"].iloc[rows_dropped(LEVELS)]
    assert rows_dropped(LEVELS) == rows_dropped(TINY)  # the same warm-up as the seed set (MACD's look-back here)
    # across the 10-minute gap the close return is the change over the gap
    stamps = candles["timestamp"].to_numpy()
    row = int(np.flatnonzero(np.diff(stamps) == 11 * 60)[0]) + 1
    closes = candles["close"].to_numpy()
    got = features.loc[int(stamps[row]), "close_ret"]
    assert got == pytest.approx(closes[row] / closes[row - 1] - 1, rel=1e-5)


def test_the_feature_cache_keys_on_the_set(tiny_candles: pd.DataFrame, tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    seed = cache.features(tiny_candles, TINY, symbol="ETHUSDT")
    levels = cache.features(tiny_candles, LEVELS, symbol="ETHUSDT")
    assert (seed.status, levels.status) == ("miss", "miss") and seed.entry != levels.entry
    again = cache.features(tiny_candles, LEVELS, symbol="ETHUSDT")
    assert again.status == "hit" and again.matrix.names == LEVELS_NAMES
    np.testing.assert_array_equal(again.matrix.values, levels.matrix.values)


def test_the_gbm_returns_compound_the_levels_close_returns_exactly(tiny_candles: pd.DataFrame) -> None:
    matrix = FeatureMatrix.from_frame(compute_features(tiny_candles, LEVELS))
    scaler = FeatureScaler.fit(matrix.values, "minmax")  # no clipping: the returns are the raw ones
    close = CloseColumn.of(matrix.names, scaler.offset, scaler.scale)
    assert matrix.names[close.index] == "close_ret"
    ends = np.array([3_000, 5_000])
    summary = window_summary(scaler.transform(matrix.values), ends, np.array([1_500, 1_500]), close)
    closes = tiny_candles.set_index("timestamp")["close"]
    for i, end in enumerate(ends):
        now = closes[matrix.timestamps[end - 1]]
        for k, rows in enumerate((60, 240, 1_440)):
            before = closes[matrix.timestamps[end - 1 - rows]]
            assert summary[i, -3 + k] == pytest.approx(100 * (now / before - 1), abs=2e-4)


# --- other symbols ---


def btc_candles() -> pd.DataFrame:
    """A second market (another seed, BTC-like prices) beside the tiny one, on the same minutes."""
    return synthetic_candles(TINY_DAYS, seed=11, start_price=60_000.0)


def test_other_symbols_join_on_the_minute_and_a_missing_minute_is_a_gap(tiny_candles: pd.DataFrame) -> None:
    btc = btc_candles()
    config = FeatureConfig(warmup_minutes=2_000, feature_set="levels", with_symbols=("BTCUSDT",), max_gap_minutes=60)
    stamps = tiny_candles["timestamp"].to_numpy()
    short = stamps[3_000]  # one minute BTC lacks
    long_gap = stamps[5_500:5_590]  # 90 minutes BTC lacks: longer than max_gap_minutes
    thin = btc[~btc["timestamp"].isin([short, *long_gap])].reset_index(drop=True)
    joined = join_symbols(tiny_candles, {"BTCUSDT": thin})
    assert len(joined) == len(tiny_candles) and joined["BTCUSDT.close"].isna().sum() == 91
    features = compute_features(joined, config)
    assert tuple(features.columns[:-1]) == feature_names(config) and len(feature_names(config)) == 26
    own = compute_features(tiny_candles, LEVELS)
    theirs = compute_features(thin, LEVELS)
    # each symbol's features are its own, at the minutes both have
    pd.testing.assert_frame_equal(features[list(LEVELS_NAMES)], own.loc[features.index, list(LEVELS_NAMES)])
    np.testing.assert_array_equal(features["BTCUSDT.close_ret"], theirs.loc[features.index, "close_ret"])
    assert short not in features.index and not np.isin(long_gap, features.index).any()
    # the short gap carries through: the 60-minute window after it holds the 59 minutes both symbols have
    matrix = FeatureMatrix.from_frame(features, config.max_gap_minutes)
    end, length = moment_windows(matrix, np.array([short + 120]), 60)
    assert length[0] == 59 and matrix.timestamps[end[0] - 1] == short + 60
    assert matrix.timestamps[end[0] - 2] == short - 60
    # the long one restarts BTC's indicators: no window until its warm-up after the gap is over
    with pytest.raises(NoWindow, match="inside a gap longer than 60 minutes"):
        moment_windows(matrix, np.array([long_gap[-1] + 120]), 60)
    back = long_gap[-1] + 60 + rows_dropped(config) * 60  # BTC's first feature row after the gap
    assert features.loc[long_gap[-1] :].index[0] == back


def test_candles_without_the_other_symbols_are_a_one_line_error(tiny_candles: pd.DataFrame) -> None:
    config = FeatureConfig(warmup_minutes=2_000, with_symbols=("BTCUSDT",))
    with pytest.raises(DataError, match=r"^the candles lack the BTCUSDT columns that features\.with_symbols needs"):
        compute_features(tiny_candles, config)


# --- end to end: train with --feature-set levels --with BTCUSDT, predict, paper-trade ---


@pytest.fixture(scope="module")
def pair(tiny_candles: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A database with ETHUSDT and BTCUSDT, a first-touch journal, the tiny configuration, and a run trained
    through the CLI with `--feature-set levels --with BTCUSDT`."""
    folder = tmp_path_factory.mktemp("pair")
    db = folder / "pair.db"
    with CandleStore(db, create=True) as store:
        store.upsert("ETHUSDT", tiny_candles, source="tiny")
        store.upsert("BTCUSDT", btc_candles(), source="tiny")
    config = tiny_config()
    labels = label_first_touch(tiny_candles, compute_features(tiny_candles, config.features), config.labels)
    journal = folder / "val.xlsx"
    write_journal(journal, labels.trades, labels.meta)
    toml = folder / "tiny.toml"
    toml.write_text(dump_config(config.with_overrides("train", epochs=2)))
    run = folder / "run"
    args = ["train", "--db", str(db), "--trades", str(journal), "--config", str(toml), "--out", str(run)]
    result = runner.invoke(app, [*args, "--feature-set", "levels", "--with", "BTCUSDT", "--no-progress"])
    assert result.exit_code == 0, result.output
    return {"db": db, "journal": journal, "config": toml, "run": run}


def test_the_bundle_records_the_set_and_the_symbols_and_predict_reads_them(pair: dict[str, Path]) -> None:
    document = json.loads((pair["run"] / "model" / "bundle.json").read_text())
    assert document["features"]["config"]["feature_set"] == "levels"
    assert document["features"]["config"]["with_symbols"] == ["BTCUSDT"]
    assert document["features"]["names"][13:15] == ["BTCUSDT.open_ret", "BTCUSDT.high_ret"]
    assert document["model"]["input_size"] == 26  # the model's width follows the features
    assert 'with_symbols = ["BTCUSDT"]' in (pair["run"] / "config.toml").read_text()
    result = runner.invoke(app, ["predict", str(pair["run"]), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["window_minutes"] == 60 and sum(record["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    bundle = load_bundle(pair["run"])  # the library path gives the same probabilities
    candles = candles_before(pair["db"], "ETHUSDT", None, bundle.history_minutes, with_symbols=("BTCUSDT",))
    direct = predict_moments(bundle, candles).iloc[0]
    assert direct["p_buy"] == pytest.approx(record["probabilities"]["Buy"], abs=1e-6)


def test_a_bundle_from_before_the_feature_sets_loads_as_seed() -> None:
    bundle = load_bundle(Path(__file__).resolve().parent / "data" / "bundle_v1")
    assert bundle.feature_config.feature_set == "seed" and bundle.feature_config.with_symbols == ()


def one_line_error(result: Any) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    return lines[0]


def test_a_missing_with_symbol_is_a_one_line_error_naming_the_ingest_command(
    pair: dict[str, Path], tmp_path: Path
) -> None:
    args = ["train", "--db", str(pair["db"]), "--trades", str(pair["journal"]), "--config", str(pair["config"])]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run"), "--with", "SOLUSDT", "--no-progress"])
    line = one_line_error(result)
    assert line.startswith(f"error: {pair['db']}: no SOLUSDT candles, which the model reads beside ETHUSDT")
    assert line.endswith(f"lstm-trading ingest exchange --db {pair['db']} --symbol SOLUSDT --since 2024-01-01")
    # a run whose other symbol is gone from the database: predict says the same
    db = tmp_path / "eth_only.db"
    shutil.copy(pair["db"], db)
    with sqlite3.connect(db) as connection:
        connection.execute("DELETE FROM candles WHERE symbol = 'BTCUSDT'")
    line = one_line_error(runner.invoke(app, ["predict", str(pair["run"]), "--db", str(db)]))
    assert "no BTCUSDT candles, which the model reads beside ETHUSDT" in line
    command = f"ingest them: lstm-trading ingest exchange --db {db} --symbol BTCUSDT --since "
    assert command in line and re.fullmatch(r"\d{4}-\d\d-\d\d", line.rpartition(" ")[2])


def test_the_paper_loop_ingests_the_other_symbol_and_decides_with_it(
    pair: dict[str, Path], tiny_candles: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The fake exchange serves the same candles for every symbol: what matters is that both are kept current."""
    start = int(tiny_candles["timestamp"].iloc[0]) + 2 * DAY
    db = tmp_path / "live.db"
    before = tiny_candles[tiny_candles["timestamp"] < start]
    with CandleStore(db, create=True) as store:
        store.upsert("ETHUSDT", before, source="tiny")
        store.upsert("BTCUSDT", before, source="tiny")
    clock = SimClock(start - 10)
    fake = FakeCcxt(tiny_candles.reset_index(drop=True), clock)
    monkeypatch.setattr(brokers, "exchange_factory", lambda *args: fake)
    settings = LiveSettings(db=db, periods=4, retries=1, out_dir=tmp_path / "log")
    config = BacktestConfig(every_seconds=1_800, min_prob=0.0, min_ev=-1.0)
    summary = live_runs.live_run(pair["run"], settings, config=config, clock=clock)
    with LiveState(db, "paper") as state:
        decisions = state.decisions()
    assert len(decisions) == 4 and summary["last_moment"] == start + 3 * 1_800
    assert all(d["reason"] != "gap_warm_up" for d in decisions)
    with CandleStore(db) as store:
        for symbol in ("ETHUSDT", "BTCUSDT"):
            held = store.time_range(symbol)
            assert held is not None and held[1] == start + 3 * 1_800 - 60, symbol
