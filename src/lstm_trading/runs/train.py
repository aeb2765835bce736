"""From a candle store and a journal to trained, bundled models: the stages in the order the data flows.

`prepare` does everything before the model (features, samples, split, scalers fitted on training rows only);
`train_run` trains a model kind (the LSTM, or the `gbm` baseline) and writes the run folder (resolved
configuration, logs, `model/` bundle, and the LSTM's checkpoints).
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lstm_trading.core.atomic import write_text_atomic, write_with
from lstm_trading.core.config import Config, dump_config, load_config
from lstm_trading.core.errors import ConfigError, DataError
from lstm_trading.core.run_folder import LOSS_FIGURE, RunFolder
from lstm_trading.core.timeutil import format_time
from lstm_trading.features.cache import feature_matrix
from lstm_trading.features.matrix import FeatureMatrix
from lstm_trading.models.base import Predictor
from lstm_trading.models.bundle import save_bundle
from lstm_trading.models.gbm.predictor import KIND as GBM_KIND
from lstm_trading.models.kinds import LOADERS
from lstm_trading.models.lstm.predictor import KIND as LSTM_KIND
from lstm_trading.models.training_record import DataFingerprint, Sources, TrainingRecord
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
    fingerprint: DataFingerprint


def fingerprint(candles: pd.DataFrame, symbol: str) -> DataFingerprint:
    timestamps = candles["timestamp"].to_numpy(dtype=np.int64)
    return DataFingerprint(symbol, int(timestamps[0]), int(timestamps[-1]), len(candles))


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


def check_training(
    config: Config, run_dir: Path, *, resume: bool, overwrite: bool, accelerator: str, kind: str = LSTM_KIND
) -> None:
    """Every refusal that needs no data, before anything is read, deleted or written: a model kind this version
    does not know, a run folder that holds a run (without --resume or --overwrite), an --out that is a file, a
    precision this machine cannot train in, --resume for a kind without checkpoints."""
    if kind not in LOADERS:
        raise ConfigError(f"--model: must be one of {', '.join(sorted(LOADERS))}, got {kind!r}")
    if resume and kind != LSTM_KIND:
        raise ConfigError(
            f"--resume: a {kind} model trains in seconds and keeps no checkpoints; train it again with --overwrite"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir}: is a file, not a run folder; choose a folder name")
    used = RunFolder(run_dir).trained_parts()
    if used and not resume and not overwrite:
        raise ConfigError(
            f"{run_dir}: already holds a run ({', '.join(p.name for p in used)}); "
            "use --resume to continue it, --overwrite to replace it, or another --out"
        )
    if resume:
        check_resumable(config, RunFolder(run_dir))
    if kind == LSTM_KIND:
        from lstm_trading.models.lstm.training import check_trainer  # imports Lightning: only when needed

        check_trainer(config.train, accelerator)


RESUME_FIXED = ("features", "targets", "split", "labels", "model")  # what the checkpoint's weights depend on


def check_resumable(config: Config, folder: RunFolder) -> None:
    """`--resume` continues the run the folder holds: every setting its weights and samples depend on must be
    the run's own (its `config.toml`); only `[train]` and `[runtime]` may change (more epochs, other devices)."""
    if not folder.config.exists():
        return
    recorded = load_config(folder.config)
    differing = [
        f"{section}.{key} = {value!r} (the run has {getattr(getattr(recorded, section), key)!r})"
        for section in RESUME_FIXED
        for key, value in asdict(getattr(config, section)).items()
        if getattr(getattr(recorded, section), key) != value
    ]
    if differing:
        raise ConfigError(
            f"--resume {folder.root}: the run was trained with other settings: {'; '.join(differing[:3])}"
            f"{' ...' if len(differing) > 3 else ''}; resume without --config (the run's {folder.config.name} is "
            "used) or train anew with --overwrite"
        )


@dataclass(frozen=True)
class JournalRun:
    """What `train` prepares from a journal: the samples and scalers, and what to tell the user about them."""

    prepared: Prepared
    moved_to_boundary: int
    warnings: list[str]
    sources: Sources


def prepare_journal(
    config: Config, *, db: Path, symbol: str, trades: Path, sheet: str, skip_bad_rows: bool = False
) -> JournalRun:
    """A journal's trades and the candles their windows need (the one loader), through `prepare`."""
    import warnings

    from lstm_trading.data.journal import read_journal
    from lstm_trading.features.cache import cache_folder
    from lstm_trading.features.compute import history_minutes
    from lstm_trading.runs.candles import candles_for_moments

    journal = read_journal(trades, sheet=sheet, skip_bad_rows=skip_bad_rows)
    times = journal.trades["start_time"]
    history = history_minutes(config.features, config.targets.max_len)
    candles = candles_for_moments(
        db, symbol, int(times.min()), int(times.max()), history, needed_by=f"the trades of {trades}"
    )
    horizon = journal.meta.get("horizon_seconds")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = prepare(
            candles,
            journal.trades,
            config,
            symbol=symbol,
            horizon_seconds=int(horizon) if horizon else None,
            cache_dir=cache_folder(config.runtime, db),
        )
    sources = Sources(db=str(db.resolve()), symbol=symbol, journal=str(trades.resolve()), sheet=sheet)
    return JournalRun(prepared, journal.moved_to_boundary, [str(w.message) for w in caught], sources)


