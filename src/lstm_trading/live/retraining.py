"""Live retraining: a new model at every boundary of a schedule, a gate before it is used, and a swap that a crash
cannot leave half done.

Why it is built this way:

- **The walk-forward's folds.** The model of boundary `b` is the walk-forward fold that starts at `b` (the runs
  layer trains it with the fold code: the same labels, spans, purge, validation split, scalers and seed from
  (seed, `b`)), so a replay with retraining trades what `walkforward` backtested (`runs/retraining.py`).
- **Decisions never wait.** In paper and live mode a training runs in a process of its own (a `RetrainJob`); the
  loop decides on the current model meanwhile and swaps at the first period after the training has ended (the
  lag is logged). A replay has no clock to wait on: its models are trained first and swap exactly at their
  boundaries.
- **The state names the model.** A job writes its model whole and its result last; the swap is one key of the
  period's transaction (`Step.meta`), with the decision it made. A crash before that commit leaves the old model
  in use, one after it the new one, and a restart loads the model the state names. A job the crash interrupted is
  started again (its seed makes it the same model), one the crash left running (a SIGKILL stops only the loop) is
  waited for, never trained beside; one that finished is swapped in at the next period.
- **A gate.** The new model must load, give finite outputs, and score a prior-corrected log-loss on the trades of
  the last `gate_span_s` before the boundary (their outcomes known by then, and kept out of its training) no more
  than `gate_tolerance` nats above the current model's; otherwise the current model stays and the log says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from lstm_trading.core.errors import ConfigError
from lstm_trading.core.timeutil import DAY, MINUTE, format_time
from lstm_trading.live.state import LiveState

MODEL_KEY = "model"  # live_meta: the model in use (`ModelInUse.record()`)
RETRAIN_KEY = "retraining"  # live_meta: the last retraining, from its start to its swap (or why there was none)
SCHEDULE_KEY = "retrain_settings"  # live_meta: the schedule, for live-status's next retraining time
GATE_TOLERANCE = 0.01  # nats of log-loss a new model may lose against the current one
FINAL = ("swapped", "rejected", "skipped", "failed")  # a retraining in one of these is over

LogWrite = Callable[[str, dict[str, Any], str], None]  # DecisionLog.write


def _span(seconds: int) -> str:
    for unit, size in (("d", DAY), ("h", 3600), ("m", MINUTE)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class RetrainSettings:
    """The schedule and the gate (`live --retrain-every`); spans in seconds, the walk-forward's names."""

    every_s: int  # --retrain-every: between boundaries (a replay's: --from + k * every)
    train_span_s: int = 60 * DAY  # --train-span
    gate: bool = True  # --gate on / off
    gate_span_s: int = 3 * DAY  # --gate-days: the window before a boundary the gate scores on
    gate_tolerance: float = GATE_TOLERANCE  # --gate-tolerance, nats
    sweep: bool = True  # each model's min-prob / min-EV chosen on its validation period, as walk-forward's folds
    scheme: str = "sliding"  # --scheme: the last train span, or everything before the boundary
    val: float = 0.15  # the latest share of a training span's trades that validates (walk-forward's --val)
    fold_workers: int | None = 1  # a replay's folds trained at once (each in a process of its own when above 1)
    accelerator: str = "auto"  # where the trainings run: auto, cpu or cuda
    warm_start: bool = False  # --warm-start: each model starts from the one trained before it (train.fine_tune_lr)

    def __post_init__(self) -> None:
        for flag, value in (
            ("--retrain-every", self.every_s),
            ("--train-span", self.train_span_s),
            ("--gate-days", self.gate_span_s),
        ):
            if value <= 0 or value % MINUTE:
                raise ConfigError(f"{flag}: must be a positive number of whole minutes, got {value} s")
        if not (math.isfinite(self.gate_tolerance) and self.gate_tolerance >= 0):
            raise ConfigError(f"--gate-tolerance: must be a number of nats, 0 or more, got {self.gate_tolerance}")
        if self.fold_workers is not None and self.fold_workers < 1:
            raise ConfigError(f"--fold-workers: must be at least 1, got {self.fold_workers}")
        if self.gate and self.gate_span_s >= self.train_span_s:
            raise ConfigError(
                f"--gate-days {_span(self.gate_span_s)} is not shorter than --train-span {_span(self.train_span_s)}: "
                "the gate's window is kept out of the new model's training, which would leave nothing to train on"
            )

    @property
    def holdout_s(self) -> int:
        """What the new model's training leaves out before the boundary: the gate's window (0 with the gate off)."""
        return self.gate_span_s if self.gate else 0

    def record(self) -> dict[str, Any]:
        return asdict(self)

    def check_kind(self, kind: str) -> None:
        """--warm-start carries an LSTM's weights on; a gradient-boosting model has none to start from."""
        if self.warm_start and kind != "lstm":
            raise ConfigError(
                f"--warm-start: RUN's model is a {kind} model, which has no weights to start a new one from; "
                "leave out --warm-start"
            )

    def check_horizon(self, horizon_s: int) -> None:
        """The gate scores trades whose outcome is known by the boundary: a window no longer than the label
        horizon holds none."""
        if self.gate and self.gate_span_s <= horizon_s:
            raise ConfigError(
                f"--gate-days {_span(self.gate_span_s)} is not longer than the label horizon {_span(horizon_s)}: no "
                "trade in the gate's window has a known outcome by the boundary; give a longer --gate-days or "
                "--gate off"
            )


