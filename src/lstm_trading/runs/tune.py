"""`tune`: search the pipeline's settings with Optuna, each trial scored on the walk-forward folds of a tuning
period, and judge the best configuration once on a final holdout that no trial has seen (issue 15).

Searching is where backtests lie most (try enough settings and one looks good), so the search keeps its score
apart from the data that judges it:

- **Periods.** The last `--holdout` of the data (default 20 % of its time span) is the holdout; the tuning
  period ends one label horizon (the largest any trial uses) before it, so no trial's label can see into it.
  A trial walk-forwards the tuning period only (`WalkForwardSettings.until`: no candle at or after its end is
  read); the holdout's walk-forward tests from the holdout's start (`first_test`), training on what came before.
- **Score.** `oos_log_loss_skill`: the mean over folds of `1 - LL / LL_prior`, the test log-loss of the
  prior-corrected probabilities against the fold's class prior (raw log-loss would reward label settings that
  make almost everything Invalid); `oos_expectancy`: the stitched out-of-sample net return per trade after
  costs. Every trial also records the daily Sharpe ratio of its stitched backtest, so the best trial's Sharpe
  ratio can be deflated by the number of trials and their spread (the deflated Sharpe ratio).
- **The study.** One process owns it (ask and tell) in Optuna's storage (SQLite in --out by default, any
  database URL for several machines) and hands trials to a local process pool or to Ray Tune; TPE samples, a
  median pruner (ASHA on Ray) stops trials whose scores fall behind. After each fold the trial reports, at the
  fold's number as the step, its log-loss skill, or for `oos_expectancy` the expectancy per trade of its trades
  so far (`RunningExpectancy`: the folds finished, stitched and traded as the stitched backtest trades them),
  from the first fold with a trade on (before it there is nothing to judge, so nothing is reported).
  Trials left running by a killed `tune` are failed and queued again with the same parameters on the next
  start (by their owner's process id on this machine, by Optuna's heartbeat elsewhere); `--trials` counts
  completed plus pruned trials, so a rerun continues to that count.

A trial's evaluator is a seam: `tune_run(..., evaluator=...)` takes any `Evaluator`, which tests use to plant a
best region under a cheap stand-in trainer; the real one is `walkforward_trial`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lstm_trading.core.atomic import write_text_atomic
from lstm_trading.core.config import Config, dump_config
from lstm_trading.core.errors import ConfigError, DataError, LstmTradingError, error_line
from lstm_trading.core.jsonio import json_safe
from lstm_trading.core.machine import usable_cores
from lstm_trading.core.run_folder import STATS_FILE, RunFolder, WalkForwardFolder
from lstm_trading.core.timeutil import MINUTE, format_time
from lstm_trading.runs.fold_processes import one_thread_children
from lstm_trading.runs.tune_space import SearchSpace, apply_params
from lstm_trading.runs.walkforward import (
    TradeSource,
    WalkForwardResult,
    WalkForwardSettings,
    settings_differences,
    start_ray,
)

LOG_LOSS_SKILL = "oos_log_loss_skill"
EXPECTANCY = "oos_expectancy"
OBJECTIVES = (LOG_LOSS_SKILL, EXPECTANCY)
EXECUTORS = ("local", "ray")
DEFAULT_HOLDOUT = 0.2
TRIAL_RANDOM_RUNS = 100  # a trial's p-value is not its score: a few random-entry runs keep its backtest cheap
HEARTBEAT_SECONDS = 20
GRACE_SECONDS = 120  # another machine's trial without a heartbeat this long was left by a stopped tune
MAX_RETRIES = 2  # a trial killed this many times is not queued again
FAILURE_LIMIT = 3  # this many failed trials and none completed: the settings fail, not the parameters
TRIAL_KEY = "__trial_number"  # the Optuna trial's number, in a Ray trial's config
THRESHOLDS = ("backtest.min_prob", "backtest.min_ev")  # searched: each fold's validation sweep is turned off


# --- settings, folder, periods ---


@dataclass(frozen=True)
class TuneSettings:
    """The study's own settings (the walk-forward's are a `WalkForwardSettings`, the stages' a `Config`)."""

    space: Path
    trials: int = 50
    holdout: float = DEFAULT_HOLDOUT  # the share of the data's time span, at its end, kept from every trial
    holdout_seconds: int | None = None  # or this span (`--holdout 7d`)
    storage: str | None = None  # an Optuna storage URL; None: sqlite in --out
    study: str | None = None  # None: the --out folder's name
    objective: str = LOG_LOSS_SKILL
    executor: str = "local"
    ray_address: str | None = None
    workers: int | None = None  # trials at once, one process each; None: one per core
    seed: int | None = None  # the sampler's; None: train.seed
    prune: bool = True  # False: no trial is stopped early (benchmarks/tune.py: every executor runs the same trials)


@dataclass(frozen=True)
class TuneFolder:
    """Every path of a tune folder."""

    root: Path

    @property
    def study_db(self) -> Path:
        return self.root / "study.db"

    @property
    def trials_table(self) -> Path:
        return self.root / "trials.csv"

    @property
    def best(self) -> Path:
        return self.root / "best.toml"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def holdout(self) -> Path:
        return self.root / "holdout"

    @property
    def trials(self) -> Path:
        return self.root / "trials"

    def trial(self, number: int) -> Path:
        return self.trials / f"{number:05d}"

    @property
    def ray(self) -> Path:
        return self.root / "ray"


@dataclass(frozen=True)
class Periods:
    """`[data_start, tune_end)` is what trials may read; `[holdout_start, data_end)` is the holdout; between
    them one label horizon, so no label of the tuning period reaches into the holdout."""

    data_start: int
    tune_end: int
    holdout_start: int
    data_end: int

    def document(self) -> dict[str, Any]:
        return {
            "tuning": [format_time(self.data_start), format_time(self.tune_end)],
            "holdout": [format_time(self.holdout_start), format_time(self.data_end)],
            "tune_end": self.tune_end,
            "holdout_start": self.holdout_start,
            "data_end": self.data_end,
        }


def label_horizon(config: Config, space: SearchSpace, walk: WalkForwardSettings, source: TradeSource) -> int:
    """The longest label horizon any trial uses: the labeller's (searched or not), or the journal's recorded
    one, else `--purge`, else `split.purge_seconds` (as the walk-forward takes it)."""
    if source.journal is None:
        return int(space.largest("labels.horizon_seconds", config.labels.horizon_seconds))
    from lstm_trading.data.journal import read_journal

    recorded = read_journal(source.journal, sheet=source.sheet, skip_bad_rows=source.skip_bad_rows).meta
    if recorded.get("horizon_seconds"):
        return int(recorded["horizon_seconds"])
    if walk.purge_seconds is not None:
        return walk.purge_seconds
    return int(space.largest("split.purge_seconds", config.split.purge_seconds))


