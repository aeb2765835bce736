"""`walkforward`: retrain on rolling periods, decide each out-of-sample moment with its own fold's model, and
backtest the stitched signals in one position loop, ending in a verdict on the edge (DESIGN.md, "Walk-forward").

Each fold (`samples/folds.py` cuts them) is a run folder under `WF/folds/`, trained by `runs/train.py` on its
own candles (read once through the one candle loader) with its own split, scalers and seed, and finished by
`fold.json`, written last: a rerun skips finished folds whose recorded settings and candles are the current
ones, and refuses (or, with `--overwrite`, retrains) those that differ. Folds run in `--fold-workers` local
processes (forked from a fork server that imports the training stack once, while the driver reads the data:
`runs/fold_processes.py`) or as Ray tasks; every fold pins one torch and one LightGBM thread, so its model is
the same whichever runs it. A fold that fails, or whose process dies, is named and the others finish. A
baseline kind (`gbm`) gets a fold of its own beside each one and its own stitched backtest under `oos/KIND/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lstm_trading.backtest.execution import CandleArrays, Thresholds
from lstm_trading.backtest.simulation import DEFAULT_RANDOM_RUNS, PeriodSignals
from lstm_trading.backtest.sweep import SweepResult, sweep_thresholds
from lstm_trading.core.atomic import write_bytes_atomic, write_text_atomic, write_texts_atomic
from lstm_trading.core.config import BacktestConfig, Config
from lstm_trading.core.errors import ConfigError, DataError, LstmTradingError, error_line
from lstm_trading.core.jsonio import json_safe
from lstm_trading.core.machine import usable_cores
from lstm_trading.core.run_folder import EQUITY_FILE, STATS_FILE, TRADES_FILE, RunFolder, WalkForwardFolder
from lstm_trading.core.timeutil import MINUTE, format_time
from lstm_trading.features.matrix import FeatureMatrix
from lstm_trading.models.gbm.predictor import KIND as GBM_KIND
from lstm_trading.models.lstm.predictor import KIND as LSTM_KIND
from lstm_trading.models.training_record import Sources
from lstm_trading.predict import Features, Signals
from lstm_trading.runs.fold_processes import (
    TRAINING_STACK,
    environment,
    fold_process_context,
    one_thread_children,
    pool_processes,
    start_fold_server,
)
from lstm_trading.samples.folds import Fold, FoldPlan, FoldSettings, fold_samples, plan_folds
from lstm_trading.samples.split import Split

EXECUTORS = ("local", "ray")
BASELINES = (GBM_KIND, "none")
RAY_CONNECT_TIMEOUT_S = 5.0  # ray.init on an unreachable address hangs for minutes: a TCP connect says so first
RAY_EXTRA = "pip install 'lstm-trading[cluster]'"
FOLD_COLUMNS = (
    "model",
    "fold",
    "k",
    "status",
    "train_from",
    "test_from",
    "test_to",
    "train_trades",
    "val_trades",
    "test_trades",
    "purged",
    "seed",
    "best_epoch",
    "log_loss",
    "prior_log_loss",
    "beats_prior",
    "macro_f1",
    "prior_macro_f1",
    "trades",
    "expectancy_pct",
    "return_pct",
    "min_prob",
    "min_ev",
    "warm_from",
    "reason",
)


# --- settings and their checks ---


@dataclass(frozen=True)
class WalkForwardSettings:
    """The walk-forward's own settings (the stages' settings are the `Config`); spans in seconds."""

    train_span: int
    test_span: int
    step: int | None = None
    scheme: str = "sliding"
    val: float = 0.15
    purge_seconds: int | None = None  # for a journal that records no label horizon (None: split.purge_seconds)
    model: str = LSTM_KIND
    baseline: str = GBM_KIND
    fold_workers: int | None = None  # None: one per core
    executor: str = "local"
    ray_address: str | None = None
    accelerator: str = "auto"
    random_runs: int = DEFAULT_RANDOM_RUNS
    trials: int = 1
    seed: int = 0  # the random-entry runs' and the bootstrap's
    overwrite: bool = False
    sweep: bool = True  # each fold's min-prob / min-EV chosen on its validation period (backtest/sweep.py)
    warm_start: bool = False  # each LSTM fold starts from the fold before's weights and scalers (train.fine_tune_lr)
    # `tune`'s hooks: a trial reads no candle and uses no trade at or after `until` (the holdout stays unseen);
    # the holdout's own walk-forward tests no moment before `first_test`. None: the whole data, as before.
    until: int | None = None
    first_test: int | None = None
    figures: bool = True  # False: no PNGs and no report.html (tune's trials: only their scores are read)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The main model kind first, then the baseline kind when it is another one."""
        baseline = () if self.baseline in ("none", self.model) else (self.baseline,)
        return (self.model, *baseline)


@dataclass(frozen=True)
class TradeSource:
    """Where the trades come from: a journal, or (`journal` None) the first-touch labeller with `labels`."""

    journal: Path | None = None
    sheet: str = "tradesmain"
    skip_bad_rows: bool = False


def check_walkforward(config: Config, settings: WalkForwardSettings, out: Path) -> None:
    """Every refusal that needs no data, before anything is read or written: the executor and Ray, the worker
    count, the model kinds, the precision, a training span shorter than one window, an --out that is a file."""
    from lstm_trading.runs.train import check_training

    if settings.executor not in EXECUTORS:
        raise ConfigError(f"--executor: must be one of {', '.join(EXECUTORS)}, got {settings.executor!r}")
    if settings.baseline not in BASELINES:
        raise ConfigError(f"--baseline: must be one of {', '.join(BASELINES)}, got {settings.baseline!r}")
    if settings.fold_workers is not None and settings.fold_workers < 1:
        raise ConfigError(f"--fold-workers: must be at least 1, got {settings.fold_workers}")
    if settings.ray_address is not None and settings.executor != "ray":
        raise ConfigError("--ray-address: only with --executor ray")
    if settings.warm_start and settings.executor == "ray":
        raise ConfigError(
            "--warm-start: each fold starts from the one before, so the folds run one after another here; "
            "leave out --executor ray"
        )
    if settings.executor == "ray":
        check_ray(settings.ray_address)
    window = config.targets.max_len * MINUTE
    if settings.train_span < window:
        raise ConfigError(
            f"--train-span {settings.train_span // MINUTE:,} minutes is shorter than one window "
            f"(targets.max_len = {config.targets.max_len:,} minutes); give a longer --train-span or a shorter --max-len"
        )
    FoldSettings(settings.train_span, settings.test_span, settings.step, settings.scheme, settings.val)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder; choose a folder for the walk-forward")
    for kind in settings.kinds:  # the kind, the precision and the devices: the train command's own checks
        check_training(
            config, out / "folds" / ".check", resume=False, overwrite=True, accelerator=settings.accelerator, kind=kind
        )


