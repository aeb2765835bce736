"""Walk-forward: folds by time with a purge, one model per fold on its own scalers, one stitched out-of-sample
backtest, resumable, the same on every executor, and one-line errors for bad input (DESIGN.md, "Walk-forward").

One tiny walk-forward (about 4.5 days of synthetic minutes, 60-minute windows, hidden 16, 3 epochs, three
trained folds of 12 hours, the LSTM and its gbm baseline) is trained once per session and read by most tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import snapshot, tiny_config
from lstm_trading.cli import app
from lstm_trading.core.config import dump_config
from lstm_trading.core.errors import ConfigError, DataError
from lstm_trading.core.timeutil import MINUTE
from lstm_trading.report.tables import NOT_TRADED_NAMES
from lstm_trading.samples.folds import FoldSettings, fold_seed, plan_folds

DAYS = 4.5
SEED = 3
HOUR = 3600
TRAIN_SPAN = 36 * HOUR
TEST_SPAN = 12 * HOUR
HORIZON = 6 * HOUR  # the tiny labeller's, and its purge


def wf_config():  # type: ignore[no-untyped-def]
    """The tiny pipeline, trading at every moment (no costs, any probability) so that every fold has trades, and
    closing positions after 2 hours, so that few cross a fold boundary."""
    return (
        tiny_config()
        .with_overrides("backtest", max_hold_seconds=2 * HOUR, min_prob=0.0, min_ev=-50.0, fee=0.0, slippage=0.0)
        .with_overrides("runtime", cache=False)
    )


def wf_settings(**changes: Any):  # type: ignore[no-untyped-def]
    from lstm_trading.runs.walkforward import WalkForwardSettings

    # the stitching tests trade the settings' thresholds; the per-fold sweep has its own test
    base = WalkForwardSettings(
        train_span=TRAIN_SPAN, test_span=TEST_SPAN, random_runs=100, fold_workers=1, accelerator="cpu", sweep=False
    )
    return replace(base, **changes)


def run_wf(db: Path, out: Path, config: Any = None, echo: Any = None, **changes: Any):  # type: ignore[no-untyped-def]
    from lstm_trading.runs.walkforward import TradeSource, walkforward_run

    return walkforward_run(
        config or wf_config(),
        wf_settings(**changes),
        db=db,
        symbol="ETHUSDT",
        source=TradeSource(),
        out=out,
        echo=echo or (lambda _: None),
    )


def shows_each_epoch(lines: list[str], folds: Any, epochs: int = 3) -> bool:
    """Whether the progress lines name every epoch of every fold, with the folds done and the time left."""
    shown = {
        (m[1], int(m[2]), int(m[3]))
        for m in (re.match(r"fold (\S+): epoch (\d+)/(\d+); \d+ of \d+ folds done, ", line) for line in lines)
        if m
    }
    return shown == {(fold, epoch, epochs) for fold in folds for epoch in range(1, epochs + 1)}


@pytest.fixture(scope="session")
def wf_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lstm_trading.data.store import CandleStore
    from lstm_trading.data.synthetic import synthetic_candles

    path = tmp_path_factory.mktemp("wf") / "market.db"
    with CandleStore(path, create=True) as store:
        store.register_symbol("ETHUSDT", "synthetic", "linear")
        store.upsert("ETHUSDT", synthetic_candles(DAYS, seed=SEED), source="synthetic market")
    return path


@pytest.fixture(scope="session")
def wf_out(wf_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference walk-forward: in this process, the LSTM and its gbm baseline (read-only: copy it first)."""
    import torch

    out = tmp_path_factory.mktemp("wf_runs") / "wf"
    threads = torch.get_num_threads()
    try:
        result = run_wf(wf_db, out)
    finally:
        torch.set_num_threads(threads)
    assert not result.failures
    return out


