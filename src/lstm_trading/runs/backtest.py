"""`backtest`: a run's model over a period of stored candles, written as trades.csv, equity.csv, stats.json.

The period defaults to the run's test split to the end of the data; its candles come through the one loader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstm_trading.backtest.results import BacktestResult, equity_frame, run_backtest
from lstm_trading.backtest.simulation import DEFAULT_RANDOM_RUNS, Progress, period_signals
from lstm_trading.backtest.sweep import SweepResult, sweep_thresholds
from lstm_trading.core.atomic import write_texts_atomic
from lstm_trading.core.config import BacktestConfig
from lstm_trading.core.errors import DataError
from lstm_trading.core.jsonio import json_safe
from lstm_trading.core.run_folder import EQUITY_FILE, STATS_FILE, TRADES_FILE, RunFolder
from lstm_trading.core.timeutil import format_time
from lstm_trading.runs.candles import SymbolFunding, period_candles, run_sources, symbol_funding

if TYPE_CHECKING:
    from lstm_trading.models.bundle import Bundle


def write_backtest(result: BacktestResult, out_dir: Path) -> list[Path]:
    """trades.csv, equity.csv, stats.json and the backtest's figures into `out_dir`."""
    from lstm_trading.report.figures import backtest_figures

    trades = result.model.trades()
    equity = equity_frame(result)
    # the three belong together: written all or not at all, so a full disk never leaves trades.csv of this
    # backtest beside stats.json of another
    files = {
        out_dir / TRADES_FILE: trades.to_csv(index=False),
        out_dir / EQUITY_FILE: equity.to_csv(index=False),
        out_dir / STATS_FILE: json.dumps(json_safe(result.stats), indent=2, allow_nan=False) + "\n",
    }
    write_texts_atomic(files)
    paths = list(files)
    return paths + backtest_figures(equity, trades, out_dir)


def funding_record(funding: SymbolFunding, result: BacktestResult) -> dict[str, Any]:
    """stats.json's `funding`: what was charged (the printed line), the stored rates' use, the model's total."""
    schedule = funding.schedule
    return {
        "description": funding.description,
        "rate": None if schedule is None else schedule.rate,
        "stored_rates": 0 if schedule is None else len(schedule.stored),
        "missing_stored": len(funding.missing),  # inside the stored range, charged the constant
        "outside_stored": 0 if schedule is None or not schedule.stored else schedule.outside(result.start, result.end),
        "model_paid": float(sum(f.funding for f in result.model.fills)),
    }


def run_config(run_dir: Path) -> BacktestConfig:
    """The backtest settings the run folder's resolved `config.toml` holds (defaults without one)."""
    return RunFolder(run_dir).backtest_config()


def _sweep(
    bundle: Bundle,
    db_path: Path,
    symbol: str,
    config: BacktestConfig,
    start: int,
    *,
    batch_size: int,
    workers: int | None,
) -> SweepResult:
    """The grid on the run's validation period, which must end before the backtest starts (no peeking)."""
    val_times, test_times = bundle.training.val_start_times, bundle.training.test_start_times
    if not val_times or not test_times:
        raise DataError(
            f"{bundle.json_path}: the run records no validation period (trained before runs recorded it); "
            "retrain to use --sweep"
        )
    val_start, val_end = int(min(val_times)), int(min(test_times))
    if start < val_end:
        raise DataError(
            f"--sweep picks thresholds on the validation period {format_time(val_start)} to {format_time(val_end)}; "
            f"the backtest from {format_time(start)} overlaps it: start at or after {format_time(val_end)}"
        )
    val_end, candles = period_candles(bundle, db_path, symbol, val_start, val_end)
    validation = period_signals(
        bundle, candles, val_start, val_end, config.every_seconds, batch_size=batch_size, workers=workers
    )
    funding = symbol_funding(db_path, symbol, config.funding, start=val_start, end=val_end)
    return sweep_thresholds(validation, config, funding=funding.schedule)


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
    random_runs: int = DEFAULT_RANDOM_RUNS,
    seed: int = 0,
    trials: int = 1,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Progress | None = None,
    sweep: bool = False,
) -> tuple[BacktestResult, Path]:
    """Backtest a run folder's model and write its files (default period: the run's test period to the end of
    the data; default folder: RUN/backtest). `random_runs`, `seed` and `trials` as in `run_backtest`; `sweep`
    picks min-prob / min-EV on the run's validation period first (`backtest/sweep.py`)."""
    from lstm_trading.data.journal import JOURNAL_SHEET, read_journal
    from lstm_trading.models.bundle import load_bundle

    bundle = load_bundle(run_dir)
    db_path, symbol = run_sources(bundle, db, symbol)
    if start is None:
        test_times = bundle.training.test_start_times
        if not test_times:
            raise DataError(f"{run_dir}: the run records no test period; give the backtest's start with --from")
        start = int(min(test_times))
    swept = None
    if sweep:
        swept = _sweep(bundle, db_path, symbol, config, start, batch_size=batch_size, workers=workers)
        config = swept.config(config)
    end, candles = period_candles(bundle, db_path, symbol, start, end)
    funding = symbol_funding(db_path, symbol, config.funding, start=start, end=end)
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
        random_runs=random_runs,
        seed=seed,
        trials=trials,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
        funding=funding.schedule,
    )
    result.stats["sources"] = {"run": str(run_dir), "db": str(db_path), "symbol": symbol}
    result.stats["funding"] = funding_record(funding, result)
    if swept is not None:
        result.stats["sweep"] = swept.to_json()
    out = out_dir if out_dir is not None else RunFolder(run_dir).backtest
    write_backtest(result, out)
    return result, out
