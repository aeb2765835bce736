"""From a candle store and a journal to trained, bundled models: the stages in the order the data flows.

`prepare` does everything before the model (features, samples, split, scalers fitted on training rows only);
`train_run` trains a model kind (the LSTM, or the `gbm` baseline) and writes the run folder (resolved
configuration, logs, `model/` bundle, and the LSTM's checkpoints); `train_seeds` trains several seeds, each into
its own run folder below `seeds/`, and keeps the best-validation one as the run's.
"""

from __future__ import annotations

import csv
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lstm_trading.core.atomic import write_text_atomic, write_with
from lstm_trading.core.config import MAX_SEED, Config, dump_config, load_config
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
from lstm_trading.samples.targets import SampleReport, Samples, build_samples, class_weights


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
    split_with: Callable[[Samples], Split] | None = None,
    scalers: tuple[FeatureScaler, TargetScaler] | None = None,
) -> Prepared:
    """Features (through the feature cache in `cache_dir`, if given), samples, time split, and scalers fitted on
    the training rows and trades only. `split_with` replaces the 70/15/15 time split (a walk-forward fold's own);
    `scalers` replace the fit (a warm-started fold keeps the scalers its starting weights were trained with)."""
    matrix = feature_matrix(candles, config.features, symbol=symbol, cache_dir=cache_dir)
    samples, report = build_samples(matrix, trades, config.targets)
    if split_with is None:
        split = split_by_time(samples, config.split, horizon_seconds=horizon_seconds)
    else:
        split = split_with(samples)
    if scalers is None:
        rows = training_rows(split.train)
        feature_scaler = FeatureScaler.fit(matrix.values[rows], config.split.scaler)
        target_scaler = TargetScaler.fit(split.train)
    else:
        feature_scaler, target_scaler = scalers
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
    config: Config,
    run_dir: Path,
    *,
    resume: bool,
    overwrite: bool,
    accelerator: str,
    kind: str = LSTM_KIND,
    n_seeds: int = 1,
) -> None:
    """Every refusal that needs no data, before anything is read, deleted or written: a model kind this version
    does not know, a run folder that holds a run (without --resume or --overwrite), an --out that is a file, a
    precision this machine cannot train in, --resume for a kind without checkpoints or with several seeds, a
    seed range past the largest seed."""
    if kind not in LOADERS:
        raise ConfigError(f"--model: must be one of {', '.join(sorted(LOADERS))}, got {kind!r}")
    _check_seeds(config, RunFolder(run_dir), n_seeds, resume=resume)
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
        from lstm_trading.models.lstm.trainer_settings import check_trainer

        check_trainer(config.train, accelerator)
        last = RunFolder(run_dir).last_checkpoint
        if resume and last.is_file():  # a missing one is fit's to explain
            from lstm_trading.models.lstm.training import ResumePoint, load_checkpoint  # Lightning

            ResumePoint.of(load_checkpoint(last)).check_criterion(config.train.checkpoint_criterion, last)


def _check_seeds(config: Config, folder: RunFolder, n_seeds: int, *, resume: bool) -> None:
    """`--n-seeds` trains seeds `seed .. seed + n - 1` anew; `--resume` continues one run, so a seed's own folder."""
    if n_seeds < 1:
        raise ConfigError(f"--n-seeds: must be at least 1, got {n_seeds}")
    last = config.train.seed + n_seeds - 1
    if last > MAX_SEED:
        raise ConfigError(
            f"--n-seeds {n_seeds}: the seeds would run from {config.train.seed} to {last}, past the largest "
            f"seed {MAX_SEED}; give a smaller --seed"
        )
    if resume and (n_seeds > 1 or folder.seeds.exists()):
        where = "--n-seeds trains every seed anew" if n_seeds > 1 else f"{folder.root} holds several seeds"
        raise ConfigError(
            f"--resume: {where}; resume one seed's run folder (--out {folder.seeds}/seed-S --resume), "
            "or train anew with --overwrite"
        )