@pytest.fixture(scope="session")
def samples_and_times(wf_db: Path):  # type: ignore[no-untyped-def]
    """The tiny market's first-touch samples and usable feature times, as the walk-forward plans from them."""
    from lstm_trading.features.cache import feature_matrix
    from lstm_trading.runs.walkforward import _label
    from lstm_trading.samples.targets import build_samples

    config = wf_config()
    trades, candles = _label(config, wf_db, "ETHUSDT")
    matrix = feature_matrix(candles, config.features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        samples, _ = build_samples(matrix, trades, config.targets)
    return samples, matrix.timestamps, int(candles["timestamp"].iloc[-1]) + MINUTE


def folds_frame(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "folds.csv")


# --- folds ---


def test_folds_train_only_on_labels_known_before_their_test_period(samples_and_times) -> None:  # type: ignore[no-untyped-def]
    samples, times, end = samples_and_times
    settings = FoldSettings(TRAIN_SPAN, TEST_SPAN, horizon_seconds=HORIZON)
    plan = plan_folds(samples, times, end, settings, seed=42)
    assert plan.first == int(samples.start_time.min()) + TRAIN_SPAN
    assert len(plan.folds) == 3 and [s.k for s in plan.skipped] == [0]
    for fold in plan.folds:
        t_k, split = fold.test_start, fold.split
        assert t_k == plan.first + fold.k * TEST_SPAN
        assert fold.test_end == min(t_k + TEST_SPAN, end)
        for part in (split.train, split.val):  # no label horizon reaches into the test period
            assert (part.start_time + HORIZON <= t_k).all()
            assert (part.start_time >= t_k - TRAIN_SPAN).all()  # sliding: the last train span only
        # validation: the latest trades, and no training label horizon reaches into it
        assert split.train.start_time.max() + HORIZON <= split.val.start_time.min()
        assert ((split.test.start_time >= t_k) & (split.test.start_time < fold.test_end)).all()
        assert fold.seed == fold_seed(42, t_k)
    in_span = (samples.start_time >= plan.folds[0].test_start - TRAIN_SPAN) & (
        samples.start_time + HORIZON <= plan.folds[0].test_start
    )
    first = plan.folds[0].split
    assert len(first.train) + len(first.val) + first.purged["train"] == int(in_span.sum())
    assert len(first.val) == round(0.15 * int(in_span.sum()))

    expanding = plan_folds(samples, times, end, replace(settings, scheme="expanding"), seed=42)
    assert {fold.train_start for fold in expanding.folds} == {int(samples.start_time.min())}
    assert len(expanding.folds[-1].split.train) > len(plan.folds[-1].split.train)
    # a fold's seed depends on its own start, not on how many folds precede it
    later = plan_folds(samples, times, end, replace(settings, train_span=TRAIN_SPAN + TEST_SPAN), seed=42)
    assert later.folds[0].test_start == plan.folds[0].test_start and later.folds[0].seed == plan.folds[0].seed


def test_fold_settings_refuse_bad_spans(samples_and_times) -> None:  # type: ignore[no-untyped-def]
    samples, times, end = samples_and_times
    with pytest.raises(ConfigError, match="--step 6h is shorter than --test-span 12h"):
        FoldSettings(TRAIN_SPAN, TEST_SPAN, step=6 * HOUR)
    with pytest.raises(ConfigError, match="--test-span 30d is longer than the data"):
        plan_folds(samples, times, end, FoldSettings(TRAIN_SPAN, 30 * 86_400), seed=0)
    with pytest.raises(ConfigError, match="--train-span 5d: no fold fits"):
        plan_folds(samples, times, end, FoldSettings(5 * 86_400, TEST_SPAN), seed=0)
    with pytest.raises(DataError, match="no fold left: all 4 folds were skipped"):
        plan_folds(samples, times, end, FoldSettings(TRAIN_SPAN, TEST_SPAN, min_train_trades=500), seed=0)


# --- what the folds trained ---


def test_each_fold_scaler_is_fitted_on_its_own_training_rows(wf_out: Path, samples_and_times) -> None:  # type: ignore[no-untyped-def]
    from lstm_trading.features.compute import compute_features
    from lstm_trading.features.matrix import FeatureMatrix
    from lstm_trading.models.bundle import load_bundle
    from lstm_trading.runs.walkforward import fold_candles
    from lstm_trading.samples.scalers import FeatureScaler
    from lstm_trading.samples.windows import window_bounds

    samples, times, end = samples_and_times
    plan = plan_folds(samples, times, end, FoldSettings(TRAIN_SPAN, TEST_SPAN, horizon_seconds=HORIZON), seed=42)
    config = wf_config()
    offsets = []
    for fold in plan.folds:
        bundle = load_bundle(wf_out / "folds" / fold.name)
        candles = fold_candles(
            Path(bundle.training.sources.db or ""), "ETHUSDT", fold.train_start, fold.test_end, config, fold.name
        )
        matrix = FeatureMatrix.from_frame(compute_features(candles, config.features), config.features.max_gap_minutes)
        train = fold.split.train
        start, stop = window_bounds(matrix.timestamps, train.start_time, config.targets.max_len, matrix.max_gap_minutes)
        rows = matrix.values[int(start.min()) : int(stop.max())]  # the training windows' rows, nothing after
        expected = FeatureScaler.fit(rows, "standard")
        np.testing.assert_allclose(bundle.feature_scaler.offset, expected.offset, rtol=1e-12)
        np.testing.assert_allclose(bundle.feature_scaler.scale, expected.scale, rtol=1e-12)
        everything = FeatureScaler.fit(matrix.values, "standard")
        assert not np.allclose(bundle.feature_scaler.offset, everything.offset)
        gbm = load_bundle(wf_out / "folds" / f"{fold.name}-gbm")
        np.testing.assert_array_equal(gbm.feature_scaler.offset, bundle.feature_scaler.offset)
        assert bundle.training.class_counts == train.class_counts()
        assert bundle.training.seed == fold.seed
        offsets.append(bundle.feature_scaler.offset)
    assert not np.allclose(offsets[0], offsets[1])  # each fold its own


def test_outputs_folds_table_and_verdict(wf_out: Path) -> None:
    folds = folds_frame(wf_out)
    trained = folds[folds["status"] == "trained"]
    assert sorted(set(trained["model"])) == ["gbm", "lstm"] and len(trained) == 6
    assert (folds[folds["status"] == "skipped"]["reason"].str.len() > 0).all()
    assert trained["log_loss"].notna().sum() >= 4 and (trained["prior_log_loss"].dropna() > 0).all()
    trades = pd.read_csv(wf_out / "oos" / "trades.csv")
    gbm_trades = pd.read_csv(wf_out / "oos" / "gbm" / "trades.csv")
    lstm_rows = trained[trained["model"] == "lstm"]
    assert set(trades["model"]) <= set(lstm_rows["fold"]) and len(trades) == lstm_rows["trades"].sum() > 0
    assert set(gbm_trades["model"]) <= set(trained[trained["model"] == "gbm"]["fold"])
    summary = json.loads((wf_out / "summary.json").read_text())
    stats = json.loads((wf_out / "oos" / "stats.json").read_text())
    lstm = summary["models"]["lstm"]
    significance = stats["model"]["significance"]
    assert lstm["verdict"] == significance["verdict"] and lstm["p_random_entries"] == significance["p_random_entries"]
    assert summary["verdict"] == lstm["sentence"] and summary["verdict"].startswith(lstm["verdict"] + ": ")
    judged = trained[(trained["model"] == "lstm") & trained["log_loss"].notna()]
    above = judged["log_loss"].mean() > judged["prior_log_loss"].mean()
    assert lstm["mean_log_loss"] == pytest.approx(judged["log_loss"].mean())
    assert (lstm["no_information"] is not None) == above  # the evaluation's line, over the folds
    # the machinery has power: the hindsight journal's trades (labels that saw the future) beat every random run,
    # p < 0.01 with the 100 runs the fixture draws
    hindsight = stats["baselines"]["journal"]["significance"]
    assert hindsight["random_runs"] == 100
    assert hindsight["p_random_entries"] == pytest.approx(1 / 101) and hindsight["p_random_entries"] < 0.01
    judged = lstm_rows["beats_prior"].dropna()
    assert lstm["folds_with_log_loss"] == len(judged) and lstm["folds_beating_prior"] == int(judged.astype(bool).sum())
    assert "total_seconds" in summary["timings"] and "seconds" not in " ".join(folds.columns)
    page = (wf_out / "report.html").read_text()
    assert lstm["sentence"].split(":")[0] in page and page.count("data:image/png;base64") >= 3


# --- the stitched backtest ---


def _levels_and_exits(trades: pd.DataFrame) -> pd.DataFrame:
    """What a trade is, whatever the equity it was sized from (the stitched run carries equity across folds)."""
    columns = ["entry_time", "exit_time", "side", "entry_price", "stop_loss", "take_profit", "exit_reason",
               "exit_price", "return_pct"]  # fmt: skip
    return trades[columns].reset_index(drop=True)


def test_stitched_trades_equal_per_fold_backtests_where_no_position_crosses(wf_out: Path, wf_db: Path) -> None:
    from lstm_trading.backtest.results import run_backtest
    from lstm_trading.models.bundle import load_bundle
    from lstm_trading.runs.candles import symbol_funding
    from lstm_trading.runs.walkforward import fold_candles

    config = wf_config()
    stitched = pd.read_csv(wf_out / "oos" / "trades.csv")
    folds = folds_frame(wf_out)
    trained = folds[(folds["status"] == "trained") & (folds["model"] == "lstm")]
    compared = 0
    reference = []
    for row in trained.itertuples():
        record = json.loads((wf_out / "folds" / row.fold / "fold.json").read_text())
        start, end = record["test_start"], record["test_end"]
        candles = fold_candles(wf_db, "ETHUSDT", record["train_start"], end, config, row.fold)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            alone = run_backtest(
                load_bundle(wf_out / "folds" / row.fold), candles, start=start, end=end, config=config.backtest,
                random_runs=5, funding=symbol_funding(wf_db, "ETHUSDT", config.backtest.funding).schedule,
            ).model.trades()  # fmt: skip
        mine = stitched[stitched["model"] == row.fold]
        carried_in = ((stitched["entry_time"] < start) & (stitched["exit_time"] > start)).any()
        carried_out = (mine["exit_time"] >= end).any() or (alone["exit_reason"] == "end_of_data").any()
        if not carried_in and not carried_out:
            pd.testing.assert_frame_equal(_levels_and_exits(mine), _levels_and_exits(alone))
            reference.append(alone)
            compared += 1
    assert compared >= 1
    assert len(pd.concat(reference)) > 0


def test_a_position_open_at_a_fold_boundary_runs_on_in_the_stitched_loop(wf_out: Path, wf_db: Path) -> None:
    from lstm_trading.backtest.results import backtest_period
    from lstm_trading.features.compute import compute_features
    from lstm_trading.features.matrix import FeatureMatrix
    from lstm_trading.models.bundle import load_bundle
    from lstm_trading.predict import Features, Signals
    from lstm_trading.runs.candles import all_candles
    from lstm_trading.runs.walkforward import FoldSignals, model_column, stitch_signals

    config = wf_config()
    candles = all_candles(wf_db, "ETHUSDT")
    matrix = FeatureMatrix.from_frame(compute_features(candles, config.features), config.features.max_gap_minutes)
    boundary = int(candles["timestamp"].iloc[-1]) - 6 * HOUR
    boundary -= boundary % HOUR

    def fold(name: str, start: int, end: int, buy_at: int) -> FoldSignals:
        at = np.arange(start, end, 15 * MINUTE, dtype=np.int64)
        proba = np.tile([0.0, 0.0, 1.0], (len(at), 1))
        proba[at == buy_at] = [0.98, 0.01, 0.01]  # a Buy whose 50 % levels only the maximum hold closes
        wide = np.full(len(at), 50.0)
        return FoldSignals(name, start, end, Signals(at=at, proba=proba, stop_loss_pct=wide, take_profit_pct=wide))

    first = fold("000-a", boundary - 2 * HOUR, boundary, buy_at=boundary - 15 * MINUTE)
    second = fold("001-b", boundary, boundary + 2 * HOUR, buy_at=boundary + 15 * MINUTE)
    traded, names = stitch_signals(candles, [second, first], Features(matrix, matrix.values))
    assert list(names[:2]) == ["000-a", "000-a"] and names[-1] == "001-b"
    bundle = load_bundle(next((wf_out / "folds").glob("*[0-9]")))
    result = backtest_period(traded, bundle, start=first.test_start, config=config.backtest, random_runs=5)
    trades = result.model.trades()
    assert len(trades) == 1  # the second fold's Buy comes while the first fold's position is still open
    assert trades["entry_time"].iloc[0] == boundary - 15 * MINUTE
    assert trades["exit_time"].iloc[0] == boundary - 15 * MINUTE + 2 * HOUR  # the maximum hold, inside fold 2
    assert list(model_column(trades["entry_time"].to_numpy(), [first, second])) == ["000-a"]
    assert result.model.position[np.searchsorted(result.candles.timestamp, boundary)] == 1


# --- resuming ---


def test_a_killed_walkforward_rerun_trains_only_what_was_lost_and_gives_the_same_results(
    wf_out: Path, wf_db: Path, tmp_path: Path
) -> None:
    out = tmp_path / "wf"
    shutil.copytree(wf_out, out)
    folds = sorted(path for path in (out / "folds").iterdir())
    last = folds[-2:]  # the third trained fold and its gbm twin: killed while the third fold trained
    (last[0] / "fold.json").unlink()  # its checkpoints stay, as a kill mid-training leaves them
    shutil.rmtree(last[1])
    for name in ("summary.json", "folds.csv", "report.html"):
        (out / name).unlink()
    shutil.rmtree(out / "oos")
    kept = {path.name: (path / "fold.json").stat().st_mtime_ns for path in folds[:-2]}
    result = run_wf(wf_db, out)
    assert (result.trained, result.reused) == (2, 4)
    assert {name: (out / "folds" / name / "fold.json").stat().st_mtime_ns for name in kept} == kept
    for name in ("folds.csv", "oos/trades.csv", "oos/equity.csv", "oos/gbm/trades.csv"):
        assert (out / name).read_bytes() == (wf_out / name).read_bytes(), name


def test_a_rerun_with_other_settings_or_candles_is_refused_and_changes_nothing(
    wf_out: Path, wf_db: Path, tmp_path: Path
) -> None:
    from lstm_trading.data.store import CandleStore

    out = tmp_path / "wf"
    shutil.copytree(wf_out, out)
    before = snapshot(out)
    with pytest.raises(ConfigError, match=r"other settings: train\.epochs = 4 \(the folds have 3\)"):
        run_wf(wf_db, out, config=wf_config().with_overrides("train", epochs=4))
    db = tmp_path / "changed.db"
    shutil.copyfile(wf_db, db)
    record = json.loads(next((out / "folds").glob("*/fold.json")).read_text())
    with CandleStore(db) as store:
        candles = store.read("ETHUSDT", start=record["test_start"], end=record["test_start"] + MINUTE)
        candles["close"] = candles["high"]  # a repaired close, inside the candle's range
        store.upsert("ETHUSDT", candles, replace=True, source="a repaired minute")
    with pytest.raises(DataError, match=f"fold {record['fold']}: its candles in .* changed since it was trained"):
        run_wf(db, out)
    assert snapshot(out) == before


def test_a_failed_fold_is_named_the_others_finish_and_no_summary_is_written(
    wf_out: Path, cli_args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lstm_trading.runs.walkforward as walkforward

    out = tmp_path / "wf"
    shutil.copytree(wf_out, out)
    lstm, gbm = sorted((out / "folds").iterdir())[-2:]
    (lstm / "fold.json").unlink()
    (gbm / "fold.json").unlink()
    real = walkforward.train_fold

    def failing(task: Any, **hooks: Any) -> Any:
        if task.kind == "gbm":
            raise DataError("the disk is full")
        return real(task, **hooks)

    monkeypatch.setattr(walkforward, "train_fold", failing)
    result = CliRunner().invoke(app, [*cli_args, "--out", str(out), "--train-span", "36h", "--test-span", "12h"])
    assert result.exit_code == 1, (result.output, result.exception)
    assert f"fold {gbm.name} failed: the disk is full" in result.output
    assert result.stderr.startswith(f"error: 1 fold(s) failed ({gbm.name}); no summary.json written")
    assert (lstm / "fold.json").exists() and not (gbm / "fold.json").exists()
    assert not (out / "summary.json").exists()


def test_the_moments_not_traded_are_counted_by_reason_printed_and_reported(
    wf_out: Path, cli_args: list[str], tmp_path: Path
) -> None:
    """Few or no trades must say why (EV under min-ev, a take profit that cannot pay the costs, ...), as the
    backtest does: a stricter min-ev restitches the finished folds without training and names the reasons."""
    out = tmp_path / "wf"
    shutil.copytree(wf_out, out)
    flags = ["--train-span", "36h", "--test-span", "12h", "--no-sweep", "--min-ev", "0.3"]
    result = CliRunner().invoke(app, [*cli_args, "--out", str(out), *flags])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "(0 trained now, " in result.output  # only the stitched backtest is redone
    summary = json.loads((out / "summary.json").read_text())
    for kind, folder in (("lstm", out / "oos"), ("gbm", out / "oos" / "gbm")):
        stats = json.loads((folder / "stats.json").read_text())
        counts = summary["models"][kind]["not_traded"]
        expected = {key: value for key, value in stats["not_traded"].items() if value}
        for key, value in (stats["model"].get("skipped") or {}).items():
            expected[key] = expected.get(key, 0) + value
        assert counts == {key: value for key, value in expected.items() if value}
        assert counts["ev_below_min"] > 0 and summary["models"][kind]["moments"] == stats["moments"]
        ordered = sorted(counts.items(), key=lambda item: -item[1])
        reason, count = ordered[0]
        line = f"{kind}: {stats['moments']:,} moments out of sample, not traded: {NOT_TRADED_NAMES[reason]}: {count:,}"
        assert line in result.output, result.output
    page = (out / "report.html").read_text()
    assert page.count("Moments not traded (") == 2 and "EV at or below min-ev" in page


def test_a_killed_fold_process_fails_its_fold_alone_and_the_rerun_retries_only_it(
    wf_out: Path, wf_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fold process killed mid-training (SIGKILL, as the out-of-memory killer sends) fails that fold by name
    after its epoch was shown; the other process's fold finishes; no summary.json; the rerun trains only the
    killed fold, and the results are those of an undisturbed walk-forward."""
    import lstm_trading.runs.walkforward as walkforward
    from walkforward_kill_hook import KilledAfterFirstEpoch

    out = tmp_path / "wf"
    shutil.copytree(wf_out, out)
    victim, survivor = sorted(path for path in (out / "folds").iterdir() if not path.name.endswith("-gbm"))[:2]
    (victim / "fold.json").unlink()
    (survivor / "fold.json").unlink()
    real = walkforward.build_tasks

    def with_a_victim(*args: Any, **kwargs: Any) -> Any:
        return [
            KilledAfterFirstEpoch(**vars(task)) if task.run_name == victim.name else task
            for task in real(*args, **kwargs)
        ]

    monkeypatch.setattr(walkforward, "build_tasks", with_a_victim)
    lines: list[str] = []
    result = walkforward.walkforward_run(
        wf_config(), wf_settings(fold_workers=2), db=wf_db, symbol="ETHUSDT", source=walkforward.TradeSource(),
        out=out, echo=lines.append,
    )  # fmt: skip
    died = "worker process died (killed by SIGKILL, signal 9; out of memory?)"
    assert result.failures == [walkforward.FoldFailure(victim.name, died)]
    shown = rf"fold {victim.name}: epoch 1/3; [01] of 2 folds done, about \d+ s left"  # heard from its process
    assert any(re.fullmatch(shown, line) for line in lines), lines
    assert f"fold {victim.name} failed: {died}" in lines
    assert (survivor / "fold.json").exists() and not (victim / "fold.json").exists()
    assert result.summary is None and not (out / "summary.json").exists()
    monkeypatch.undo()
    kept = {path.name: (path / "fold.json").stat().st_mtime_ns for path in (out / "folds").iterdir() if path != victim}
    rerun = run_wf(wf_db, out)
    assert not rerun.failures and (rerun.trained, rerun.reused) == (1, 5)
    assert {name: (out / "folds" / name / "fold.json").stat().st_mtime_ns for name in kept} == kept
    for name in ("folds.csv", "oos/trades.csv", "oos/gbm/trades.csv"):
        assert (out / name).read_bytes() == (wf_out / name).read_bytes(), name


# --- executors (the session's one local Ray: `ray_session` in conftest.py) ---


def test_local_processes_and_ray_tasks_give_identical_folds(
    wf_out: Path, wf_db: Path, tmp_path: Path, ray_session: Any
) -> None:
    expected = folds_frame(wf_out)
    expected = expected[expected["model"] == "lstm"].reset_index(drop=True)
    for executor, out in (("local", tmp_path / "pool"), ("ray", tmp_path / "ray")):
        lines: list[str] = []
        result = run_wf(wf_db, out, echo=lines.append, baseline="none", executor=executor, fold_workers=2)
        assert not result.failures, result.failures
        assert shows_each_epoch(lines, expected.loc[expected["status"] == "trained", "fold"]), lines
        pd.testing.assert_frame_equal(folds_frame(out), expected)
        assert (out / "oos" / "trades.csv").read_bytes() == (wf_out / "oos" / "trades.csv").read_bytes()


def test_fold_workers_default_to_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under `taskset -c 0` one fold process, not one per core of the machine; never more than the folds."""
    from lstm_trading.core.machine import usable_cores
    from lstm_trading.runs.walkforward import WalkForwardSettings, local_workers

    settings = WalkForwardSettings(train_span=36 * 3_600, test_span=12 * 3_600)
    try:
        for cores, folds, workers in (({0}, 6, 1), ({0, 2, 3}, 6, 3), ({0, 2, 3}, 2, 2)):
            monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, cores=cores: cores, raising=False)
            usable_cores.cache_clear()
            assert local_workers(settings, folds) == workers
    finally:
        monkeypatch.undo()
        usable_cores.cache_clear()  # the real count for the tests after this one


def test_a_ray_folds_epoch_reports_lend_its_cpu_to_no_other_fold(ray_session: Any) -> None:
    """Ray lets the next queued task run while one blocks in `ray.get`: epoch reports that waited for the queue
    let a third fold train beside two on 2 CPUs (each then about 50 % slower)."""
    import ray
    from ray.util.queue import Queue

    from lstm_trading.runs.walkforward import EpochSender

    epochs = Queue(actor_options={"num_cpus": 0})

    @ray.remote(num_cpus=2)  # every CPU of the session's Ray
    def reporting(queue: Any) -> float:
        send = EpochSender(queue, "fold")
        for epoch in range(1, 21):
            send(epoch, 20)
            time.sleep(0.05)
        trained = time.time()
        send.flush()  # as the fold ends: every report in the queue before its outcome
        assert queue.qsize() == 20
        return trained

    @ray.remote(num_cpus=1)
    def another() -> float:
        return time.time()

    try:
        busy = reporting.remote(epochs)
        deadline = time.monotonic() + 60
        while epochs.qsize() == 0 and time.monotonic() < deadline:  # it runs and reports
            time.sleep(0.02)
        queued = another.remote()
        assert ray.get(queued) >= ray.get(busy)
        # every report arrived (the queue's asynchronous actor may take them out of order: the driver sorts)
        assert sorted(epochs.get_nowait_batch(epochs.qsize())) == [("fold", epoch, 20) for epoch in range(1, 21)]
    finally:
        epochs.shutdown()


# --- bad input at the command line ---


@pytest.fixture
def cli_args(wf_db: Path, tmp_path: Path) -> list[str]:
    config = tmp_path / "tiny.toml"
    config.write_text(dump_config(wf_config()))
    return ["walkforward", "--db", str(wf_db), "--config", str(config), "--random-runs", "5", "--fold-workers", "1"]


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--train-span", "36h", "--test-span", "30d"], "--test-span 30d is longer than the data"),
        (["--train-span", "30m", "--test-span", "12h"], "--train-span 30 minutes is shorter than one window"),
        (["--train-span", "36h", "--test-span", "12h", "--step", "6h"], "--step 6h is shorter than --test-span 12h"),
        (["--train-span", "36h", "--test-span", "12h", "--label-every", "4h"], "no fold left"),
        (["--train-span", "36h", "--test-span", "12h", "--executor", "dask"], "--executor: must be one of local, ray"),
        (
            ["--train-span", "36h", "--test-span", "12h", "--executor", "ray", "--ray-address", "127.0.0.1:9"],
            "--ray-address 127.0.0.1:9: no Ray head answers there",
        ),
    ],
)
def test_bad_input_is_one_line_and_leaves_finished_folds_alone(
    cli_args: list[str], flags: list[str], fragment: str, wf_out: Path, tmp_path: Path
) -> None:
    out = tmp_path / "wf"
    shutil.copytree(wf_out, out)
    before = snapshot(out)
    result = CliRunner().invoke(app, [*cli_args, "--out", str(out), *flags])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr, result.stderr
    assert snapshot(out) == before