def boundaries(start: int, end: int, every: int) -> list[int]:
    """A replay's retraining boundaries: `start + k * every` before `end` (the walk-forward's fold starts)."""
    return list(range(start, end, every))


def boundary_at(moment: int, every: int) -> int:
    """The live schedule: the last whole multiple of `every` since the epoch (UTC) at or before `moment`."""
    return moment // every * every


# --- the model in use ---


@dataclass(frozen=True)
class ModelInUse:
    """A model the loop decides with, as the state records it."""

    name: str  # RUN's folder name, or the retraining's fold name (`002-2025-06-12`)
    path: str  # its run folder (the bundle is in `path/model`)
    data_end: int | None  # open time of the last candle it was trained on: its age counts from there
    trained_at: float | None = None  # when its training ended, on the account's clock (None: RUN's own model)
    boundary: int | None = None  # the retraining boundary it was trained at (None: RUN's own model)
    min_prob: float | None = None  # its thresholds chosen on its validation period (--sweep); None: the settings'
    min_ev: float | None = None
    run: str | None = None  # the run folder (RUN) it was retrained from, or RUN itself: a restart with another RUN

    def record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ModelInUse:
        return cls(**record)

    @property
    def thresholds(self) -> tuple[float, float] | None:
        if self.min_prob is None or self.min_ev is None:
            return None
        return self.min_prob, self.min_ev

    def expired(self, at: int, max_age_s: int | None) -> bool:
        """Older than `max_age_s` at `at` (by the end of its training data)."""
        return max_age_s is not None and self.data_end is not None and at - self.data_end > max_age_s


# --- the gate ---


@dataclass(frozen=True)
class GateResult:
    """Whether a new model may replace the current one, and the scores that said so."""

    passed: bool
    reason: str
    trades: int = 0  # trades of the gate's window scored
    new_log_loss: float | None = None
    current_log_loss: float | None = None
    tolerance: float = GATE_TOLERANCE

    def record(self) -> dict[str, Any]:
        return asdict(self)


def gate_verdict(new: float, current: float | None, trades: int, tolerance: float) -> GateResult:
    """The rule on two prior-corrected log-losses over the same `trades` of the gate's window: pass unless the new
    model's is more than `tolerance` above the current one's (no current model, or no trade: nothing to compare)."""
    if not math.isfinite(new):
        return GateResult(False, f"its log-loss is not finite ({new})", trades, None, current, tolerance)
    if trades == 0:
        return GateResult(
            True, "no trade with a known outcome in the gate's window: not compared", 0, None, None, tolerance
        )
    if current is None:
        return GateResult(True, "no current model to compare with", trades, new, None, tolerance)
    worse = new - current
    if worse > tolerance:
        return GateResult(
            False,
            f"log-loss {new:.4f} on the gate's {trades} trades is {worse:.4f} nats worse than the current model's "
            f"{current:.4f} (--gate-tolerance {tolerance:g})",
            trades,
            new,
            current,
            tolerance,
        )
    return GateResult(
        True, f"log-loss {new:.4f} against the current model's {current:.4f} on {trades} trades", trades, new, current,
        tolerance,
    )  # fmt: skip


# --- the loop's side: when to train, when to swap ---


class Swap(NamedTuple):
    """A model to decide with from this period on, and the retraining record committed with the period."""

    model: ModelInUse | None
    record: dict[str, Any]


class ModelSchedule(Protocol):
    """What the loop asks at each period: a model to swap in before deciding, and after the period's commit
    whether a retraining is due (`Retrainer` in paper and live, `ReplaySchedule` in a replay)."""

    def poll(self, at: int, current: ModelInUse | None) -> Swap | None: ...

    def after(self, at: int, current: ModelInUse | None) -> None: ...


