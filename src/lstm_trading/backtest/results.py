"""The whole backtest of a period: the model's simulation next to its baselines, and the frames written out.

Baselines run through the same fills (`execution.py`): buy and hold, random entries at the model's moments and
rate with its SL/TP distances (several seeds: mean and spread), and, when given, the journal's own trades.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lstm_trading.backtest.execution import (
    FLAT,
    LONG,
    SHORT,
    CandleArrays,
    signal_direction,
)
from lstm_trading.core.config import BacktestConfig
from lstm_trading.core.errors import DataError
from lstm_trading.core.timeutil import format_time

if TYPE_CHECKING:
    from lstm_trading.models.bundle import Bundle
from lstm_trading.backtest.simulation import (
    DEFAULT_SEEDS,
    Progress,
    Simulation,
    buy_and_hold,
    journal_signals,
    period_signals,
    random_entries,
    simulate,
)
from lstm_trading.backtest.statistics import _spread, statistics
from lstm_trading.predict import Signals

# --- the whole backtest ---


@dataclass(frozen=True)
class BacktestResult:
    """Everything one backtest produced; `stats` is the stats.json document."""

    start: int
    end: int
    candles: CandleArrays
    signals: Signals
    model: Simulation
    optimistic: Simulation
    buy_and_hold: Simulation
    random: list[Simulation]
    journal: Simulation | None
    stats: dict[str, Any]


def run_backtest(
    bundle: Bundle,
    candles: pd.DataFrame,
    *,
    start: int,
    end: int,
    config: BacktestConfig = BacktestConfig(),
    journal: pd.DataFrame | None = None,
    journal_name: str = "journal",
    seeds: Sequence[int] = DEFAULT_SEEDS,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Progress | None = None,
) -> BacktestResult:
    """Backtest the model on `[start, end)` of `candles` (which must hold the history before `start` too)."""
    if end <= start:
        raise DataError(f"the backtest period is empty: {format_time(start)} is not before {format_time(end)}")
    traded = period_signals(
        bundle, candles, start, end, config.every_seconds, batch_size=batch_size, workers=workers, progress=progress
    )
    period, end, moments, features, signals = traded.period, traded.end, traded.moments, traded.features, traded.signals
    direction = signal_direction(signals.proba, config.min_prob)
    top = signals.proba.max(axis=1)
    args = (period, signals.at, direction, signals.stop_loss_pct, signals.take_profit_pct, config)
    model = simulate(*args, probability=top, name="model")
    optimistic = simulate(*args, probability=top, same_candle="target", name="model_optimistic")
    hold = buy_and_hold(period, config)
    random = random_entries(period, signals, direction, config, seeds)
    journal_run = None
    if journal is not None:
        inside = journal[(journal["start_time"] >= start) & (journal["start_time"] < end)]
        at, sides, sl, tp = journal_signals(features, inside, bundle)
        journal_run = simulate(period, at, sides, sl, tp, config, name="journal")
    model_stats = statistics(model, period, config)
    optimistic_stats = statistics(optimistic, period, config)
    model_stats["optimistic_same_candle"] = {
        "pnl": optimistic_stats["pnl"],
        "total_return": optimistic_stats["total_return"],
        "trades": optimistic_stats["trades"],
    }
    random_stats = [statistics(run, period, config) for run in random]
    baselines: dict[str, Any] = {
        "buy_and_hold": statistics(hold, period, config),
        "random": {"seeds": list(seeds), **_spread(random_stats)} if random_stats else None,
    }
    if journal_run is not None:
        baselines["journal"] = {"name": journal_name, **statistics(journal_run, period, config)}
    stats = {
        "period": {
            "start": start,
            "end": end,
            "start_utc": format_time(start),
            "end_utc": format_time(end),
            "minutes": len(period),
        },
        "settings": asdict(config),
        "moments": len(moments),
        "signals": {
            "Buy": int(np.count_nonzero(direction == LONG)),
            "Sell": int(np.count_nonzero(direction == SHORT)),
            "none": int(np.count_nonzero(direction == FLAT)),
        },
        "model": model_stats,
        "baselines": baselines,
    }
    return BacktestResult(start, end, period, signals, model, optimistic, hold, random, journal_run, stats)


# --- output ---


def equity_frame(result: BacktestResult) -> pd.DataFrame:
    """Per candle of the period: price, the model's position, and every strategy's equity at the close."""
    frame = pd.DataFrame(
        {
            "timestamp": result.candles.timestamp,
            "close": result.candles.close,
            "position": result.model.position,
            "model": result.model.equity,
            "model_optimistic": result.optimistic.equity,
            "buy_and_hold": result.buy_and_hold.equity,
        }
    )
    if result.random:
        runs = np.vstack([run.equity for run in result.random])
        frame["random_mean"] = runs.mean(axis=0)
        frame["random_p05"] = np.quantile(runs, 0.05, axis=0)
        frame["random_p95"] = np.quantile(runs, 0.95, axis=0)
    if result.journal is not None:
        frame["journal"] = result.journal.equity
    return frame