def test_a_ray_head_that_answers_but_cannot_be_joined_is_one_line(
    cli_args: list[str], wf_out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The port takes the TCP connect, then ray.init fails (here after 40 s: the head gave a node IP this machine
    cannot reach); its ConnectionError is stood in for, as ray.init raised it, to keep the test fast."""
    import ray

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def unjoinable(*_: object, **__: object) -> None:
        raise ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:6391")

    monkeypatch.setattr(ray, "init", unjoinable)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # the session's local Ray may be up already
    out = tmp_path / "wf"
    shutil.copytree(wf_out, out)
    before = snapshot(out)
    flags = ["--train-span", "36h", "--test-span", "12h", "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"]
    try:
        result = CliRunner().invoke(app, [*cli_args, "--out", str(out), *flags])
    finally:
        listener.close()
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.count("\n") == 1, result.stderr
    expected = f"error: --ray-address 127.0.0.1:{port}: the Ray head could not be joined "
    assert result.stderr.startswith(expected), result.stderr
    assert "192.0.2.2:6391" in result.stderr
    assert snapshot(out) == before


def test_ray_not_installed_names_the_extra(
    cli_args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    flags = ["--train-span", "36h", "--test-span", "12h", "--executor", "ray", "--out", str(tmp_path / "wf")]
    result = CliRunner().invoke(app, [*cli_args, *flags])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --executor ray: Ray is not installed; install the cluster extra: pip install 'lstm-trading[cluster]'\n"
    )
    assert not (tmp_path / "wf").exists()


@pytest.mark.parametrize("min_trades", [30, 3])
def test_each_folds_thresholds_are_chosen_on_its_own_validation_period(
    wf_out: Path, wf_db: Path, tmp_path, monkeypatch, min_trades: int
) -> None:  # type: ignore[no-untyped-def]
    """The decisions issue's sweep per fold: the grid traded on the fold's validation period (never its test),
    its best cell with enough trades applied to the fold's test moments; a fold without one does not trade.
    The tiny folds' validation periods hold fewer than the rule's 30 trades, so a lower bar is tried too."""
    from lstm_trading.backtest import sweep as sweep_module

    monkeypatch.setattr(sweep_module, "MIN_SWEEP_TRADES", min_trades)
    out = Path(shutil.copytree(wf_out, tmp_path / "wf"))
    config = wf_config().with_overrides("backtest", fee=0.0005)  # costs make the cells differ
    result = run_wf(wf_db, out, config=config, sweep=True)
    assert not result.failures and result.trained == 0  # the folds are reused: only the stitching is redone
    stats = json.loads((out / "oos" / "stats.json").read_text())
    trades = pd.read_csv(out / "oos" / "trades.csv")
    folds = folds_frame(out).set_index("fold")
    chosen_any = False
    for fold in stats["folds"]:
        sweep = fold["sweep"]
        assert sweep["validation_period"][1] <= fold["test_start"]  # chosen before its test period begins
        eligible = [cell for cell in sweep["grid"] if cell["trades"] >= min_trades]
        mine = trades[trades["model"] == fold["model"]]
        chosen_any = chosen_any or bool(eligible)
        if eligible:
            best = max(eligible, key=lambda cell: cell["expectancy_pct"])
            assert sweep["chosen"] == {"min_prob": best["min_prob"], "min_ev": best["min_ev"]}
            assert folds.loc[fold["model"], "min_prob"] == best["min_prob"]
            assert (mine["probability"] >= best["min_prob"]).all()
        else:
            assert sweep["chosen"] is None and len(mine) == 0
    assert chosen_any == (min_trades == 3)  # both branches are exercised


def test_warm_start_continues_each_fold_from_the_one_before(wf_db: Path, tmp_path: Path) -> None:
    """--warm-start: fold k starts from fold k-1's weights at the fine-tuning rate and keeps its scalers (so the
    weights read the inputs they were trained on); folds.csv says which fold each started from."""
    import torch

    from lstm_trading.models.bundle import load_bundle

    threads = torch.get_num_threads()
    lines: list[str] = []
    try:
        result = run_wf(wf_db, tmp_path / "warm", echo=lines.append, warm_start=True, baseline="none")
    finally:
        torch.set_num_threads(threads)
    assert not result.failures
    folds = folds_frame(tmp_path / "warm")
    trained = folds[folds["status"] == "trained"].sort_values("k")
    names = list(trained["fold"])
    assert len(names) >= 2
    assert shows_each_epoch(lines, names), lines  # in this process: the training's epochs directly
    assert trained["warm_from"].fillna("").tolist() == ["", *names[:-1]]
    first = load_bundle(tmp_path / "warm" / "folds" / names[0])
    config = wf_config()
    for name in names[1:]:
        bundle = load_bundle(tmp_path / "warm" / "folds" / name)
        assert bundle.feature_scaler.to_json() == first.feature_scaler.to_json()
        logged = pd.read_csv(tmp_path / "warm" / "folds" / name / "logs" / "metrics.csv")
        rates = logged.filter(like="lr-").stack()
        assert len(rates) and float(rates.max()) <= config.train.fine_tune_lr * (1 + 1e-9)
    refused = CliRunner().invoke(
        app,
        ["walkforward", "--db", str(wf_db), "--train-span", "2d", "--test-span", "1d", "--warm-start",
         "--executor", "ray", "--out", str(tmp_path / "ray")],
    )  # fmt: skip
    assert refused.exit_code == 2 and "--warm-start" in refused.output


def test_on_a_random_walk_the_verdict_finds_no_edge(tmp_path: Path) -> None:
    """Minutes whose returns are independent draws hold nothing to learn: trading every fold's signals, the
    stitched verdict must not claim an edge (its size, over many draws, is the decisions issue's test)."""
    import torch

    from lstm_trading.data.store import CandleStore

    rng = np.random.default_rng(11)
    minutes = int(DAYS * 24 * 60)
    close = 2_000 * np.exp(np.cumsum(rng.normal(0, 6e-4, minutes)))
    opens = np.r_[2_000, close[:-1]]
    spread = np.abs(rng.normal(0, 3e-4, minutes)) * close
    candles = pd.DataFrame(
        {
            "timestamp": 1_704_067_200 + 60 * np.arange(minutes, dtype=np.int64),
            "open": opens,
            "high": np.maximum(opens, close) + spread,
            "low": np.minimum(opens, close) - spread,
            "close": close,
            "volume": rng.lognormal(3, 0.5, minutes),
        }
    )
    db = tmp_path / "walk.db"
    with CandleStore(db, create=True) as store:
        store.upsert("ETHUSDT", candles, source="a random walk")
    threads = torch.get_num_threads()
    try:
        result = run_wf(db, tmp_path / "wf", baseline="none", random_runs=200)
    finally:
        torch.set_num_threads(threads)
    assert not result.failures
    figures = result.verdicts["lstm"]
    assert figures["trades"] >= 30  # enough trades that the verdict is a judgement, not "too few"
    assert figures["verdict"] == "no evidence of an edge", figures


def test_walkforward_reads_the_other_symbols_it_is_given(wf_db: Path, tmp_path: Path) -> None:
    """--with reaches the folds' candle loader: a symbol the database lacks is the loader's one-line error."""
    result = CliRunner().invoke(
        app,
        ["walkforward", "--db", str(wf_db), "--train-span", "36h", "--test-span", "12h", "--max-len", "60",
         "--with", "BTCUSDT", "--out", str(tmp_path / "wf")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "BTCUSDT" in result.output and "lstm-trading ingest exchange" in result.output


def test_a_skipped_fold_keeps_the_model_before_it(wf_out: Path, wf_db: Path) -> None:
    """As a live loop that retrains keeps its model when a retraining is skipped: a skipped fold's test period
    is decided by the last trained fold's model, exactly as that model predicts there; before any trained fold
    nothing decides."""
    from lstm_trading.backtest.simulation import period_signals
    from lstm_trading.models.bundle import load_bundle
    from lstm_trading.runs.walkforward import FoldSignals, carried_signals, fold_candles, read_fold_signals
    from lstm_trading.samples.folds import FoldPlan, SkippedFold

    config = wf_config()
    folds = folds_frame(wf_out)
    trained = folds[(folds["status"] == "trained") & (folds["model"] == "lstm")].sort_values("k")
    records = [json.loads((wf_out / "folds" / name / "fold.json").read_text()) for name in trained["fold"]]
    first, last = records[0], records[-1]
    signals = [
        FoldSignals(
            r["run"], r["test_start"], r["test_end"], read_fold_signals(wf_out / "folds" / r["run"] / "signals.npz"),
            None, wf_out / "folds" / r["run"],
        )
        for r in records[:-1]
    ]  # fmt: skip
    # the last trained fold's period, as if it had been skipped; and one before every trained fold
    skipped = [
        SkippedFold(last["k"], last["test_start"], last["test_end"], "too few trades"),
        SkippedFold(0, first["test_start"] - 6 * HOUR, first["test_start"], "too few trades"),
    ]
    plan = FoldPlan(first=first["test_start"], folds=[], skipped=skipped)
    carried = carried_signals(signals, plan, config, db=wf_db, symbol="ETHUSDT")
    assert len(carried) == 1 and carried[0].run == records[-2]["run"]
    bundle = load_bundle(wf_out / "folds" / records[-2]["run"])
    candles = fold_candles(wf_db, "ETHUSDT", last["test_start"], last["test_end"], config, "check")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = period_signals(bundle, candles, last["test_start"], last["test_end"], 900, workers=1).signals
    np.testing.assert_array_equal(carried[0].signals.at, expected.at)
    np.testing.assert_allclose(carried[0].signals.proba, expected.proba, rtol=0, atol=0)
