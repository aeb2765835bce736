"""Tuning: an Optuna study over walk-forward folds of a tuning period, a holdout no trial reads, the best
configuration judged once on it, resumable after a kill, on local processes and on Ray Tune (issue 15).

Two studies run through the real fold code (a tiny 6-day synthetic market, 60-minute windows, hidden 8 or 16, 3
epochs, 36-hour training and 12-hour test spans); the planted-region and kill tests swap the trial evaluator for a
cheap stand-in whose score peaks where it was planted.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import snapshot, tiny_config
from lstm_trading.cli import app
from lstm_trading.core.config import dump_config, load_config
from lstm_trading.core.errors import ConfigError
from lstm_trading.runs.tune import FoldReport, TrialOutcome, TrialTask, TuneSettings, tune_run, walkforward_trial
from lstm_trading.runs.tune_space import load_space
from lstm_trading.runs.walkforward import TradeSource, WalkForwardSettings

HOUR = 3600
TESTS = Path(__file__).resolve().parent
SPACE = """
[model.hidden_size]
choices = [8, 16]
[train.lr]
low = 1e-3
high = 1e-2
log = true
[labels.k_tp]
low = 2.0
high = 4.0
step = 0.5
[labels.horizon_seconds]
choices = [10800, 21600]
"""
PLANTED_SPACE = """
"train.lr" = { low = 1e-5, high = 0.1, log = true }
"model.hidden_size" = { low = 8, high = 128 }
"""


def tune_config():  # type: ignore[no-untyped-def]
    """The tiny pipeline, trading at every moment (no costs, any probability), so every fold has trades."""
    return (
        tiny_config()
        .with_overrides("backtest", max_hold_seconds=2 * HOUR, min_prob=0.0, min_ev=-50.0, fee=0.0, slippage=0.0)
        .with_overrides("runtime", cache=False)
    )


def walk_settings() -> WalkForwardSettings:
    return WalkForwardSettings(
        train_span=36 * HOUR, test_span=12 * HOUR, random_runs=20, accelerator="cpu", baseline="none", sweep=False,
        fold_workers=1,
    )  # fmt: skip


def run_tune(db: Path, out: Path, space_text: str, evaluator: Any = walkforward_trial, **changes: Any):  # type: ignore[no-untyped-def]
    space_file = out.parent / f"{out.name}-space.toml"
    space_file.write_text(space_text)
    config = tune_config()
    settings = replace(TuneSettings(space=space_file, trials=4, workers=1), **changes)
    lines: list[str] = []
    result = tune_run(
        config, settings, walk_settings(), load_space(space_file, config), db=db, symbol="ETHUSDT",
        source=TradeSource(), out=out, echo=lines.append, evaluator=evaluator,
    )  # fmt: skip
    return result, lines


# --- a 4-trial study through the real fold code, in this process: trials, outputs, and what they read ---


@pytest.fixture(scope="module")
def local_study(tiny_db: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The study, with every candle read recorded as made inside a trial or outside (the holdout's)."""
    from lstm_trading.data.store import CandleStore

    reads: list[dict[str, Any]] = []
    phase = ["outside"]
    real_read, real_last = CandleStore.read, CandleStore.read_last

    def read(self: Any, symbol: str, start: int | None = None, end: int | None = None) -> pd.DataFrame:
        frame = real_read(self, symbol, start=start, end=end)
        reads.append({"phase": phase[0], "end": end, "last": int(frame["timestamp"].max()) if len(frame) else None})
        return frame

    def read_last(self: Any, symbol: str, rows: int, *, end: int | None = None) -> pd.DataFrame:
        frame = real_last(self, symbol, rows, end=end)
        reads.append({"phase": phase[0], "end": end, "last": int(frame["timestamp"].max()) if len(frame) else None})
        return frame

    def recorded(task: TrialTask, report: FoldReport) -> TrialOutcome:
        phase[0] = "trial"
        try:
            return walkforward_trial(task, report)
        finally:
            phase[0] = "outside"

    out = tmp_path_factory.mktemp("tune") / "local"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CandleStore, "read", read)
        patch.setattr(CandleStore, "read_last", read_last)
        result, lines = run_tune(tiny_db, out, SPACE, evaluator=recorded)
    return result, lines, reads, out