def plan_periods(db: Path, symbol: str, settings: TuneSettings, walk: WalkForwardSettings, horizon: int) -> Periods:
    """Cut the data's time span into the tuning period, the gap of one label horizon and the holdout."""
    from lstm_trading.data.store import CandleStore

    with CandleStore(db) as store:
        held = store.time_range(symbol)
    if held is None:
        raise DataError(f"{db}: no {symbol} candles; choose the symbol with --symbol")
    data_start, data_end = int(held[0]), int(held[1]) + MINUTE
    span = data_end - data_start
    if settings.holdout_seconds is not None:
        holdout = settings.holdout_seconds
    else:
        if not 0 < settings.holdout < 1:
            raise ConfigError(f"--holdout: must be a share of the data in (0 %, 100 %), got {settings.holdout:.0%}")
        holdout = round(settings.holdout * span / MINUTE) * MINUTE
    holdout_start = data_end - holdout
    tune_end = holdout_start - horizon
    if holdout <= 0 or tune_end - data_start <= walk.train_span:
        raise ConfigError(
            f"--holdout: the data runs from {format_time(data_start)} to {format_time(data_end)}; a holdout from "
            f"{format_time(holdout_start)} and the label horizon of {horizon / 3600:g} h before it leave "
            f"{max(tune_end - data_start, 0) / 86_400:.1f} days to tune on, not more than --train-span "
            f"({walk.train_span / 86_400:g} days); choose a smaller --holdout or a shorter --train-span"
        )
    return Periods(data_start, tune_end, holdout_start, data_end)


# --- one trial ---


class TrialPruned(Exception):  # noqa: N818 - Optuna's name for the same thing
    """Raised by a trial's fold report when the pruner stops the trial."""


FoldReport = Callable[[int, float], None]  # (fold index, fold score); raises TrialPruned to stop the trial


@dataclass(frozen=True)
class TrialTask:
    """Everything a trial's evaluator needs (picklable: it travels to a worker process or a Ray trial)."""

    number: int
    params: dict[str, Any]
    config: Config  # the base configuration with the trial's parameters
    walkforward: WalkForwardSettings  # the tuning period's (until = its end)
    objective: str
    db: Path
    symbol: str
    source: TradeSource
    out_dir: Path  # the trial's walk-forward folder


@dataclass(frozen=True)
class TrialOutcome:
    """A finished trial: its objective and fold scores, and its stitched backtest's daily Sharpe ratio."""

    value: float
    fold_scores: tuple[float | None, ...]  # by fold number (folds.csv's k); None: skipped, or no score
    sharpe: float | None = None  # daily, not annualised; None where undefined (no trade, flat equity)
    days: int = 0
    skewness: float | None = None
    kurtosis: float | None = None
    trades: int = 0
    expectancy_pct: float | None = None
    tested_to: int | None = None  # the end of its last fold's test period: before the tuning period's end


# A trial's scorer: `walkforward_trial`, or a stand-in (tests). With --workers > 1 or Ray it travels to another
# process, so there it must be picklable (a module-level function).
Evaluator = Callable[[TrialTask, FoldReport], TrialOutcome]


def log_loss_skill(log_loss: float | None, prior: float | None) -> float | None:
    """`1 - LL / LL_prior`: above 0 where the model beats its fold's class prior; None where undefined."""
    if log_loss is None or prior is None or not prior > 0 or not math.isfinite(log_loss):
        return None
    return 1.0 - float(log_loss) / float(prior)


@dataclass(frozen=True)
class Scored:
    """A walk-forward scored by the objective, with its stitched backtest's significance figures."""

    value: float | None
    fold_scores: tuple[float | None, ...]  # by fold number (folds.csv's k); None: skipped, or no score
    significance: dict[str, Any]
    tested_to: int | None


def score_walkforward(result: WalkForwardResult, objective: str, kind: str) -> Scored:
    """The objective of a finished walk-forward: the mean fold skill, or the stitched expectancy per trade;
    the fold scores (skill, or the fold's own trades' expectancy) by fold number, as the pruner's steps."""
    rows = [row for row in result.rows if row["status"] == "trained" and row["model"] == kind]
    if objective == LOG_LOSS_SKILL:
        by_fold = {row["k"]: log_loss_skill(row["log_loss"], row["prior_log_loss"]) for row in rows}
        scored = [s for s in by_fold.values() if s is not None]
        value = float(np.mean(scored)) if scored else None
    else:
        by_fold = {row["k"]: row["expectancy_pct"] for row in rows}
        value = result.verdicts[kind]["expectancy_pct"]
    scores = [None if (s := by_fold.get(k)) is None else float(s) for k in range(max(by_fold, default=-1) + 1)]
    stats_path = WalkForwardFolder(result.out_dir).oos(None) / STATS_FILE
    stats = json.loads(stats_path.read_text(encoding="utf-8"))
    tested_to = result.summary["period"]["end"] if result.summary else None
    return Scored(value, tuple(scores), stats["model"]["significance"], tested_to)


def _unscored(objective: str) -> str:
    return "no fold with test trades" if objective == LOG_LOSS_SKILL else "no trade out of sample"


