"""The synthetic market: deterministic, valid candles, and the structure the demo's model learns from."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstm_trading.core.errors import ConfigError
from lstm_trading.data.synthetic import synthetic_candles

COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    """Four weeks, the demo's size."""
    return synthetic_candles(28, seed=0)


def test_same_seed_gives_the_same_market() -> None:
    pd.testing.assert_frame_equal(synthetic_candles(2, seed=7), synthetic_candles(2, seed=7))


def test_different_seeds_give_different_markets() -> None:
    a, b = synthetic_candles(2, seed=1), synthetic_candles(2, seed=2)
    assert not np.allclose(a["close"], b["close"])
    assert not np.allclose(a["volume"], b["volume"])


def test_a_shorter_market_is_a_prefix_of_a_longer_one() -> None:
    short, long = synthetic_candles(3, seed=5), synthetic_candles(7.5, seed=5)
    pd.testing.assert_frame_equal(short, long.iloc[: len(short)])


def test_is_a_candle_frame_on_a_contiguous_minute_grid(market: pd.DataFrame) -> None:
    assert list(market.columns) == COLUMNS
    assert market["timestamp"].dtype == np.int64
    assert all(market[c].dtype == np.float64 for c in COLUMNS[1:])
    assert isinstance(market.index, pd.RangeIndex) and market.index[0] == 0
    assert len(market) == 28 * 1440
    assert market["timestamp"].iloc[0] == 1_704_067_200  # 2024-01-01 00:00 UTC by default
    assert (np.diff(market["timestamp"].to_numpy()) == 60).all()


def test_start_and_start_price_are_respected() -> None:
    frame = synthetic_candles(0.5, seed=0, start=1_750_000_020, start_price=100.0)
    assert frame["timestamp"].iloc[0] == 1_750_000_020
    assert frame["open"].iloc[0] == 100.0
    assert len(frame) == 720


def test_candles_are_valid(market: pd.DataFrame) -> None:
    o, h, low, c, v = (market[k].to_numpy() for k in COLUMNS[1:])
    assert (low <= np.minimum(o, c)).all() and (np.maximum(o, c) <= h).all()
    assert (low > 0).all() and (v > 0).all()
    assert np.isfinite(market[COLUMNS[1:]].to_numpy()).all()
    # Each candle opens where the previous one closed, as on a continuous exchange.
    np.testing.assert_allclose(o[1:], c[:-1])
    # Prices sit on the 0.01 tick.
    np.testing.assert_allclose(np.round(c * 100), c * 100, atol=1e-6)


def test_volatility_is_in_ethusdt_range(market: pd.DataFrame) -> None:
    log_close = np.log(market["close"].to_numpy())
    hourly = np.diff(log_close[::60]).std()
    assert 0.004 < hourly < 0.012  # real ETHUSDT: 0.67 % (Bybit 2025), 0.87 % (Binance 2021)


def test_volume_follows_the_utc_day(market: pd.DataFrame) -> None:
    hour = (market["timestamp"] // 3600) % 24
    by_hour = market["volume"].groupby(hour).mean()
    assert by_hour.max() / by_hour.min() > 1.8
    assert by_hour.idxmax() in (13, 14, 15)  # after the US open
    assert by_hour.idxmin() in (3, 4, 5, 6)  # Asian late night


def test_volume_is_lower_on_weekends(market: pd.DataFrame) -> None:
    weekday = pd.to_datetime(market["timestamp"], unit="s").dt.day_of_week
    weekend = market["volume"][weekday >= 5].mean()
    assert weekend < 0.85 * market["volume"][weekday < 5].mean()


def test_volatility_clusters(market: pd.DataFrame) -> None:
    absolute = np.abs(np.diff(np.log(market["close"].to_numpy())))
    for lag in (60, 120):
        assert np.corrcoef(absolute[:-lag], absolute[lag:])[0, 1] > 0.1
    # Volume moves with volatility.
    assert np.corrcoef(absolute, market["volume"].to_numpy()[1:])[0, 1] > 0.2


def test_returns_have_fat_tails(market: pd.DataFrame) -> None:
    returns = pd.Series(np.diff(np.log(market["close"].to_numpy())))
    assert returns.kurt() > 5.0  # excess kurtosis; a normal distribution has 0


def test_trends_persist_over_hours(market: pd.DataFrame) -> None:
    """The structure the demo learns: six-hour moves tend to continue, and daily moves exceed a random walk."""
    log_close = np.log(market["close"].to_numpy())
    six_hours = np.diff(log_close[::360])
    assert np.corrcoef(six_hours[:-1], six_hours[1:])[0, 1] > 0.2
    minute_var = np.diff(log_close).var()
    assert np.diff(log_close[::1440]).var() > 1.5 * 1440 * minute_var


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"days": 0}, "synthetic market: days must be a positive number, got 0"),
        ({"days": float("nan")}, "synthetic market: days must be a positive number, got nan"),
        ({"days": 1e-5}, "synthetic market: days=1e-05 is shorter than one minute"),
        (
            {"days": 1, "start": 1_704_067_230},
            "synthetic market: start must be UTC seconds on a minute boundary, got 1704067230",
        ),
        ({"days": 1, "start_price": -1.0}, "synthetic market: start_price must be a positive number, got -1.0"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        synthetic_candles(**kwargs)
    assert str(error.value) == message