def test_a_local_study_records_its_trials_and_judges_the_best_on_the_holdout(local_study) -> None:  # type: ignore[no-untyped-def]
    import optuna

    result, lines, _, out = local_study
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 4 and set(trials["state"]) <= {"complete", "pruned"}
    complete = trials[trials["state"] == "complete"]
    assert len(complete) >= 1 and complete["sharpe"].notna().all() and (complete["folds"] >= 1).all()
    for row in complete.itertuples():  # the objective is the mean of the recorded fold scores (by fold number)
        scores = [getattr(row, f"fold_{i}") for i in range(row.folds)]
        assert row.objective == pytest.approx(np.nanmean(scores))
    assert set(trials["model.hidden_size"]) <= {8, 16} and trials["train.lr"].between(1e-3, 1e-2).all()
    study = optuna.load_study(study_name="local", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    summary = json.loads((out / "summary.json").read_text())
    best = summary["best"]
    assert best["number"] == int(complete.loc[complete["objective"].idxmax(), "number"])
    assert best["trials"] == 4 and best["sharpe_variance"] == pytest.approx(np.var(complete["sharpe"], ddof=1))
    assert best["dsr"] is None or 0 <= best["dsr"] <= 1
    # best.toml is a configuration `train --config` reads, with the best trial's parameters
    chosen = load_config(out / "best.toml")
    assert chosen.model.hidden_size == best["params"]["model.hidden_size"]
    assert chosen.train.lr == pytest.approx(best["params"]["train.lr"])
    assert chosen.targets.max_len == 60  # the rest is the base configuration
    # the model kind is a flag, not a key: the header names the command that trains what was searched
    assert "train with `lstm-trading train --config best.toml --model lstm`" in (out / "best.toml").read_text()
    holdout = summary["holdout"]
    assert holdout["objective"] is not None and summary["gap"] == pytest.approx(
        best["objective"] - holdout["objective"]
    )
    assert holdout["sentence"].startswith(holdout["verdict"] + ": ")
    assert (out / "holdout" / "summary.json").exists() and (out / "holdout" / "oos" / "trades.csv").exists()
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64") >= 3 and "deflated Sharpe ratio" in page
    assert any(line.startswith("trial 0 (") for line in lines)


def test_no_trial_reads_the_holdout(local_study, tiny_db: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, reads, out = local_study
    periods = json.loads((out / "summary.json").read_text())["periods"]
    tune_end, holdout_start = periods["tune_end"], periods["holdout_start"]
    assert holdout_start - tune_end == 21_600  # one label horizon: the largest the space can choose
    inside = [r for r in reads if r["phase"] == "trial"]
    assert inside and all(r["end"] is not None and r["end"] <= tune_end for r in inside), inside
    assert max(r["last"] for r in inside if r["last"] is not None) < tune_end
    for record in (out / "trials").glob("*/folds/*/fold.json"):  # each trial's folds: trained and tested before
        fold = json.loads(record.read_text())
        assert fold["test_end"] <= tune_end and fold["train_start"] < fold["test_start"] < tune_end
        signals = np.load(record.parent / "signals.npz")
        assert (signals["at"] < tune_end).all()
    # the holdout's walk-forward, outside the trials, does read it, and tests only inside it
    assert max(r["last"] or 0 for r in reads if r["phase"] == "outside") >= holdout_start
    held = [json.loads(path.read_text()) for path in (out / "holdout" / "folds").glob("*/fold.json")]
    assert held and all(fold["test_start"] >= holdout_start for fold in held)


def test_a_finished_study_rerun_from_the_command_line_adds_no_trial(local_study, tiny_db: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, _, finished = local_study
    out = tmp_path / "local"
    shutil.copytree(finished, out)
    trials_before = (out / "trials.csv").read_bytes()
    result = CliRunner().invoke(app, [*cli_args(tiny_db, tmp_path, SPACE), "--out", str(out), "--study", "local"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "4 of 4 trials done" in result.output and "holdout verdict: " in result.output
    assert (out / "trials.csv").read_bytes() == trials_before


# --- the same on Ray Tune ---


def test_a_ray_study_records_its_trials(ray_session: Any, tiny_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "ray"
    result, lines = run_tune(tiny_db, out, SPACE, executor="ray", workers=2)
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 4 and set(trials["state"]) <= {"complete", "pruned"}, trials
    complete = trials[trials["state"] == "complete"]
    assert len(complete) >= 1 and complete["sharpe"].notna().all()
    assert trials["model.hidden_size"].isin([8, 16]).all()
    assert trials.filter(regex=r"^fold_\d+$").notna().any(axis=1).all()  # by fold number: a skipped fold is empty
    assert result.summary["holdout"]["objective"] is not None
    holdout = json.loads((out / "holdout" / "summary.json").read_text())
    assert holdout["timings"]["executor"] == "ray"  # the holdout's folds: Ray tasks on the trials' Ray
    assert ray_session.is_initialized()  # the session's Ray, not one started and stopped by the study


def test_a_ray_study_prunes_poor_trials_on_the_expectancy_so_far(
    ray_session: Any, tiny_db: Path, tmp_path: Path
) -> None:
    """ASHA stops Ray trials whose expectancy of the trades so far falls behind; each is recorded as pruned."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the stand-in, into Ray's workers
    out = tmp_path / "ray-pruned"
    run_tune(tiny_db, out, PLANTED_SPACE, evaluator=planted, trials=6, executor="ray", workers=2,
             objective="oos_expectancy")  # fmt: skip
    poor_trials_pruned(out, 6)


# --- the search finds a planted best region (a stand-in for the walk-forward) ---


def planted_score(config: Any) -> float:
    """The planted objective: 1 at train.lr = 1e-3 and model.hidden_size = 48, falling away from there."""
    x = math.log10(config.train.lr) + 3.0
    h = (config.model.hidden_size - 48) / 40
    return float(1.0 - x * x - h * h)


def planted(task: TrialTask, report: FoldReport) -> TrialOutcome:
    """Three fold scores that peak at train.lr = 1e-3 and model.hidden_size = 48, read from the trial's config;
    for oos_expectancy, trades that return about that much each (`planted_trades`)."""
    score = planted_score(task.config)
    if task.objective == "oos_expectancy":
        return planted_trades(task, report, score)
    folds = []
    for k, wobble in enumerate((0.02, -0.01, 0.0)):
        folds.append(score + wobble)
        report(k, folds[-1])
    return TrialOutcome(float(np.mean(folds)), tuple(folds), sharpe=0.1 * score, days=30, skewness=0.0, kurtosis=3.0)


def planted_trades(task: TrialTask, report: FoldReport, score: float) -> TrialOutcome:
    """oos_expectancy as `walkforward_trial` reports it: after each fold the expectancy of the trades so far,
    nothing while there is none (a hidden size below 32 makes no trade in the first fold)."""
    returns: list[float] = []
    folds: list[float | None] = []
    for k, wobble in enumerate((0.02, -0.01, 0.0)):
        made = [] if k == 0 and task.config.model.hidden_size < 32 else [score + wobble - 0.1, score + wobble + 0.1]
        returns += made
        folds.append(float(np.mean(made)) if made else None)
        if returns:
            report(k, float(np.mean(returns)))
    value = float(np.mean(returns))
    return TrialOutcome(
        value, tuple(folds), sharpe=0.1 * score, days=30, skewness=0.0, kurtosis=3.0, trades=len(returns),
        expectancy_pct=value,
    )  # fmt: skip


def test_the_search_finds_a_planted_best_region_and_prunes_poor_trials(tiny_db: Path, tmp_path: Path) -> None:
    result, _ = run_tune(tiny_db, tmp_path / "planted", PLANTED_SPACE, evaluator=planted, trials=30)
    trials = result.trials
    counted = trials["state"].value_counts().to_dict()
    assert counted.get("complete", 0) + counted.get("pruned", 0) == 30 and counted.get("pruned", 0) >= 1
    assert (trials.loc[trials["state"] == "pruned", "folds"] < 3).all()  # stopped after a fold behind the median
    best = result.summary["best"]["params"]
    assert abs(math.log10(best["train.lr"]) + 3) < 0.5 and abs(best["model.hidden_size"] - 48) < 24, best
    assert result.summary["best"]["objective"] > 0.5


def poor_trials_pruned(out: Path, trials: int) -> pd.DataFrame:
    """trials.csv of an oos_expectancy study over `planted_trades`: `trials` trials, each completed or pruned;
    the pruned ones without an objective, stopped at the expectancy of their trades so far, and poorer than the
    completed ones; no fold score where a fold had no trade yet."""
    table = pd.read_csv(out / "trials.csv")
    assert sorted(table["number"]) == list(range(trials)) and set(table["state"]) <= {"complete", "pruned"}, table
    planted_scores = np.array([
        planted_score(tune_config().with_overrides("train", lr=lr).with_overrides("model", hidden_size=int(h)))
        for lr, h in zip(table["train.lr"], table["model.hidden_size"], strict=True)
    ])  # fmt: skip
    pruned, complete = table["state"] == "pruned", table["state"] == "complete"
    assert pruned.any() and table.loc[pruned, "objective"].isna().all() and (table.loc[complete, "folds"] == 3).all()
    assert planted_scores[pruned].mean() < planted_scores[complete].mean()
    for row, score in zip(table[pruned].itertuples(), planted_scores[pruned], strict=True):
        assert abs(getattr(row, f"fold_{row.folds - 1}") - score) <= 0.02  # what the pruner judged: trades so far
    assert table.loc[table["model.hidden_size"] < 32, "fold_0"].isna().all()  # no trade, no report
    return table


def test_two_worker_processes_report_fold_scores_to_the_owning_process(tiny_db: Path, tmp_path: Path) -> None:
    """The pool's trials send each fold's expectancy so far to the process that owns the study, whose pruner
    answers; a pruned trial is recorded as pruned and counts toward --trials."""
    out = tmp_path / "pool"
    _, lines = run_tune(
        tiny_db, out, PLANTED_SPACE, evaluator=planted, trials=12, workers=2, objective="oos_expectancy"
    )
    table = poor_trials_pruned(out, 12)
    assert sum("pruned after" in line for line in lines) == int((table["state"] == "pruned").sum())


# --- resumable: a tune killed during a trial continues the same study ---


def logged(task: TrialTask, report: FoldReport) -> TrialOutcome:
    """`planted`, each start written to $TUNE_TEST_LOG; from trial $TUNE_TEST_STALL_FROM on it hangs (to be killed)."""
    with Path(os.environ["TUNE_TEST_LOG"]).open("a") as log:
        log.write(json.dumps({"number": task.number, "params": task.params}) + "\n")
    if task.number >= int(os.environ.get("TUNE_TEST_STALL_FROM", "1000000")):
        time.sleep(120)
    return planted(task, report)


def run_resumable(db: Path, out: Path) -> Any:
    """What the killed process and the rerun both run: 4 trials of the logged stand-in."""
    return run_tune(db, out, PLANTED_SPACE, evaluator=logged)


def test_a_killed_tune_rerun_ends_with_the_requested_trials_none_repeated(
    tiny_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    out, log = tmp_path / "resumed", tmp_path / "starts.jsonl"
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); from pathlib import Path; import test_tune; "
        f"test_tune.run_resumable(Path({str(tiny_db)!r}), Path({str(out)!r}))"
    )
    env = {**os.environ, "TUNE_TEST_LOG": str(log), "TUNE_TEST_STALL_FROM": "2"}
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 3:  # trials 0 and 1 done, trial 2 running
            break
        time.sleep(0.2)
    assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
    process.send_signal(signal.SIGKILL)
    process.wait()
    study = optuna.load_study(study_name="resumed", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "RUNNING"]

    monkeypatch.setenv("TUNE_TEST_LOG", str(log))
    monkeypatch.delenv("TUNE_TEST_STALL_FROM", raising=False)
    result, lines = run_resumable(tiny_db, out)
    starts = [json.loads(line) for line in log.read_text().splitlines()]
    assert [s["number"] for s in starts] == [0, 1, 2, 3, 4]  # nothing finished ran again
    assert starts[3]["params"] == starts[2]["params"]  # the killed trial, queued again with its parameters
    assert (
        "trial 2 was left running by a stopped tune: failed, and queued again with the same parameters as trial 3"
        in lines
    )
    trials = result.trials
    assert list(trials["state"]) == ["complete", "complete", "fail", "complete", "complete"]
    # the retry is a trial of its own: it does not carry the error of the one it retries (Optuna copies it)
    assert list(trials["error"]) == ["", "", "left running by a stopped tune", "", ""]
    assert trials.loc[3, "retry_of"] == 2 and result.summary["best"]["trials"] == 4  # N counts the retried one once
    assert len({tuple(sorted(s["params"].items())) for s in starts}) == 4


# --- bad input: one line, exit 2, the study's storage as it was ---


def cli_args(db: Path, folder: Path, space_text: str) -> list[str]:
    config, space = folder / "tiny.toml", folder / "space.toml"
    config.write_text(dump_config(tune_config()))
    space.write_text(space_text)
    return [
        "tune", "--db", str(db), "--config", str(config), "--space", str(space), "--trials", "4", "--workers", "1",
        "--train-span", "36h", "--test-span", "12h", "--random-runs", "20", "--baseline", "none", "--no-sweep",
        "--accelerator", "cpu",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("space_text", "flags", "fragment"),
    [
        ("[trian.lr]\nlow = 1e-4\nhigh = 1e-2\n", [], "space.toml: unknown key 'trian.lr'; did you mean 'train.lr'?"),
        ("[train.lr]\nlow = 0.01\nhigh = 0.001\n", [], "space.toml: train.lr: low 0.01 is above high 0.001"),
        (
            '[model.hidden_size]\nchoices = [16, "32"]\n',
            [],
            "space.toml: model.hidden_size: choice '32' is a str, but the setting takes int",
        ),
        ("[train.lr]\nlow = 1e-4\nhigh = 2.0\n", [], "train.lr: high 2.0 is refused by the setting"),
        (SPACE, ["--storage", "sqlite:////no/such/folder/study.db"], "--storage sqlite:////no/such/folder/study.db: "),
        (SPACE, ["--storage", "nosuchdb://x"], "--storage nosuchdb://x: cannot open the study's storage"),
        (PLANTED_SPACE, [], "--study local in sqlite:///"),  # another space for the same study
        (SPACE, ["--objective", "sharpe"], "--objective: must be one of oos_log_loss_skill, oos_expectancy"),
    ],
)
def test_bad_input_is_one_line_and_leaves_the_study_alone(  # type: ignore[no-untyped-def]
    local_study, tiny_db: Path, tmp_path: Path, space_text: str, flags: list[str], fragment: str
) -> None:
    _, _, _, finished = local_study
    out = tmp_path / "local"
    shutil.copytree(finished, out)
    before = snapshot(out)
    args = [*cli_args(tiny_db, tmp_path, space_text), "--out", str(out), "--study", "local", *flags]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr, result.stderr
    assert snapshot(out) == before


def test_ray_not_installed_names_the_extra(tiny_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    out = tmp_path / "tune"
    result = CliRunner().invoke(app, [*cli_args(tiny_db, tmp_path, SPACE), "--executor", "ray", "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --executor ray: Ray is not installed; install the cluster extra: pip install 'lstm-trading[cluster]'\n"
    )
    assert not out.exists()


def test_the_space_refuses_settings_it_cannot_search(tmp_path: Path) -> None:
    config = tune_config()
    cases = {
        "[runtime.workers]\nchoices = [1, 2]\n": "runtime.workers: runtime settings change no result",
        "[split.scaler]\nlow = 1\nhigh = 2\n": "split.scaler: the setting takes str, which has no range",
        "[targets.max_len]\nlow = 30.5\nhigh = 60\n": "targets.max_len: low 30.5 is not a whole number",
        "[train.lr]\nlow = 0.0\nhigh = 0.01\nlog = true\n": "train.lr: a log scale needs a positive low",
        "[labels.k_tp]\nlow = 1.0\nhigh = 2.0\nstep = 0.3\n": "is not a whole number of steps of 0.3",
        "[train.lr]\nlo = 0.001\nhigh = 0.01\n": "train.lr: unknown field 'lo'; did you mean 'low'?",
        "train = 3\n": "'train' is not a setting",
    }
    for text, fragment in cases.items():
        path = tmp_path / "space.toml"
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_space(path, config)
        assert fragment in str(caught.value) and "\n" not in str(caught.value), (text, str(caught.value))
    path = tmp_path / "space.toml"
    path.write_text(SPACE + '[split.scaler]\nchoices = ["standard", "minmax"]\n')
    space = load_space(path, config)
    assert space.names == ["model.hidden_size", "train.lr", "labels.k_tp", "labels.horizon_seconds", "split.scaler"]
    assert space.largest("labels.horizon_seconds", 0) == 21_600 and space.largest("labels.every_seconds", 60) == 60


def test_a_trial_killed_after_recording_its_outcome_is_complete_not_repeated(tmp_path: Path) -> None:
    """A kill between storing a trial's outcome and telling the study leaves it RUNNING with its figures: the
    rerun records it as complete with that value instead of running it again."""
    import optuna

    from lstm_trading.runs.tune import OUTCOME_ATTR, recover_trials

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    finished = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    finished.set_user_attr(OUTCOME_ATTR, {"value": 0.25, "fold_scores": [0.25]})  # no owner: a stopped run's
    lines: list[str] = []
    recover_trials(study, owner="elsewhere:1:run", echo=lines.append)
    trial = optuna.load_study(study_name="s", storage=storage).trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.25
    assert lines == ["trial 0 had finished when its tune stopped: recorded as complete"]
    assert not [t for t in study.get_trials() if t.state == optuna.trial.TrialState.WAITING]  # nothing re-queued


# --- oos_expectancy: after each fold, the expectancy of the trial's trades so far (what the pruner judges) ---


def test_an_expectancy_trial_reports_the_expectancy_of_its_trades_so_far_after_each_fold(
    tiny_db: Path, tmp_path: Path
) -> None:
    """Through the real fold code: one report per fold with trades, at the fold's number, the last one the trial's
    objective (the stitched backtest's expectancy per trade); with --sweep, each fold at its own thresholds."""
    from lstm_trading.data.store import CandleStore
    from lstm_trading.runs.tune import EXPECTANCY

    with CandleStore(tiny_db) as store:
        first, _, _ = store.time_range("ETHUSDT")
    until = first + 4 * 24 * HOUR + 12 * HOUR  # a few folds: 36 h of training after the warm-up, 12 h tests
    walk = replace(walk_settings(), until=until, trials=1, overwrite=True, figures=False, sweep=True)
    config = tune_config().with_overrides("runtime", workers=1).with_overrides("train", epochs=2)
    task = TrialTask(0, {}, config, walk, EXPECTANCY, tiny_db, "ETHUSDT", TradeSource(), tmp_path / "trial")
    reports: list[tuple[int, float]] = []
    ends: list[int | None] = []
    real_read = CandleStore.read

    def read(self: Any, symbol: str, start: int | None = None, end: int | None = None) -> pd.DataFrame:
        ends.append(end)
        return real_read(self, symbol, start=start, end=end)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CandleStore, "read", read)
        outcome = walkforward_trial(task, lambda step, score: reports.append((step, score)))
    assert ends and all(end is not None and end <= until for end in ends)  # trades run on, but not past `until`
    folds = pd.read_csv(tmp_path / "trial" / "folds.csv")
    trades = pd.read_csv(tmp_path / "trial" / "oos" / "trades.csv")
    folds = folds[folds["status"] == "trained"]
    assert len(folds) >= 3 and folds["min_prob"].nunique() >= 2  # thresholds chosen fold by fold
    traded_by = int(folds.loc[folds["trades"] > 0, "k"].min())
    assert [step for step, _ in reports] == [int(k) for k in folds["k"] if k >= traded_by]
    for step, score in reports:  # the stitched backtest's trades of the folds to that one, whatever ran on
        so_far = trades[trades["model"].isin(folds.loc[folds["k"] <= step, "fold"])]
        assert score == pytest.approx(so_far["return_pct"].mean(), rel=1e-9), (step, reports)
    assert reports[-1][1] == pytest.approx(outcome.value)  # the last: the objective, the stitched expectancy
    assert outcome.value == pytest.approx(trades["return_pct"].mean())


def test_a_storage_url_naming_another_database_is_refused_untouched(tiny_db: Path, tmp_path: Path) -> None:
    """`--storage sqlite:///bybit1min.db` (the candles, not a study): refused before Optuna adds its tables."""
    from conftest import dump_tables

    candles = tmp_path / "candles.db"
    shutil.copy(tiny_db, candles)
    before = dump_tables(candles)
    import sqlite3

    with sqlite3.connect(candles) as connection:  # candles and symbols, and the live tables other tests may add
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
    tables = [name for (name,) in rows]
    assert {"candles", "symbols"} <= set(tables)
    args = [*cli_args(tiny_db, tmp_path, SPACE), "--out", str(tmp_path / "tune"), "--storage", f"sqlite:///{candles}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.startswith(
        f"error: --storage sqlite:///{candles}: {candles} holds other tables ({tables[0]}, "
    ) and result.stderr.endswith("), not an Optuna study; give a new file, or one that tune made\n")
    assert result.stderr.count("\n") == 1
    assert dump_tables(candles) == before


def test_a_study_remembers_its_journal_and_one_left_without_settings_is_taken_on(
    tiny_trades: pd.DataFrame, tmp_path: Path
) -> None:
    """A rerun on an edited journal is refused (its trials were scored on other trades); a study a stop left
    between its creation and its settings, with no trial, is ours to continue."""
    import optuna

    from lstm_trading.data.journal import write_journal
    from lstm_trading.runs.tune import STUDY_ATTR, _trades_document, open_storage, open_study
    from lstm_trading.runs.walkforward import TradeSource

    journal = tmp_path / "val.xlsx"
    write_journal(journal, tiny_trades.head(30))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = open_storage(url)
    optuna.create_study(storage=storage, study_name="s", direction="maximize")  # stopped before its settings
    document = {"space": {}, "trades": _trades_document(TradeSource(journal=journal))}
    study = open_study(storage, "s", document, None, None, url)
    assert study.user_attrs[STUDY_ATTR]["trades"]["sha256"] == document["trades"]["sha256"]
    assert open_study(storage, "s", document, None, None, url).study_name == "s"  # the same journal: continued
    write_journal(journal, tiny_trades.head(31))  # one trade more
    edited = {"space": {}, "trades": _trades_document(TradeSource(journal=journal))}
    with pytest.raises(ConfigError, match=r"its trials were scored with other settings: .*trades\.sha256"):
        open_study(storage, "s", edited, None, None, url)