class RunningExpectancy:
    """A trial's `oos_expectancy` so far, for the pruner: the test-period signals of its folds finished, stitched
    in time order and traded through the walk-forward's decision rule (each fold's own min-prob / min-EV with
    --sweep) and position loop, and the net return per trade after costs of those trades. The model's fills only
    (no baselines, no random-entry runs), so it costs a fraction of a fold; the candles run on for the longest
    hold after the last test period (within the tuning period), so a position open at a fold's end closes as in
    the stitched backtest. These are the stitched backtest's trades of the folds so far, and after the last fold
    the trial's objective, except where a skipped fold's period (decided by the model before it in the stitched
    backtest) is not traded here, or the last test period ends before the tuning period (its open position
    closes at that end there, runs on here)."""

    def __init__(self, config: Config, walk: WalkForwardSettings, db: Path, symbol: str) -> None:
        self.config = config
        self.walk = walk
        self.db = db
        self.symbol = symbol
        self.folds: list[Any] = []  # walkforward.FoldSignals, in time order
        self.cells: dict[str, Any] = {}  # fold name -> its BacktestConfig at the thresholds its validation chose
        self.candles: pd.DataFrame | None = None  # from the first test period's start to the last one's end

    def add(self, fold: Any) -> float | None:
        """Fold `fold` (a walkforward.FoldTask) has finished: the expectancy in % per trade of the trades of
        every fold so far; None while they have made no trade (a fold without trades has no expectancy)."""
        from lstm_trading.backtest.execution import CandleArrays, Thresholds, decide
        from lstm_trading.backtest.simulation import return_pct, simulate
        from lstm_trading.runs.candles import symbol_funding
        from lstm_trading.runs.walkforward import FoldSignals, read_fold_signals

        backtest = self.config.backtest
        folder = RunFolder(fold.run_dir)
        validation = read_fold_signals(WalkForwardFolder.fold_val_signals(folder)) if self.walk.sweep else None
        signals = read_fold_signals(WalkForwardFolder.fold_signals(folder))
        mine = FoldSignals(fold.run_name, fold.test_start, fold.test_end, signals, validation, fold.run_dir)
        self.folds = sorted([*self.folds, mine], key=lambda f: f.test_start)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # missing funding rates and the like: the stitched backtest says so
            funding = symbol_funding(self.db, self.symbol, backtest.funding).schedule
            if validation is not None:
                self.cells[mine.run] = self._swept(mine, funding)
            start, end = self.folds[0].test_start, self.folds[-1].test_end + backtest.max_hold_seconds
            if self.walk.until is not None:
                end = min(end, self.walk.until)  # the trial reads nothing of the holdout, nor of the gap before it
            period = CandleArrays.from_frame(self._read(start, end)).between(start, end)
            stitched = self.folds[0].signals
            for other in self.folds[1:]:
                stitched = stitched.concatenated(other.signals)
            stitched = stitched.with_levels(backtest.levels)
            thresholds = None
            if validation is not None:
                cells = [self.cells[f.run] for f in self.folds for _ in range(len(f.signals))]
                thresholds = Thresholds(
                    np.array([cell.min_prob for cell in cells], dtype=np.float64),
                    np.array([cell.min_ev for cell in cells], dtype=np.float64),
                )
            decisions = decide(
                stitched.proba, stitched.stop_loss_pct, stitched.take_profit_pct, backtest, stitched.usable, thresholds
            )
            model = simulate(
                period, stitched.at, decisions.direction, stitched.stop_loss_pct, stitched.take_profit_pct, backtest,
                probability=decisions.probability, funding=funding,
            )  # fmt: skip
        returns = [return_pct(fill) for fill in model.fills]
        return float(np.mean(returns)) if returns else None

    def _swept(self, fold: Any, funding: Any) -> Any:
        """The fold's backtest settings at the min-prob / min-EV its validation period chose (walkforward's rule)."""
        from typing import cast

        from lstm_trading.data.store import CandleStore
        from lstm_trading.predict import Features
        from lstm_trading.runs.walkforward import fold_thresholds

        start = int(fold.validation.at[0]) if len(fold.validation) else fold.test_start
        with CandleStore(self.db) as store:
            candles = store.read(self.symbol, start=start, end=fold.test_start)
        # the sweep reads candles and signals only: no feature row (the journal baseline's) is needed
        chosen = fold_thresholds([fold], candles, cast(Features, None), self.config.backtest, funding)
        return chosen[fold.run].config(self.config.backtest)

    def _read(self, start: int, end: int) -> pd.DataFrame:
        """The candles of `[start, end)`, read once: each fold's test period adds only its own."""
        from lstm_trading.data.store import CandleStore

        with CandleStore(self.db) as store:
            if self.candles is None or self.candles.empty or start < int(self.candles["timestamp"].iloc[0]):
                self.candles = store.read(self.symbol, start=start, end=end)
            else:
                held = int(self.candles["timestamp"].iloc[-1]) + MINUTE
                if end > held:
                    more = store.read(self.symbol, start=held, end=end)
                    self.candles = pd.concat([self.candles, more], ignore_index=True)
        return self.candles


def walkforward_trial(task: TrialTask, report: FoldReport) -> TrialOutcome:
    """The real evaluator: the trial's configuration walk-forwarded over the tuning period, its folds one after
    another in this process, each fold's score reported as it finishes, at its fold number as the step: its
    log-loss skill, or the expectancy of the trial's trades so far (`RunningExpectancy`; from the first fold with
    a trade on: before it there is no expectancy to judge)."""
    from lstm_trading.runs.walkforward import walkforward_run

    kind = task.walkforward.model
    running = RunningExpectancy(task.config, task.walkforward, task.db, task.symbol)

    def on_fold(fold: Any, outcome: Any) -> None:
        if fold.kind != kind:
            return
        if task.objective == EXPECTANCY:
            so_far = running.add(fold)
            if so_far is not None:
                report(int(fold.k), so_far)
            return
        score = log_loss_skill(outcome.record.get("log_loss"), outcome.record.get("prior_log_loss"))
        if score is not None:
            report(int(fold.k), score)

    result = walkforward_run(
        task.config,
        task.walkforward,
        db=task.db,
        symbol=task.symbol,
        source=task.source,
        out=task.out_dir,
        echo=lambda _: None,
        on_fold=on_fold,
    )
    if result.failures:
        first = result.failures[0]
        raise DataError(f"fold {first.run} failed: {first.error}")
    scored = score_walkforward(result, task.objective, kind)
    if scored.value is None:
        raise DataError(f"{_unscored(task.objective)}: nothing to score")
    sig = scored.significance
    return TrialOutcome(
        value=float(scored.value),
        fold_scores=scored.fold_scores,
        sharpe=sig.get("sharpe_daily"),
        days=int(sig.get("days") or 0),
        skewness=sig.get("skewness"),
        kurtosis=sig.get("kurtosis"),
        trades=int(sig.get("trades") or 0),
        expectancy_pct=sig.get("expectancy_pct"),
        tested_to=scored.tested_to,
    )


@dataclass(frozen=True)
class TrialResult:
    """What a worker sends back: the outcome, or that the pruner stopped it, or its error (one line)."""

    outcome: TrialOutcome | None = None
    pruned: bool = False
    error: str | None = None
    seconds: float = 0.0


def run_trial(evaluator: Evaluator, task: TrialTask, report: FoldReport) -> TrialResult:
    """One trial, its error turned into a line (a worker's exception need not be picklable)."""
    started = time.perf_counter()
    try:
        outcome = evaluator(task, report)
    except TrialPruned:
        return TrialResult(pruned=True, seconds=time.perf_counter() - started)
    except Exception as error:  # noqa: BLE001 - the trial fails, the study goes on
        return TrialResult(error=error_line(error), seconds=time.perf_counter() - started)
    return TrialResult(outcome=outcome, seconds=time.perf_counter() - started)


def _pool_trial(evaluator: Evaluator, task: TrialTask, reports: Any, answers: Any) -> TrialResult:
    """A trial in a worker process: each fold score goes to the study's owner, which answers go on or stop."""

    def report(step: int, score: float) -> None:
        reports.put((task.number, step, score))
        if not answers.get():
            raise TrialPruned(f"trial {task.number} pruned after fold {step}")

    return run_trial(evaluator, task, report)


# --- the study: storage, identity, heartbeats, trials left running ---


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # the heartbeat and the retry callback are marked experimental; ask/tell heartbeats are ours (see _Heartbeat)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


class _RetryUnattributed:
    """Queue a trial left running again with its parameters, but not its user attributes: Optuna's callback
    copies them, and the error that failed it (or an outcome recorded before a kill elsewhere) would then stand
    in trials.csv beside the retry's own figures, or pass for a finished retry when the retry is killed. A
    class, not a closure: Ray's searcher pickles the storage that holds it."""

    def __init__(self) -> None:
        import optuna

        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
        self._retry = (retry or optuna.storages.RetryFailedTrialCallback)(max_retry=MAX_RETRIES)

    def __call__(self, study: Any, trial: Any) -> None:
        import copy

        unattributed = copy.copy(trial)
        unattributed.user_attrs = {}
        self._retry(study, unattributed)


