"""The threshold sweep without peeking: min-prob / min-EV chosen on the validation period, reported on test.

Trying thresholds on the period that judges them is how backtests lie: the best of 35 looks good by chance.
`sweep_thresholds` trades a grid of (min_prob, min_ev) on the *validation* period through the same decision
rule and fills as the backtest, and picks the cell with the highest expectancy per trade among those with at
least `MIN_SWEEP_TRADES` trades; the test period is then backtested at that cell only. No cell with enough
trades: no threshold is chosen, and the test period is not traded (said so).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lstm_trading.backtest.execution import decide
from lstm_trading.backtest.funding import FundingSchedule
from lstm_trading.backtest.simulation import PeriodSignals, return_pct, simulate
from lstm_trading.core.config import BacktestConfig

SWEEP_MIN_PROBS = (0.0, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)
SWEEP_MIN_EVS = (-0.05, 0.0, 0.02, 0.05, 0.1)  # % of entry
MIN_SWEEP_TRADES = 30  # fewer trades give an expectancy too noisy to choose by
NO_TRADE = {"min_prob": 1.0, "min_ev": 99.0}  # what "no threshold chosen" trades: nothing


@dataclass(frozen=True)
class SweepResult:
    """The validation grid (one row per cell) and the chosen cell, None when no cell had enough trades."""

    rows: list[dict[str, Any]]
    chosen: dict[str, float] | None
    period: tuple[int, int]

    def config(self, config: BacktestConfig) -> BacktestConfig:
        """`config` at the chosen thresholds, or trading nothing when none was chosen."""
        chosen = self.chosen or NO_TRADE
        return replace(config, min_prob=chosen["min_prob"], min_ev=chosen["min_ev"])

    def to_json(self) -> dict[str, Any]:
        return {
            "validation_period": list(self.period),
            "min_trades": MIN_SWEEP_TRADES,
            "chosen": self.chosen,
            "note": None
            if self.chosen
            else f"no threshold gave {MIN_SWEEP_TRADES} validation trades: the test period is not traded",
            "grid": self.rows,
        }


def sweep_thresholds(
    validation: PeriodSignals,
    config: BacktestConfig,
    *,
    min_probs: tuple[float, ...] = SWEEP_MIN_PROBS,
    min_evs: tuple[float, ...] = SWEEP_MIN_EVS,
    funding: FundingSchedule | None = None,
) -> SweepResult:
    """Each (min_prob, min_ev) of the grid traded on the validation signals with `config`'s other settings."""
    signals = validation.signals.with_levels(config.levels)
    rows: list[dict[str, Any]] = []
    for min_prob in min_probs:
        for min_ev in min_evs:
            cell = replace(config, min_prob=min_prob, min_ev=min_ev)
            decided = decide(signals.proba, signals.stop_loss_pct, signals.take_profit_pct, cell, signals.usable)
            run = simulate(
                validation.period,
                signals.at,
                decided.direction,
                signals.stop_loss_pct,
                signals.take_profit_pct,
                cell,
                probability=decided.probability,
                funding=funding,
            )
            returns = np.array([return_pct(fill) for fill in run.fills], dtype=np.float64)
            rows.append(
                {
                    "min_prob": min_prob,
                    "min_ev": min_ev,
                    "trades": len(returns),
                    "expectancy_pct": float(returns.mean()) if len(returns) else None,
                    "total_return_pct": float(100 * (run.equity[-1] / config.initial_equity - 1))
                    if len(run.equity)
                    else 0.0,
                }
            )
    eligible = [row for row in rows if row["trades"] >= MIN_SWEEP_TRADES]
    chosen: dict[str, float] | None = None
    if eligible:
        best = max(eligible, key=lambda row: float(row["expectancy_pct"]))  # the first of equals: most permissive
        chosen = {"min_prob": float(best["min_prob"]), "min_ev": float(best["min_ev"])}
    period = (int(validation.moments[0]), int(validation.end))
    return SweepResult(rows, chosen, period)
