"""`live --retrain-every`: each boundary's model is the walk-forward fold that starts at that boundary.

The fold code of `runs/walkforward.py` does the work: the first-touch labels of every stored candle (`_label`),
the plan (`samples/folds.plan_folds` with the first fold at the replay's `--from` or the live boundary), the
fold's task and its training (`build_tasks`, `train_fold`: the fold's own split, purge, scalers and seed from
(seed, boundary), one torch thread), its signals and, with `--sweep`, its thresholds chosen on its validation
period (`fold_thresholds`). What is added here: the gate (`gate_check`), a kept model's signals over a period whose
own retraining was skipped or rejected, and the live loop's background job.

A replay trains every boundary's model first (its folds in `fold_workers` processes; a rerun keeps finished
ones), gates them in time order and stitches the signals of the model in force at each moment; with the gate off
and without skipped folds it trades exactly what `walkforward --test-span STEP --step STEP` trades.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import sqlite3
import time
import uuid
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lstm_trading.core.atomic import write_text_atomic
from lstm_trading.core.config import Config, LabelConfig, load_config
from lstm_trading.core.errors import ConfigError, DataError, LstmTradingError, ModelFileError, error_line
from lstm_trading.core.jsonio import json_safe
from lstm_trading.core.run_folder import RunFolder, WalkForwardFolder
from lstm_trading.core.timeutil import MINUTE, format_time
from lstm_trading.live.loop import RetrainedPeriod
from lstm_trading.live.retraining import (
    BoundaryOutcome,
    GateResult,
    ModelInUse,
    RetrainRequest,
    RetrainSettings,
    boundaries,
    gate_verdict,
)
from lstm_trading.live.signals import PrecomputedSignals
from lstm_trading.models.training_record import Sources
from lstm_trading.samples.folds import Fold, FoldPlan, FoldSettings, fold_name, plan_folds

RETRAIN_DIR = "retraining"  # below the replay's or the live account's folder: folds/NAME and results/NAME.json
MODEL_SETTINGS = ("every_s", "train_span_s", "scheme", "val", "accelerator", "warm_start")
LABELLER = "first-touch"


# --- what retraining needs from RUN ---


@dataclass(frozen=True)
class RetrainSource:
    """RUN's settings for retraining (its labeller's included), the candles' database and symbol, its model kind."""

    run_dir: Path
    config: Config
    db: Path
    symbol: str
    kind: str
    recorded_db: Path | None = None  # the database the models name (a job reads a snapshot of it as `db`)

    @property
    def sources(self) -> Sources:
        return Sources(db=str((self.recorded_db or self.db).resolve()), symbol=self.symbol)


def retrain_source(run_dir: Path, bundle: Any, *, db: Path, symbol: str, backtest: Any) -> RetrainSource:
    """RUN's settings with the label settings retraining labels new candles with: the ones its journal's `meta`
    sheet records (a journal of `lstm-trading label`), or its own (a walk-forward fold's). A run trained on a
    hand-made journal has none, and is refused."""
    folder = RunFolder(run_dir)
    if not folder.config.exists():
        raise ConfigError(
            f"--retrain-every: {run_dir} has no config.toml, so its training settings are unknown; retrain needs "
            "a run folder written by `lstm-trading train`"
        )
    config = replace(load_config(folder.config), backtest=backtest)
    journal = bundle.training.sources.journal
    if journal is not None:
        config = replace(config, labels=_journal_labels(run_dir, Path(journal)))
    return RetrainSource(run_dir, config, db, symbol, bundle.kind)