def _retry_callback() -> Any:
    return _RetryUnattributed()


def open_storage(url: str) -> Any:
    """Optuna's database storage with heartbeats; a URL that cannot be opened is one line naming it."""
    import inspect

    import optuna

    _quiet_optuna()
    _refuse_foreign_sqlite(url)
    parameters = inspect.signature(optuna.storages.RDBStorage).parameters
    callback = (
        "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in parameters else "failed_trial_callback"
    )
    try:
        storage = optuna.storages.RDBStorage(
            url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS, **{callback: _retry_callback()}
        )
    except Exception as error:  # noqa: BLE001 - SQLAlchemy's and the drivers' errors: any of them means "cannot open"
        reason = error_line(error, name_type=False)
        raise ConfigError(
            f"--storage {url}: cannot open the study's storage ({reason}); give a database URL Optuna accepts, "
            "e.g. sqlite:///tune/study.db or postgresql://user@host/db"
        ) from None
    if storage.engine.dialect.name == "sqlite":
        _write_ahead(storage.engine)
    return storage


def _refuse_foreign_sqlite(url: str) -> None:
    """An existing SQLite file that is not an Optuna storage (the candle database, say) is refused before Optuna
    adds its tables to it."""
    import sqlite3

    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return  # RDBStorage says why it cannot be opened
    if not parsed.drivername.startswith("sqlite") or not parsed.database or parsed.database == ":memory:":
        return
    path = Path(parsed.database)
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise ConfigError(f"--storage {url}: {path} is not a SQLite database ({error})") from None
    if tables and "studies" not in tables:
        raise ConfigError(
            f"--storage {url}: {path} holds other tables ({', '.join(sorted(tables)[:3])}), not an Optuna study; "
            "give a new file, or one that tune made"
        )


def _write_ahead(engine: Any) -> None:
    """SQLite in write-ahead mode without an fsync per commit: a trial's dozen small writes took 10 ms each,
    and a killed process still loses nothing (only a power cut can lose the last commits, never the file)."""
    import sqlalchemy

    def pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(engine, "connect", pragmas)
    engine.dispose()  # the connections opened to create the tables reconnect with the pragmas


STUDY_ATTR = "lstm_trading"  # the study's: the space and settings its trials were scored with
OUTCOME_ATTR = "outcome"  # a finished trial's: its TrialOutcome


def _trades_document(source: TradeSource) -> Any:
    """What the trials were labelled with: the journal (its sheet, its rows' handling and its bytes, so a rerun on
    an edited journal is refused rather than continuing the study), or the first-touch labeller."""
    if source.journal is None:
        return "first-touch labels"
    import hashlib

    try:
        digest = hashlib.sha256(source.journal.read_bytes()).hexdigest()
    except OSError as error:
        raise DataError(f"{source.journal}: cannot read the journal ({error.strerror})") from None
    return {
        "journal": str(source.journal.resolve()),
        "sheet": source.sheet,
        "skip_bad_rows": source.skip_bad_rows,
        "sha256": digest,
    }


def open_study(storage: Any, name: str, document: dict[str, Any], sampler: Any, pruner: Any, url: str) -> Any:
    """The study `name`: created with `document` (the space and every setting a score depends on), or loaded
    when it was created with the same one; another one is refused before anything is written."""
    import optuna

    try:
        storage.get_study_id_from_name(name)
        exists = True
    except KeyError:
        exists = False
    if exists:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        recorded = study.user_attrs.get(STUDY_ATTR)
        maximizes = study.direction == optuna.study.StudyDirection.MAXIMIZE
        if recorded is None and maximizes and not study.trials:  # a stop between its creation and its settings
            study.set_user_attr(STUDY_ATTR, json_safe(document))
            return study
        if recorded is None or not maximizes:
            raise ConfigError(f"--study {name} in {url}: a study not made by lstm-trading tune; choose another --study")
        differing = settings_differences(recorded, document, "the study has")
        if differing:
            raise ConfigError(
                f"--study {name} in {url}: its trials were scored with other settings: {'; '.join(differing[:3])}"
                f"{' ...' if len(differing) > 3 else ''}; choose another --study or --out to start a new one"
            )
        return study
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler, pruner=pruner)
    study.set_user_attr(STUDY_ATTR, json_safe(document))
    return study


def sampler(seed: int, started: int) -> Any:
    """TPE seeded from (seed, trials so far): a rerun of a study draws on, not the first draws again (which
    would repeat its first trials' parameters)."""
    import optuna

    derived = seed if started == 0 else int.from_bytes(hashlib.sha256(f"{seed} {started}".encode()).digest()[:4], "big")
    return optuna.samplers.TPESampler(seed=derived, constant_liar=True)


def _owner_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _left_by_a_stopped_run(owner: str | None, here: str) -> bool:
    """A running trial whose owner was a `tune` process on this machine that is gone (or this very process,
    before this run): no heartbeat grace period to wait for."""
    if not owner:
        return True  # killed between ask and recording its owner
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return owner != here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def recover_trials(study: Any, owner: str, echo: Callable[[str], None]) -> None:
    """Trials left RUNNING by a stopped `tune` are failed and queued again with the same parameters: this
    machine's at once, another machine's when their heartbeat is older than the grace period."""
    import optuna

    before = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))}
    optuna.storages.fail_stale_trials(study)
    storage = study._storage
    retry = _retry_callback()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if _left_by_a_stopped_run(trial.user_attrs.get("owner"), owner):
            finished = trial.user_attrs.get(OUTCOME_ATTR)
            if finished is not None:  # killed between recording its outcome and telling the study: it is done
                with suppress(optuna.exceptions.UpdateFinishedTrialError):
                    storage.set_trial_state_values(
                        trial._trial_id, optuna.trial.TrialState.COMPLETE, [float(finished["value"])]
                    )
                echo(f"trial {trial.number} had finished when its tune stopped: recorded as complete")
                continue
            try:
                storage.set_trial_user_attr(trial._trial_id, "error", "left running by a stopped tune")
                storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # its owner, alive after all, or another machine finished it meanwhile
            retry(study, storage.get_trial(trial._trial_id))
    queued = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))]
    for trial in queued:
        if trial.number not in before and "failed_trial" in trial.system_attrs:
            echo(
                f"trial {trial.system_attrs['failed_trial']} was left running by a stopped tune: failed, and "
                f"queued again with the same parameters as trial {trial.number}"
            )


