"""Backtest: moments -> batched predictions -> the position loop -> trades, equity, statistics, baselines.

A model is worth what it earns out of sample after costs, next to what simple strategies earn in the same
period under the same fills (`execution.py`): buy and hold; random entries at the same moments and rate with
the same SL/TP distances (several seeds: mean and spread); and, when given, the journal's own trades.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lstm_trading.atomic import write_text_atomic
from lstm_trading.config import BacktestConfig
from lstm_trading.errors import ConfigError, DataError
from lstm_trading.evaluate import json_safe
from lstm_trading.execution import (
    FLAT,
    LONG,
    SHORT,
    SIDE_NAMES,
    CandleArrays,
    Costs,
    Fill,
    SameCandle,
    Trader,
    signal_direction,
    simulate_fill,
)
from lstm_trading.features import compute_features
from lstm_trading.predict import MIN_DISTANCE_PCT, forward_windows
from lstm_trading.samples import INVALID, FeatureMatrix, build_samples, moment_windows
from lstm_trading.timeutil import MINUTE, format_time

if TYPE_CHECKING:
    from lstm_trading.bundle import Bundle

MINUTES_PER_YEAR = 525_960  # 365.25 days: the annualised return compounds over it
DAYS_PER_YEAR = 365.25  # crypto trades every day: daily Sharpe and Sortino are annualised with its square root
MIN_DAYS_ANNUALISED = 30  # fewer daily returns give annualised figures that are noise (a 3-day Sharpe of -70)
DEFAULT_SEEDS = tuple(range(20))
Progress = Callable[[float, int], None]

TRADE_COLUMNS = (
    "entry_time",
    "entry_time_utc",
    "exit_time",
    "exit_time_utc",
    "side",
    "probability",
    "quantity",
    "entry_price",
    "entry_executed",
    "stop_loss",
    "take_profit",
    "stop_loss_pct",
    "take_profit_pct",
    "exit_reason",
    "exit_price",
    "exit_executed",
    "same_candle",
    "fees",
    "pnl",
    "return_pct",
    "minutes_held",
)


# --- batched prediction ---


@dataclass(frozen=True)
class Signals:
    """The model's output at each decision moment: class probabilities and predicted SL/TP distances (%)."""

    at: np.ndarray
    proba: np.ndarray  # (n, 3): Buy, Sell, Invalid
    stop_loss_pct: np.ndarray
    take_profit_pct: np.ndarray

    def __len__(self) -> int:
        return len(self.at)


@dataclass(frozen=True)
class Features:
    """The feature rows of a candle history and their scaled copy, computed once for every moment."""

    matrix: FeatureMatrix
    scaled: np.ndarray


def scaled_features(bundle: Bundle, candles: pd.DataFrame) -> Features:
    """Features of the whole history (warm-up included), scaled once with the bundle's scaler."""
    matrix = FeatureMatrix.from_frame(compute_features(candles, bundle.feature_config))
    if len(matrix) == 0:
        raise DataError(
            f"{len(candles):,} candles are fewer than the indicator warm-up of "
            f"{bundle.feature_config.warmup_minutes:,} minutes; load more history"
        )
    if tuple(matrix.names) != tuple(bundle.feature_names):
        raise DataError(f"features {matrix.names} differ from the bundle's {bundle.feature_names}")
    scaled = bundle.feature_scaler.transform(matrix.values)
    bad = ~np.isfinite(scaled)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise DataError(f"non-finite feature {matrix.names[column]} at {format_time(matrix.timestamps[row])}")
    return Features(matrix, scaled)


