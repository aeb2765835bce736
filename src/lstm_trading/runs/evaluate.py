"""`evaluate`: a run's model on its test split (or on another journal), written into the run folder.

The run records its journal, database and test start times (`bundle.training`), so `evaluate RUN` needs nothing
else; the candles come through the one loader (`runs/candles.py`). `--against OTHER` scores a second run (the
gbm baseline beside an LSTM, say) on the same trades and candles, and refuses runs trained on other candles or
tested on other moments: their figures would not be comparable.
"""

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
from lstm_trading.core.jsonio import json_safe
from lstm_trading.core.run_folder import RunFolder
from lstm_trading.core.timeutil import format_time
from lstm_trading.evaluate.metrics import evaluate_bundle
from lstm_trading.report.figures import evaluation_figures
from lstm_trading.runs.candles import candles_for_moments, run_sources

if TYPE_CHECKING:
    from lstm_trading.models.bundle import Bundle
    from lstm_trading.models.training_record import DataFingerprint

# --- evaluating a run on its test split (or another journal) ---


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
    folder = RunFolder(run_dir)
    path = folder.metrics
    write_text_atomic(path, json.dumps(json_safe(document), indent=2, allow_nan=False) + "\n")
    return [path, *evaluation_figures(document, folder.root)]


def _describe_data(data: DataFingerprint) -> str:
    if data.first_timestamp is None or data.last_timestamp is None:
        return "not recorded"
    rows = f", {data.rows:,} rows" if data.rows is not None else ""
    return f"{data.symbol} {format_time(data.first_timestamp)} to {format_time(data.last_timestamp)}{rows}"


def _describe_moments(times: Sequence[int]) -> str:
    if not times:
        return "no test trades"
    return f"{len(times):,} test trades {format_time(min(times))} to {format_time(max(times))}"


def check_comparable(run_dir: Path, bundle: Bundle, other_dir: Path, other: Bundle) -> None:
    """Refuse to compare two runs trained on other candles or tested on other moments, naming what differs."""
    mine, theirs = bundle.training, other.training
    if mine.data != theirs.data:
        raise DataError(
            f"--against {other_dir}: trained on other candle data than {run_dir} ({_describe_data(theirs.data)} "
            f"against {_describe_data(mine.data)}); compare runs trained on the same candles and journal"
        )
    if tuple(mine.test_start_times) != tuple(theirs.test_start_times):
        common = len(set(mine.test_start_times) & set(theirs.test_start_times))
        raise DataError(
            f"--against {other_dir}: tested on other moments than {run_dir} "
            f"({_describe_moments(theirs.test_start_times)} against {_describe_moments(mine.test_start_times)}, "
            f"{common:,} in common); compare runs trained on the same journal and split settings"
        )


def _warn_training_overlap(bundle: Bundle, chosen: pd.DataFrame, trades: Path, name: str) -> None:
    period = bundle.training.train_period
    # the period holds candle open times: the last training trade is one minute after the last candle
    seen = int((chosen["start_time"] <= period[1] + 60).sum()) if period else 0
    if period and seen:
        warnings.warn(
            f"{seen:,} of the {len(chosen):,} trades in {trades} fall in {name} training period "
            f"({format_time(period[0])} to {format_time(period[1])}); the model was fitted on them, "
            "so these metrics flatter it",
            stacklevel=3,
        )


def evaluate_run(
    run_dir: Path,
    *,
    db: Path | None = None,
    symbol: str | None = None,
    trades: Path | None = None,
    sheet: str | None = None,
    seed: int = 0,
    against: Path | None = None,
) -> tuple[dict[str, Any], list[Path]]:
    """Evaluate a run on its test split (the recorded journal's trades at the recorded test start times), or on
    every trade of another journal (`trades`); write metrics.json and the figures into the run folder.

    With `against`, that run is evaluated on the same trades and candles, and its document is kept under the
    key "against" (in metrics.json too; nothing is written into the other run's folder).
    """
    from lstm_trading.data.journal import JOURNAL_SHEET, read_journal
    from lstm_trading.models.bundle import load_bundle

    bundle = load_bundle(run_dir)
    other = load_bundle(against) if against is not None else None
    if other is not None and against is not None:
        check_comparable(run_dir, bundle, against, other)
    training = bundle.training
    sources = training.sources
    if trades is None:
        if not sources.journal:
            raise DataError(f"{run_dir}: the run records no journal; give the trades to evaluate with --trades FILE")
        journal = read_journal(sources.journal, sheet=sheet or sources.sheet or JOURNAL_SHEET)
        chosen = select_test_trades(journal.trades, training.test_start_times)
        split = "test"
    else:
        journal = read_journal(trades, sheet=sheet or JOURNAL_SHEET)
        chosen, split = journal.trades, f"journal {trades.name}"
        _warn_training_overlap(bundle, chosen, trades, "the run's")
        if other is not None:
            _warn_training_overlap(other, chosen, trades, f"the --against run's ({against})")
    db_path, symbol = run_sources(bundle, db, symbol)
    times = chosen["start_time"].to_numpy(dtype=np.int64)
    history = max(bundle.history_minutes, other.history_minutes if other is not None else 0)
    # the other symbols either run reads (each run's features take their own and ignore the rest)
    inputs = (*bundle.feature_config.with_symbols, *(other.feature_config.with_symbols if other is not None else ()))
    candles = candles_for_moments(
        db_path,
        symbol,
        int(times.min()),
        int(times.max()),
        history,
        needed_by="the trades to evaluate",
        with_symbols=tuple(dict.fromkeys(inputs)),
    )
    document = evaluate_bundle(bundle, candles, chosen, split=split, seed=seed)
    document["run"] = str(run_dir)
    document["sources"] = {"db": str(db_path), "symbol": symbol, "journal": str(journal.path)}
    if other is not None:
        compared = evaluate_bundle(other, candles, chosen, split=split, seed=seed)
        compared["run"] = str(against)
        document["against"] = compared
    return document, write_evaluation(run_dir, document)