class _Heartbeat:
    """Records a heartbeat for each running trial every `HEARTBEAT_SECONDS` from a thread, so that another
    machine sharing the study can tell a live trial from one whose tune was killed."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="tune-heartbeat", daemon=True)

    def add(self, trial_id: int) -> None:
        self._storage.record_heartbeat(trial_id)
        with self._lock:
            self._ids.add(trial_id)

    def remove(self, trial_id: int) -> None:
        with self._lock:
            self._ids.discard(trial_id)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with self._lock:
                ids = sorted(self._ids)
            for trial_id in ids:
                try:
                    self._storage.record_heartbeat(trial_id)
                except Exception:  # noqa: BLE001, S112 - a locked database: the next beat tries again
                    continue

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def counts(study: Any) -> dict[str, int]:
    """Trials by state, lower case (complete, pruned, fail, running, waiting)."""
    found: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        found[trial.state.name.lower()] = found.get(trial.state.name.lower(), 0) + 1
    return found


def done(study: Any) -> int:
    """What `--trials` counts: completed plus pruned trials."""
    found = counts(study)
    return found.get("complete", 0) + found.get("pruned", 0)


# --- the owner: asks, starts, tells ---


@dataclass
class _Owner:
    """The process that owns the study: makes each trial's task, records its outcome, tells the study."""

    study: Any
    storage: Any  # the RDBStorage the study and Ray's searcher share
    space: SearchSpace
    settings: TuneSettings
    make_task: Callable[[int, dict[str, Any]], TrialTask]
    heartbeat: _Heartbeat
    tag: str
    folder: TuneFolder
    echo: Callable[[str], None]
    failed_now: int = 0
    completed_now: int = 0
    first_error: str | None = None
    running: dict[int, Any] = field(default_factory=dict)  # trial number -> its optuna Trial

    def ask(self) -> Any:
        trial = self.study.ask(self.space.distributions())
        self.start(trial)
        return trial

    def start(self, trial: Any) -> None:
        trial.set_user_attr("owner", self.tag)
        self.heartbeat.add(trial._trial_id)
        self.running[trial.number] = trial

    def task(self, trial: Any) -> TrialTask:
        return self.make_task(trial.number, dict(trial.params))

    def decide(self, number: int, step: int, score: float) -> bool:
        """A fold's score as the trial's intermediate value: True to go on, False when the pruner stops it."""
        trial = self.running[number]
        trial.report(score, step)
        return not trial.should_prune()

    def finish(self, trial: Any, result: TrialResult) -> None:
        """Record the trial's figures in its user attributes and tell its study (ours, or Ray's searcher's on the
        same storage); one line on the console."""
        import optuna

        study = trial.study
        self.heartbeat.remove(trial._trial_id)
        self.running.pop(trial.number, None)
        trial.set_user_attr("seconds", round(result.seconds, 3))
        shown = ", ".join(f"{name}={_shown(value)}" for name, value in sorted(trial.params.items()))
        if result.outcome is not None:
            outcome = result.outcome
            trial.set_user_attr(OUTCOME_ATTR, json_safe(asdict(outcome)))  # one attribute: one commit
            study.tell(trial, outcome.value)
            self.completed_now += 1
            folds = " ".join("-" if s is None else f"{s:+.3f}" for s in outcome.fold_scores)
            self.echo(
                f"trial {trial.number} ({shown}): {self.settings.objective} {outcome.value:+.4f} "
                f"(folds {folds}), {result.seconds:.0f} s"
            )
        elif result.pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            steps = len(study._storage.get_trial(trial._trial_id).intermediate_values)
            self.echo(f"trial {trial.number} ({shown}): pruned after {steps} fold(s), {result.seconds:.0f} s")
        else:
            trial.set_user_attr("error", result.error or "failed")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self.failed_now += 1
            self.first_error = self.first_error or f"trial {trial.number}: {result.error}"
            self.echo(f"trial {trial.number} ({shown}) failed: {result.error}")
        write_trials_table(self.study, self.space, self.folder.trials_table)

    def abandon(self) -> None:
        """A run interrupted (Ctrl-C, an error): its running trials are failed and queued again."""
        import optuna

        retry = _retry_callback()
        for trial in list(self.running.values()):
            self.heartbeat.remove(trial._trial_id)
            try:
                trial.set_user_attr("error", "interrupted")
                trial.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            except Exception:  # noqa: BLE001 - already told, or the storage is gone: nothing more to do
                continue
            retry(self.study, self.study._storage.get_trial(trial._trial_id))
        self.running.clear()

    def wanted(self) -> bool:
        """Whether to start another trial: `--trials` not reached (counting the running ones) and the
        settings not failing every trial."""
        if self.failed_now >= self.settings.trials:
            return False
        if self.completed_now == 0 and self.failed_now >= FAILURE_LIMIT and done(self.study) == 0:
            return False
        return done(self.study) + len(self.running) < self.settings.trials


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --- executors ---


def _workers(settings: TuneSettings) -> int:
    return max(1, settings.workers or usable_cores())


def run_local(owner: _Owner, evaluator: Evaluator) -> None:
    """Trials in this process (one worker), or in a pool of worker processes with one torch thread each; the
    owner answers each fold score from its pruner."""
    workers = _workers(owner.settings)
    if workers == 1:
        from lstm_trading.runs.walkforward import _one_thread

        with _one_thread():
            while owner.wanted():
                trial = owner.ask()

                def report(step: int, score: float, number: int = trial.number) -> None:
                    if not owner.decide(number, step, score):
                        raise TrialPruned(f"trial {number} pruned after fold {step}")

                owner.finish(trial, run_trial(evaluator, owner.task(trial), report))
        return
    import multiprocessing
    from concurrent.futures import Future, ProcessPoolExecutor

    from lstm_trading.runs.walkforward import pin_threads

    context = multiprocessing.get_context("spawn")  # fork would copy the parent's torch threads and locks
    with (
        one_thread_children(),
        context.Manager() as manager,
        ProcessPoolExecutor(workers, mp_context=context, initializer=pin_threads) as pool,
    ):
        reports = manager.Queue()
        answers: dict[int, Any] = {}
        futures: dict[Future[TrialResult], Any] = {}
        while True:
            while len(futures) < workers and owner.wanted():
                trial = owner.ask()
                answers[trial.number] = manager.Queue()
                future = pool.submit(_pool_trial, evaluator, owner.task(trial), reports, answers[trial.number])
                futures[future] = trial
            if not futures:
                break
            try:
                number, step, score = reports.get(timeout=0.2)
            except queue.Empty:
                pass
            else:
                answers[number].put(owner.decide(number, step, score))
            for future in [f for f in futures if f.done()]:
                trial = futures.pop(future)
                answers.pop(trial.number, None)
                failed = future.exception()
                result = future.result() if failed is None else TrialResult(error=f"{type(failed).__name__}: {failed}")
                owner.finish(trial, result)


@dataclass(frozen=True)
class _RayContext:
    """What a Ray trial needs to build its task (the object store carries it once)."""

    make_task: Callable[[int, dict[str, Any]], TrialTask]
    evaluator: Evaluator


