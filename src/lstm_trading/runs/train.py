"""From a candle store and a journal to trained, bundled models: the stages in the order the data flows.

`prepare` does everything before the model (features, samples, split, scalers fitted on training rows only);
`train_run` trains and writes the run folder (resolved configuration, checkpoints, logs, `model/` bundle).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lstm_trading.core.atomic import write_text_atomic
from lstm_trading.core.config import Config, dump_config
from lstm_trading.core.errors import ConfigError, DataError
from lstm_trading.core.timeutil import MINUTE, format_time
from lstm_trading.data.store import CandleStore
from lstm_trading.features.cache import feature_matrix
from lstm_trading.features.compute import rows_dropped
from lstm_trading.features.matrix import FeatureMatrix
from lstm_trading.models.bundle import save_bundle
from lstm_trading.samples.scalers import FeatureScaler, TargetScaler
from lstm_trading.samples.split import Split, split_by_time, training_rows
from lstm_trading.samples.targets import SampleReport, build_samples


@dataclass(frozen=True)
class Prepared:
    """Everything the model needs, fitted on the training period only."""

    matrix: FeatureMatrix
    scaled: np.ndarray
    split: Split
    feature_scaler: FeatureScaler
    target_scaler: TargetScaler
    report: SampleReport
    fingerprint: dict[str, Any]


def history_start(first_moment: int, config: Config) -> int:
    """Open time of the first candle needed for a window at `first_moment`, warm-up included."""
    return first_moment - (config.targets.max_len + rows_dropped(config.features)) * MINUTE


def load_candles(
    db: Path,
    symbol: str,
    first_moment: int,
    last_moment: int,
    config: Config,
    *,
    needed_by: str = "the journal's trades",
) -> pd.DataFrame:
    """The candles that the windows of moments in [first, last] and their warm-up need, nothing later."""
    start = history_start(first_moment, config)
    with CandleStore(db) as store:
        candles = store.read(symbol, start=start, end=last_moment)
        if len(candles) == 0:
            held = store.time_range(symbol)
            where = (
                f"it holds {format_time(held[0])} to {format_time(held[1])}" if held else f"it has no {symbol} candles"
            )
            raise DataError(
                f"{db}: no {symbol} candles from {format_time(start)} to {format_time(last_moment)}, the history "
                f"that {needed_by} need ({where})"
            )
    return candles


def fingerprint(candles: pd.DataFrame, symbol: str) -> dict[str, Any]:
    timestamps = candles["timestamp"].to_numpy(dtype=np.int64)
    return {
        "symbol": symbol,
        "first_timestamp": int(timestamps[0]),
        "last_timestamp": int(timestamps[-1]),
        "rows": len(candles),
    }


def prepare(
    candles: pd.DataFrame,
    trades: pd.DataFrame,
    config: Config,
    *,
    symbol: str,
    horizon_seconds: int | None = None,
    cache_dir: Path | None = None,
) -> Prepared:
    """Features (through the feature cache in `cache_dir`, if given), samples, time split, and scalers fitted on
    the training rows and trades only."""
    matrix = feature_matrix(candles, config.features, symbol=symbol, cache_dir=cache_dir)
    samples, report = build_samples(matrix, trades, config.targets)
    split = split_by_time(samples, config.split, horizon_seconds=horizon_seconds)
    rows = training_rows(split.train)
    feature_scaler = FeatureScaler.fit(matrix.values[rows], config.split.scaler)
    target_scaler = TargetScaler.fit(split.train)
    scaled = feature_scaler.transform(matrix.values)
    bad = ~np.isfinite(scaled)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise DataError(
            f"non-finite feature {matrix.names[column]} at {format_time(matrix.timestamps[row])} after scaling"
        )
    return Prepared(
        matrix=matrix,
        scaled=scaled,
        split=split,
        feature_scaler=feature_scaler,
        target_scaler=target_scaler,
        report=report,
        fingerprint=fingerprint(candles, symbol),
    )


@dataclass(frozen=True)
class TrainRun:
    run_dir: Path
    best_val_loss: float
    epochs_run: int
    is_global_zero: bool


def train_run(
    prepared: Prepared,
    config: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    accelerator: str = "auto",
    progress: bool = True,
    sources: dict[str, Any] | None = None,
) -> TrainRun:
    """Train, then write `config.toml` and the `model/` bundle into the run folder (rank 0 only).

    A run folder that already holds a model or checkpoints is continued only with `resume`, replaced only with
    `overwrite`, and otherwise refused: a finished run is never lost to a typo.
    """
    from lstm_trading.models.lstm.predictor import LstmPredictor
    from lstm_trading.models.lstm.training import fit, resolve_precision

    resolve_precision(config.train.precision, accelerator)  # refuses what this machine cannot run, before any write
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir}: is a file, not a run folder; choose a folder name")
    used = [run_dir / name for name in ("model", "checkpoints", "logs") if (run_dir / name).exists()]
    if used and not resume:
        if not overwrite:
            raise ConfigError(
                f"{run_dir}: already holds a run ({', '.join(p.name for p in used)}); "
                "use --resume to continue it, --overwrite to replace it, or another --out"
            )
        for path in used:
            shutil.rmtree(path)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.toml", dump_config(config))
    split = prepared.split
    result = fit(
        prepared.scaled,
        split.train,
        split.val,
        prepared.target_scaler,
        config.model,
        config.train,
        run_dir,
        resume=resume,
        accelerator=accelerator,
        progress=progress,
    )
    if result.is_global_zero:
        train_rows = training_rows(split.train)
        save_bundle(
            run_dir / "model",
            LstmPredictor(result.model),
            model_config=config.model,
            feature_config=config.features,
            target_config=config.targets,
            feature_names=prepared.matrix.names,
            feature_scaler=prepared.feature_scaler,
            target_scaler=prepared.target_scaler,
            training={
                "data": prepared.fingerprint,
                "train_period": [
                    int(prepared.matrix.timestamps[train_rows.start]),
                    int(prepared.matrix.timestamps[train_rows.stop - 1]),
                ],
                "split_sizes": split.sizes(),
                "purged": split.purged,
                "class_counts": split.train.class_counts(),
                "sources": sources or {},
                "test_start_times": [int(t) for t in split.test.start_time],
                "epochs_run": result.epochs_run,
                "seed": config.train.seed,
            },
            validation={"best_val_loss": result.best_val_loss},
        )
        from lstm_trading.report.figures import LOSS_FIGURE, plot_loss_curves

        plot_loss_curves(run_dir / "logs" / "metrics.csv", run_dir / LOSS_FIGURE)  # so `report` only assembles
    return TrainRun(run_dir, result.best_val_loss, result.epochs_run, result.is_global_zero)
