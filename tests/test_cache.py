"""Feature cache: a hit on unchanged candles, a miss on changed ones, corrupt and stale entries rebuilt."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lstm_trading.core.config import FeatureConfig
from lstm_trading.data.synthetic import synthetic_candles
from lstm_trading.features.cache import FeatureCache, default_cache_dir, feature_matrix
from lstm_trading.features.compute import compute_features
from lstm_trading.features.matrix import FeatureMatrix

CONFIG = FeatureConfig(warmup_minutes=2_000)


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return synthetic_candles(2.5, seed=11)


def _assert_same(matrix: FeatureMatrix, candles: pd.DataFrame, config: FeatureConfig = CONFIG) -> None:
    expected = FeatureMatrix.from_frame(compute_features(candles, config))
    np.testing.assert_array_equal(matrix.values, expected.values)
    np.testing.assert_array_equal(matrix.timestamps, expected.timestamps)
    np.testing.assert_array_equal(matrix.atr, expected.atr)
    assert matrix.names == expected.names


def test_second_load_of_unchanged_candles_is_a_hit(candles: pd.DataFrame, tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    first = cache.features(candles, CONFIG, symbol="ETHUSDT")
    second = cache.features(candles, CONFIG, symbol="ETHUSDT")
    assert (first.status, second.status) == ("miss", "hit")
    assert first.entry == second.entry and second.entry is not None and second.entry.name.startswith("ETHUSDT-")
    assert isinstance(second.matrix.values, np.memmap)  # read from disk on demand, not loaded
    _assert_same(second.matrix, candles)


@pytest.mark.parametrize(
    "change",
    ["one close", "a new candle", "one fewer candle", "the symbol", "the feature parameters"],
)
def test_changed_candles_or_settings_miss(candles: pd.DataFrame, tmp_path: Path, change: str) -> None:
    cache = FeatureCache(tmp_path)
    cache.features(candles, CONFIG, symbol="ETHUSDT")
    changed, config, symbol = candles.copy(), CONFIG, "ETHUSDT"
    if change == "one close":
        changed.loc[len(changed) // 2, "close"] *= 1.0001
    elif change == "a new candle":
        changed = synthetic_candles(2.5 + 1 / 1440, seed=11)
    elif change == "one fewer candle":
        changed = changed.iloc[:-1]
    elif change == "the symbol":
        symbol = "BTCUSDT"
    else:
        config = replace(CONFIG, rsi=600)
    again = cache.features(changed, config, symbol=symbol)
    assert again.status == "miss"
    _assert_same(again.matrix, changed, config)


def _entry(cache: FeatureCache, candles: pd.DataFrame) -> Path:
    entry = cache.features(candles, CONFIG, symbol="ETHUSDT").entry
    assert entry is not None
    return entry


@pytest.mark.parametrize("damage", ["flipped bytes", "truncated", "missing file", "header not JSON"])
def test_a_corrupt_entry_is_rebuilt_with_a_warning(candles: pd.DataFrame, tmp_path: Path, damage: str) -> None:
    cache = FeatureCache(tmp_path)
    entry = _entry(cache, candles)
    values = entry / "values.npy"
    data = values.read_bytes()
    if damage == "flipped bytes":
        middle = len(data) // 2
        values.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 8]) + data[middle + 8 :])
    elif damage == "truncated":
        values.write_bytes(data[: len(data) - 100])
    elif damage == "missing file":
        values.unlink()
    else:
        (entry / "header.json").write_text('{"format": "lstm-trading-feat')
    with pytest.warns(UserWarning, match=r"corrupt feature cache .*; the features are recomputed"):
        rebuilt = cache.features(candles, CONFIG, symbol="ETHUSDT")
    assert rebuilt.status == "rebuilt"
    _assert_same(rebuilt.matrix, candles)
    assert cache.features(candles, CONFIG, symbol="ETHUSDT").status == "hit"


def test_a_stale_header_is_rebuilt_with_a_warning(candles: pd.DataFrame, tmp_path: Path) -> None:
    """An entry whose header describes other candles (copied or left by another version) is never used."""
    cache = FeatureCache(tmp_path)
    entry = _entry(cache, candles)
    header = json.loads((entry / "header.json").read_text())
    header["identity"]["rows"] += 1
    header["identity"]["last_timestamp"] += 60
    (entry / "header.json").write_text(json.dumps(header))
    with pytest.warns(UserWarning, match=r"stale feature cache entry \(made for other last_timestamp, rows\)"):
        rebuilt = cache.features(candles, CONFIG, symbol="ETHUSDT")
    assert rebuilt.status == "rebuilt"
    _assert_same(rebuilt.matrix, candles)


def test_old_format_version_is_rebuilt(candles: pd.DataFrame, tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    entry = _entry(cache, candles)
    header = json.loads((entry / "header.json").read_text())
    header["format_version"] = 0
    (entry / "header.json").write_text(json.dumps(header))
    with pytest.warns(UserWarning, match=r"stale feature cache entry \(format version 0\)"):
        assert cache.features(candles, CONFIG, symbol="ETHUSDT").status == "rebuilt"


def test_least_recently_used_entries_are_removed(candles: pd.DataFrame, tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, max_entries=2)
    entries = [_entry(cache, candles.iloc[: len(candles) - cut]) for cut in (0, 1, 2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in entries[1:])


def test_no_cache_dir_computes_directly_and_default_sits_beside_the_database(candles: pd.DataFrame) -> None:
    _assert_same(feature_matrix(candles, CONFIG), candles)
    assert default_cache_dir(Path("data/bybit1min.db")) == Path("data/bybit1min.db.features")


def _no_recompute(*args: object, **kwargs: object) -> None:
    raise AssertionError("features were recomputed although the cache holds them")


def test_second_prepare_on_unchanged_candles_loads_the_cache(  # type: ignore[no-untyped-def]
    tiny_candles, tiny_trades, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import warnings

    from conftest import tiny_config
    from lstm_trading.features import cache as cache
    from lstm_trading.runs.train import prepare

    config = tiny_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trades inside the warm-up are skipped: expected here
        first = prepare(tiny_candles, tiny_trades, config, symbol="ETHUSDT", cache_dir=tmp_path)
        monkeypatch.setattr(cache, "compute_features", _no_recompute)
        second = prepare(tiny_candles, tiny_trades, config, symbol="ETHUSDT", cache_dir=tmp_path)
    np.testing.assert_array_equal(second.scaled, first.scaled)
    assert second.split.sizes() == first.split.sizes()


def test_predict_command_keeps_features_beside_the_database(  # type: ignore[no-untyped-def]
    tiny_run, tiny_db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from typer.testing import CliRunner

    from lstm_trading.cli import app
    from lstm_trading.features import cache as cache

    db = tmp_path / "candles.db"
    shutil.copy(tiny_db, db)
    args = ["predict", str(tiny_run), "--db", str(db), "--json", "--workers", "2"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert len(list((tmp_path / "candles.db.features").iterdir())) == 1
    monkeypatch.setattr(cache, "compute_features", _no_recompute)
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout) == json.loads(first.stdout)
    off = CliRunner().invoke(app, [*args, "--no-cache"])
    assert off.exit_code == 1 and "recomputed although the cache holds them" in repr(off.exception)
