"""`predict`: a run's model at one moment, from the run's own database unless told otherwise."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lstm_trading.core.config import RuntimeConfig
from lstm_trading.core.errors import ConfigError
from lstm_trading.features.cache import cache_folder
from lstm_trading.models.bundle import load_bundle
from lstm_trading.predict import predict_moments, prediction_record
from lstm_trading.runs.candles import candles_before, run_sources


def predict_run(
    run: Path,
    *,
    db: Path | None = None,
    symbol: str | None = None,
    at: int | None = None,
    entry: float | None = None,
    runtime: RuntimeConfig | None = None,
) -> dict[str, Any]:
    """The prediction at `at` (default: after the last stored candle) as a JSON-ready record."""
    if entry is not None and not (math.isfinite(entry) and entry > 0):
        # checked first: a decision with a stop loss at a negative price is worse than no decision
        raise ConfigError(
            f"--entry {entry:g}: an entry price must be a positive, finite number (leave --entry out to use the "
            "last close)"
        )
    runtime = runtime or RuntimeConfig()
    bundle = load_bundle(run)
    db_path, symbol = run_sources(bundle, db, symbol)  # as evaluate and backtest: the run's own by default
    candles = candles_before(db_path, symbol, at, bundle.history_minutes)
    predictions = predict_moments(
        bundle,
        candles,
        at,
        entry=entry,
        workers=runtime.workers or None,
        cache_dir=cache_folder(runtime, db_path),
        symbol=symbol,
    )
    return prediction_record(predictions.iloc[0])
