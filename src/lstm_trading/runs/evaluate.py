"""evaluate: split from lstm_trading.evaluate."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lstm_trading.core.atomic import write_text_atomic
from lstm_trading.core.errors import DataError
from lstm_trading.core.timeutil import format_time

if TYPE_CHECKING:
    from lstm_trading.models.bundle import Bundle
from lstm_trading.core.jsonio import json_safe
from lstm_trading.evaluate.metrics import evaluate_bundle

# --- evaluating a run on its test split (or another journal) ---

FIGURE_CONFUSION = "confusion_matrix.png"
FIGURE_CALIBRATION = "calibration.png"
METRICS_FILE = "metrics.json"


def select_test_trades(trades: pd.DataFrame, test_start_times: Sequence[int]) -> pd.DataFrame:
    """The journal's trades whose start time is one of the run's recorded test start times."""
    if not len(test_start_times):
        raise DataError("the run records no test start times (its test split was empty); evaluate on --trades FILE")
    kept = trades[trades["start_time"].isin(np.asarray(test_start_times, dtype=np.int64))]
    if kept.empty:
        raise DataError(
            "none of the journal's trades starts at one of the run's test start times: the journal is not the one "
            "the run was trained on; give the right one with --trades (or evaluate all of another journal's trades)"
        )
    return kept


def write_evaluation(run_dir: Path, document: dict[str, Any]) -> list[Path]:
    """metrics.json and the confusion-matrix and calibration figures, into the run folder."""
    from lstm_trading.report.figures import plot_calibration, plot_confusion

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / METRICS_FILE
    write_text_atomic(path, json.dumps(json_safe(document), indent=2, allow_nan=False) + "\n")
    confusion = plot_confusion(
        np.asarray(document["model"]["confusion"]), list(document["model"]["per_class"]), run_dir / FIGURE_CONFUSION
    )
    calibration = plot_calibration(
        document["calibration"]["table"], document["calibration"]["ece"], run_dir / FIGURE_CALIBRATION
    )
    return [path, confusion, calibration]


# --- the run folder, its recorded sources, and the candles they name ---


def run_sources(bundle: Bundle, db: Path | None, symbol: str | None) -> tuple[Path, str]:
    """The database and symbol to read: the ones given, else the ones the run recorded at training."""
    sources = (bundle.meta.get("training") or {}).get("sources") or {}
    chosen_db = db if db is not None else sources.get("db")
    if chosen_db is None:
        raise DataError(f"{bundle.path}: the run records no candle database; give one with --db")
    return Path(chosen_db), symbol or sources.get("symbol") or "ETHUSDT"


def load_history(db: Path, symbol: str, first: int, end: int, history_minutes: int) -> pd.DataFrame:
    """Candles with open time in `[first - history, end)`: every window from `first` on, with its warm-up."""
    from lstm_trading.core.timeutil import MINUTE, format_time
    from lstm_trading.data.store import CandleStore

    if not db.exists():
        raise DataError(f"{db}: no such candle database; give the right one with --db")
    with CandleStore(db) as store:
        candles = store.read(symbol, start=first - history_minutes * MINUTE, end=end)
        if candles.empty:
            held = store.time_range(symbol)
            where = f"it holds {format_time(held[0])} to {format_time(held[1])}" if held else f"it has no {symbol}"
            raise DataError(
                f"{db}: no {symbol} candles from {format_time(first - history_minutes * MINUTE)} to "
                f"{format_time(end)} ({where})"
            )
    return candles


def evaluate_run(
    run_dir: Path,
    *,
    db: Path | None = None,
    symbol: str | None = None,
    trades: Path | None = None,
    sheet: str | None = None,
    seed: int = 0,
) -> tuple[dict[str, Any], list[Path]]:
    """Evaluate a run on its test split (the recorded journal's trades at the recorded test start times), or on
    every trade of another journal (`trades`); write metrics.json and the figures into the run folder."""
    from lstm_trading.data.journal import JOURNAL_SHEET, read_journal
    from lstm_trading.models.bundle import load_bundle

    bundle = load_bundle(run_dir)
    training = bundle.meta.get("training") or {}
    sources = training.get("sources") or {}
    if trades is None:
        if not sources.get("journal"):
            raise DataError(f"{run_dir}: the run records no journal; give the trades to evaluate with --trades FILE")
        journal = read_journal(sources["journal"], sheet=sheet or sources.get("sheet") or JOURNAL_SHEET)
        chosen = select_test_trades(journal.trades, training.get("test_start_times") or [])
        split = "test"
    else:
        journal = read_journal(trades, sheet=sheet or JOURNAL_SHEET)
        chosen, split = journal.trades, f"journal {trades.name}"
        period: list[int] = training.get("train_period") or []
        # the period holds candle open times: the last training trade is one minute after the last candle
        seen = int((chosen["start_time"] <= period[1] + 60).sum()) if period else 0
        if seen:
            warnings.warn(
                f"{seen:,} of the {len(chosen):,} trades in {trades} fall in the run's training period "
                f"({format_time(period[0])} to {format_time(period[1])}); the model was fitted on them, "
                "so these metrics flatter it",
                stacklevel=2,
            )
    db_path, symbol = run_sources(bundle, db, symbol)
    times = chosen["start_time"].to_numpy(dtype=np.int64)
    candles = load_history(db_path, symbol, int(times.min()), int(times.max()), bundle.history_minutes)
    document = evaluate_bundle(bundle, candles, chosen, split=split, seed=seed)
    document["sources"] = {"db": str(db_path), "symbol": symbol, "journal": str(journal.path)}
    return document, write_evaluation(run_dir, document)