class RetrainJob(Protocol):
    """A training of one boundary's model, running somewhere (a process) or done."""

    def done(self) -> bool: ...

    def result(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RetrainRequest:
    """What a training needs from the loop: its boundary, its index (the fold's name), the model in use (for the
    gate), the folder its models go to, and the run folder `--warm-start` starts from."""

    boundary: int
    k: int
    current: ModelInUse | None
    folder: Path
    warm_from: str | None = None  # the model trained before (gated or not), else the one in use


class Trainer(Protocol):
    """Starts trainings (the runs layer: walk-forward's fold code in a process) and finds a finished one's result
    on disk (after a restart)."""

    def start(self, request: RetrainRequest) -> RetrainJob: ...

    def finished(self, request: RetrainRequest) -> dict[str, Any] | None: ...


def model_from_result(result: dict[str, Any]) -> ModelInUse | None:
    model = result.get("model")
    return None if model is None else ModelInUse.from_record(model)


class Retrainer:
    """Paper and live mode: at the first period at or after each boundary, start a training in the background;
    once it has finished, log its end and gate and, if it passed, swap it in at the next period.

    The first boundary trained for is the first one after the loop started (the model the loop starts with is
    RUN's, or the one the state names)."""

    def __init__(
        self,
        settings: RetrainSettings,
        trainer: Trainer,
        state: LiveState,
        write: LogWrite,
        folder: Path,
        now: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.trainer = trainer
        self.state = state
        self.write = write
        self.folder = folder
        self.now = now
        self.job: RetrainJob | None = None

    def _record(self) -> dict[str, Any] | None:
        record = self.state.meta(RETRAIN_KEY)
        return None if record is None else dict(record)

    def _request(self, record: dict[str, Any]) -> RetrainRequest:
        current = record.get("current")
        return RetrainRequest(
            int(record["boundary"]),
            int(record["k"]),
            None if current is None else ModelInUse.from_record(current),
            self.folder,
            record.get("warm_from"),
        )

    def poll(self, at: int, current: ModelInUse | None) -> Swap | None:
        record = self._record()
        if record is None:
            return None
        if record["status"] == "running":
            result = self._result(record)
            if result is None:
                return None
            record = self._finish(record, result, at)
        if record["status"] != "finished":
            return None
        model = model_from_result(record)
        if model is None or (current is not None and current.name == model.name):
            return None
        lag = at - int(record["boundary"])
        swapped = {**record, "status": "swapped", "swapped_at": at, "lag_s": lag}
        return Swap(model, swapped)

    def _result(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The running job's result once it is done; after a restart, the one its files hold, or else the job
        again (it was stopped with the loop)."""
        if self.job is None:
            request = self._request(record)
            found = self.trainer.finished(request)
            if found is not None:
                return found
            self.job = self.trainer.start(request)
            adopted = bool(getattr(self.job, "adopted", False))  # the stop left its process running
            what = "still running: waiting for it" if adopted else "started again"
            self.write(
                "retrain_restart",
                {"boundary": request.boundary, "k": request.k, "adopted": adopted},
                f"retraining for {format_time(request.boundary)} was interrupted by the last stop: {what}",
            )
        if not self.job.done():
            return None
        result = self.job.result()
        self.job = None
        return result

    def _finish(self, record: dict[str, Any], result: dict[str, Any], at: int) -> dict[str, Any]:
        """Record and log a training's end: its window, gate scores and whether its model will be swapped in."""
        outcome = str(result.get("status"))
        if outcome == "trained":
            status = "finished" if result.get("accepted") else "rejected"
        else:
            status = outcome if outcome in ("skipped", "failed") else "failed"
        ended = self.now()
        finished = {**record, **result, "status": status, "ended_at": ended}
        if finished.get("model") is not None:  # trained when its training ended, on the loop's clock
            finished["model"] = {**finished["model"], "trained_at": ended}
        self.state.set_meta(**{RETRAIN_KEY: finished})
        log_retrain_end(self.write, finished, at)
        return finished

    def after(self, at: int, current: ModelInUse | None) -> None:
        record = self._record()
        due = boundary_at(at, self.settings.every_s)
        if record is None:  # the loop's first period with retraining: the next boundary is the first
            first = {"boundary": due, "k": -1, "status": "skipped", "reason": "before the loop started"}
            self.state.set_meta(**{RETRAIN_KEY: first, SCHEDULE_KEY: self.settings.record()})
            return
        if record["status"] not in FINAL or due <= int(record["boundary"]):
            return  # one training at a time, and a finished model swaps in before the next starts
        request = RetrainRequest(due, int(record["k"]) + 1, current, self.folder, self._warm_from(record, current))
        started = {
            "boundary": due,
            "k": request.k,
            "status": "running",
            "started_at": self.now(),
            "started_period": at,
            "current": None if current is None else current.record(),
            "warm_from": request.warm_from,
        }
        # recorded before the process starts: a crash in between restarts the job, never leaves one unknown
        self.state.set_meta(**{RETRAIN_KEY: started, SCHEDULE_KEY: self.settings.record()})
        self.write(
            "retrain_start",
            {"boundary": due, "k": request.k, "at": at, "current": None if current is None else current.name},
            f"{format_time(at)}  retraining for the boundary {format_time(due)} started in the background "
            f"(decisions go on with {current.name if current else 'no model'})",
        )
        self.job = self.trainer.start(request)

    def _warm_from(self, record: dict[str, Any], current: ModelInUse | None) -> str | None:
        """Where `--warm-start` starts the next model: the last one trained, whether the gate let it in or not (as
        walk-forward's fold k starts from fold k-1), else the model in use (RUN's own at the first boundary)."""
        if not self.settings.warm_start:
            return None
        trained = model_from_result(record)
        if trained is not None:
            return trained.path
        if record.get("warm_from"):  # skipped or failed: what it would have started from is still the last trained
            return str(record["warm_from"])
        return None if current is None else current.path


def log_retrain_end(write: LogWrite, record: dict[str, Any], at: int) -> None:
    """One `retrain_end` line: the training window, the gate's scores, and whether the model swaps in."""
    gate = record.get("gate") or {}
    status = record["status"]
    fields = {
        key: record.get(key)
        for key in ("boundary", "k", "name", "status", "reason", "window", "started_at", "ended_at", "seconds")
    }
    fields.update({"at": at, "gate": gate, "swapping": status == "finished"})
    reason = record.get("reason") or gate.get("reason")
    what = {
        "finished": f"passed the gate ({reason})",
        "rejected": f"rejected, the model in use stays: {reason}",
        "skipped": f"gave no model ({reason}); the model in use stays",
        "failed": f"failed, the model in use stays: {reason}",
    }.get(status, status)
    write(
        "retrain_end",
        fields,
        f"{format_time(at)}  retraining for {format_time(int(record['boundary']))} ({record.get('name')}) {what}",
    )


def log_swap(write: LogWrite, swap: Swap, previous: ModelInUse | None) -> None:
    record = swap.record
    model = swap.model
    write(
        "swap",
        {
            "at": record.get("swapped_at"),
            "boundary": record.get("boundary"),
            "lag_s": record.get("lag_s"),
            "model": None if model is None else model.name,
            "previous": None if previous is None else previous.name,
        },
        f"{format_time(int(record['swapped_at']))}  model {model.name if model else 'none'} in use (was "
        f"{previous.name if previous else 'none'}; {int(record.get('lag_s') or 0) // MINUTE} min after its boundary)",
    )


@dataclass(frozen=True)
class BoundaryOutcome:
    """A replay's retraining at one boundary, done before the replay: its record (as `live.jsonl` and the state
    get it) and the model in force from the boundary on (the new one, or the one kept)."""

    boundary: int
    end: int
    record: dict[str, Any]
    in_force: ModelInUse | None


class ReplaySchedule:
    """A replay's models: trained before it starts; each swaps in exactly at its boundary (a rejected or skipped
    one leaves the model before it in force), and each boundary's retraining is logged when the replay reaches it."""

    def __init__(self, outcomes: list[BoundaryOutcome], state: LiveState, write: LogWrite) -> None:
        self.outcomes = sorted(outcomes, key=lambda o: o.boundary)
        self.state = state
        self.write = write

    def _outcome(self, at: int) -> BoundaryOutcome | None:
        passed = [outcome for outcome in self.outcomes if outcome.boundary <= at]
        return passed[-1] if passed else None

    def poll(self, at: int, current: ModelInUse | None) -> Swap | None:
        outcome = self._outcome(at)
        if outcome is None:
            return None
        record = self.state.meta(RETRAIN_KEY)
        if record is None or int(record["boundary"]) < outcome.boundary:  # the replay reaches a new boundary
            self.write(
                "retrain_start",
                {"boundary": outcome.boundary, "k": outcome.record.get("k"), "at": at},
                f"{format_time(at)}  retraining for the boundary {format_time(outcome.boundary)} "
                "(trained before the replay)",
            )
            record = outcome.record
            self.state.set_meta(**{RETRAIN_KEY: record})
            log_retrain_end(self.write, record, at)
        model = outcome.in_force
        if model is None or (current is not None and current.name == model.name):
            return None
        return Swap(model, {**record, "status": "swapped", "swapped_at": at, "lag_s": at - outcome.boundary})

    def after(self, at: int, current: ModelInUse | None) -> None:
        return None
