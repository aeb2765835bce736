"""`features` and `label`: a symbol's whole history and its features, computed from the start of the data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lstm_trading.core.config import FeatureConfig
from lstm_trading.core.errors import DataError
from lstm_trading.features.compute import compute_features
from lstm_trading.runs.candles import all_candles


def candles_and_features(
    db: Path, symbol: str, config: FeatureConfig | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All of a symbol's candles and their features: computed from the whole history, so that a row's values
    are the ones training and prediction see (the warm-up is spent once, at the start of the data)."""
    config = config or FeatureConfig()
    candles = all_candles(db, symbol, with_symbols=config.with_symbols)
    features = compute_features(candles, config)
    if features.empty:
        raise DataError(
            f"{db}: {symbol} has {len(candles):,} candles; features need more than the warm-up of "
            f"{config.warmup_minutes:,} minutes: ingest a longer history"
        )
    return candles, features
