"""Length bucketing on the window lengths real journals give: windows as long as the data before each moment."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lstm_trading.core.config import LabelConfig, TargetConfig
from lstm_trading.core.timeutil import to_unix_seconds
from lstm_trading.features.compute import compute_features
from lstm_trading.features.matrix import FeatureMatrix
from lstm_trading.models.lstm.batches import BucketBatchSampler, padding_share
from lstm_trading.samples.labels import label_first_touch
from lstm_trading.samples.targets import build_samples


def _journal_lengths(path: Path) -> np.ndarray:
    candles = pd.read_csv(path)
    candles["timestamp"] = to_unix_seconds(candles["timestamp"])
    features = compute_features(candles)
    labels = label_first_touch(candles, features, LabelConfig())  # a moment every hour, 24-hour horizon
    trades = labels.trades.assign(label=labels.trades["side"].map({"Buy": 0, "Sell": 1, "Invalid": 2}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # moments inside the warm-up are skipped: expected
        samples, _ = build_samples(FeatureMatrix.from_frame(features), trades, TargetConfig())
    return samples.length


@pytest.mark.parametrize("candles", ["binance_gap_csv", "bybit_csv"])
def test_bucketing_pads_little_on_real_journal_lengths(candles: str, request: pytest.FixtureRequest) -> None:
    """A month of data is shorter than a 90-day window: every trade's window starts at the data's start (the
    Binance file also has a 270-minute gap), so lengths run from a few minutes to 40,000. Padding stays <= 10 %."""
    lengths = _journal_lengths(request.getfixturevalue(candles))
    assert len(lengths) > 500 and lengths.min() < 100 and lengths.max() > 30_000
    for batch_size in (8, 32, 64):
        for epoch in (0, 1):
            sampler = BucketBatchSampler(lengths, batch_size, shuffle=True, seed=3)
            sampler.set_epoch(epoch)
            assert padding_share(lengths, sampler.global_batches()) <= 0.10, (batch_size, epoch)
