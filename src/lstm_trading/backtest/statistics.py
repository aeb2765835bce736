"""Backtest statistics: return, Sharpe and Sortino from daily returns, drawdown, win rate, profit factor.

Daily returns are UTC days of the equity curve; Sharpe and Sortino are annualised with sqrt(365.25) (crypto
trades every day) and only for periods of `MIN_DAYS_ANNUALISED` days or more, where they are more than noise.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from lstm_trading.backtest.execution import CandleArrays
from lstm_trading.core.config import BacktestConfig, round_trip
from lstm_trading.core.timeutil import DAY, MINUTE

if TYPE_CHECKING:
    from lstm_trading.backtest.simulation import Simulation

MINUTES_PER_YEAR = 525_960  # 365.25 days: the annualised return compounds over it
DAYS_PER_YEAR = 365.25  # crypto trades every day: daily Sharpe and Sortino are annualised with its square root
MIN_DAYS_ANNUALISED = 30  # fewer daily returns give annualised figures that are noise (a 3-day Sharpe of -70)


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
    day = timestamps // DAY
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
    costs = round_trip(config.fee, config.slippage)
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
        "costs_share_of_average_tp": _finite(costs / tp_share.mean()) if len(fills) else None,
        "exits": {reason: reasons.count(reason) for reason in ("stop_loss", "take_profit", "max_hold", "end_of_data")},
        "same_candle": int(sum(f.same_candle for f in fills)),
        "signals": simulation.signals,
        "skipped": dict(simulation.skipped),
    }


SUMMARY_KEYS = ("total_return", "annualised_return", "sharpe", "sortino", "max_drawdown", "win_rate", "profit_factor")


def _spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation, min and max over the random runs of each summary figure (where defined)."""
    spread: dict[str, Any] = {}
    for key in (*SUMMARY_KEYS, "trades", "exposure", "fees_paid", "average_minutes_held", "sharpe_daily"):
        values = np.array([r[key] for r in runs if r.get(key) is not None], dtype=np.float64)
        values = values[np.isfinite(values)]
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


def short_period_note(stats: dict[str, Any]) -> str | None:
    """Why the summary's Sharpe column shows '-' on a short period (what `backtest` and the demo print)."""
    days = stats["period"]["minutes"] / (24 * 60)
    if days >= MIN_DAYS_ANNUALISED or stats["model"]["sharpe"] is not None:
        return None
    return (
        f"Sharpe and Sortino ('-') come from daily returns of periods of {MIN_DAYS_ANNUALISED} days or more; "
        f"this one has {days:.1f} days"
    )


EV_BINS = 10


def ev_calibration(predicted_ev: np.ndarray, realised: np.ndarray, bins: int = EV_BINS) -> list[dict[str, Any]]:
    """The trades' predicted EV at entry by quantile bin (deciles when there are enough trades) against their
    realised net return per trade, both in % of entry: a calibrated rule's rows lie on the diagonal, and one
    whose EV is a lower bound (DESIGN.md "Decision") lies above it."""
    predicted_ev = np.asarray(predicted_ev, dtype=np.float64)
    realised = np.asarray(realised, dtype=np.float64)
    if len(predicted_ev) == 0:
        return []
    order = np.argsort(predicted_ev, kind="stable")
    rows = []
    for part in np.array_split(order, min(bins, len(order))):
        ev, net = predicted_ev[part], realised[part]
        rows.append(
            {
                "trades": len(part),
                "ev_low": float(ev.min()),
                "ev_high": float(ev.max()),
                "mean_ev_pct": float(ev.mean()),
                "mean_return_pct": float(net.mean()),
            }
        )
    return rows