@dataclass(frozen=True)
class TrainRun:
    """What a training gives the command to print: `epochs_run` counts epochs (lstm) or boosting rounds (gbm)."""

    run_dir: Path
    best_val_loss: float
    epochs_run: int
    is_global_zero: bool
    kind: str = LSTM_KIND


def train_run(
    prepared: Prepared,
    config: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    accelerator: str = "auto",
    progress: bool = True,
    sources: Sources | None = None,
    kind: str = LSTM_KIND,
) -> TrainRun:
    """Train a model of `kind`, then write `config.toml` and the `model/` bundle into the run folder (rank 0 only).

    A run folder that already holds a model or checkpoints is continued only with `resume`, replaced only with
    `overwrite`, and otherwise refused: a finished run is never lost to a typo.
    """
    check_training(config, run_dir, resume=resume, overwrite=overwrite, accelerator=accelerator, kind=kind)
    folder = RunFolder(run_dir)
    if not resume:
        for path in folder.trained_parts():  # only with --overwrite: check_training refused otherwise
            shutil.rmtree(path)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:  # a resumed run's config.toml changes only once the resumed training has worked
        write_text_atomic(folder.config, dump_config(config))
    if kind == GBM_KIND:
        return _train_gbm(prepared, config, folder, sources)
    run = _train_lstm(
        prepared, config, folder, resume=resume, accelerator=accelerator, progress=progress, sources=sources
    )
    if resume and run.is_global_zero:
        write_text_atomic(folder.config, dump_config(config))
    return run


def _train_lstm(
    prepared: Prepared,
    config: Config,
    folder: RunFolder,
    *,
    resume: bool,
    accelerator: str,
    progress: bool,
    sources: Sources | None,
) -> TrainRun:
    from lstm_trading.models.lstm.predictor import LstmPredictor
    from lstm_trading.models.lstm.training import fit

    split = prepared.split
    result = fit(
        prepared.scaled,
        split.train,
        split.val,
        prepared.target_scaler,
        config.model,
        config.train,
        folder.root,
        resume=resume,
        accelerator=accelerator,
        progress=progress,
    )
    if result.is_global_zero:
        _save(
            folder,
            LstmPredictor(result.model),
            prepared,
            config,
            sources,
            epochs_run=result.epochs_run,
            validation={"best_val_loss": result.best_val_loss},
        )
        from lstm_trading.report.figures import plot_loss_curves

        plot_loss_curves(folder.metrics_csv, folder.figure(LOSS_FIGURE))  # so `report` only assembles
    return TrainRun(folder.root, result.best_val_loss, result.epochs_run, result.is_global_zero)


def _train_gbm(prepared: Prepared, config: Config, folder: RunFolder, sources: Sources | None) -> TrainRun:
    """The LightGBM baseline on the same samples and scalers; its per-round log goes to `logs/metrics.csv`."""
    from lstm_trading.models.gbm.training import fit_gbm

    split = prepared.split
    result = fit_gbm(
        prepared.scaled,
        split.train,
        split.val,
        prepared.matrix.names,
        prepared.feature_scaler,
        prepared.target_scaler,
        seed=config.train.seed,
        workers=config.runtime.workers or None,
    )
    validation: dict[str, float | int] = {"best_val_loss": result.best_val_loss}
    for role, booster in result.fits.items():
        validation[f"{role}_best_round"] = booster.best_round
        validation[f"{role}_val_{booster.metric}"] = booster.best_val
    folder.logs.mkdir(parents=True, exist_ok=True)
    rows = [
        {"booster": role, "round": i + 1, "metric": fit.metric, "train": train, "val": val}
        for role, fit in result.fits.items()
        for i, (train, val) in enumerate(zip(fit.history["train"], fit.history["val"], strict=True))
    ]

    def write(temporary: Path) -> None:
        with open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=["booster", "round", "metric", "train", "val"])
            writer.writeheader()
            writer.writerows(rows)

    write_with(folder.metrics_csv, write, suffix=".csv")
    # the bundle last: a run folder with model/ is a finished run
    _save(folder, result.predictor, prepared, config, sources, epochs_run=None, validation=validation)
    return TrainRun(folder.root, result.best_val_loss, result.rounds, True, kind=GBM_KIND)


def _save(
    folder: RunFolder,
    model: Predictor,
    prepared: Prepared,
    config: Config,
    sources: Sources | None,
    *,
    epochs_run: int | None,
    validation: dict[str, float | int],
) -> None:
    split = prepared.split
    train_rows = training_rows(split.train)
    save_bundle(
        folder.model,
        model,
        model_config=config.model,
        feature_config=config.features,
        target_config=config.targets,
        feature_names=prepared.matrix.names,
        feature_scaler=prepared.feature_scaler,
        target_scaler=prepared.target_scaler,
        training=TrainingRecord(
            data=prepared.fingerprint,
            train_period=(
                int(prepared.matrix.timestamps[train_rows.start]),
                int(prepared.matrix.timestamps[train_rows.stop - 1]),
            ),
            split_sizes=split.sizes(),
            purged=split.purged,
            class_counts=split.train.class_counts(),
            sources=sources or Sources(),
            test_start_times=tuple(int(t) for t in split.test.start_time),
            epochs_run=epochs_run,
            seed=config.train.seed,
        ),
        validation=validation,
    )