def check_ray(address: str | None) -> None:
    """Ray must import, and a given `host:port` must accept a TCP connection within 5 s."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError(f"--executor ray: Ray is not installed; install the cluster extra: {RAY_EXTRA}") from None
    if address is None or address in ("auto", "local"):
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address: expected HOST:PORT (the head node's, e.g. 10.0.0.5:6379), got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise ConfigError(
            f"--ray-address {address}: no Ray head answers there ({error.strerror or error}); start one with "
            "`ray start --head` on that machine, or check the address and the firewall"
        ) from None


# --- the data: trades, candles, samples, folds ---


@dataclass(frozen=True)
class Loaded:
    """What the parent reads once: the trades, the candles from the first trade's history to the data's end,
    their feature matrix and samples (the fold plan's input), and where they came from."""

    trades: pd.DataFrame
    candles: pd.DataFrame
    matrix: FeatureMatrix
    plan: FoldPlan
    horizon_seconds: int
    data_end: int
    sources: Sources
    trades_sha256: str
    journal_name: str
    warnings: list[str]


def candles_sha256(candles: pd.DataFrame) -> str:
    """The fingerprint of a fold's candles: every open time and OHLCV value."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(candles["timestamp"].to_numpy(dtype=np.int64)).tobytes())
    for column in ("open", "high", "low", "close", "volume"):
        digest.update(np.ascontiguousarray(candles[column].to_numpy(dtype=np.float64)).tobytes())
    return digest.hexdigest()


def _trades_sha256(trades: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for column in ("start_time", "label", "entry_price", "stop_loss", "take_profit", "row"):
        if column in trades:
            digest.update(column.encode())
            digest.update(np.ascontiguousarray(trades[column].to_numpy(dtype=np.float64)).tobytes())
    return digest.hexdigest()


def _data_end(db: Path, symbol: str) -> int:
    from lstm_trading.data.store import CandleStore

    with CandleStore(db) as store:
        held = store.time_range(symbol)
    if held is None:
        raise DataError(f"{db}: no {symbol} candles; choose the symbol with --symbol")
    return int(held[1]) + MINUTE


def load_walkforward(
    config: Config, settings: WalkForwardSettings, *, db: Path, symbol: str, source: TradeSource
) -> Loaded:
    """Read the trades (a journal, or labels made from the candles) and the candles once, build the samples and
    cut the folds."""
    from lstm_trading.features.cache import cache_folder, feature_matrix
    from lstm_trading.features.compute import history_minutes
    from lstm_trading.runs.candles import candles_for_moments
    from lstm_trading.samples.targets import build_samples

    cache_dir = cache_folder(config.runtime, db)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if source.journal is not None:
            from lstm_trading.data.journal import read_journal

            journal = read_journal(source.journal, sheet=source.sheet, skip_bad_rows=source.skip_bad_rows)
            trades = journal.trades
            if settings.until is not None:  # tune: only the trades before the holdout
                trades = trades[trades["start_time"] < settings.until].reset_index(drop=True)
                if trades.empty:
                    raise DataError(f"{source.journal}: no trade before {format_time(settings.until)}")
            recorded = journal.meta.get("horizon_seconds")
            horizon = int(recorded) if recorded else None
            hindsight = journal.meta.get("labeller") == "first-touch"
            journal_name = "journal (hindsight labels)" if hindsight else "journal trades"
            times = trades["start_time"]
            end = _data_end(db, symbol)
            if settings.until is not None:
                end = min(end, settings.until)
            history = history_minutes(config.features, config.targets.max_len)
            candles = candles_for_moments(
                db,
                symbol,
                int(times.min()),
                end,
                history,
                needed_by=f"the trades of {source.journal}",
                with_symbols=config.features.with_symbols,
            )
        else:
            trades, candles = _label(config, db, symbol, until=settings.until)
            horizon = config.labels.horizon_seconds
            journal_name = "journal (hindsight labels)"
            end = int(candles["timestamp"].iloc[-1]) + MINUTE
        matrix = feature_matrix(candles, config.features, symbol=symbol, cache_dir=cache_dir)
        samples, _ = build_samples(matrix, trades, config.targets)
    if horizon is None:  # as `train`: the journal's own horizon, else --purge, else split.purge_seconds
        horizon = settings.purge_seconds if settings.purge_seconds is not None else config.split.purge_seconds
    fold_settings = FoldSettings(
        settings.train_span, settings.test_span, settings.step, settings.scheme, settings.val, horizon
    )
    plan = plan_folds(samples, matrix.timestamps, end, fold_settings, seed=config.train.seed, first=settings.first_test)
    sources = Sources(
        db=str(db.resolve()),
        symbol=symbol,
        journal=None if source.journal is None else str(source.journal.resolve()),
        sheet=None if source.journal is None else source.sheet,
    )
    return Loaded(
        trades=trades,
        candles=candles,
        matrix=matrix,
        plan=plan,
        horizon_seconds=horizon,
        data_end=end,
        sources=sources,
        trades_sha256=_trades_sha256(trades),
        journal_name=journal_name,
        warnings=own_warnings(caught),
    )


def own_warnings(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    """The warnings this package raised, once each (the training stack's deprecation notes are not the user's)."""
    package = str(Path(__file__).resolve().parents[1])
    return list(dict.fromkeys(str(w.message) for w in caught if str(Path(w.filename).resolve()).startswith(package)))


def _label(config: Config, db: Path, symbol: str, *, until: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A first-touch journal of the whole history (or of the candles opened before `until`), as the journal reader
    would return it."""
    from lstm_trading.runs.features import candles_and_features
    from lstm_trading.samples.labels import label_first_touch
    from lstm_trading.samples.targets import CLASS_NAMES

    if until is None:
        candles, features = candles_and_features(db, symbol, config.features)
    else:  # tune's trials: nothing at or after `until` is read (the same features: computed from the data's start)
        from lstm_trading.data.store import CandleStore
        from lstm_trading.features.compute import compute_features
        from lstm_trading.runs.candles import candles_for_moments

        with CandleStore(db) as store:
            held = store.time_range(symbol)
        if held is None:
            raise DataError(f"{db}: no {symbol} candles; choose the symbol with --symbol")
        needed_by = f"the labels before {format_time(until)}"
        candles = candles_for_moments(
            db, symbol, int(held[0]), until, 0, needed_by=needed_by, with_symbols=config.features.with_symbols
        )
        features = compute_features(candles, config.features)
        if features.empty:
            raise DataError(
                f"{db}: {len(candles):,} {symbol} candles before {format_time(until)}; features need more than the "
                f"warm-up of {config.features.warmup_minutes:,} minutes"
            )
    labelled = label_first_touch(candles, features, config.labels, symbol=symbol)
    if labelled.trades.empty:
        raise DataError(f"{db}: no {symbol} moment to label: each needs its whole --horizon inside the candles")
    trades = labelled.trades.copy()
    trades["label"] = trades["side"].map({name: i for i, name in enumerate(CLASS_NAMES)}).astype("int64")
    trades["row"] = np.arange(2, len(trades) + 2, dtype=np.int64)  # as a journal's Excel rows
    return trades, candles


# --- one fold: what a worker runs ---


@dataclass(frozen=True)
class FoldTask:
    """Everything a fold's worker needs (picklable: it travels to a process or a Ray task)."""

    run_name: str  # the fold's folder name (a baseline kind's ends in -KIND)
    fold: str  # the fold's name, shared by its kinds
    kind: str
    k: int
    test_start: int
    test_end: int
    train_start: int
    seed: int
    rows: dict[str, np.ndarray]  # journal rows of the train / val / test samples
    purged: dict[str, int]
    trades: pd.DataFrame  # the journal rows the fold uses
    config: Config  # the fold's: its seed, one inference worker
    db: Path
    symbol: str
    run_dir: Path
    candles_sha256: str
    settings_sha256: str
    sources: Sources
    accelerator: str
    warm_from: Path | None = None  # the fold whose weights and scalers this one starts from (--warm-start)
    predict_test: bool = True  # False: live retraining, whose test period has not happened yet


@dataclass(frozen=True)
class FoldOutcome:
    record: dict[str, Any]  # fold.json
    warnings: list[str] = field(default_factory=list)


def fold_candles(db: Path, symbol: str, train_start: int, test_end: int, config: Config, name: str) -> pd.DataFrame:
    """A fold's candles: its first training window's history to the end of its test period (the one loader)."""
    from lstm_trading.features.compute import history_minutes
    from lstm_trading.runs.candles import candles_for_moments

    history = history_minutes(config.features, config.targets.max_len)
    return candles_for_moments(
        db,
        symbol,
        train_start,
        test_end,
        history,
        needed_by=f"the trades of fold {name}",
        with_symbols=config.features.with_symbols,
    )


def train_fold(task: FoldTask, on_epoch: Callable[[int, int], None] | None = None) -> FoldOutcome:
    """Train one fold's model on its own candles and split, measure it on its test trades, predict its test
    period's decision moments, and write `fold.json` last. `on_epoch(epoch, epochs)` after each LSTM epoch."""
    from lstm_trading.backtest.simulation import period_signals
    from lstm_trading.evaluate.metrics import class_priors, classification_metrics, stratified_random
    from lstm_trading.models.bundle import load_bundle
    from lstm_trading.predict import predict_windows
    from lstm_trading.runs.train import prepare, train_run

    started = time.perf_counter()
    folder = RunFolder(task.run_dir)
    record_path, signals_path = WalkForwardFolder.fold_record(folder), WalkForwardFolder.fold_signals(folder)
    val_signals_path = WalkForwardFolder.fold_val_signals(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        candles = fold_candles(task.db, task.symbol, task.train_start, task.test_end, task.config, task.run_name)
        if candles_sha256(candles) != task.candles_sha256:
            raise DataError(
                f"fold {task.run_name}: its candles in {task.db} changed while the walk-forward ran; run it again"
            )
        record_path.unlink(missing_ok=True)  # from here on the fold is unfinished until its record is back
        signals_path.unlink(missing_ok=True)
        val_signals_path.unlink(missing_ok=True)

        def split_with(samples: Any) -> Split:
            parts = {
                part: fold_samples(samples, rows, fold=task.run_name, part=part) for part, rows in task.rows.items()
            }
            return Split(train=parts["train"], val=parts["val"], test=parts["test"], purged=dict(task.purged))

        start_from = None
        if task.warm_from is not None:  # the fold before has finished: its weights and scalers carry on
            start_from = load_bundle(task.warm_from)
        scalers = None if start_from is None else (start_from.feature_scaler, start_from.target_scaler)
        prepared = prepare(
            candles, task.trades, task.config, symbol=task.symbol, split_with=split_with, scalers=scalers
        )
        run = train_run(
            prepared,
            task.config,
            task.run_dir,
            overwrite=True,
            accelerator=task.accelerator,
            progress=False,
            sources=task.sources,
            kind=task.kind,
            warm_start=start_from,
            on_epoch=on_epoch,
        )
        trained = time.perf_counter()
        bundle = load_bundle(task.run_dir)  # what the bundle holds, as every later command reads it
        split = prepared.split
        test = split.test
        inference = task.config.runtime.workers or None
        metrics: dict[str, Any] = {"log_loss": None, "prior_log_loss": None, "macro_f1": None, "prior_macro_f1": None}
        if len(test):
            proba, _, _ = predict_windows(bundle, prepared.scaled, test.end, test.length, workers=inference)
            model = classification_metrics(test.label, proba.argmax(axis=1), proba)
            prior = stratified_random(test.label, class_priors(split.train.label), seed=task.seed)
            metrics = {
                "log_loss": model["log_loss"],
                "prior_log_loss": prior["log_loss"],
                "macro_f1": model["macro_f1"],
                "prior_macro_f1": prior["macro_f1"],
            }
        # the one path every backtest takes (features, batched prediction, ATR levels) over the test period
        every = task.config.backtest.every_seconds
        if task.predict_test:
            traded = period_signals(bundle, candles, task.test_start, task.test_end, every, workers=inference)
            write_bytes_atomic(signals_path, _signals_bytes(traded.signals))
        # and over its validation period, where the stitched backtest chooses the fold's thresholds
        validated = period_signals(
            bundle, candles, int(split.val.start_time[0]), task.test_start, every, workers=inference
        )
        write_bytes_atomic(val_signals_path, _signals_bytes(validated.signals))
    record = {
        "fold": task.fold,
        "run": task.run_name,
        "model": task.kind,
        "k": task.k,
        "test_start": task.test_start,
        "test_end": task.test_end,
        "train_start": task.train_start,
        "seed": task.seed,
        "sizes": split.sizes(),
        "purged": split.purged,
        "class_counts": split.train.class_counts(),
        "val_from": int(split.val.start_time[0]),
        "warm_from": "" if task.warm_from is None else task.warm_from.name,
        "best_epoch": _best_epoch(run, bundle.meta),
        "epochs_run": run.epochs_run,
        "best_val_loss": run.best_val_loss,
        **metrics,
        "settings_sha256": task.settings_sha256,
        "candles_sha256": task.candles_sha256,
        "seconds": {"train": trained - started, "total": time.perf_counter() - started},
    }
    write_text_atomic(record_path, json.dumps(json_safe(record), indent=2, allow_nan=False) + "\n")
    return FoldOutcome(record, own_warnings(caught))


def _best_epoch(run: Any, meta: dict[str, Any]) -> int | None:
    """The LSTM's chosen epoch (from 1) by its criterion, from its log; the gbm classifier's best round."""
    if run.kind == GBM_KIND:
        best = (meta.get("validation") or {}).get("classifier_best_round")
        return int(best) if best is not None else None
    from lstm_trading.report.figures import chosen_epoch

    logged = RunFolder(run.run_dir).metrics_csv
    if not logged.exists():
        return None
    chosen = chosen_epoch(pd.read_csv(logged), getattr(run, "criterion", "val_loss"))
    return None if chosen is None else chosen + 1


def _signals_bytes(signals: Signals) -> bytes:
    """Every array of the signals (`None` fields left out), exactly, as an .npz of plain arrays."""
    import io

    buffer = io.BytesIO()
    arrays = {f.name: getattr(signals, f.name) for f in fields(signals) if getattr(signals, f.name) is not None}
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_fold_signals(path: Path) -> Signals:
    """A fold's signals as `train_fold` saved them (plain arrays: nothing is unpickled)."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            return Signals(**{f.name: saved[f.name] for f in fields(Signals) if f.name in saved.files})
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path}: unreadable fold signals ({error}); rerun the walk-forward with --overwrite") from None


def _saved_signals(task: FoldTask) -> Signals:
    return read_fold_signals(WalkForwardFolder.fold_signals(RunFolder(task.run_dir)))


def _saved_val_signals(task: FoldTask) -> Signals:
    return read_fold_signals(WalkForwardFolder.fold_val_signals(RunFolder(task.run_dir)))


# --- executors ---


def pin_threads() -> None:
    """One torch thread per fold (LightGBM's are pinned by its settings): results do not depend on the cores."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@contextmanager
def _one_thread() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


SHIPPED_SKIP = ("checkpoints", "tensorboard")  # what a Ray task's fold folder keeps on its node


class EpochSender:
    """What a Ray task calls after each epoch: `(run, epoch, epochs)` onto the Ray queue `epochs`, without
    waiting. A task blocked in `ray.get` (which `Queue.put` is) lends its CPU to the next queued task, which then
    trains beside it: three folds on 2 CPUs, each half as fast again. `flush()`, as the task ends, waits until
    every report is in the queue, so the driver reads a fold's epochs before its outcome."""

    def __init__(self, epochs: Any, run: str) -> None:
        self.epochs = epochs
        self.run = run
        self.sent: list[Any] = []

    def __call__(self, epoch: int, most: int) -> None:
        self.sent.append(self.epochs.actor.put_nowait.remote((self.run, epoch, most)))

    def flush(self, timeout: float = 30.0) -> None:
        import ray

        if self.sent:  # progress only: a queue that is gone does not fail the fold
            ray.wait(self.sent, num_returns=len(self.sent), timeout=timeout)
        self.sent = []


def _ray_fold(task: FoldTask, epochs: Any = None) -> tuple[FoldOutcome, dict[str, bytes]]:
    """A fold as a Ray task: trained on whichever node runs it, its folder (but the checkpoints) sent back, so the
    driver's --out holds every finished fold without a shared file system. `epochs`: a Ray queue that hears
    `(run, epoch, epochs)` after each LSTM epoch (`EpochSender`)."""
    pin_threads()
    sender = None if epochs is None else EpochSender(epochs, task.run_name)
    try:
        outcome = train_fold(task, on_epoch=sender)
    finally:
        if sender is not None:
            sender.flush()
    files = {
        str(path.relative_to(task.run_dir)): path.read_bytes()
        for path in sorted(task.run_dir.rglob("*"))
        if path.is_file() and path.relative_to(task.run_dir).parts[0] not in SHIPPED_SKIP
    }
    return outcome, files


def _receive(task: FoldTask, files: dict[str, bytes]) -> None:
    """Write a Ray task's fold folder where the driver keeps it (nothing to do where the node shares the disk);
    its record last, as on the node."""
    record = WalkForwardFolder.fold_record(RunFolder(task.run_dir)).name
    for name in sorted(files, key=lambda name: name == record):
        target = task.run_dir / name
        if not (target.exists() and target.read_bytes() == files[name]):
            target.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(target, files[name])


def local_workers(settings: WalkForwardSettings, tasks: int) -> int:
    """Local fold processes: --fold-workers (default one per core this process may use, as `taskset` sets),
    never more than there are folds."""
    return pool_processes(settings.fold_workers, False, tasks)


Report = Callable[[FoldTask, FoldOutcome | None, BaseException | None], None]
EpochReport = Callable[[FoldTask, int, int], None]  # (task, epoch from 1, the fold's most epochs)


class WorkerDied(LstmTradingError):
    """A fold's process ended without an answer (killed, out of memory): that fold fails, the others go on."""


class FoldError(LstmTradingError):
    """A fold's error that does not survive pickling, as its type and message (`Type: message`)."""


def warm_worker() -> None:
    """A fold process's start: one thread, and the training stack imported before its first fold arrives."""
    import importlib

    pin_threads()
    for module in TRAINING_STACK:
        importlib.import_module(module)


def start_ray(address: str | None, cpus: int) -> None:
    """`ray.init` for folds or trials: the cluster at `address`, else a local Ray of `cpus` CPUs whose workers
    start with one BLAS thread and at the priority of Ray's own processes (Ray's default, nice 15 for workers,
    puts its raylet, GCS and agents before the trainings: on a small machine, the trainings are the work)."""
    import ray

    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address is not None:
        try:
            ray.init(address=address, **options)
        except ConnectionError as error:  # the port answered, but the head's GCS (at the node IP it gave) did not
            why = error_line(error, name_type=False)
            raise ConfigError(
                f"--ray-address {address}: the Ray head could not be joined ({why}); check "
                "that `ray status --address` works from this machine and that the head's node IP is reachable"
            ) from None
        return
    with one_thread_children(), environment({"RAY_worker_niceness": "0"}):
        ray.init(num_cpus=cpus, **options)


def longest_first(tasks: Sequence[FoldTask]) -> list[FoldTask]:
    """The order folds are handed to parallel workers: the LSTM's before the gbm's (seconds each), more training
    and validation trades first, so that no long fold starts last while the other workers wait."""
    return sorted(tasks, key=lambda t: (t.kind == GBM_KIND, -(len(t.rows["train"]) + len(t.rows["val"])), t.k))


def _train(task: FoldTask, on_epoch: EpochReport | None) -> FoldOutcome:
    """`train_fold` with the task's epochs reported (a replacement that takes the task alone still serves)."""
    if on_epoch is None:
        return train_fold(task)
    return train_fold(task, on_epoch=lambda epoch, epochs: on_epoch(task, epoch, epochs))


class InProcess:
    """The folds one after another in this process (one fold worker, or --warm-start): nothing to start."""

    def start(self) -> InProcess:
        return self

    def run(self, tasks: Sequence[FoldTask], report: Report, on_epoch: EpochReport | None = None) -> None:
        with _one_thread():
            for task in tasks:
                try:
                    outcome = _train(task, on_epoch)
                except Exception as error:  # noqa: BLE001 - reported by fold; the other folds go on
                    report(task, None, error)
                else:
                    report(task, outcome, None)

    def close(self) -> None:
        pass


def _portable(error: BaseException) -> BaseException:
    """The error itself where it pickles (the driver words it as here), else its type and message."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any failure to round-trip: send the words instead
        return FoldError(f"{type(error).__name__}: {error}")
    return error


def _fold_worker(tasks: Any, messages: Any) -> None:
    """A fold process: warm up, say so, then train each fold the driver sends (None: stop), sending back its
    epochs and its outcome or error. Ctrl-C is the driver's to handle: it stops the workers."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warm_worker()
    messages.send(("ready",))
    while True:
        try:
            task = tasks.recv()
        except EOFError:  # the driver is gone
            return
        if task is None:
            return
        try:
            outcome = train_fold(task, on_epoch=lambda epoch, epochs: messages.send(("epoch", epoch, epochs)))
        except Exception as error:  # noqa: BLE001 - the driver reports it by fold
            messages.send(("failed", _portable(error)))
        else:
            messages.send(("done", outcome))


@dataclass(eq=False)
class _Worker:
    process: Any  # a multiprocessing Process (forked from the fork server)
    tasks: Any  # the driver's end of the pipe that sends it folds
    messages: Any  # the driver's end of the pipe it answers on
    ready: bool = False
    task: FoldTask | None = None


def _death(process: Any) -> str:
    """How a process ended, in words: `killed by SIGKILL, signal 9; out of memory?` or `exit code 3`."""
    import signal

    code = process.exitcode
    if code is None or code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        return f"killed by signal {-code}"
    return f"killed by {name}, signal {-code}" + ("; out of memory?" if name == "SIGKILL" else "")


class FoldPool:
    """`size` fold processes forked from the fork server (`runs/fold_processes.py`), which starts before the
    driver reads the data and imports the training stack meanwhile (about 6 s, once). Each process has its own
    two pipes, so a process killed mid-message spoils no other's (a ProcessPoolExecutor breaks as a whole then):
    the driver hands one fold at a time to a ready process and hears its epochs and outcome; a process that dies
    fails its fold with `WorkerDied`, naming the signal, and a fresh one takes its place while folds are left."""

    def __init__(self, size: int) -> None:
        self.context = fold_process_context()
        self.size = size
        self.workers: list[_Worker] = []

    def start(self) -> FoldPool:
        """Start the fork server; the processes are forked when the folds come (forking waits for its imports)."""
        start_fold_server()
        return self

    def _spawn(self) -> _Worker:
        task_reader, task_writer = self.context.Pipe(duplex=False)
        message_reader, message_writer = self.context.Pipe(duplex=False)
        with one_thread_children():
            process = self.context.Process(target=_fold_worker, args=(task_reader, message_writer))
            process.start()
        task_reader.close()  # the child's ends: once it is gone, its pipe reads as ended here
        message_writer.close()
        return _Worker(process, task_writer, message_reader)

    def run(self, tasks: Sequence[FoldTask], report: Report, on_epoch: EpochReport | None = None) -> None:
        from multiprocessing.connection import wait

        while len(self.workers) < self.size:
            self.workers.append(self._spawn())
        waiting = list(tasks)
        started_once = False  # a process that dies before it is ready is not replaced unless one ever was
        while waiting or any(w.task is not None for w in self.workers):
            for worker in self.workers:
                if worker.ready and worker.task is None and waiting:
                    worker.task = waiting.pop(0)
                    with suppress(OSError):  # it died just now: its sentinel says so below
                        worker.tasks.send(worker.task)
            if not self.workers:  # every process died before it could take a fold
                for never in waiting:
                    report(never, None, WorkerDied("no fold process could start: each ended before its first fold"))
                return
            by_handle = {w.messages: w for w in self.workers} | {w.process.sentinel: w for w in self.workers}
            for worker in dict.fromkeys(by_handle[h] for h in wait(list(by_handle))):
                ended = False
                while worker.messages.poll():
                    try:
                        message = worker.messages.recv()
                    except EOFError:
                        ended = True
                        break
                    kind, task = message[0], worker.task
                    if kind == "ready":
                        worker.ready = started_once = True
                    elif kind == "epoch" and task is not None and on_epoch is not None:
                        on_epoch(task, message[1], message[2])
                    elif kind in ("done", "failed") and task is not None:
                        worker.task = None
                        done = kind == "done"
                        report(task, message[1] if done else None, None if done else message[1])
                if ended or not worker.process.is_alive():
                    worker.process.join()
                    self.workers.remove(worker)
                    if worker.task is not None:
                        report(worker.task, None, WorkerDied(f"worker process died ({_death(worker.process)})"))
                    if waiting and (started_once or worker.ready):
                        self.workers.append(self._spawn())

    def close(self) -> None:
        """Stop every process: idle ones are told to, any still busy (an error ended the walk-forward) killed."""
        for worker in self.workers:
            if worker.ready and worker.task is None:
                with suppress(OSError):
                    worker.tasks.send(None)
        for worker in self.workers:
            if worker.ready and worker.task is None:
                worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join()
            worker.tasks.close()
            worker.messages.close()
        self.workers = []


class RayFolds:
    """The folds as Ray tasks: Ray started (or joined), the queue the folds' epochs come through, and one warm-up
    task per CPU importing the training stack, all before the driver reads the data; a task whose worker dies
    fails its fold alone."""

    def __init__(self, settings: WalkForwardSettings, at_most: int) -> None:
        self.settings = settings
        self.at_most = at_most
        self.started = False
        self.warming: list[Any] = []
        self.epochs: Any = None  # a ray.util.queue.Queue

    def start(self) -> RayFolds:
        import ray
        from ray.util.queue import Queue

        if not ray.is_initialized():
            start_ray(self.settings.ray_address, self.settings.fold_workers or usable_cores())
            self.started = True
        # the queue's actor holds no CPU, and is made first: an actor takes an idle worker process for good, and
        # made after the warm-up it would take a warmed one, leaving a fold to import the stack again (about 8 s)
        self.epochs = Queue(actor_options={"num_cpus": 0})
        cpus = int(ray.available_resources().get("CPU", 1))
        warm = ray.remote(num_cpus=1, max_retries=0)(warm_worker)
        self.warming = [warm.remote() for _ in range(max(1, min(cpus, self.at_most)))]
        return self

    def run(self, tasks: Sequence[FoldTask], report: Report, on_epoch: EpochReport | None = None) -> None:
        import ray

        epochs = None if on_epoch is None else self.epochs
        by_run = {task.run_name: task for task in tasks}
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_fold)
        pending = {remote.remote(task, epochs): task for task in tasks}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=None if epochs is None else 1.0)
                if epochs is not None and on_epoch is not None:  # a fold's epochs before its outcome
                    # sorted: the queue's actor is asynchronous, and may take one sender's reports out of order
                    for run, epoch, most in sorted(epochs.get_nowait_batch(epochs.qsize())):
                        on_epoch(by_run[run], epoch, most)
                for ref in done:
                    task = pending.pop(ref)
                    try:
                        outcome, files = ray.get(ref)
                        _receive(task, files)
                    except Exception as error:  # noqa: BLE001 - a RayTaskError wraps the fold's own error
                        report(task, None, getattr(error, "cause", None) or error)
                    else:
                        report(task, outcome, None)
        finally:
            for ref in pending:  # an error here ended the walk-forward: the folds still queued or training stop
                ray.cancel(ref, force=True)

    def close(self) -> None:
        import ray

        if self.epochs is not None and ray.is_initialized():
            self.epochs.shutdown()
        self.epochs = None
        if self.started:
            ray.shutdown()
            self.started = False


FoldExecutor = InProcess | FoldPool | RayFolds


def fold_executor(settings: WalkForwardSettings, at_most: int) -> FoldExecutor:
    """The started executor for at most `at_most` fold tasks: this process where one worker runs them (or
    --warm-start chains them), local fold processes, or Ray. Started as early as possible: see `walkforward_run`."""
    if settings.executor == "ray":
        return RayFolds(settings, at_most).start()
    workers = pool_processes(settings.fold_workers, settings.warm_start, at_most)
    return InProcess() if workers == 1 else FoldPool(workers).start()


def run_tasks(
    tasks: Sequence[FoldTask],
    settings: WalkForwardSettings,
    report: Report,
    *,
    executor: FoldExecutor | None = None,
    on_epoch: EpochReport | None = None,
) -> None:
    """Run the folds' trainings on `executor` (None: one started for these tasks, and stopped after);
    `report(task, outcome, error)` after each one, `on_epoch(task, epoch, epochs)` after each LSTM epoch. A
    fold's error, or its process's death, is reported and the others go on. Parallel executors take the longest
    folds first."""
    if not tasks:
        return
    own = executor is None
    executor = executor or fold_executor(settings, len(tasks))
    try:
        executor.run(tasks if isinstance(executor, InProcess) else longest_first(tasks), report, on_epoch)
    finally:
        if own:
            executor.close()


# --- the folds' inputs, and resuming ---


def settings_document(config: Config, settings: WalkForwardSettings, loaded: Loaded, symbol: str) -> dict[str, Any]:
    """Every setting a fold's model depends on (settings.json): the stages' settings but the runtime's and the
    backtest's other than its decision step (those change the stitched backtest only, which is redone each run)."""
    stages = {name: values for name, values in config.to_dict().items() if name not in ("runtime", "backtest")}
    stages["backtest"] = {"every_seconds": config.backtest.every_seconds}
    return {
        "config": stages,
        "walkforward": {
            "train_span": settings.train_span,
            "test_span": settings.test_span,
            "step": settings.step or settings.test_span,
            "scheme": settings.scheme,
            "val": settings.val,
            "purge_seconds": loaded.horizon_seconds,
            "models": list(settings.kinds),
            "warm_start": settings.warm_start,
            **({"until": settings.until} if settings.until is not None else {}),
            **({"first_test": settings.first_test} if settings.first_test is not None else {}),
        },
        "trades": loaded.sources.journal or "first-touch labels",
        "symbol": symbol,
    }


def _flat(document: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(document, dict):
        return {prefix.rstrip("."): document}
    flat: dict[str, Any] = {}
    for key, value in document.items():
        flat.update(_flat(value, f"{prefix}{key}."))
    return flat


def settings_differences(recorded: Any, document: Any, holder: str, strip: str = "") -> list[str]:
    """Each setting that differs between a recorded settings document and this run's, as `key = new (HOLDER
    old)`, by key (`strip` removed from the shown keys): what a walk-forward folder or a tuning study refuses."""
    old, new = _flat(recorded), _flat(json_safe(document))
    return [
        f"{key.removeprefix(strip)} = {new.get(key)!r} ({holder} {old.get(key)!r})"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def _digest(document: Any) -> str:
    return hashlib.sha256(json.dumps(json_safe(document), sort_keys=True).encode()).hexdigest()


def check_settings(folder: WalkForwardFolder, document: dict[str, Any]) -> None:
    """A walk-forward folder continues only with the settings its folds were trained with."""
    if not folder.settings.exists():
        return
    try:
        recorded = json.loads(folder.settings.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{folder.settings}: unreadable ({error}); rerun with --overwrite to start over") from None
    differing = settings_differences(recorded, document, "the folds have", strip="config.")
    if differing:
        raise ConfigError(
            f"{folder.root}: its folds were trained with other settings: {'; '.join(differing[:3])}"
            f"{' ...' if len(differing) > 3 else ''}; add --overwrite to train them again, or choose another --out"
        )


def build_tasks(
    config: Config,
    settings: WalkForwardSettings,
    loaded: Loaded,
    folder: WalkForwardFolder,
    *,
    db: Path,
    symbol: str,
    settings_sha256: str,
) -> list[FoldTask]:
    """One task per fold and model kind, with the fingerprints of the fold's candles and trades."""
    from lstm_trading.features.compute import history_minutes

    history = history_minutes(config.features, config.targets.max_len) * MINUTE
    timestamps = loaded.candles["timestamp"].to_numpy(dtype=np.int64)
    # a fold alone in this process may use --workers inference processes; folds side by side use one each
    alone = settings.executor == "local" and local_workers(settings, len(loaded.plan.folds) * len(settings.kinds)) == 1
    inference = config.runtime.workers if alone else 1
    tasks = []
    previous: Path | None = None  # the LSTM fold before, where --warm-start starts each fold from
    for fold in loaded.plan.folds:
        rows = {part: getattr(fold.split, part).journal_row.copy() for part in ("train", "val", "test")}
        used = np.concatenate(list(rows.values()))
        trades = loaded.trades[loaded.trades["row"].isin(used)].reset_index(drop=True)
        first, last = np.searchsorted(timestamps, [fold.train_start - history, fold.test_end], side="left")
        fingerprint = candles_sha256(loaded.candles.iloc[first:last])
        fold_config = config.with_overrides("train", seed=fold.seed).with_overrides(
            "runtime", workers=inference, cache=False
        )
        inputs = _digest({"settings": settings_sha256, "fold": _fold_identity(fold), "trades": _trades_sha256(trades)})
        for kind in settings.kinds:
            run_dir = folder.fold(fold.name, None if kind == settings.model else kind).root
            tasks.append(
                FoldTask(
                    run_name=run_dir.name,
                    fold=fold.name,
                    kind=kind,
                    k=fold.k,
                    test_start=fold.test_start,
                    test_end=fold.test_end,
                    train_start=fold.train_start,
                    seed=fold.seed,
                    rows=rows,
                    purged=dict(fold.split.purged),
                    trades=trades,
                    config=fold_config,
                    db=db.resolve(),  # a worker (a Ray node) need not share the driver's working folder
                    symbol=symbol,
                    run_dir=run_dir.resolve(),
                    candles_sha256=fingerprint,
                    settings_sha256=inputs,
                    sources=loaded.sources,
                    accelerator=settings.accelerator,
                    warm_from=previous if settings.warm_start and kind == LSTM_KIND else None,
                )
            )
        if settings.warm_start:
            previous = folder.fold(fold.name, None if settings.model == LSTM_KIND else LSTM_KIND).root.resolve()
    return tasks


def _fold_identity(fold: Fold) -> dict[str, Any]:
    return {
        "k": fold.k,
        "test_start": fold.test_start,
        "test_end": fold.test_end,
        "train_start": fold.train_start,
        "seed": fold.seed,
    }


def finished_outcome(task: FoldTask) -> FoldOutcome | None:
    """The fold's record when the fold is finished with these inputs; None when it is unfinished (it is trained
    again); an error naming the fold when it was finished with other trades, settings or candles."""
    folder = RunFolder(task.run_dir)
    path, signals = WalkForwardFolder.fold_record(folder), WalkForwardFolder.fold_signals(folder)
    if not (path.exists() and signals.exists() and folder.model.exists()):
        return None
    if not WalkForwardFolder.fold_val_signals(folder).exists():
        return None  # finished before folds kept their validation signals: trained again
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # a record cut short: the fold is trained again
    if record.get("candles_sha256") != task.candles_sha256:
        raise DataError(
            f"fold {task.run_name}: its candles in {task.db} changed since it was trained (from "
            f"{format_time(task.train_start)} to {format_time(task.test_end)} with the window history); add "
            "--overwrite to train every fold again, or choose another --out"
        )
    if record.get("settings_sha256") != task.settings_sha256:
        raise ConfigError(
            f"fold {task.run_name}: it was trained with other settings or trades (the journal's rows in its spans "
            "changed, or its folder comes from another walk-forward); add --overwrite to train every fold again"
        )
    return FoldOutcome(record)


# --- the stitched out-of-sample backtest ---


@dataclass(frozen=True)
class FoldSignals:
    """A fold model's signals at its test period's moments, and the name that decides them (`model` column)."""

    run: str
    test_start: int
    test_end: int
    signals: Signals
    validation: Signals | None = None  # at the validation period's moments (up to `test_start`)
    run_dir: Path | None = None  # the fold's run folder (its bundle)


def stitch_signals(
    candles: pd.DataFrame, folds: Sequence[FoldSignals], features: Features
) -> tuple[PeriodSignals, np.ndarray]:
    """One `PeriodSignals` over `[first test start, last test end)`, each moment decided by its fold's model,
    and the fold name of each moment. Moments between test periods (a step longer than the test span, a
    skipped fold) have no signal: no position opens there, one opened before runs on."""
    if not folds:
        raise DataError("no fold signals to stitch")
    folds = sorted(folds, key=lambda f: f.test_start)
    for before, after in zip(folds, folds[1:], strict=False):
        if after.test_start < before.test_end:
            raise DataError(f"folds {before.run} and {after.run} overlap: a moment would have two models")
    start, end = folds[0].test_start, folds[-1].test_end
    period = CandleArrays.from_frame(candles).between(start, end)
    if len(period) == 0:
        raise DataError(f"no candles from {format_time(start)} to {format_time(end)}: nothing to backtest")
    end = min(end, int(period.timestamp[-1]) + MINUTE)
    signals = folds[0].signals
    for fold in folds[1:]:
        signals = signals.concatenated(fold.signals)
    names = np.concatenate([np.full(len(f.signals), f.run, dtype=object) for f in folds])
    return PeriodSignals(period, end, signals.at, features, signals), names


def model_column(times: np.ndarray, folds: Sequence[FoldSignals]) -> np.ndarray:
    """The fold whose test period holds each moment ("" between test periods)."""
    folds = sorted(folds, key=lambda f: f.test_start)
    starts = np.array([f.test_start for f in folds], dtype=np.int64)
    ends = np.array([f.test_end for f in folds], dtype=np.int64)
    names = np.array([f.run for f in folds], dtype=object)
    times = np.asarray(times, dtype=np.int64)
    index = np.searchsorted(starts, times, side="right") - 1
    inside = (index >= 0) & (times < ends[np.maximum(index, 0)])
    return np.where(inside, names[np.maximum(index, 0)], "")


@dataclass(frozen=True)
class Stitched:
    """One model kind's stitched backtest and its frames as written."""

    kind: str
    result: Any  # BacktestResult
    trades: pd.DataFrame
    equity: pd.DataFrame
    out_dir: Path


def carried_signals(
    trained: Sequence[FoldSignals], plan: FoldPlan, config: Config, *, db: Path, symbol: str
) -> list[FoldSignals]:
    """A skipped fold keeps the model before it (as a live loop that retrains would: issue 16): its test
    period decided by the last trained fold's model, under that fold's name and thresholds. A skipped period
    before the first trained fold, or with no usable window (a gap of months), stays untraded."""
    from lstm_trading.backtest.simulation import period_signals
    from lstm_trading.models.bundle import load_bundle

    carried = []
    ordered = sorted(trained, key=lambda f: f.test_start)
    for skipped in plan.skipped:
        before = [f for f in ordered if f.test_end <= skipped.test_start]
        if not before:
            continue
        previous = before[-1]
        if previous.run_dir is None:
            continue
        bundle = load_bundle(previous.run_dir)
        try:
            candles = fold_candles(db, symbol, skipped.test_start, skipped.test_end, config, skipped.name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # moments without a window: untraded, as in any backtest
                traded = period_signals(
                    bundle, candles, skipped.test_start, skipped.test_end, config.backtest.every_seconds, workers=1
                )
        except DataError:  # no candle or no usable window in the skipped period: nothing to decide
            continue
        carried.append(
            FoldSignals(
                previous.run,
                skipped.test_start,
                skipped.test_end,
                traded.signals,
                previous.validation,
                previous.run_dir,
            )
        )
    return carried


def fold_thresholds(
    folds: Sequence[FoldSignals],
    candles: pd.DataFrame,
    features: Features,
    config: BacktestConfig,
    funding: Any,
) -> dict[str, SweepResult]:
    """Each fold's min-prob / min-EV, chosen by `backtest --sweep`'s rule on the fold's own validation period
    (its validation trades' first moment to its test start), never on its test: by fold name."""
    everything = CandleArrays.from_frame(candles)
    chosen = {}
    for fold in folds:
        if fold.run in chosen:  # a skipped fold carried by this model: chosen with it, on its validation
            continue
        if fold.validation is None or len(fold.validation) == 0:
            raise DataError(f"fold {fold.run}: no validation signals to choose its thresholds on")
        start = int(fold.validation.at[0])
        period = everything.between(start, fold.test_start)
        validation = PeriodSignals(period, fold.test_start, fold.validation.at, features, fold.validation)
        chosen[fold.run] = sweep_thresholds(validation, config, funding=funding)
    return chosen


def stitched_backtest(
    kind: str,
    folds: Sequence[FoldSignals],
    loaded: Loaded,
    config: Config,
    settings: WalkForwardSettings,
    *,
    bundle: Any,
    db: Path,
    symbol: str,
    out_dir: Path,
) -> Stitched:
    """The kind's stitched signals through one position loop (`backtest_period`: decisions, fills, baselines,
    statistics); trades.csv, equity.csv and stats.json with the deciding fold in a `model` column."""
    from lstm_trading.backtest.results import backtest_period, equity_frame
    from lstm_trading.report.figures import backtest_figures
    from lstm_trading.runs.backtest import funding_record
    from lstm_trading.runs.candles import symbol_funding

    # the journal baseline reads the feature rows only (its levels); the folds' own scalings stay in the folds
    features = Features(loaded.matrix, loaded.matrix.values)
    traded, names = stitch_signals(loaded.candles, folds, features)
    start = min(f.test_start for f in folds)
    funding = symbol_funding(db, symbol, config.backtest.funding, start=start, end=traded.end)
    chosen: dict[str, Any] = {}
    thresholds = None
    if settings.sweep:
        chosen = fold_thresholds(folds, loaded.candles, features, config.backtest, funding.schedule)
        cells = [chosen[str(name)].config(config.backtest) for name in names]
        thresholds = Thresholds(
            np.array([cell.min_prob for cell in cells], dtype=np.float64),
            np.array([cell.min_ev for cell in cells], dtype=np.float64),
        )
    result = backtest_period(
        traded,
        bundle,
        start=start,
        config=config.backtest,
        journal=loaded.trades,
        journal_name=loaded.journal_name,
        random_runs=settings.random_runs,
        seed=settings.seed,
        trials=settings.trials,
        funding=funding.schedule,
        thresholds=thresholds,
    )
    result.stats["funding"] = funding_record(funding, result)
    result.stats["folds"] = [
        {
            "model": f.run,
            "test_start": f.test_start,
            "test_end": f.test_end,
            **({"sweep": chosen[f.run].to_json()} if f.run in chosen else {}),
        }
        for f in folds
    ]
    trades = result.model.trades()
    trades.insert(0, "model", model_column(trades["entry_time"].to_numpy(), folds))
    equity = equity_frame(result)
    equity["model_in_force"] = model_column(equity["timestamp"].to_numpy(), folds)
    files = {
        out_dir / TRADES_FILE: trades.to_csv(index=False),
        out_dir / EQUITY_FILE: equity.to_csv(index=False),
        out_dir / STATS_FILE: json.dumps(json_safe(result.stats), indent=2, allow_nan=False) + "\n",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_texts_atomic(files)
    if settings.figures:
        backtest_figures(equity, trades, out_dir)
    return Stitched(kind, result, trades, equity, out_dir)


# --- the per-fold table and the verdict ---


def fold_rows(
    kind: str,
    outcomes: dict[str, FoldOutcome],
    tasks: Sequence[FoldTask],
    plan: FoldPlan,
    stitched: Stitched,
    initial_equity: float,
) -> list[dict[str, Any]]:
    """folds.csv's rows of one kind: each fold's periods, samples, model quality and its share of the stitched
    trades; skipped folds with their reason. No timings: the table is the same whichever executor ran it."""
    rows: list[dict[str, Any]] = []
    trades, equity = stitched.trades, stitched.equity
    times = equity["timestamp"].to_numpy(dtype=np.int64)
    curve = equity["model"].to_numpy(dtype=np.float64)
    for task in (t for t in tasks if t.kind == kind):
        record = outcomes[task.run_name].record
        mine = trades[trades["model"] == task.run_name]
        before = np.searchsorted(times, task.test_start, side="left") - 1
        last = np.searchsorted(times, task.test_end, side="left") - 1
        opening = curve[before] if before >= 0 else initial_equity
        closing = curve[last] if last >= 0 else initial_equity
        log_loss, prior = record.get("log_loss"), record.get("prior_log_loss")
        sizes, purged = record["sizes"], record["purged"]
        rows.append(
            {
                "model": kind,
                "fold": task.run_name,
                "k": task.k,
                "status": "trained",
                "train_from": format_time(task.train_start),
                "test_from": format_time(task.test_start),
                "test_to": format_time(task.test_end),
                "train_trades": sizes["train"],
                "val_trades": sizes["val"],
                "test_trades": sizes["test"],
                "purged": sum(purged.values()),
                "seed": task.seed,
                "best_epoch": record.get("best_epoch"),
                "log_loss": log_loss,
                "prior_log_loss": prior,
                "beats_prior": None if log_loss is None or prior is None else bool(log_loss < prior),
                "macro_f1": record.get("macro_f1"),
                "prior_macro_f1": record.get("prior_macro_f1"),
                "trades": len(mine),
                "expectancy_pct": float(mine["return_pct"].mean()) if len(mine) else None,
                "return_pct": 100 * (closing / opening - 1),
                **_chosen_thresholds(stitched, task.run_name),
                "warm_from": record.get("warm_from", ""),
                "reason": "",
            }
        )
    for skipped in plan.skipped:
        rows.append(
            {
                **dict.fromkeys(FOLD_COLUMNS),
                "model": kind,
                "fold": skipped.name,
                "k": skipped.k,
                "status": "skipped",
                "test_from": format_time(skipped.test_start),
                "test_to": format_time(skipped.test_end),
                "reason": skipped.reason + _carried_by(stitched, skipped.test_start),
            }
        )
    return sorted(rows, key=lambda row: int(row["k"]))


def _carried_by(stitched: Stitched, test_start: int) -> str:
    """Which model decided a skipped fold's period (the last trained before it), as folds.csv says it."""
    for fold in stitched.result.stats.get("folds", []):
        if fold["test_start"] == test_start:
            return f"; decided by {fold['model']}, the model before it"
    return ""


def _chosen_thresholds(stitched: Stitched, run: str) -> dict[str, Any]:
    """The fold's min-prob and min-EV as its stitched backtest used them: chosen on its validation period
    (`--sweep`, None when no cell had enough trades: the fold did not trade), else the settings'."""
    settings = stitched.result.stats["settings"]
    for fold in stitched.result.stats.get("folds", []):
        if fold["model"] == run and "sweep" in fold:
            chosen = fold["sweep"]["chosen"]
            return {"min_prob": chosen and chosen["min_prob"], "min_ev": chosen and chosen["min_ev"]}
    return {"min_prob": settings["min_prob"], "min_ev": settings["min_ev"]}


def verdict(kind: str, stats: dict[str, Any], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The kind's verdict: its stitched expectancy, interval, p-value and PSR (the backtest's significance
    block, whose rule gives the verdict), the share of folds beating the class prior, one sentence, and the
    evaluation's "no information" line when the folds' mean log-loss is above their priors'."""
    from lstm_trading.evaluate.metrics import no_information
    from lstm_trading.report.tables import not_traded_counts

    sig = stats["model"]["significance"]
    judged = [row for row in rows if row["beats_prior"] is not None]
    beating = sum(bool(row["beats_prior"]) for row in judged)
    figures = {
        "model": kind,
        "verdict": sig["verdict"],
        "trades": sig["trades"],
        "expectancy_pct": sig["expectancy_pct"],
        "interval_pct": sig["interval_pct"],
        "p_random_entries": sig["p_random_entries"],
        "random_runs": sig["random_runs"],
        "psr": sig["psr"],
        "folds_beating_prior": beating,
        "folds_with_log_loss": len(judged),
        "share_beating_prior": beating / len(judged) if judged else None,
        "moments": stats["moments"],
        "not_traded": not_traded_counts(stats),  # why few trades, when there are few
    }
    figures["sentence"] = verdict_sentence(figures)
    # over the folds' test trades together: the mean log-loss against the mean of the folds' priors
    log_loss = float(np.mean([row["log_loss"] for row in judged])) if judged else None
    prior = float(np.mean([row["prior_log_loss"] for row in judged])) if judged else None
    figures["mean_log_loss"], figures["mean_prior_log_loss"] = log_loss, prior
    figures["no_information"] = no_information(log_loss, prior)
    return figures


def verdict_sentence(figures: dict[str, Any]) -> str:
    """e.g. "no evidence of an edge: expectancy -0.11 % per trade (95 % CI -0.14 to -0.08), p = 0.43 against
    1,000 random-entry runs; log-loss above the class prior in 9 of 12 folds"."""
    parts = [f"{figures['trades']:,} trades"]
    if figures["expectancy_pct"] is not None:
        interval = figures["interval_pct"]
        within = f" (95 % CI {interval[0]:+.2f} to {interval[1]:+.2f})" if interval else ""
        parts = [f"expectancy {figures['expectancy_pct']:+.2f} % per trade{within} over {figures['trades']:,} trades"]
    if figures["p_random_entries"] is not None:
        parts.append(f"p = {figures['p_random_entries']:.2f} against {figures['random_runs']:,} random-entry runs")
    text = f"{figures['verdict']}: " + ", ".join(parts)
    judged, beating = figures["folds_with_log_loss"], figures["folds_beating_prior"]
    if judged:
        if 2 * beating >= judged:
            text += f"; log-loss below the class prior in {beating} of {judged} folds"
        else:
            text += f"; log-loss above the class prior in {judged - beating} of {judged} folds"
    return text


# --- the command ---


@dataclass(frozen=True)
class FoldFailure:
    run: str
    error: str


@dataclass(frozen=True)
class WalkForwardResult:
    """What the command prints: the folds table, the verdicts (main model last), or the folds that failed."""

    out_dir: Path
    plan: FoldPlan
    rows: list[dict[str, Any]]
    verdicts: dict[str, dict[str, Any]]
    failures: list[FoldFailure]
    trained: int
    reused: int
    summary: dict[str, Any] | None
    report: Path | None
    warnings: list[str]


def walkforward_run(
    config: Config,
    settings: WalkForwardSettings,
    *,
    db: Path,
    symbol: str,
    source: TradeSource,
    out: Path,
    echo: Callable[[str], None] = print,
    on_fold: Callable[[FoldTask, FoldOutcome], None] | None = None,
) -> WalkForwardResult:
    """Plan the folds, train the unfinished ones on the executor, stitch each kind's out-of-sample signals into
    one backtest, and write folds.csv, summary.json and report.html (see the module docstring).

    `on_fold(task, outcome)` runs after each fold trained now (`tune` reports fold scores to its pruner there);
    an exception it raises ends the walk-forward (at once: folds still training in other processes are stopped)."""
    started = time.perf_counter()
    check_walkforward(config, settings, out)
    # the fold processes' fork server (or Ray's workers) start now and import the training stack, about 6 s,
    # while this process reads the candles, labels them and plans the folds
    executor = fold_executor(settings, folds_at_most(settings, out, db=db, symbol=symbol))
    try:
        return _walkforward(
            config, settings, executor, started, db=db, symbol=symbol, source=source, out=out, echo=echo,
            on_fold=on_fold,
        )  # fmt: skip
    finally:
        executor.close()


def folds_at_most(settings: WalkForwardSettings, out: Path, *, db: Path, symbol: str) -> int:
    """An upper bound of the fold tasks left to train, from the candles' time range, the spans and the folds
    finished in `out` alone (nothing is read but the range): how many fold processes are worth starting."""
    from lstm_trading.data.store import CandleStore

    try:
        with CandleStore(db) as store:
            held = store.time_range(symbol)
    except LstmTradingError:  # the data's own error comes with the data, next
        return 1
    if held is None:
        return 1
    end = int(held[1]) + MINUTE if settings.until is None else min(int(held[1]) + MINUTE, settings.until)
    stride = settings.step or settings.test_span
    folds = -(-(end - int(held[0]) - settings.train_span) // stride)  # test periods start a train span in
    finished = 0 if settings.overwrite else len(list((out / "folds").glob("*/fold.json")))
    return max(1, folds * len(settings.kinds) - finished)


def _walkforward(
    config: Config,
    settings: WalkForwardSettings,
    executor: FoldExecutor,
    started: float,
    *,
    db: Path,
    symbol: str,
    source: TradeSource,
    out: Path,
    echo: Callable[[str], None],
    on_fold: Callable[[FoldTask, FoldOutcome], None] | None,
) -> WalkForwardResult:
    from lstm_trading.models.bundle import load_bundle

    loaded = load_walkforward(config, settings, db=db, symbol=symbol, source=source)
    folder = WalkForwardFolder(out)
    document = settings_document(config, settings, loaded, symbol)
    if not settings.overwrite:
        check_settings(folder, document)
    tasks = build_tasks(config, settings, loaded, folder, db=db, symbol=symbol, settings_sha256=_digest(document))
    outcomes: dict[str, FoldOutcome] = {}
    if not settings.overwrite:  # every refusal before anything is written
        for task in tasks:
            finished = finished_outcome(task)
            if finished is not None:
                outcomes[task.run_name] = finished
    else:
        for path in folder.outputs():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    pending = [task for task in tasks if task.run_name not in outcomes]
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder.settings, json.dumps(json_safe(document), indent=2, allow_nan=False) + "\n")
    folder.summary.unlink(missing_ok=True)  # a summary stands for every fold finished
    for skipped in loaded.plan.skipped:
        echo(f"skipped fold {skipped.name}: {skipped.reason}")
    stride = settings.step or settings.test_span
    if stride > settings.test_span:
        echo(
            f"--step is {(stride - settings.test_span) / 3600:g} h longer than --test-span: no model decides in "
            "the gaps between test periods (no position opens there)"
        )
    if outcomes:
        echo(f"{len(outcomes)} of {len(tasks)} folds finished before, with the same settings and candles: kept")
    failures: list[FoldFailure] = []
    fold_warnings: list[str] = []
    trained_at = time.perf_counter()
    running: dict[str, float] = {}  # the share of its epochs each training LSTM fold has done

    def time_left(finished: int) -> str:
        """From the folds done and the running folds' epochs: `about N s left`."""
        done = finished + sum(running.values())
        if done <= 0:
            return "time left unknown yet"
        return f"about {(time.perf_counter() - trained_at) / done * (len(pending) - done):.0f} s left"

    def folds_done() -> int:
        """The folds trained or failed in this run (finished ones found in --out are not counted)."""
        return len(outcomes) - (len(tasks) - len(pending)) + len(failures)

    def report(task: FoldTask, outcome: FoldOutcome | None, error: BaseException | None) -> None:
        """After each fold: its line, the folds done and an estimate of the time left (or its error)."""
        running.pop(task.run_name, None)
        if outcome is None:
            assert error is not None  # an executor passes the error of every fold it has no outcome for
            failures.append(FoldFailure(task.run_name, error_line(error)))
            echo(f"fold {task.run_name} failed: {failures[-1].error}")
            return
        outcomes[task.run_name] = outcome
        fold_warnings.extend(f"fold {task.run_name}: {message}" for message in outcome.warnings)
        finished = folds_done()
        elapsed = time.perf_counter() - trained_at
        echo(
            f"fold {task.run_name} ({task.kind}) trained: {finished} of {len(pending)} done, "
            f"{elapsed:.0f} s so far, {time_left(finished)}"
        )
        if on_fold is not None:
            on_fold(task, outcome)

    def epoch(task: FoldTask, epoch: int, epochs: int) -> None:
        """After each LSTM epoch (a gbm fold trains in one call and has none): the fold's epoch, the folds done
        and the time left."""
        running[task.run_name] = epoch / epochs if epochs else 0.0
        finished = folds_done()
        folds = f"{finished} of {len(pending)} folds done"
        echo(f"fold {task.run_name}: epoch {epoch}/{epochs}; {folds}, {time_left(finished)}")

    run_tasks(pending, settings, report, executor=executor, on_epoch=epoch)
    executor.close()  # the fold processes' memory back before the stitching
    if failures:
        return WalkForwardResult(
            out, loaded.plan, [], {}, failures, len(pending) - len(failures), len(tasks) - len(pending), None, None,
            loaded.warnings + fold_warnings,
        )  # fmt: skip
    stitch_started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    verdicts: dict[str, dict[str, Any]] = {}
    stitched_by_kind: dict[str, Stitched] = {}
    for kind in settings.kinds:
        mine = [task for task in tasks if task.kind == kind]
        signals = [
            FoldSignals(t.run_name, t.test_start, t.test_end, _saved_signals(t), _saved_val_signals(t), t.run_dir)
            for t in mine
        ]
        signals += carried_signals(signals, loaded.plan, config, db=db, symbol=symbol)
        stitched = stitched_backtest(
            kind,
            signals,
            loaded,
            config,
            settings,
            bundle=load_bundle(mine[-1].run_dir),
            db=db,
            symbol=symbol,
            out_dir=folder.oos(None if kind == settings.model else kind),
        )
        stitched_by_kind[kind] = stitched
        kind_rows = fold_rows(kind, outcomes, mine, loaded.plan, stitched, config.backtest.initial_equity)
        rows.extend(kind_rows)
        verdicts[kind] = verdict(kind, stitched.result.stats, kind_rows)
    frame = pd.DataFrame(rows, columns=list(FOLD_COLUMNS))
    write_text_atomic(folder.folds_table, frame.to_csv(index=False))
    summary = {
        "settings": document,
        "period": {
            "first_test": loaded.plan.folds[0].test_start,
            "end": loaded.plan.folds[-1].test_end,
            "first_test_utc": format_time(loaded.plan.folds[0].test_start),
            "end_utc": format_time(loaded.plan.folds[-1].test_end),
        },
        "folds": {
            "planned": len(loaded.plan.folds) + len(loaded.plan.skipped),
            "trained": len(loaded.plan.folds),
            "skipped": [{"fold": s.name, "reason": s.reason} for s in loaded.plan.skipped],
        },
        "models": verdicts,
        "verdict": verdicts[settings.model]["sentence"],
        "timings": {
            "total_seconds": time.perf_counter() - started,
            "stitch_seconds": time.perf_counter() - stitch_started,
            "trained_now": len(pending),
            "folds": {name: outcome.record.get("seconds") for name, outcome in sorted(outcomes.items())},
            "executor": settings.executor,
            "fold_workers": settings.fold_workers,
        },
    }
    write_text_atomic(folder.summary, json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    from lstm_trading.report.walkforward import write_walkforward_report

    report_path = None
    if settings.figures:
        report_path = write_walkforward_report(
            folder.report,
            summary,
            frame,
            {kind: (s.equity, s.result.stats) for kind, s in stitched_by_kind.items()},
            main=settings.model,
        )
    return WalkForwardResult(
        out, loaded.plan, rows, verdicts, [], len(pending), len(tasks) - len(pending), summary, report_path,
        loaded.warnings + fold_warnings,
    )  # fmt: skip