def _journal_labels(run_dir: Path, journal: Path) -> LabelConfig:
    from lstm_trading.data.journal import read_journal

    if not journal.exists():
        raise ConfigError(
            f"--retrain-every: {run_dir} was trained on the journal {journal}, which is gone: retraining needs "
            "the label settings its meta sheet records; restore it, or run without --retrain-every"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = read_journal(journal).meta
    if meta.get("labeller") != LABELLER:
        raise ConfigError(
            f"--retrain-every: {run_dir} was trained on the hand-made journal {journal} (its meta sheet records no "
            "label settings): retraining labels the newest candles itself, so it needs a run trained on a journal "
            "of `lstm-trading label` (or a walk-forward fold); run without --retrain-every to trade this model as is"
        )
    try:
        return LabelConfig(
            every_seconds=int(meta["every_seconds"]),
            horizon_seconds=int(meta["horizon_seconds"]),
            k_sl=float(meta["k_sl"]),
            k_tp=float(meta["k_tp"]),
            fee=float(meta["fee"]),
            slippage=float(meta["slippage"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(
            f"--retrain-every: the meta sheet of {journal} lacks a label setting ({error}); relabel with "
            "`lstm-trading label` and train again"
        ) from None


def _walkforward_settings(source: RetrainSource, settings: RetrainSettings, *, fold_workers: int | None) -> Any:
    from lstm_trading.runs.walkforward import WalkForwardSettings

    return WalkForwardSettings(
        train_span=settings.train_span_s,
        test_span=settings.every_s,
        step=settings.every_s,
        scheme=settings.scheme,
        val=settings.val,
        model=source.kind,
        baseline="none",
        fold_workers=fold_workers,
        accelerator=settings.accelerator,
        sweep=settings.sweep,
        warm_start=settings.warm_start,
    )


def _fold_settings(source: RetrainSource, settings: RetrainSettings) -> FoldSettings:
    return FoldSettings(
        settings.train_span_s,
        settings.every_s,
        settings.every_s,
        settings.scheme,
        settings.val,
        source.config.labels.horizon_seconds,
        holdout_seconds=settings.holdout_s,
    )


@dataclass(frozen=True)
class Labelled:
    trades: pd.DataFrame
    candles: pd.DataFrame
    matrix: Any  # FeatureMatrix
    samples: Any  # Samples
    warnings: list[str]


def _labelled(source: RetrainSource) -> Labelled:
    """Every stored candle labelled (first touch) and its samples, as `walkforward` reads them without --trades."""
    from lstm_trading.features.cache import cache_folder, feature_matrix
    from lstm_trading.runs.walkforward import _label, own_warnings
    from lstm_trading.samples.targets import build_samples

    config = source.config
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trades, candles = _label(config, source.db, source.symbol)
        cache_dir = cache_folder(config.runtime, source.db)
        matrix = feature_matrix(candles, config.features, symbol=source.symbol, cache_dir=cache_dir)
        samples, _ = build_samples(matrix, trades, config.targets)
    return Labelled(trades, candles, matrix, samples, own_warnings(caught))


def _loaded(source: RetrainSource, labelled: Labelled, plan: FoldPlan, data_end: int) -> Any:
    from lstm_trading.runs.walkforward import Loaded, _trades_sha256

    return Loaded(
        trades=labelled.trades,
        candles=labelled.candles,
        matrix=labelled.matrix,
        plan=plan,
        horizon_seconds=source.config.labels.horizon_seconds,
        data_end=data_end,
        sources=source.sources,
        trades_sha256=_trades_sha256(labelled.trades),
        journal_name="journal (hindsight labels)",
        warnings=labelled.warnings,
    )


def _settings_digest(source: RetrainSource, settings: RetrainSettings) -> str:
    import hashlib

    # what the models and their signals depend on (as walk-forward's settings.json): not the decision and fill
    # settings but the moments, not the sweep, the gate's tolerance or how many train at once
    trained = {key: value for key, value in settings.record().items() if key in MODEL_SETTINGS}
    if not trained["warm_start"]:  # folders trained before the setting existed keep their digest
        del trained["warm_start"]
    trained["holdout_s"] = settings.holdout_s
    stages = {name: values for name, values in source.config.to_dict().items() if name not in ("runtime", "backtest")}
    stages["backtest"] = {"every_seconds": source.config.backtest.every_seconds}
    document = {"config": stages, "retraining": trained, "symbol": source.symbol}
    return hashlib.sha256(json.dumps(json_safe(document), sort_keys=True).encode()).hexdigest()


def _window(fold: Fold, settings: RetrainSettings, horizon: int) -> dict[str, Any]:
    """The training window as `live.jsonl` records it: trades from `train_start` whose outcome is known by `cutoff`."""
    cutoff = fold.test_start - settings.holdout_s
    return {
        "train_start": fold.train_start,
        "train_start_utc": format_time(fold.train_start),
        "outcomes_known_by": cutoff,
        "outcomes_known_by_utc": format_time(cutoff),
        "last_trade_start_utc": format_time(cutoff - horizon),
        "train_trades": len(fold.split.train),
        "val_trades": len(fold.split.val),
    }


# --- the gate ---


def gate_check(
    source: RetrainSource,
    settings: RetrainSettings,
    candidate: Path,
    current: ModelInUse | None,
    samples: Any,
    boundary: int,
) -> GateResult:
    """The new model must load, predict finite values at the boundary and on the gate's trades (the last
    `gate_span_s` before it whose outcome is known by it, none of them in its training), and lose at most the
    tolerance in prior-corrected log-loss against the current model on those trades."""
    from lstm_trading.evaluate.metrics import classification_metrics
    from lstm_trading.models.bundle import load_bundle
    from lstm_trading.predict import predict_moments
    from lstm_trading.runs.candles import candles_for_moments

    tolerance = settings.gate_tolerance
    try:
        new = load_bundle(candidate)
    except ModelFileError as error:
        return GateResult(False, f"the new model does not load: {error}", tolerance=tolerance)
    horizon = source.config.labels.horizon_seconds
    start = boundary - settings.gate_span_s
    if current is not None and current.boundary is None and current.data_end is not None:
        # held out from both: RUN's own model (the current one at the first boundary) may have trained on the
        # window's trades, and scoring it there would favour it; a retrained model never did (its training
        # stops before the window)
        start = max(start, current.data_end + horizon)
    times = np.asarray(samples.start_time, dtype=np.int64)  # the labelled moments that have a window
    chosen = (times >= start) & (times + horizon <= boundary)
    gate_times = times[chosen]
    labels = np.asarray(samples.label, dtype=np.int64)[chosen]
    moments = np.append(gate_times, boundary)  # the boundary too: its first decision must be finite
    candles = candles_for_moments(
        source.db, source.symbol, int(moments.min()), boundary, new.history_minutes, needed_by="the gate's trades"
    )

    def log_loss(bundle: Any) -> float:
        frame = predict_moments(bundle, candles, moments, workers=1)
        proba = frame[["p_buy", "p_sell", "p_invalid"]].to_numpy(dtype=np.float64)
        if not np.isfinite(proba).all():
            raise ModelFileError("its probabilities are not finite")
        if len(labels) == 0:
            return float("nan")
        scored = proba[: len(labels)]
        return float(classification_metrics(labels, scored.argmax(axis=1), scored)["log_loss"])

    try:
        new_loss = log_loss(new)
    except ModelFileError as error:
        return GateResult(False, f"the new model does not predict finite values: {error}", tolerance=tolerance)
    except DataError as error:  # not shown to predict at the boundary: the current model stays, if there is one
        kept = "; the current model stays" if current is not None else ""
        return GateResult(current is None, f"not compared: {error}{kept}", tolerance=tolerance)
    if len(labels) == 0:
        return gate_verdict(0.0, None, 0, tolerance)
    current_loss = None
    if current is not None:
        try:
            current_loss = log_loss(load_bundle(current.path))
        except (ModelFileError, DataError) as error:  # the current model fails where the new one works
            return GateResult(
                True, f"the current model could not be scored ({error})", len(labels), new_loss, None, tolerance
            )
    return gate_verdict(new_loss, current_loss, len(labels), tolerance)


def _thresholds(task: Any, labelled: Labelled, source: RetrainSource, end: int) -> tuple[float, float] | None:
    """The fold's min-prob / min-EV chosen on its validation period, as walk-forward's `--sweep` chooses them."""
    from lstm_trading.predict import Features
    from lstm_trading.runs.candles import symbol_funding
    from lstm_trading.runs.walkforward import FoldSignals, _saved_val_signals, fold_thresholds

    validation = _saved_val_signals(task)
    fold = FoldSignals(task.run_name, task.test_start, end, validation, validation)
    features = Features(labelled.matrix, labelled.matrix.values)
    backtest = source.config.backtest
    funding = symbol_funding(source.db, source.symbol, backtest.funding).schedule
    chosen = fold_thresholds([fold], labelled.candles, features, backtest, funding)[task.run_name].config(backtest)
    return chosen.min_prob, chosen.min_ev


def _candidate(source: RetrainSource, task: Any, thresholds: tuple[float, float] | None) -> ModelInUse:
    from lstm_trading.models.bundle import load_bundle

    bundle = load_bundle(task.run_dir)
    return ModelInUse(
        name=task.run_name,
        path=str(task.run_dir),
        run=str(source.run_dir.resolve()),
        data_end=bundle.training.data.last_timestamp,
        trained_at=float(task.test_start),
        boundary=task.test_start,
        min_prob=None if thresholds is None else thresholds[0],
        min_ev=None if thresholds is None else thresholds[1],
    )


# --- a replay that retrains ---


def retrained_period(
    source: RetrainSource,
    settings: RetrainSettings,
    *,
    start: int,
    end: int,
    folder: Path,
    echo: Any = None,
) -> RetrainedPeriod:
    """Train the model of every boundary `start + k * every` before `end` (the walk-forward's folds with their
    first fold at `start`), gate them in time order, and stitch the signals of the model in force at each moment
    of `[start, end)` (a skipped or rejected boundary keeps the model before it; none before the first)."""
    from lstm_trading.backtest.execution import CandleArrays
    from lstm_trading.backtest.simulation import decision_moments
    from lstm_trading.runs.walkforward import build_tasks, finished_outcome, run_tasks

    say = echo or (lambda _: None)
    config = source.config
    settings.check_horizon(config.labels.horizon_seconds)
    settings.check_kind(source.kind)
    labelled = _labelled(source)
    fold_settings = _fold_settings(source, settings)
    try:
        plan = plan_folds(
            labelled.samples, labelled.matrix.timestamps, end, fold_settings, seed=config.train.seed, first=start
        )
    except DataError as error:  # every boundary skipped: the replay trades nothing, and says why
        say(f"warning: no retraining boundary has a model: {error}")
        plan = FoldPlan(start, [], [])
    wf_settings = _walkforward_settings(source, settings, fold_workers=settings.fold_workers)
    wf_folder = WalkForwardFolder(folder)
    tasks = build_tasks(
        config,
        wf_settings,
        _loaded(source, labelled, plan, end),
        wf_folder,
        db=source.db,
        symbol=source.symbol,
        settings_sha256=_settings_digest(source, settings),
    )
    outcomes: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for task in tasks:
        try:
            finished = finished_outcome(task)
        except LstmTradingError:  # trained with other settings or candles: a replay's folds are trained again
            finished = None
        if finished is not None:
            outcomes[task.run_name] = finished
    pending = [task for task in tasks if task.run_name not in outcomes]
    if pending:
        say(f"retraining: training {len(pending)} of {len(tasks)} boundary models ({len(tasks) - len(pending)} kept)")

    def report(task: Any, outcome: Any, error: BaseException | None) -> None:
        if outcome is not None:
            outcomes[task.run_name] = outcome
        else:
            assert error is not None  # an executor passes the error of every fold it has no outcome for
            failures[task.run_name] = error_line(error)

    run_tasks(pending, wf_settings, report)
    by_start = {task.test_start: task for task in tasks}
    folds = {fold.test_start: fold for fold in plan.folds}
    skipped = {fold.test_start: fold.reason for fold in plan.skipped}
    steps = boundaries(start, end, settings.every_s)
    horizon = config.labels.horizon_seconds
    results: list[BoundaryOutcome] = []
    current: ModelInUse | None = None
    for k, boundary in enumerate(steps):
        period_end = min(boundary + settings.every_s, end)
        name = fold_name(k, boundary)
        record: dict[str, Any] = {"boundary": boundary, "k": k, "name": name, "model": None, "gate": None}
        found = by_start.get(boundary)
        if found is None:
            reason = skipped.get(boundary, "no fold planned")
            record.update(status="skipped", reason=reason)
        elif (task := found).run_name in failures:
            record.update(
                status="failed", reason=failures[task.run_name], window=_window(folds[boundary], settings, horizon)
            )
        else:
            record["window"] = _window(folds[boundary], settings, horizon)
            record["seconds"] = (outcomes[task.run_name].record.get("seconds") or {}).get("total")
            thresholds = _thresholds(task, labelled, source, period_end) if settings.sweep else None
            candidate = _candidate(source, task, thresholds)
            if settings.gate:
                gate = gate_check(source, settings, task.run_dir, current, labelled.samples, boundary)
            else:
                gate = GateResult(True, "--gate off", tolerance=settings.gate_tolerance)
            record.update(
                status="finished" if gate.passed else "rejected",
                reason=gate.reason,
                gate=gate.record(),
                model=candidate.record(),
                accepted=gate.passed,
            )
            if gate.passed:
                current = candidate
        results.append(BoundaryOutcome(boundary, period_end, record, current))
    everything = CandleArrays.from_frame(labelled.candles)
    period = everything.between(start, end)
    if len(period) == 0:
        raise DataError(
            f"no candles from {format_time(start)} to {format_time(end)}; choose --from/--to inside the data"
        )
    end = min(end, int(period.timestamp[-1]) + MINUTE)
    moments = decision_moments(start, end, config.backtest.every_seconds)
    if len(moments) == 0:
        raise DataError(f"no decision moment from {format_time(start)} to {format_time(end)}")
    signals = _stitched(source, results, by_start, moments, end)
    return RetrainedPeriod(period, end, moments, signals, results, settings.record())


def _stitched(
    source: RetrainSource, results: list[BoundaryOutcome], tasks: dict[int, Any], moments: np.ndarray, end: int
) -> PrecomputedSignals:
    """Each moment's signal from the model in force at it: a boundary's own model from its fold's saved signals
    (what walk-forward stitches), a kept one predicted over the period as `backtest` would; none: not usable."""
    from lstm_trading.backtest.simulation import period_signals
    from lstm_trading.models.bundle import load_bundle
    from lstm_trading.runs.candles import candles_for_moments
    from lstm_trading.runs.walkforward import _saved_signals

    levels = source.config.backtest.levels
    every = source.config.backtest.every_seconds
    proba = np.tile([0.0, 0.0, 1.0], (len(moments), 1))
    sl = np.zeros(len(moments))
    tp = np.zeros(len(moments))
    usable = np.zeros(len(moments), dtype=bool)
    for outcome in results:
        model = outcome.in_force
        period_end = min(outcome.end, end)
        inside = (moments >= outcome.boundary) & (moments < period_end)
        if model is None or not inside.any():
            continue
        if model.boundary == outcome.boundary:
            signals = _saved_signals(tasks[outcome.boundary])
        else:
            bundle = load_bundle(model.path)
            candles = candles_for_moments(
                source.db, source.symbol, outcome.boundary, period_end, bundle.history_minutes,
                needed_by="the kept model's period",
            )  # fmt: skip
            signals = period_signals(bundle, candles, outcome.boundary, period_end, every, workers=1).signals
        signals = signals.with_levels(levels)
        index = {int(t): i for i, t in enumerate(signals.at)}
        for row in np.flatnonzero(inside):
            i = index.get(int(moments[row]))
            if i is None:
                continue
            proba[row], sl[row], tp[row] = signals.proba[i], signals.stop_loss_pct[i], signals.take_profit_pct[i]
            usable[row] = True if signals.usable is None else bool(signals.usable[i])
    return PrecomputedSignals(moments, proba, sl, tp, usable)


# --- the live loop's background training ---


@dataclass(frozen=True)
class LiveJob:
    """One boundary's training for the paper or live loop (picklable: it runs in a process of its own)."""

    source: RetrainSource
    settings: RetrainSettings
    boundary: int
    k: int
    current: ModelInUse | None
    folder: Path
    warm_from: str | None = None  # --warm-start: the run folder whose weights and scalers the model starts from

    @property
    def name(self) -> str:
        return fold_name(self.k, self.boundary)

    @property
    def result_path(self) -> Path:
        return self.folder / "results" / f"{self.name}.json"

    @property
    def snapshot(self) -> Path:
        return self.folder / "snapshots" / f"{self.name}.db"


def snapshot_database(db: Path, target: Path) -> None:
    """A private copy of the candle database for one training, by SQLite's online backup (consistent while the
    loop writes). Why a copy: the training process then never opens the loop's database. Two processes sharing a
    WAL database are safe only if no process opens the file by other means while SQLite has it open (closing any
    descriptor of it drops the process's POSIX locks), and the candle store reads each file's header with
    `open()`; a copy also freezes the training's input at the boundary."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    source, copy = sqlite3.connect(db), sqlite3.connect(target)
    try:
        source.backup(copy)
    except sqlite3.Error as error:
        raise DataError(f"{db}: cannot copy the candles for the retraining ({error})") from None
    finally:
        copy.close()
        source.close()


def run_live_job(job: LiveJob) -> dict[str, Any]:
    """Train, gate and record one boundary's model; `results/NAME.json` is written last (whatever happened)."""
    started = time.time()
    try:
        record = _train_live(job)
    except Exception as error:  # noqa: BLE001 - a failed training keeps the current model; the log says why
        record = {"status": "failed", "reason": error_line(error)}
    finally:
        job.snapshot.unlink(missing_ok=True)
    record = {"boundary": job.boundary, "k": job.k, "name": job.name, **record, "seconds": time.time() - started}
    job.result_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(job.result_path, json.dumps(json_safe(record), allow_nan=False) + "\n")
    return record


def _train_live(job: LiveJob) -> dict[str, Any]:
    """The fold that starts at the boundary, trained on the candles before it (its test period is the future)."""
    from lstm_trading.runs.walkforward import build_tasks, train_fold

    source, settings, boundary = job.source, job.settings, job.boundary
    # no pool inside the job, no feature cache beside a snapshot that is deleted after it
    config = source.config.with_overrides("runtime", workers=1, cache=False)
    source = replace(source, config=config, db=job.snapshot, recorded_db=source.db)
    settings.check_horizon(source.config.labels.horizon_seconds)
    labelled = _labelled(source)
    before = labelled.matrix.timestamps[labelled.matrix.timestamps < boundary]
    # the test period has not happened yet: the boundary, where the loop decides next, stands for it
    usable = np.append(before, boundary)
    try:
        plan = plan_folds(
            labelled.samples,
            usable,
            boundary + settings.every_s,
            _fold_settings(source, settings),
            seed=source.config.train.seed,
            first=boundary,
        )
    except (DataError, ConfigError) as error:
        return {"status": "skipped", "reason": str(error)}
    fold = replace(plan.folds[0], k=job.k, test_end=boundary)
    window = _window(fold, settings, source.config.labels.horizon_seconds)
    wf_settings = _walkforward_settings(source, settings, fold_workers=1)
    (task,) = build_tasks(
        source.config,
        wf_settings,
        _loaded(source, labelled, FoldPlan(boundary, [fold], []), boundary),
        WalkForwardFolder(job.folder),
        db=source.db,
        symbol=source.symbol,
        settings_sha256=_settings_digest(source, settings),
    )
    task = replace(task, predict_test=False)
    if settings.warm_start and job.warm_from is not None:  # the model before carries on, as walk-forward's folds
        task = replace(task, warm_from=Path(job.warm_from))
    train_fold(task)
    thresholds = _thresholds(task, labelled, source, boundary) if settings.sweep else None
    candidate = _candidate(source, task, thresholds)
    if settings.gate:
        gate = gate_check(source, settings, task.run_dir, job.current, labelled.samples, boundary)
    else:
        gate = GateResult(True, "--gate off", tolerance=settings.gate_tolerance)
    return {
        "status": "trained",
        "accepted": gate.passed,
        "reason": gate.reason,
        "window": window,
        "gate": gate.record(),
        "model": candidate.record(),
    }


def _lock_path(job: LiveJob) -> Path:
    return job.folder / "locks" / f"{job.name}.lock"


def _token_path(job: LiveJob) -> Path:
    return job.folder / "locks" / f"{job.name}.token"


def training_alive(job: LiveJob) -> bool:
    """Whether a training process of this boundary holds its lock: one a killed loop left running (its parent's
    SIGKILL does not stop it), which a restart waits for instead of training the same folder beside it. An flock,
    not a POSIX record lock, so opening and closing the file here drops no lock of this process's."""
    path = _lock_path(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _job_main(job: LiveJob, token: str) -> None:
    """The training process: it holds the boundary's lock while it runs, and trains only if it is still the
    training the loop asked for last (a restart while it was starting up asked for another)."""
    from lstm_trading.runs.walkforward import pin_threads

    with open(_lock_path(job), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # after any other training of this boundary has ended
        if job.result_path.exists():
            return  # it finished: its result is the one
        try:
            wanted = _token_path(job).read_text(encoding="utf-8")
        except OSError:
            wanted = None
        if wanted != token:
            return  # a restarted loop started this boundary's training again, in another process
        pin_threads()
        run_live_job(job)


class _DoneJob:
    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def done(self) -> bool:
        return True

    def result(self) -> dict[str, Any]:
        return self.record


class _AdoptedJob:
    """A training a killed loop left running: done when its result is written or it has ended."""

    adopted = True  # the loop logs that it waits for it, not that it started one

    def __init__(self, job: LiveJob) -> None:
        self.job = job

    def done(self) -> bool:
        return self.job.result_path.exists() or not training_alive(self.job)

    def result(self) -> dict[str, Any]:
        found = _read_result(self.job.result_path)
        if found is not None:
            return found
        return {"status": "failed", "reason": "the training process a stop left running ended without a result"}


class _ProcessJob:
    def __init__(self, process: Any, job: LiveJob) -> None:
        self.process = process
        self.job = job

    def done(self) -> bool:
        # the result is written last, whole: the process may still be shutting its interpreter down
        return self.job.result_path.exists() or not self.process.is_alive()

    def result(self) -> dict[str, Any]:
        self.process.join(timeout=10)
        found = _read_result(self.job.result_path)
        if found is not None:
            return found
        return {
            "status": "failed",
            "reason": f"the training process ended (exit code {self.process.exitcode}) without a result",
        }


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


class FoldTrainer:
    """The live loop's `Trainer`: each boundary's fold in a spawned process (decisions go on meanwhile), or, with
    `inline`, in this process before the call returns (tests, and machines where a process cannot start)."""

    def __init__(self, source: RetrainSource, settings: RetrainSettings, *, inline: bool = False) -> None:
        self.source = source
        self.settings = settings
        self.inline = inline

    def _job(self, request: RetrainRequest) -> LiveJob:
        return LiveJob(
            self.source, self.settings, request.boundary, request.k, request.current, request.folder, request.warm_from
        )

    def start(self, request: RetrainRequest) -> Any:
        job = self._job(request)
        token = uuid.uuid4().hex  # the training asked for last: one that a killed loop started stands down
        if not self.inline:
            if training_alive(job):  # left running by a killed loop: its result is the one
                return _AdoptedJob(job)
            found = _read_result(job.result_path)
            if found is not None:  # it finished between the loop's look for a result and here
                return _DoneJob(found)
            write_text_atomic(_token_path(job), token)  # before the copy, which can take a while
        job.result_path.unlink(missing_ok=True)
        snapshot_database(self.source.db, job.snapshot)  # here, before the process starts: it never opens the db
        if self.inline:
            from lstm_trading.runs.walkforward import _one_thread

            with _one_thread():
                return _DoneJob(run_live_job(job))
        context = multiprocessing.get_context("spawn")  # fork would copy the loop's threads and open database
        process = context.Process(target=_job_main, args=(job, token), name=f"retrain-{job.name}", daemon=True)
        process.start()
        return _ProcessJob(process, job)

    def finished(self, request: RetrainRequest) -> dict[str, Any] | None:
        return _read_result(self._job(request).result_path)