RESUME_FIXED = ("features", "targets", "split", "labels", "model")  # what the checkpoint's weights depend on
DERIVED = {("model", "input_size")}  # set by `train_run` from the features, whatever the configuration says


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
        if getattr(getattr(recorded, section), key) != value and (section, key) not in DERIVED
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
        db,
        symbol,
        int(times.min()),
        int(times.max()),
        history,
        needed_by=f"the trades of {trades}",
        with_symbols=config.features.with_symbols,
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
    """What a training gives the command to print: `epochs_run` counts epochs (lstm) or boosting rounds (gbm);
    `best_val_loss` is the value of `criterion` that chose the model (a gbm's: its classifier's log-loss)."""

    run_dir: Path
    best_val_loss: float
    epochs_run: int
    is_global_zero: bool
    kind: str = LSTM_KIND
    criterion: str = "val_class_loss"


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
    warm_start: Any = None,
    on_epoch: Callable[[int, int], None] | None = None,
) -> TrainRun:
    """Train a model of `kind`, then write `config.toml` and the `model/` bundle into the run folder (rank 0 only).

    A run folder that already holds a model or checkpoints is continued only with `resume`, replaced only with
    `overwrite`, and otherwise refused: a finished run is never lost to a typo. `warm_start`: an LSTM bundle
    whose weights the training starts from, at the fine-tuning learning rate (prepare with its scalers).
    `on_epoch(epoch, epochs)`: called after each LSTM epoch (a gbm trains in one call: never).
    """
    # the model reads as many inputs as the feature set (and the other symbols) gives: 13 per symbol
    config = config.with_overrides("model", input_size=prepared.matrix.values.shape[1])
    check_training(config, run_dir, resume=resume, overwrite=overwrite, accelerator=accelerator, kind=kind)
    folder = RunFolder(run_dir)
    if not resume:
        _clear(folder)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:  # a resumed run's config.toml changes only once the resumed training has worked
        write_text_atomic(folder.config, dump_config(config))
    if kind == GBM_KIND:
        if warm_start is not None:
            raise ConfigError("a warm start continues an LSTM's weights; the gbm kind trains from scratch")
        return _train_gbm(prepared, config, folder, sources)
    run = _train_lstm(
        prepared,
        config,
        folder,
        resume=resume,
        accelerator=accelerator,
        progress=progress,
        sources=sources,
        initial_model=None if warm_start is None else warm_start.model.model,
        on_epoch=on_epoch,
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
    initial_model: Any = None,
    on_epoch: Callable[[int, int], None] | None = None,
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
        initial_model=initial_model,
        feature_names=tuple(prepared.matrix.names),
        on_epoch=on_epoch,
    )
    if result.is_global_zero:
        _save(
            folder,
            LstmPredictor(result.model),
            prepared,
            config,
            sources,
            epochs_run=result.epochs_run,
            validation={"best_val_loss": result.best_val_loss, "criterion": result.criterion},
        )
        from lstm_trading.report.figures import plot_loss_curves

        # drawn now, so `report` only assembles
        plot_loss_curves(folder.metrics_csv, folder.figure(LOSS_FIGURE), criterion=result.criterion)
    return TrainRun(
        folder.root, result.best_val_loss, result.epochs_run, result.is_global_zero, criterion=result.criterion
    )


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
        class_weighting=config.train.class_weighting,
    )
    validation: dict[str, float | int | str] = {"best_val_loss": result.best_val_loss, "criterion": result.criterion}
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
    return TrainRun(folder.root, result.best_val_loss, result.rounds, True, kind=GBM_KIND, criterion=result.criterion)


def _save(
    folder: RunFolder,
    model: Predictor,
    prepared: Prepared,
    config: Config,
    sources: Sources | None,
    *,
    epochs_run: int | None,
    validation: dict[str, float | int | str],
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
            class_weights=tuple(float(w) for w in class_weights(split.train.label, config.train.class_weighting)),
            sources=sources or Sources(),
            test_start_times=tuple(int(t) for t in split.test.start_time),
            val_start_times=tuple(int(t) for t in split.val.start_time),
            epochs_run=epochs_run,
            seed=config.train.seed,
        ),
        validation=validation,
    )


def _clear(folder: RunFolder) -> None:
    """What training writes, removed before a new training (only with --overwrite: check_training refused
    otherwise), seeds.json too: a summary of seeds that are gone would describe another run."""
    for path in folder.trained_parts():
        shutil.rmtree(path)
    folder.seeds_summary.unlink(missing_ok=True)


# --- several seeds (`train --n-seeds`) ---

TEST_METRICS = ("log_loss", "accuracy", "macro_f1")  # what `evaluate` reports first: per seed, mean and std


@dataclass(frozen=True)
class SeedResult:
    """One seed's training and its model's test metrics (None when the test split is empty, or off rank 0)."""

    seed: int
    run: TrainRun
    test: dict[str, float] | None


@dataclass(frozen=True)
class SeedsRun:
    """Every seed's result, the one kept as the run's bundle (best validation), and the test metrics over the
    seeds as {metric: {"mean", "std"}} (std: the sample standard deviation; empty without a test split)."""

    run_dir: Path
    seeds: list[SeedResult]
    chosen: SeedResult
    summary: dict[str, dict[str, float]]
    test_samples: int
    is_global_zero: bool


