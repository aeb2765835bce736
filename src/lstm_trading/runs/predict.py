"""`predict`: a run's model at one moment, from the run's own database unless told otherwise."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from lstm_trading.backtest.execution import FLAT, SIDE_NAMES, bracket_prices, decide, decision_text
from lstm_trading.core.config import BacktestConfig, RuntimeConfig
from lstm_trading.core.errors import ConfigError
from lstm_trading.core.run_folder import RunFolder
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
    trading: BacktestConfig | None = None,
) -> dict[str, Any]:
    """The prediction at `at` (default: after the last stored candle) as a JSON-ready record, with the decision
    the backtest and the live loop would take there (`trading`: the run's backtest settings by default)."""
    if entry is not None and not (math.isfinite(entry) and entry > 0):
        # checked first: a decision with a stop loss at a negative price is worse than no decision
        raise ConfigError(
            f"--entry {entry:g}: an entry price must be a positive, finite number (leave --entry out to use the "
            "last close)"
        )
    runtime = runtime or RuntimeConfig()
    trading = trading or RunFolder(run).backtest_config()
    bundle = load_bundle(run)
    db_path, symbol = run_sources(bundle, db, symbol)  # as evaluate and backtest: the run's own by default
    candles = candles_before(
        db_path, symbol, at, bundle.history_minutes, with_symbols=bundle.feature_config.with_symbols
    )
    predictions = predict_moments(
        bundle,
        candles,
        at,
        entry=entry,
        workers=runtime.workers or None,
        cache_dir=cache_folder(runtime, db_path),
        symbol=symbol,
        levels=trading.levels,
    )
    return with_decision(prediction_record(predictions.iloc[0]), trading)


def with_decision(record: dict[str, Any], trading: BacktestConfig) -> dict[str, Any]:
    """The record with `decision` (Buy, Sell or "no trade"), `reason` in words, the considered side's `ev_pct`,
    and SL/TP prices for the decided side (`execution.decide`, the rule backtest and live trade by)."""
    probabilities = record["probabilities"]
    proba = np.array([[probabilities["Buy"], probabilities["Sell"], probabilities["Invalid"]]])
    sl_pct, tp_pct = record["stop_loss_pct"], record["take_profit_pct"]
    decisions = decide(proba, sl_pct, tp_pct, trading)
    direction = int(decisions.direction[0])
    decided = dict(record)
    decided["decision"] = SIDE_NAMES.get(direction, "no trade")
    decided["reason"] = decision_text(decisions, 0, trading, tp_pct)
    decided["ev_pct"] = float(decisions.ev_pct[0])
    decided["levels"] = trading.levels
    if direction != FLAT:
        stop, target = bracket_prices(direction, record["entry"], sl_pct, tp_pct)
        decided["stop_loss"], decided["take_profit"] = stop, target
    return decided
