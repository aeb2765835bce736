"""The whole backtest of a period: the model's simulation next to its baselines, and the frames written out.

Baselines run through the same fills (`execution.py`): buy and hold; random entries with the model's Buy and
Sell counts and its SL/TP distances (R runs: the table's mean and spread, and the null of the model's p-value);
and, when given, the journal's own trades. Each strategy's stats carry a `significance` block
(`significance.py`): expectancy per trade with its bootstrap interval, the p-value against random entries,
daily Sharpe, PSR and DSR, and the verdict. The journal's p-value comes from random runs with its own Buy and
Sell counts, at the decision moments and with the model's levels there (the one table of exits).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lstm_trading.backtest.execution import (
    FLAT,
    LONG,
    SHORT,
    CandleArrays,
    Decisions,
    Thresholds,
    decide,
)
from lstm_trading.backtest.funding import FundingSchedule
from lstm_trading.core.config import BacktestConfig
from lstm_trading.core.errors import DataError
from lstm_trading.core.timeutil import format_time

if TYPE_CHECKING:
    from lstm_trading.models.bundle import Bundle
from lstm_trading.backtest.significance import null_summary, sharpe_ratio, significance
from lstm_trading.backtest.simulation import (
    BAND_RUNS,
    DEFAULT_RANDOM_RUNS,
    PeriodSignals,
    Progress,
    RandomBaseline,
    Simulation,
    buy_and_hold,
    journal_signals,
    moment_exits,
    period_signals,
    random_entries,
    return_pct,
    simulate,
)
from lstm_trading.backtest.statistics import _spread, daily_returns, ev_calibration, statistics
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
    random: list[Simulation]  # the first `BAND_RUNS` random runs through the account (equity.csv's band)
    random_entries: RandomBaseline  # all the random runs' entries and the exits they reuse
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
    random_runs: int = DEFAULT_RANDOM_RUNS,
    seed: int = 0,
    trials: int = 1,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Progress | None = None,
    funding: FundingSchedule | None = None,
) -> BacktestResult:
    """Backtest the model on `[start, end)` of `candles` (which must hold the history before `start` too).

    `random_runs` random-entry runs (seeded by `seed`, which also seeds the bootstrap) give the random baseline
    and the p-values; `trials` is how many configurations were tried to find this one (the deflated Sharpe
    ratio's N; 1 makes the DSR the PSR against 0). `funding` is the symbol's funding schedule, charged to every
    strategy's fills (None: a spot symbol, no funding).
    """
    _check_backtest(start, end, random_runs, trials)
    traded = period_signals(
        bundle, candles, start, end, config.every_seconds, batch_size=batch_size, workers=workers, progress=progress
    )
    return backtest_period(
        traded,
        bundle,
        start=start,
        config=config,
        journal=journal,
        journal_name=journal_name,
        random_runs=random_runs,
        seed=seed,
        trials=trials,
        funding=funding,
    )


def _check_backtest(start: int, end: int, random_runs: int, trials: int) -> None:
    if end <= start:
        raise DataError(f"the backtest period is empty: {format_time(start)} is not before {format_time(end)}")
    if random_runs < 1:
        raise DataError(f"random_runs must be at least 1, got {random_runs}")
    if trials < 1:
        raise DataError(f"trials must be at least 1 (this configuration), got {trials}")


def backtest_period(
    traded: PeriodSignals,
    bundle: Bundle,
    *,
    start: int,
    config: BacktestConfig = BacktestConfig(),
    journal: pd.DataFrame | None = None,
    journal_name: str = "journal",
    random_runs: int = DEFAULT_RANDOM_RUNS,
    seed: int = 0,
    trials: int = 1,
    funding: FundingSchedule | None = None,
    thresholds: Thresholds | None = None,
) -> BacktestResult:
    """The backtest of signals already computed for a period (`period_signals`, or a walk-forward's signals
    stitched from its folds' models): the decisions, the model's fills, the baselines and the statistics.
    `thresholds`: per-moment min-prob / min-EV instead of `config`'s (a walk-forward's per-fold choice).
    `bundle` gives the journal's targets (its `target_config`); the signals' levels are `config.levels`'."""
    _check_backtest(start, traded.end, random_runs, trials)
    period, end, moments, features = traded.period, traded.end, traded.moments, traded.features
    signals = traded.signals.with_levels(config.levels)
    decisions = decide(
        signals.proba, signals.stop_loss_pct, signals.take_profit_pct, config, signals.usable, thresholds
    )
    direction, top = decisions.direction, decisions.probability
    args = (period, signals.at, direction, signals.stop_loss_pct, signals.take_profit_pct, config)
    model = simulate(*args, probability=top, name="model", funding=funding)
    optimistic = simulate(*args, probability=top, same_candle="target", name="model_optimistic", funding=funding)
    hold = buy_and_hold(period, config, funding)
    exits = moment_exits(
        period,
        signals.at,
        signals.stop_loss_pct,
        signals.take_profit_pct,
        config,
        usable=signals.usable,
        funding=funding,
    )
    random = random_entries(exits, model.fills, runs=random_runs, seed=seed)
    journal_run = None
    if journal is not None:
        inside = journal[(journal["start_time"] >= start) & (journal["start_time"] < end)]
        at, sides, sl, tp = journal_signals(features, inside, bundle)
        journal_run = simulate(period, at, sides, sl, tp, config, name="journal", funding=funding)

    def daily(simulation: Simulation) -> np.ndarray:
        return daily_returns(period.timestamp[: len(simulation.equity)], simulation.equity, config.initial_equity)

    random_stats, band, sharpe_variance = _random_baseline(random, period, config, daily)

    model_stats = statistics(model, period, config)
    model_stats["significance"] = significance(
        returns(model), daily(model), null=random.draws, trials=trials, sharpe_variance=sharpe_variance, seed=seed
    )
    optimistic_stats = statistics(optimistic, period, config)
    model_stats["optimistic_same_candle"] = {
        "pnl": optimistic_stats["pnl"],
        "total_return": optimistic_stats["total_return"],
        "trades": optimistic_stats["trades"],
    }
    model_stats["ev_calibration"] = ev_calibration(_entry_values(model, signals.at, decisions.ev_pct), returns(model))
    hold_stats = statistics(hold, period, config)
    hold_stats["significance"] = significance(returns(hold), daily(hold), seed=seed)
    baselines: dict[str, Any] = {
        "buy_and_hold": hold_stats,
        "random": {
            "runs": random.draws.runs,
            "seed": seed,
            **_spread(random_stats),
            "significance": null_summary(random.draws, int(np.count_nonzero(exits.eligible))),
        },
    }
    if journal_run is not None:
        journal_stats = statistics(journal_run, period, config)
        journal_null = random_entries(exits, journal_run.fills, runs=random_runs, seed=seed).draws
        journal_stats["significance"] = significance(
            returns(journal_run), daily(journal_run), null=journal_null, seed=seed
        )
        baselines["journal"] = {"name": journal_name, **journal_stats}
    if config.levels == "model" and signals.atr_stop_loss_pct is not None:
        baselines["atr_levels"] = _atr_levels_baseline(period, signals, decisions, config, funding, daily, seed)
    stats = {**_period_record(start, end, period, config, moments, decisions), "model": model_stats}
    stats["baselines"] = baselines
    return BacktestResult(start, end, period, signals, model, optimistic, hold, band, random, journal_run, stats)


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


def returns(simulation: Simulation) -> np.ndarray:
    """Each trade's net return in % of its entry notional, in time order (as trades.csv's `return_pct`)."""
    return np.array([return_pct(f) for f in simulation.fills], dtype=np.float64)


def _random_baseline(
    random: RandomBaseline,
    period: CandleArrays,
    config: BacktestConfig,
    daily: Callable[[Simulation], np.ndarray],
) -> tuple[list[dict[str, Any]], list[Simulation], float]:
    """Every random run through the account rules: their statistics (the baseline row's mean and spread), the
    first `BAND_RUNS` for the equity band, and the variance of their daily Sharpe ratios (the DSR's V)."""
    random_stats, band = [], []
    for run in range(random.draws.runs):
        simulation = random.simulation(run, period, config)
        figures = statistics(simulation, period, config)
        figures["sharpe_daily"] = sharpe_ratio(daily(simulation))
        random_stats.append(figures)
        if run < BAND_RUNS:
            band.append(simulation)
    null_sharpes = np.array([r["sharpe_daily"] for r in random_stats], dtype=np.float64)
    null_sharpes = null_sharpes[np.isfinite(null_sharpes)]
    sharpe_variance = float(null_sharpes.var(ddof=1)) if len(null_sharpes) > 1 else math.nan
    return random_stats, band, sharpe_variance


def _entry_values(simulation: Simulation, at: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The per-moment `values` at each of the simulation's trades' entry moments."""
    index = {int(t): i for i, t in enumerate(at)}
    return np.array([values[index[fill.entry_time]] for fill in simulation.fills], dtype=np.float64)


def _atr_levels_baseline(
    period: CandleArrays,
    signals: Signals,
    decisions: Decisions,
    config: BacktestConfig,
    funding: FundingSchedule | None,
    daily: Callable[[Simulation], np.ndarray],
    seed: int,
) -> dict[str, Any]:
    """The model's own signals (the same moments and sides) traded at k x ATR levels instead of its heads'
    distances: whether the heads place stops and targets better than the rule that made the labels."""
    atr = signals.with_levels("atr")
    run = simulate(
        period,
        atr.at,
        decisions.direction,
        atr.stop_loss_pct,
        atr.take_profit_pct,
        config,
        probability=decisions.probability,
        name="atr_levels",
        funding=funding,
    )
    figures = statistics(run, period, config)
    figures["significance"] = significance(returns(run), daily(run), seed=seed)
    return figures


def _period_record(
    start: int, end: int, period: CandleArrays, config: BacktestConfig, moments: np.ndarray, decisions: Decisions
) -> dict[str, Any]:
    """stats.json's description of what was backtested: the period, the settings, the moments, the signals and
    why the other moments were not traded (the decision rule's reasons; the account's are the model's
    `skipped`)."""
    direction = decisions.direction
    return {
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
        "not_traded": decisions.skipped(),
    }