def _ray_trial(config: dict[str, Any], context: _RayContext) -> None:
    """A Ray Tune trial: each fold's score as a result (ASHA may stop the trial there), the outcome last."""
    from ray import tune

    from lstm_trading.runs.walkforward import pin_threads

    pin_threads()
    number = int(config[TRIAL_KEY])
    params = {key: value for key, value in config.items() if key != TRIAL_KEY}
    scores: list[float] = []
    task = context.make_task(number, params)

    def report(step: int, score: float) -> None:
        """ASHA compares the objective so far: the mean fold skill, or the expectancy of the trades so far."""
        scores.append(score)
        so_far = float(np.mean(scores)) if task.objective == LOG_LOSS_SKILL else score
        tune.report({"objective": so_far, "fold_score": score, "fold": step})

    result = run_trial(context.evaluator, task, report)
    if result.outcome is None:
        tune.report({"objective": math.nan, "error": result.error or "failed", "seconds": result.seconds})
        return
    outcome = json.dumps(json_safe(asdict(result.outcome)), allow_nan=False)
    tune.report({"objective": result.outcome.value, "final": True, "outcome": outcome, "seconds": result.seconds})


_OWNERS: dict[str, _Owner] = {}  # the Ray searcher names its owner by key: Ray pickles the searcher, not the owner


def _owner_of(key: str) -> _Owner:
    return _OWNERS[key]


def _fold_search(owner_key: str, **options: Any) -> Any:
    """Ray's `OptunaSearch` on our study, recording what our owner records: a trial ASHA stopped is PRUNED (not
    COMPLETE at its last running mean, as OptunaSearch would tell it), each fold's score is an intermediate
    value, and every trial carries its owner, heartbeat and figures."""
    from ray.tune.search.optuna import OptunaSearch

    class FoldSearch(OptunaSearch):
        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            params = super().suggest(trial_id)
            if params is None:
                return None
            trial = self._ot_trials[trial_id]
            _owner_of(owner_key).start(trial)
            return {**params, TRIAL_KEY: trial.number}

        def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
            if "fold_score" in result and trial_id in self._ot_trials:
                self._ot_trials[trial_id].report(float(result["fold_score"]), int(result["fold"]))

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            trial = self._ot_trials[trial_id]
            if result and "fold_score" in result and not result.get("final"):  # the result ASHA stopped it at
                reported = trial.study._storage.get_trial(trial._trial_id).intermediate_values
                if int(result["fold"]) not in reported:
                    trial.report(float(result["fold_score"]), int(result["fold"]))
            seconds = float((result or {}).get("seconds") or (result or {}).get("time_total_s") or 0.0)
            if result and result.get("final"):
                recorded = json.loads(result["outcome"])
                recorded["fold_scores"] = tuple(recorded["fold_scores"])
                finished = TrialResult(outcome=TrialOutcome(**recorded), seconds=seconds)
            elif result and result.get("error"):
                finished = TrialResult(error=str(result["error"]), seconds=seconds)
            elif error:
                finished = TrialResult(error="the Ray trial failed (its log is under --out/ray)", seconds=seconds)
            else:
                finished = TrialResult(pruned=True, seconds=seconds)  # stopped by the ASHA scheduler
            _owner_of(owner_key).finish(trial, finished)
            self._completed_trials.add(trial_id)

    return FoldSearch(**options)


def run_ray(owner: _Owner, evaluator: Evaluator, make_task: Callable[[int, dict[str, Any]], TrialTask]) -> None:
    """Trials as Ray Tune trials (OptunaSearch on the same study, the ASHA scheduler on fold scores), on the
    Ray session open in this process."""
    import logging

    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # Tune's new console output ignores verbose=0: our own lines instead
    workers = _workers(owner.settings)
    context = _RayContext(make_task, evaluator)
    _OWNERS[owner.tag] = owner
    try:
        _tune_rounds(owner, context, workers)
    finally:
        _OWNERS.pop(owner.tag, None)


def _tune_rounds(owner: _Owner, context: _RayContext, workers: int) -> None:
    """Tuner runs until `--trials` are done (a failed Ray trial takes a sample: another round replaces it)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    while owner.wanted():
        remaining = owner.settings.trials - done(owner.study)
        search = _fold_search(
            owner.tag,
            space=owner.space.distributions(),
            metric="objective",
            mode="max",
            sampler=sampler(owner.settings.seed or 0, len(owner.study.trials)),
            study_name=owner.study.study_name,
            storage=owner.storage,
        )
        scheduler = ASHAScheduler(
            metric="objective", mode="max", time_attr="training_iteration", grace_period=2, reduction_factor=3,
            max_t=100_000,
        ) if owner.settings.prune else FIFOScheduler()  # fmt: skip
        tuner = tune.Tuner(
            tune.with_parameters(_ray_trial, context=context),
            tune_config=tune.TuneConfig(
                search_alg=search,
                scheduler=scheduler,
                num_samples=remaining,
                max_concurrent_trials=workers,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=f"{owner.study.study_name}-{int(time.time())}",
                storage_path=str(owner.folder.ray.resolve()),
                verbose=0,
            ),
        )
        tuner.fit()


@contextmanager
def ray_session(settings: TuneSettings) -> Iterator[None]:
    """The Ray session the trials and the holdout run on: the one open in this process, else one started here
    (on `--ray-address`, or a local Ray of `--workers` CPUs) and shut down at the end."""
    import ray

    if ray.is_initialized():
        yield
        return
    start_ray(settings.ray_address, _workers(settings))
    try:
        yield
    finally:
        ray.shutdown()


# --- results: trials.csv, the deflated Sharpe ratio, best.toml, the holdout ---


def trials_frame(study: Any, space: SearchSpace) -> pd.DataFrame:
    """One row per trial: number, state, objective, Sharpe, fold scores, parameters, timing, error."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = {**trial.user_attrs.get(OUTCOME_ATTR, {}), **trial.user_attrs}
        # a finished trial's fold scores; else the intermediate values the pruner judged, by their fold (for
        # oos_expectancy: the expectancy of the trades to that fold, from the first fold with a trade)
        reached = trial.intermediate_values
        scores = list(attrs.get("fold_scores") or [])
        by_fold = dict(enumerate(scores)) if scores else {int(k): reached[k] for k in sorted(reached)}
        row: dict[str, Any] = {
            "number": trial.number,
            "state": trial.state.name.lower(),
            "objective": trial.value if trial.state.name == "COMPLETE" else None,
            "sharpe": attrs.get("sharpe"),
            "days": attrs.get("days"),
            "skewness": attrs.get("skewness"),
            "kurtosis": attrs.get("kurtosis"),
            "trades": attrs.get("trades"),
            "expectancy_pct": attrs.get("expectancy_pct"),
            "folds": max(by_fold) + 1 if by_fold else 0,
        }
        row.update({f"fold_{i}": score for i, score in by_fold.items()})
        row.update({name: trial.params.get(name) for name in space.names})
        row["seconds"] = attrs.get("seconds")
        row["retry_of"] = trial.system_attrs.get("failed_trial")
        row["error"] = attrs.get("error", "")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    folds = sorted((c for c in frame.columns if c.startswith("fold_")), key=lambda c: int(c.split("_")[1]))
    head = ["number", "state", "objective", "sharpe", "days", "skewness", "kurtosis", "trades", "expectancy_pct"]
    order = head + ["folds", *folds, *space.names, "seconds", "retry_of", "error"]
    return frame[order]