def decision_moments(start: int, end: int, every_seconds: int) -> np.ndarray:
    """Moments on whole multiples of `every_seconds` (UTC, from the epoch) in `[start, end)`."""
    first = -(-start // every_seconds) * every_seconds
    return np.arange(first, end, every_seconds, dtype=np.int64)


def predict_signals(
    bundle: Bundle,
    features: Features,
    moments: np.ndarray,
    *,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Signals:
    """One batched pass over the windows of all moments (the candles closed by each moment, DESIGN.md).

    Batches run through `predict.forward_windows` (time-chunked, shared among one-thread worker processes;
    `workers=None` is one per core); `progress(done, total)` is called after every batch of windows.
    """
    matrix = features.matrix
    end, lengths = moment_windows(matrix, moments, bundle.max_len, hint="start the backtest later or load more history")
    proba, sl, tp = forward_windows(
        bundle.model, features.scaled, end, lengths, batch_size=batch_size, workers=workers, progress=progress
    )
    sl_pct, tp_pct = bundle.target_scaler.inverse(sl, tp)
    return Signals(
        at=np.asarray(moments, dtype=np.int64),
        proba=proba,
        stop_loss_pct=np.maximum(sl_pct, MIN_DISTANCE_PCT),
        take_profit_pct=np.maximum(tp_pct, MIN_DISTANCE_PCT),
    )


# --- the position loop ---


@dataclass(frozen=True)
class Simulation:
    """One strategy over the period: its closed trades and its equity at every candle's close."""

    name: str
    fills: list[Fill]
    equity: np.ndarray  # (candles,) marked to market at each close
    position: np.ndarray  # (candles,) +1 / -1 while a position is open during that candle, else 0
    signals: int
    skipped: dict[str, int]

    def trades(self) -> pd.DataFrame:
        return trades_frame(self.fills)


def simulate(
    candles: CandleArrays,
    at: np.ndarray,
    direction: np.ndarray,
    stop_loss_pct: np.ndarray,
    take_profit_pct: np.ndarray,
    config: BacktestConfig,
    *,
    probability: np.ndarray | None = None,
    same_candle: SameCandle = "stop",
    name: str = "model",
) -> Simulation:
    """Trade the signals in time order on `candles` (the backtest period only) with `execution.Trader`."""
    trader = Trader(config)
    costs = Costs(config.fee, config.slippage)
    fills: list[Fill] = []
    signals = 0
    order = np.argsort(at, kind="stable")
    for i in order:
        if direction[i] == FLAT:
            continue
        signals += 1
        row = candles.index_at(int(at[i]))  # None: no candle opens at the moment, nothing to enter at
        chosen = trader.consider(
            int(at[i]),
            int(direction[i]),
            None if row is None else float(candles.open[row]),
            float(stop_loss_pct[i]),
            float(take_profit_pct[i]),
            math.nan if probability is None else float(probability[i]),
        ).order
        if chosen is None or row is None:
            continue
        fill = simulate_fill(
            candles, row, chosen, max_hold_seconds=config.max_hold_seconds, costs=costs, same_candle=same_candle
        )
        trader.settle(fill)
        fills.append(fill)
    equity, position = equity_curve(candles, fills, config.initial_equity)
    return Simulation(name, fills, equity, position, signals, dict(trader.skipped))


def equity_curve(candles: CandleArrays, fills: Sequence[Fill], initial: float) -> tuple[np.ndarray, np.ndarray]:
    """Equity at each candle's close: cash, plus an open position marked at the close (entry fee paid)."""
    n = len(candles)
    realised = np.zeros(n)
    for fill in fills:
        realised[fill.exit_index] += fill.pnl
    equity = initial + np.cumsum(realised)
    position = np.zeros(n, dtype=np.int64)
    for fill in fills:
        held = slice(fill.entry_index, fill.exit_index)  # the exit candle already shows the booked result
        order = fill.order
        cash_before = equity[fill.entry_index - 1] if fill.entry_index > 0 else initial
        entry_fee = fill.fees * fill.entry_executed / (fill.entry_executed + fill.exit_executed)  # its share
        marked = order.direction * order.quantity * (candles.close[held] - fill.entry_executed)
        equity[held] = cash_before - entry_fee + marked
        position[fill.entry_index : fill.exit_index + 1] = order.direction
    return equity, position


def buy_and_hold(candles: CandleArrays, config: BacktestConfig) -> Simulation:
    """Buy at the first open with `position_share` of equity, hold, sell at the last close (costs both ways)."""
    if len(candles) == 0:
        raise DataError("no candles in the backtest period")
    long_config = replace(config, risk=0.0, daily_loss_limit=0.0, max_hold_seconds=10**12)
    direction = np.array([LONG])
    huge = np.array([1e9])  # levels no price reaches: only the end of the data closes it
    return simulate(
        candles,
        candles.timestamp[:1],
        direction,
        np.array([99.999]),
        huge,
        long_config,
        name="buy_and_hold",
    )


def random_entries(
    candles: CandleArrays,
    signals: Signals,
    direction: np.ndarray,
    config: BacktestConfig,
    seeds: Sequence[int] = DEFAULT_SEEDS,
) -> list[Simulation]:
    """Per seed: as many signals as the model gave, at moments drawn from the same moments, sides drawn with
    the model's Buy share, and the model's predicted SL/TP distances at the drawn moments."""
    count = int(np.count_nonzero(direction))
    buys = int(np.count_nonzero(direction == LONG))
    buy_share = buys / count if count else 0.5
    runs = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        drawn = np.sort(rng.choice(len(signals), size=count, replace=False)) if count else np.zeros(0, np.int64)
        sides = np.where(rng.random(count) < buy_share, LONG, SHORT)
        chosen = np.zeros(len(signals), dtype=np.int64)
        chosen[drawn] = sides
        runs.append(
            simulate(
                candles,
                signals.at,
                chosen,
                signals.stop_loss_pct,
                signals.take_profit_pct,
                config,
                name=f"random_seed{seed}",
            )
        )
    return runs


def journal_signals(features: Features, trades: pd.DataFrame, bundle: Bundle) -> tuple[np.ndarray, ...]:
    """The journal's Buy and Sell trades as signals: start time, direction, and their targets' distances
    (their own SL/TP, else `k * ATR`, exactly as training reads them)."""
    trades = trades[trades["label"] != INVALID]
    if trades.empty:
        return (np.zeros(0, np.int64),) * 2 + (np.zeros(0),) * 2
    samples, _ = build_samples(features.matrix, trades, bundle.target_config)
    direction = np.where(samples.label == 0, LONG, SHORT)
    return samples.start_time, direction, samples.stop_loss_pct, samples.take_profit_pct


# --- statistics ---


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def daily_returns(timestamps: np.ndarray, equity: np.ndarray, initial: float) -> np.ndarray:
    """Returns from each UTC day's last close to the next's, the first from the initial equity.

    Sharpe and Sortino come from these, as traders quote them: per-minute returns are mostly zeros while flat,
    autocorrelated and fat-tailed, and annualising them with the square root of 525,960 gives absurd figures.
    """
    if not len(equity):
        return np.empty(0)
    day = timestamps // 86_400
    last = np.flatnonzero(np.r_[day[1:] != day[:-1], True])  # each day's last candle
    closes = np.concatenate([[initial], equity[last]])
    return closes[1:] / closes[:-1] - 1


def statistics(simulation: Simulation, candles: CandleArrays, config: BacktestConfig) -> dict[str, Any]:
    """The figures of stats.json for one strategy (returns as fractions: 0.05 is 5 %).

    Annualised return, Sharpe and Sortino (daily, annualised with the square root of 365.25) are None for
    periods of fewer than `MIN_DAYS_ANNUALISED` days.
    """
    initial = config.initial_equity
    equity = simulation.equity
    fills = simulation.fills
    minutes = len(equity)
    final = float(equity[-1]) if minutes else initial
    series = np.concatenate([[initial], equity])
    total = final / initial - 1
    daily = daily_returns(candles.timestamp[:minutes], equity, initial)
    annualised, sharpe, sortino = math.nan, math.nan, math.nan
    if len(daily) >= MIN_DAYS_ANNUALISED:
        annualised = (final / initial) ** (MINUTES_PER_YEAR / minutes) - 1 if final > 0 else -1.0
        std = daily.std(ddof=1)
        sharpe = daily.mean() / std * math.sqrt(DAYS_PER_YEAR) if std > 0 else math.nan
        downside = math.sqrt(float(np.mean(np.minimum(daily, 0.0) ** 2)))
        sortino = daily.mean() / downside * math.sqrt(DAYS_PER_YEAR) if downside > 0 else math.nan
    peak = np.maximum.accumulate(series)
    drawdown = float((series / peak - 1).min())
    pnl = np.array([f.pnl for f in fills])
    wins, losses = pnl[pnl > 0].sum(), -pnl[pnl < 0].sum()
    tp_share = np.array([f.order.take_profit_pct / 100 for f in fills])
    round_trip = 2 * (config.fee + config.slippage)
    held = np.array([(f.exit_time - f.entry_time) / MINUTE for f in fills])
    reasons = [f.reason for f in fills]
    return {
        "initial_equity": initial,
        "final_equity": final,
        "pnl": final - initial,
        "total_return": total,
        "annualised_return": _finite(annualised),
        "sharpe": _finite(sharpe),
        "sortino": _finite(sortino),
        "max_drawdown": drawdown,
        "trades": len(fills),
        "win_rate": _finite(float((pnl > 0).mean())) if len(fills) else None,
        "profit_factor": _finite(wins / losses) if losses > 0 else None,
        "exposure": float(np.count_nonzero(simulation.position) / minutes) if minutes else 0.0,
        "average_minutes_held": _finite(float(held.mean())) if len(fills) else None,
        "fees_paid": float(sum(f.fees for f in fills)),
        "slippage_paid": float(sum(f.slippage_cost for f in fills)),
        "costs_share_of_average_tp": _finite(round_trip / tp_share.mean()) if len(fills) else None,
        "exits": {reason: reasons.count(reason) for reason in ("stop_loss", "take_profit", "max_hold", "end_of_data")},
        "same_candle": int(sum(f.same_candle for f in fills)),
        "signals": simulation.signals,
        "skipped": dict(simulation.skipped),
    }


SUMMARY_KEYS = ("total_return", "annualised_return", "sharpe", "sortino", "max_drawdown", "win_rate", "profit_factor")


def _spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation, min and max over the random runs of each summary figure."""
    spread: dict[str, Any] = {}
    for key in (*SUMMARY_KEYS, "trades", "exposure", "fees_paid"):
        values = np.array([r[key] for r in runs if r[key] is not None], dtype=np.float64)
        if not len(values):
            spread[key] = None
            continue
        spread[key] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=0)),
            "min": float(values.min()),
            "max": float(values.max()),
        }
    return spread


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


@dataclass(frozen=True)
class PeriodSignals:
    """What a backtest and a replay of a period trade on, computed by one function so both see the same."""

    period: CandleArrays  # the candles of the period
    end: int  # the period's end, clamped to its last candle's close
    moments: np.ndarray  # decision moments
    features: Features
    signals: Signals  # the model's batched output at each moment


def period_signals(
    bundle: Bundle,
    candles: pd.DataFrame,
    start: int,
    end: int,
    every_seconds: int,
    *,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Progress | None = None,
) -> PeriodSignals:
    """The candles of `[start, end)` (history before `start` in `candles` too), its decision moments every
    `every_seconds` and the model's signals there; the period ends with its last candle."""
    period = CandleArrays.from_frame(candles).between(start, end)
    if len(period) == 0:
        raise DataError(
            f"no candles from {format_time(start)} to {format_time(end)}; choose --from/--to inside the data"
        )
    end = min(end, int(period.timestamp[-1]) + MINUTE)
    moments = decision_moments(start, end, every_seconds)
    if len(moments) == 0:
        raise DataError(f"no decision moment (every {every_seconds} s) from {format_time(start)} to {format_time(end)}")
    features = scaled_features(bundle, candles)
    signals = predict_signals(bundle, features, moments, batch_size=batch_size, workers=workers, progress=progress)
    return PeriodSignals(period, end, moments, features, signals)


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


def trades_frame(fills: Sequence[Fill]) -> pd.DataFrame:
    """One row per closed trade, columns `TRADE_COLUMNS` (prices as levels and as executed)."""
    rows = []
    for f in fills:
        o = f.order
        notional = o.quantity * f.entry_executed
        rows.append(
            (
                f.entry_time,
                format_time(f.entry_time),
                f.exit_time,
                format_time(f.exit_time),
                SIDE_NAMES[o.direction],
                o.probability,
                o.quantity,
                o.entry,
                f.entry_executed,
                o.stop,
                o.target,
                o.stop_loss_pct,
                o.take_profit_pct,
                f.reason,
                f.exit_price,
                f.exit_executed,
                f.same_candle,
                f.fees,
                f.pnl,
                100 * f.pnl / notional if notional else math.nan,
                (f.exit_time - f.entry_time) // MINUTE,
            )
        )
    return pd.DataFrame(rows, columns=list(TRADE_COLUMNS))


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


def write_backtest(result: BacktestResult, out_dir: Path) -> list[Path]:
    """trades.csv, equity.csv, stats.json and the backtest's figures into `out_dir`."""
    from lstm_trading.report import backtest_figures

    out_dir.mkdir(parents=True, exist_ok=True)
    trades = result.model.trades()
    equity = equity_frame(result)
    write_text_atomic(out_dir / "trades.csv", trades.to_csv(index=False))
    write_text_atomic(out_dir / "equity.csv", equity.to_csv(index=False))
    write_text_atomic(out_dir / "stats.json", json.dumps(json_safe(result.stats), indent=2, allow_nan=False) + "\n")
    paths = [out_dir / "trades.csv", out_dir / "equity.csv", out_dir / "stats.json"]
    return paths + backtest_figures(equity, trades, out_dir)


def _percent(value: float | None, sign: str = "+") -> str:
    if value is None:
        return "-"
    return "0.00%" if value == 0 else f"{100 * value:{sign}.2f}%"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


SUMMARY_HEADER = ("strategy", "return", "Sharpe", "max drawdown", "trades", "win rate", "profit factor")


def summary_rows(stats: dict[str, Any]) -> list[tuple[str, ...]]:
    """The model against each baseline as text cells (`SUMMARY_HEADER`): what `backtest` and the demo print.

    Random entries show the mean and standard deviation over their seeds; the model's second row is its return
    under optimistic fills (target first when stop and target fall in one candle).
    """

    def row(name: str, s: dict[str, Any]) -> tuple[str, ...]:
        return (
            name,
            _percent(s["total_return"]),
            _number(s["sharpe"]),
            _percent(s["max_drawdown"]),
            str(s["trades"]),
            _percent(s["win_rate"], ""),
            _number(s["profit_factor"]),
        )

    model = stats["model"]
    optimistic = model["optimistic_same_candle"]
    rows = [
        row("model", model),
        (f"optimistic fills ({model['same_candle']} same-candle)", _percent(optimistic["total_return"])) + ("",) * 5,
    ]
    baselines = stats["baselines"]
    rows.append(row("buy and hold", baselines["buy_and_hold"]))
    random = baselines.get("random")
    if random:

        def spread(key: str, percent: bool = True, sign: str = "+") -> str:
            part = random[key]
            if part is None:
                return "-"
            if percent:
                return f"{100 * part['mean']:{sign}.2f}% ± {100 * part['std']:.2f}"
            return f"{part['mean']:.2f} ± {part['std']:.2f}"

        rows.append(
            (
                f"random entries ({len(random['seeds'])} seeds)",
                spread("total_return"),
                spread("sharpe", False),
                spread("max_drawdown"),
                f"{random['trades']['mean']:.1f}" if random["trades"] else "-",
                spread("win_rate", sign=""),
                spread("profit_factor", False),
            )
        )
    journal = baselines.get("journal")
    if journal:
        rows.append(row(journal.get("name", "journal"), journal))
    return rows


def short_period_note(stats: dict[str, Any]) -> str | None:
    """Why the summary's Sharpe column shows '-' on a short period (what `backtest` and the demo print)."""
    days = stats["period"]["minutes"] / (24 * 60)
    if days >= MIN_DAYS_ANNUALISED or stats["model"]["sharpe"] is not None:
        return None
    return (
        f"Sharpe and Sortino ('-') come from daily returns of periods of {MIN_DAYS_ANNUALISED} days or more; "
        f"this one has {days:.1f} days"
    )


def run_config(run_dir: Path) -> BacktestConfig:
    """The backtest settings the run folder's resolved `config.toml` holds (defaults without one)."""
    from lstm_trading.config import load_config

    path = run_dir / "config.toml"
    return load_config(path).backtest if path.exists() else BacktestConfig()


def period_candles(bundle: Bundle, db_path: Path, symbol: str, start: int, end: int | None) -> tuple[int, pd.DataFrame]:
    """The end of the period [start, end) (default: the end of the stored data) and the candles a backtest or a
    replay of it reads: the period and the bundle's history before it. One reading, so both see the same."""
    from lstm_trading.data.store import CandleStore
    from lstm_trading.evaluate import load_history

    if end is None:
        if not db_path.exists():
            raise DataError(f"{db_path}: no such candle database; give the right one with --db")
        with CandleStore(db_path) as store:
            held = store.time_range(symbol)
        if held is None:
            raise DataError(f"{db_path}: no {symbol} candles; choose the symbol with --symbol")
        end = held[1] + MINUTE
        if end <= start:  # no --to given: name the data's end, not a flag the user never typed
            raise ConfigError(
                f"--from {format_time(start)} is not before the end of the {symbol} candles in {db_path} "
                f"({format_time(end)}); give an earlier --from or another --db"
            )
    if end <= start:
        raise ConfigError(f"--from {format_time(start)} is not before --to {format_time(end)}; the period is empty")
    return end, load_history(db_path, symbol, start, end, bundle.history_minutes)


def backtest_run(
    run_dir: Path,
    *,
    config: BacktestConfig,
    db: Path | None = None,
    symbol: str | None = None,
    start: int | None = None,
    end: int | None = None,
    trades: Path | None = None,
    sheet: str | None = None,
    out_dir: Path | None = None,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Progress | None = None,
) -> tuple[BacktestResult, Path]:
    """Backtest a run folder's model and write its files (default period: the run's test period to the end of
    the data; default folder: RUN/backtest)."""
    from lstm_trading.bundle import load_bundle
    from lstm_trading.data.journal import JOURNAL_SHEET, read_journal
    from lstm_trading.evaluate import run_sources

    bundle = load_bundle(run_dir)
    db_path, symbol = run_sources(bundle, db, symbol)
    if start is None:
        test_times = (bundle.meta.get("training") or {}).get("test_start_times") or []
        if not test_times:
            raise DataError(f"{run_dir}: the run records no test period; give the backtest's start with --from")
        start = int(min(test_times))
    end, candles = period_candles(bundle, db_path, symbol, start, end)
    journal = None
    name = "journal"
    if trades is not None:
        read = read_journal(trades, sheet=sheet or JOURNAL_SHEET)
        journal = read.trades
        hindsight = read.meta.get("labeller") == "first-touch"
        name = "journal (hindsight labels)" if hindsight else "journal trades"
    result = run_backtest(
        bundle,
        candles,
        start=start,
        end=end,
        config=config,
        journal=journal,
        journal_name=name,
        seeds=seeds,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )
    result.stats["sources"] = {"run": str(run_dir), "db": str(db_path), "symbol": symbol}
    out = out_dir if out_dir is not None else run_dir / "backtest"
    write_backtest(result, out)
    return result, out