def train_seeds(
    prepared: Prepared,
    config: Config,
    run_dir: Path,
    *,
    n_seeds: int,
    overwrite: bool = False,
    accelerator: str = "auto",
    progress: bool = True,
    sources: Sources | None = None,
    kind: str = LSTM_KIND,
) -> SeedsRun:
    """Train seeds `train.seed` to `train.seed + n_seeds - 1` on the same samples, each into its own run folder
    (`seeds/seed-S/`, which evaluate, backtest and --resume take as any run), measure each on the test split as
    `evaluate` does, write `seeds.json`, and copy the seed with the best validation criterion into the run
    folder (its config.toml, logs, loss figure and `model/`).

    The kept seed is chosen on validation, never on test: the test metrics' spread over seeds says how much of
    one run's figure is its seed's luck (qlib reports its models over 20 seeds).
    """
    check_training(
        config, run_dir, resume=False, overwrite=overwrite, accelerator=accelerator, kind=kind, n_seeds=n_seeds
    )
    folder = RunFolder(run_dir)
    _clear(folder)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder.config, dump_config(config))  # replaced by the kept seed's at the end
    results: list[SeedResult] = []
    for number, seed in enumerate(range(config.train.seed, config.train.seed + n_seeds), start=1):
        if progress:
            print(f"seed {seed} ({number} of {n_seeds}) into {folder.seed(seed)}", file=sys.stderr, flush=True)
        seeded = config.with_overrides("train", seed=seed)
        run = train_run(
            prepared, seeded, folder.seed(seed), accelerator=accelerator, progress=progress, sources=sources, kind=kind
        )
        test = _test_metrics(folder.seed(seed), prepared, config) if run.is_global_zero else None
        results.append(SeedResult(seed, run, test))
    # NaN (no finished validation) sorts last; equal scores keep the first seed
    chosen = min(results, key=lambda r: (not np.isfinite(r.run.best_val_loss), r.run.best_val_loss))
    summary = _spread(results)
    seeds_run = SeedsRun(run_dir, results, chosen, summary, len(prepared.split.test), results[-1].run.is_global_zero)
    if seeds_run.is_global_zero:
        _keep_seed(folder, seeds_run, kind)
    return seeds_run


def _test_metrics(run_dir: Path, prepared: Prepared, config: Config) -> dict[str, float] | None:
    """A seed's bundle on the test split, measured by `evaluate`'s function on prior-corrected probabilities."""
    from lstm_trading.evaluate.metrics import classification_metrics
    from lstm_trading.models.bundle import load_bundle
    from lstm_trading.predict import predict_windows

    test = prepared.split.test
    if len(test) == 0:
        return None
    bundle = load_bundle(RunFolder(run_dir).model)
    proba = predict_windows(
        bundle,
        prepared.scaled,
        test.end,
        test.length,
        batch_size=config.runtime.batch_size,
        workers=config.runtime.workers or None,
    ).proba
    metrics = classification_metrics(test.label, proba.argmax(axis=1), proba)
    return {name: float(metrics[name]) for name in TEST_METRICS}


def _spread(results: list[SeedResult]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (n - 1) of each test metric over the seeds; NaN std for one seed."""
    measured = [r.test for r in results if r.test is not None]
    if not measured:
        return {}
    summary = {}
    for name in TEST_METRICS:
        values = np.array([m[name] for m in measured], dtype=np.float64)
        std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        summary[name] = {"mean": float(values.mean()), "std": std}
    return summary


def _copy_tree(source: Path, target: Path) -> None:
    """Copied under a temporary name and renamed: a crash never leaves half a bundle where a whole one belongs."""
    temporary = target.with_name(f".{target.name}.tmp")
    if temporary.exists():
        shutil.rmtree(temporary)
    shutil.copytree(source, temporary)
    temporary.rename(target)


def _keep_seed(folder: RunFolder, seeds_run: SeedsRun, kind: str) -> None:
    """seeds.json, then the kept seed's config, logs and loss figure, and its bundle last (a folder with
    `model/` is a finished run)."""
    import json

    from lstm_trading.core.jsonio import json_safe

    chosen = seeds_run.chosen
    document = {
        "kind": kind,
        "criterion": chosen.run.criterion,
        "chosen_seed": chosen.seed,
        "chosen_folder": str(folder.seed(chosen.seed).relative_to(folder.root)),
        "test_samples": seeds_run.test_samples,
        "test": seeds_run.summary,
        "std": "sample standard deviation over the seeds (n - 1 in the denominator)",
        "seeds": [
            {
                "seed": r.seed,
                "folder": str(folder.seed(r.seed).relative_to(folder.root)),
                "best_val_loss": r.run.best_val_loss,
                "epochs_run": r.run.epochs_run,  # boosting rounds for gbm
                "test": r.test,
            }
            for r in seeds_run.seeds
        ],
    }
    write_text_atomic(folder.seeds_summary, json.dumps(json_safe(document), indent=2, allow_nan=False) + "\n")
    kept = RunFolder(folder.seed(chosen.seed))
    write_text_atomic(folder.config, kept.config.read_text())
    if kept.logs.is_dir():
        _copy_tree(kept.logs, folder.logs)
    if kept.figure(LOSS_FIGURE).is_file():
        shutil.copyfile(kept.figure(LOSS_FIGURE), folder.figure(LOSS_FIGURE))
    _copy_tree(kept.model, folder.model)