def write_trials_table(study: Any, space: SearchSpace, path: Path) -> pd.DataFrame:
    frame = trials_frame(study, space)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, frame.to_csv(index=False))
    return frame


def trials_started(frame: pd.DataFrame) -> int:
    """The deflated Sharpe ratio's N: every trial started, a trial queued again after a kill counted once."""
    started = frame[frame["state"] != "waiting"]
    lineage = started["retry_of"].where(started["retry_of"].notna(), started["number"])
    return int(lineage.nunique())


def deflation(frame: pd.DataFrame, best: Any) -> dict[str, Any]:
    """The best trial's Sharpe ratio deflated by N trials started and the variance V of the completed trials'
    Sharpe ratios (Bailey & López de Prado 2014)."""
    from lstm_trading.backtest.significance import deflated_sharpe, expected_maximum_sharpe

    complete = frame[frame["state"] == "complete"]
    sharpes = pd.to_numeric(complete["sharpe"], errors="coerce").dropna().to_numpy(dtype=np.float64)
    variance = float(np.var(sharpes, ddof=1)) if len(sharpes) >= 2 else math.nan
    trials = trials_started(frame)
    attrs = best.user_attrs.get(OUTCOME_ATTR, {})

    def number(key: str) -> float:
        value = attrs.get(key)
        return float(value) if value is not None else math.nan

    dsr = deflated_sharpe(
        number("sharpe"), trials, variance, int(attrs.get("days") or 0), number("skewness"), number("kurtosis")
    )
    return {
        "sharpe_daily": _finite(number("sharpe")),
        "trials": trials,
        "sharpe_variance": _finite(variance),
        "sharpes_counted": len(sharpes),
        "expected_max_sharpe": _finite(expected_maximum_sharpe(trials, variance)),
        "dsr": _finite(dsr),
    }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def best_toml(config: Config, best: Any, objective: str, periods: Periods, walk: WalkForwardSettings) -> str:
    """The best configuration as a TOML that `train --config` (and `walkforward --config`) accept. The model kind
    and the walk-forward's spans are command flags, not config keys: the header says which the search used, so
    `train --config best.toml` without `--model gbm` does not silently train the other kind."""
    header = (
        f"# lstm-trading tune: trial {best.number}, {objective} {best.value:+.4f} on the tuning period "
        f"{format_time(periods.data_start)} to {format_time(periods.tune_end)}\n"
        f"# searched with --model {walk.model} --train-span {_span_flag(walk.train_span)} --test-span "
        f"{_span_flag(walk.test_span)} --scheme {walk.scheme}: train with "
        f"`lstm-trading train --config best.toml --model {walk.model}`\n"
    )
    return header + dump_config(config)


def _span_flag(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# --- the command ---


@dataclass(frozen=True)
class TuneResult:
    """What the command prints: the trial counts, the best trial and its holdout."""

    folder: TuneFolder
    summary: dict[str, Any]
    trials: pd.DataFrame
    holdout: WalkForwardResult | None


def check_tune(settings: TuneSettings, walk: WalkForwardSettings) -> None:
    """The refusals that need neither data nor storage."""
    if settings.objective not in OBJECTIVES:
        raise ConfigError(f"--objective: must be one of {', '.join(OBJECTIVES)}, got {settings.objective!r}")
    if settings.executor not in EXECUTORS:
        raise ConfigError(f"--executor: must be one of {', '.join(EXECUTORS)}, got {settings.executor!r}")
    if settings.trials < 1:
        raise ConfigError(f"--trials: must be at least 1, got {settings.trials}")
    if settings.workers is not None and settings.workers < 1:
        raise ConfigError(f"--workers: must be at least 1, got {settings.workers}")
    if settings.ray_address is not None and settings.executor != "ray":
        raise ConfigError("--ray-address: only with --executor ray")
    if settings.executor == "ray":
        from lstm_trading.runs.walkforward import RAY_EXTRA, check_ray

        check_ray(settings.ray_address)
        try:
            import ray.tune  # noqa: F401
            import ray.tune.search.optuna  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"--executor ray: Ray Tune is not installed; install the cluster extra: {RAY_EXTRA}"
            ) from None


def _longest_window(space: SearchSpace, config: Config, walk: WalkForwardSettings) -> Config:
    """The configuration with the longest window the space can choose, for the walk-forward's own checks; a
    searched window longer than the training span (no trial with it would have a fold) is refused by its key."""
    parameter = space.parameter("targets.max_len")
    if parameter is None or parameter.largest is None:
        return config
    longest = int(parameter.largest)
    if longest * MINUTE > walk.train_span:
        raise ConfigError(
            f"{space.path}: targets.max_len: {longest:,} minutes is longer than --train-span "
            f"({walk.train_span // MINUTE:,} minutes); a trial with it would have no fold"
        )
    return apply_params(config, {"targets.max_len": longest})


