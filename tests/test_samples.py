"""Windows as index ranges, targets, the time split with purge, and scalers fitted on training rows only."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lstm_trading.core.config import SplitConfig, TargetConfig
from lstm_trading.core.errors import DataError
from lstm_trading.features.matrix import FeatureMatrix
from lstm_trading.samples.scalers import FeatureScaler, TargetScaler
from lstm_trading.samples.split import split_by_time, training_rows
from lstm_trading.samples.targets import BUY, INVALID, SELL, Samples, build_samples
from lstm_trading.samples.windows import window_bounds

T0 = 1_700_000_040 - 1_700_000_040 % 60  # a minute boundary


def _matrix(timestamps: np.ndarray, atr: float = 2.0) -> FeatureMatrix:
    n = len(timestamps)
    values = np.arange(n * 13, dtype=np.float32).reshape(n, 13)
    return FeatureMatrix(values, timestamps.astype(np.int64), np.full(n, atr), tuple(f"f{i}" for i in range(13)))


def _trades(times: list[int], labels: list[int], entry: float = 100.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "start_time": np.asarray(times, dtype=np.int64),
            "entry_price": [entry if label != INVALID else -1.0 for label in labels],
            "label": labels,
            "row": np.arange(2, len(times) + 2),
        }
    )


def test_window_holds_only_candles_closed_by_the_moment() -> None:
    timestamps = T0 + 60 * np.arange(100)
    # a moment on a minute boundary: the candle opening at t is not closed yet, the one opened at t-60 is
    start, end = window_bounds(timestamps, np.array([T0 + 60 * 50]), max_len=10)
    assert (start[0], end[0]) == (40, 50)
    assert timestamps[end[0] - 1] + 60 <= T0 + 60 * 50
    # the seed's [t - L*60, t) on a boundary
    assert timestamps[start[0]] == T0 + 60 * 50 - 10 * 60


def test_window_off_a_minute_boundary_excludes_the_still_open_candle() -> None:
    timestamps = T0 + 60 * np.arange(100)
    start, end = window_bounds(timestamps, np.array([T0 + 60 * 50 + 30]), max_len=10)
    assert end[0] == 50  # the candle opened at T0+50min closes at +51min, after t
    assert start[0] == 41  # open time >= t - 10 min


def test_window_right_after_a_gap_and_short_history() -> None:
    timestamps = np.concatenate([T0 + 60 * np.arange(20), T0 + 60 * np.arange(50, 60)])
    start, end = window_bounds(timestamps, np.array([T0 + 60 * 52]), max_len=30)
    # closed by t: open times up to 51 min; back to 22 min: rows 20 and 21 (opened 50, 51 min) only
    assert end[0] - start[0] == 2
    start, end = window_bounds(timestamps, np.array([T0 + 60 * 5]), max_len=30)
    assert (start[0], end[0]) == (0, 5)  # less history than max_len: fewer rows


def test_targets_from_atr_and_from_the_journal() -> None:
    timestamps = T0 + 60 * np.arange(100)
    matrix = _matrix(timestamps, atr=2.0)
    trades = _trades([T0 + 60 * 40, T0 + 60 * 60, T0 + 60 * 80], [BUY, SELL, INVALID])
    samples, report = build_samples(matrix, trades, TargetConfig(max_len=10, k_sl=2, k_tp=3))
    assert np.allclose(samples.stop_loss_pct[:2], 100 * 2 * 2.0 / 100.0)
    assert np.allclose(samples.take_profit_pct[:2], 100 * 3 * 2.0 / 100.0)
    assert np.isnan(samples.stop_loss_pct[2])
    assert list(samples.length) == [10, 10, 10]
    trades["stop_loss"] = [99.0, 101.5, np.nan]
    trades["take_profit"] = [103.0, 97.0, np.nan]
    samples, _ = build_samples(matrix, trades, TargetConfig(max_len=10))
    assert np.allclose(samples.stop_loss_pct[:2], [1.0, 1.5])
    assert np.allclose(samples.take_profit_pct[:2], [3.0, 3.0])
    assert report.skipped_no_history == 0


def test_trades_outside_the_data_are_skipped_with_one_warning() -> None:
    timestamps = T0 + 60 * np.arange(100)
    trades = _trades([T0, T0 + 60 * 50, T0 + 60 * 500], [BUY, BUY, SELL])
    with pytest.warns(UserWarning, match=r"skipped 2 of 3 trades .* 1 with no closed candle .* 1 after the data"):
        samples, report = build_samples(_matrix(timestamps), trades, TargetConfig(max_len=10))
    assert len(samples) == 1 and report.skipped_after_data == 1 and report.skipped_no_history == 1


def test_all_trades_outside_the_data_is_an_error() -> None:
    timestamps = T0 + 60 * np.arange(100)
    with pytest.raises(DataError, match="none of the 1 trades falls inside the usable candles"), pytest.warns():
        build_samples(_matrix(timestamps), _trades([T0 + 60 * 5000], [BUY]), TargetConfig(max_len=10))


def test_min_history_skips_short_windows() -> None:
    timestamps = T0 + 60 * np.arange(100)
    trades = _trades([T0 + 60 * 3, T0 + 60 * 50], [BUY, BUY])
    with pytest.warns(UserWarning, match="1 with fewer than 5 minutes"):
        samples, _ = build_samples(_matrix(timestamps), trades, TargetConfig(max_len=10, min_history=5))
    assert len(samples) == 1


def test_10000_samples_over_5_years_share_one_matrix() -> None:
    n = 5 * 365 * 1440
    timestamps = T0 + 60 * np.arange(n, dtype=np.int64)
    matrix = FeatureMatrix(np.zeros((n, 13), np.float32), timestamps, np.ones(n), tuple("abcdefghijklm"))
    rng = np.random.default_rng(0)
    times = np.sort(rng.choice(timestamps[200_000:], 10_000, replace=False))
    samples, _ = build_samples(matrix, _trades(list(times), [BUY] * 10_000), TargetConfig())
    assert len(samples) == 10_000 and samples.end.dtype == np.int64
    assert samples.length.max() == 129_600  # no window copied: samples are two integers each


def _samples(times: np.ndarray, labels: np.ndarray) -> Samples:
    n = len(times)
    return Samples(
        end=np.arange(10, 10 + n),
        length=np.full(n, 5),
        label=labels,
        stop_loss_pct=np.where(labels == INVALID, np.nan, 1.0 + np.arange(n)),
        take_profit_pct=np.where(labels == INVALID, np.nan, 2.0 + np.arange(n)),
        start_time=times,
        entry_price=np.full(n, 100.0),
        journal_row=np.arange(n) + 2,
    )


def test_split_is_by_time_and_count_and_purges_across_boundaries() -> None:
    times = T0 + 3600 * np.arange(100)
    samples = _samples(times[::-1].copy(), np.zeros(100, dtype=np.int64))  # unsorted input
    split = split_by_time(samples, SplitConfig(purge_seconds=3 * 3600))
    assert split.train.start_time.max() < split.val.start_time.min() < split.test.start_time.min()
    # 70 / 15 / 15, then the trades of train and val whose 3-hour horizon reaches past the next split's first start
    assert split.sizes() == {"train": 68, "val": 13, "test": 15}
    assert split.purged == {"train": 2, "val": 2, "test": 0}
    assert split.train.start_time.max() + 3 * 3600 <= split.val.start_time.min()
    no_purge = split_by_time(samples, SplitConfig(purge_seconds=0))
    assert no_purge.sizes() == {"train": 70, "val": 15, "test": 15}


def test_journal_horizon_overrides_the_default_purge() -> None:
    times = T0 + 3600 * np.arange(100)
    split = split_by_time(_samples(times, np.zeros(100, dtype=np.int64)), SplitConfig(), horizon_seconds=3600)
    assert split.purged == {"train": 0, "val": 0, "test": 0}


def test_feature_scaler_sees_only_training_rows() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(1000, 13)).astype(np.float32)
    values[600:] += 100.0  # the future is different; it must not leak into the scaler
    train = _samples(T0 + 60 * np.arange(5), np.zeros(5, dtype=np.int64))
    train = Samples(**{**train.__dict__, "end": np.array([100, 200, 300, 400, 500]), "length": np.full(5, 100)})
    rows = training_rows(train)
    assert (rows.start, rows.stop) == (0, 500)
    scaler = FeatureScaler.fit(values[rows], "standard")
    scaled = scaler.transform(values)
    assert abs(scaled[:500].mean()) < 0.1 and abs(scaled[:500].std() - 1) < 0.1
    edge = (scaler.upper - scaler.offset) / scaler.scale
    np.testing.assert_allclose(scaled[600:], np.broadcast_to(edge, (400, 13)), rtol=1e-5)  # clipped, not refitted
    minmax = FeatureScaler.fit(values[rows], "minmax").transform(values[rows])
    assert minmax.min() == pytest.approx(0) and minmax.max() == pytest.approx(1)


def test_scalers_round_trip_through_json() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(200, 13))
    for kind in ("standard", "minmax"):
        scaler = FeatureScaler.fit(values, kind)
        again = FeatureScaler.from_json(json.loads(json.dumps(scaler.to_json())), 13)
        np.testing.assert_array_equal(scaler.transform(values), again.transform(values))
    samples = _samples(T0 + 60 * np.arange(6), np.array([0, 1, 2, 0, 1, 2]))
    targets = TargetScaler.fit(samples)
    sl, tp = targets.transform(samples.stop_loss_pct, samples.take_profit_pct)
    assert np.nanmin(sl) == 0 and np.nanmax(sl) == 1
    restored = TargetScaler.from_json(json.loads(json.dumps(targets.to_json())))
    back_sl, back_tp = restored.inverse(sl, tp)
    np.testing.assert_allclose(back_sl, samples.stop_loss_pct)
    np.testing.assert_allclose(back_tp, samples.take_profit_pct)


def test_target_scaler_ignores_invalid_trades_and_needs_a_trade() -> None:
    samples = _samples(T0 + 60 * np.arange(3), np.array([INVALID] * 3))
    with pytest.raises(DataError, match="no Buy or Sell trade"):
        TargetScaler.fit(samples)


def test_trades_inside_a_long_gap_or_its_warm_up_are_counted_not_fatal(binance_gap_csv) -> None:  # type: ignore[no-untyped-def]
    """A moment with no usable window is counted; the other trades stay (DESIGN.md, "Gaps")."""
    import warnings

    from lstm_trading.core.config import FeatureConfig
    from lstm_trading.data.csv import read_candles_csv
    from lstm_trading.features.compute import compute_features
    from lstm_trading.features.matrix import FeatureMatrix

    candles = read_candles_csv(binance_gap_csv)
    stamps = candles["timestamp"].to_numpy()
    (gap,) = np.flatnonzero(np.diff(stamps) > 60) + 1
    config = FeatureConfig(warmup_minutes=2_200)
    matrix = FeatureMatrix.from_frame(compute_features(candles, config), config.max_gap_minutes)
    moments = [int(stamps[2_300]), int(stamps[gap]) + 600, int(stamps[gap + 2_300])]  # before, in warm-up, after
    trades = pd.DataFrame(
        {"start_time": moments, "entry_price": [3000.0] * 3, "label": [2, 2, 2], "side": ["Invalid"] * 3}
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples, report = build_samples(matrix, trades, TargetConfig(max_len=600))
    assert len(samples) == 2 and report.skipped_in_gap == 1 and report.skipped == 1
    assert report.long_gaps == 1 and report.longest_gap_minutes == 270 + 2_200
    assert "1 inside one of 1 long gaps or the warm-up after it" in str(caught[0].message)