def tune_run(
    config: Config,
    settings: TuneSettings,
    walk: WalkForwardSettings,
    space: SearchSpace,
    *,
    db: Path,
    symbol: str,
    source: TradeSource,
    out: Path,
    echo: Callable[[str], None] = print,
    evaluator: Evaluator = walkforward_trial,
) -> TuneResult:
    """Run (or continue) the study to `--trials` completed or pruned trials, then write trials.csv, best.toml,
    the holdout's walk-forward, summary.json and report.html (module docstring)."""
    import optuna

    from lstm_trading.runs.walkforward import check_walkforward

    check_tune(settings, walk)
    longest = _longest_window(space, config, walk)
    folder = TuneFolder(out)
    check_walkforward(longest, replace(walk, executor="local", ray_address=None), folder.trials / ".check")
    horizon = label_horizon(config, space, walk, source)
    periods = plan_periods(db, symbol, settings, walk, horizon)
    searched_thresholds = any(name in space.names for name in THRESHOLDS)
    trial_walk = replace(
        walk,
        until=periods.tune_end,
        first_test=None,
        baseline="none",
        fold_workers=1,
        executor="local",
        ray_address=None,
        random_runs=min(walk.random_runs, TRIAL_RANDOM_RUNS),
        trials=1,
        overwrite=True,  # a trial's folder is its own: what a killed earlier attempt left is retrained
        sweep=walk.sweep and not searched_thresholds,
        figures=False,  # only the scores are read
    )
    document = {
        "space": space.document(),
        "objective": settings.objective,
        "walkforward": {
            "train_span": walk.train_span, "test_span": walk.test_span, "step": walk.step or walk.test_span,
            "scheme": walk.scheme, "val": walk.val, "model": walk.model, "purge_seconds": walk.purge_seconds,
            "sweep": trial_walk.sweep, "warm_start": walk.warm_start,
        },
        "periods": periods.document(),
        "config": {name: values for name, values in config.to_dict().items() if name != "runtime"},
        "symbol": symbol,
        "trades": _trades_document(source),
    }  # fmt: skip
    url = settings.storage or f"sqlite:///{folder.study_db.resolve()}"
    name = settings.study or out.resolve().name
    if settings.storage is None:
        out.mkdir(parents=True, exist_ok=True)
    storage = open_storage(url)
    seed = config.train.seed if settings.seed is None else settings.seed
    settings = replace(settings, seed=seed)
    median = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    pruner = median if settings.prune else optuna.pruners.NopPruner()
    study = open_study(storage, name, document, None, pruner, url)
    study.sampler = sampler(seed, len(study.trials))
    out.mkdir(parents=True, exist_ok=True)
    tag = _owner_tag()
    recover_trials(study, tag, echo)
    if searched_thresholds and walk.sweep:
        echo("min-prob / min-EV are searched: each fold's validation sweep is off in the trials and the holdout")
    echo(
        f"study {name} in {url}: {done(study)} of {settings.trials} trials done; tuning on "
        f"{format_time(periods.data_start)} to {format_time(periods.tune_end)}, holdout "
        f"{format_time(periods.holdout_start)} to {format_time(periods.data_end)}"
    )

    def make_task(number: int, params: dict[str, Any]) -> TrialTask:
        trial_config = apply_params(config, params).with_overrides("runtime", workers=1)
        return TrialTask(
            number=number,
            params=params,
            config=trial_config,
            walkforward=trial_walk,
            objective=settings.objective,
            db=db.resolve(),
            symbol=symbol,
            source=source,
            out_dir=folder.trial(number).resolve(),
        )

    try:
        with _Heartbeat(storage) as heartbeat, ray_session(settings) if settings.executor == "ray" else _nothing():
            owner = _Owner(study, storage, space, settings, make_task, heartbeat, tag, folder, echo)
            try:
                if settings.executor == "ray":
                    run_ray(owner, evaluator, make_task)
                else:
                    run_local(owner, evaluator)
            except BaseException:
                owner.abandon()
                raise
            frame = write_trials_table(study, space, folder.trials_table)
            complete = frame[frame["state"] == "complete"] if not frame.empty else frame
            if complete.empty:
                why = f" ({owner.first_error})" if owner.first_error else ""
                raise DataError(f"study {name}: no trial completed{why}; see {folder.trials_table}")
            if owner.failed_now and owner.completed_now == 0 and done(study) < settings.trials:
                raise DataError(f"study {name}: the trials fail ({owner.first_error}); see {folder.trials_table}")
            return _finish(config, settings, walk, trial_walk, space, study, frame, periods, folder, db, symbol,
                           source, echo)  # fmt: skip
    finally:
        storage.engine.dispose()  # SQLite folds its write-ahead log back into the file as the last connection closes


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _finish(
    config: Config,
    settings: TuneSettings,
    walk: WalkForwardSettings,
    trial_walk: WalkForwardSettings,
    space: SearchSpace,
    study: Any,
    frame: pd.DataFrame,
    periods: Periods,
    folder: TuneFolder,
    db: Path,
    symbol: str,
    source: TradeSource,
    echo: Callable[[str], None],
) -> TuneResult:
    """best.toml, the holdout's one walk-forward, the importances, summary.json and report.html. With
    `--executor ray` the holdout's folds run as Ray tasks on the session the trials ran on (local or
    `--ray-address`), so they go where the trials went and take no CPUs beside Ray's."""
    from lstm_trading.runs.walkforward import walkforward_run

    best = study.best_trial  # the completed trial with the highest objective
    params = dict(best.params)
    best_config = apply_params(config, params)
    write_text_atomic(folder.best, best_toml(best_config, best, settings.objective, periods, walk))
    deflated = deflation(frame, best)
    echo(
        f"best: trial {best.number} ({', '.join(f'{k}={_shown(v)}' for k, v in sorted(params.items()))}), "
        f"{settings.objective} {best.value:+.4f} in the search; daily Sharpe "
        f"{_number(deflated['sharpe_daily'])}, deflated Sharpe ratio {_number(deflated['dsr'])} "
        f"(N = {deflated['trials']} trials, V = {_number(deflated['sharpe_variance'])})"
    )
    previous = _read_json(folder.summary)
    best_before = (previous or {}).get("best", {}).get("params")
    holdout_walk = replace(
        walk,
        until=None,
        first_test=periods.holdout_start,
        sweep=trial_walk.sweep,
        trials=1,
        fold_workers=walk.fold_workers or _workers(settings),
        # with --executor ray its folds are Ray tasks on the trials' Ray (still open here: `ray_session`), so a
        # cluster trains them on its nodes and a local Ray on the CPUs it was given, not on a second pool
        executor=settings.executor,
        ray_address=settings.ray_address,
        # a best configuration not known to be the holdout's (changed, or a holdout killed before its summary)
        # is walk-forwarded afresh: a holdout folder of other settings would otherwise be refused
        overwrite=best_before != json_safe(params),
    )
    echo(f"holdout: walk-forward of the best configuration from {format_time(periods.holdout_start)}")
    holdout: WalkForwardResult | None = None
    try:
        holdout = walkforward_run(
            best_config, holdout_walk, db=db, symbol=symbol, source=source, out=folder.holdout, echo=echo
        )
    except LstmTradingError as error:  # no fold fits the holdout, say: the study's record is written all the same
        holdout_figures: dict[str, Any] = {"failures": [error_line(error)]}
    else:
        holdout_figures = {"failures": [f"fold {f.run}: {f.error}" for f in holdout.failures]}
    if holdout is not None and not holdout.failures:
        scored = score_walkforward(holdout, settings.objective, walk.model)
        sig = scored.significance
        holdout_figures = {
            "objective": scored.value,
            "fold_scores": list(scored.fold_scores),
            "sharpe_daily": sig.get("sharpe_daily"),
            "psr": sig.get("psr"),
            "trades": sig.get("trades"),
            "expectancy_pct": sig.get("expectancy_pct"),
            "verdict": holdout.verdicts[walk.model]["verdict"],
            "sentence": holdout.verdicts[walk.model]["sentence"],
            "reason": None if scored.value is not None else _unscored(settings.objective),
            "failures": [],
        }
    importances = parameter_importances(study, space)
    summary = {
        "study": study.study_name,
        "objective": settings.objective,
        "periods": periods.document(),
        "trials": counts(study),
        "best": {
            "number": best.number,
            "objective": best.value,
            "params": json_safe(params),
            "fold_scores": list(best.user_attrs.get(OUTCOME_ATTR, {}).get("fold_scores") or []),
            **deflated,
        },
        "holdout": holdout_figures,
        "gap": best.value - holdout_figures["objective"] if holdout_figures.get("objective") is not None else None,
        "importances": importances,
    }
    write_text_atomic(folder.summary, json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    from lstm_trading.report.tune import write_tune_report

    write_tune_report(folder.report, summary, frame, space.names, log_scale=[p.name for p in space.parameters if p.log])
    return TuneResult(folder, summary, frame, holdout)


def parameter_importances(study: Any, space: SearchSpace) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA) over the completed trials; empty where they are undefined (fewer
    than two completed trials, or a parameter that never varied)."""
    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study, params=space.names)
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}
    return {name: float(value) for name, value in found.items()}


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
