"""Live retraining: a replay that retrains trades exactly what walk-forward backtested; the gate keeps the model in
use against a worse one; a crash while training or while swapping leaves the old or the new model named, and a
restart goes on from there without a second order; an expired model opens nothing; a run trained on a hand-made
journal is refused.

One tiny market (4.5 synthetic days, 60-minute windows, hidden 16, 3 epochs, 12-hour boundaries) for the replays;
the paper loop runs on the fake exchange of `test_live.py` with trainings inline, in step with its simulated clock.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import tiny_config
from fake_ccxt import FakeCcxt, SimClock
from lstm_trading.cli import app
from lstm_trading.core.config import BacktestConfig
from lstm_trading.core.errors import ConfigError
from lstm_trading.data.store import CandleStore
from lstm_trading.live import brokers
from lstm_trading.live.retraining import MODEL_KEY, RETRAIN_KEY, RetrainRequest
from lstm_trading.live.settings import LiveSettings
from lstm_trading.live.state import LiveState
from lstm_trading.runs import live as live_runs
from lstm_trading.runs.live import live_run, live_status, replay_run
from lstm_trading.runs.retraining import FoldTrainer

runner = CliRunner(env={"COLUMNS": "200"})
HOUR = 3600
DAY = 86_400
SYMBOL = "ETHUSDT"


def wf_config():  # type: ignore[no-untyped-def]
    """test_walkforward's tiny pipeline: trading at every moment, no costs, positions closed after 2 hours."""
    return (
        tiny_config()
        .with_overrides("backtest", max_hold_seconds=2 * HOUR, min_prob=0.0, min_ev=-50.0, fee=0.0, slippage=0.0)
        .with_overrides("runtime", cache=False)
    )


def train_run_on(db: Path, out: Path, config: Any, *, before: int | None = None) -> Path:
    """A run folder trained as `train` trains one (first-touch labels of the stored candles, the time split)."""
    from lstm_trading.models.training_record import Sources
    from lstm_trading.runs.train import prepare, train_run
    from lstm_trading.runs.walkforward import _label

    trades, candles = _label(config, db, SYMBOL)
    if before is not None:
        trades = trades[trades["start_time"] + config.labels.horizon_seconds <= before].reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(candles, trades, config, symbol=SYMBOL)
        train_run(prepared, config, out, accelerator="cpu", progress=False, sources=Sources(db=str(db), symbol=SYMBOL))
    return out


def events(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "live.jsonl").read_text().splitlines()]


# --- the replay against walk-forward ---


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lstm_trading.data.synthetic import synthetic_candles

    path = tmp_path_factory.mktemp("retrain") / "market.db"
    with CandleStore(path, create=True) as store:
        store.register_symbol(SYMBOL, "synthetic", "linear")
        store.upsert(SYMBOL, synthetic_candles(4.5, seed=3), source="synthetic market")
    return path


@pytest.fixture(scope="module")
def run_dir(market: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUN: trained on the whole market with the tiny settings (its weights must not decide a retraining replay)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_run_on(market, tmp_path_factory.mktemp("runs") / "run", wf_config())
    finally:
        torch.set_num_threads(threads)


def _wf_settings() -> Any:
    from lstm_trading.runs.walkforward import WalkForwardSettings

    return WalkForwardSettings(
        train_span=36 * HOUR, test_span=12 * HOUR, random_runs=5, fold_workers=1, accelerator="cpu", sweep=False,
        baseline="none",
    )  # fmt: skip


@pytest.fixture(scope="module")
def walkforward(market: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """`walkforward --train-span 36h --test-span 12h --no-sweep --baseline none`, in this process."""
    import torch

    from lstm_trading.runs.walkforward import TradeSource, walkforward_run

    out = tmp_path_factory.mktemp("wf") / "wf"
    threads = torch.get_num_threads()
    try:
        result = walkforward_run(
            wf_config(), _wf_settings(), db=market, symbol=SYMBOL, source=TradeSource(), out=out, echo=lambda _: None
        )
    finally:
        torch.set_num_threads(threads)
    assert not result.failures
    return out, result


def replay_args(run: Path, db: Path, start: int, *extra: str) -> list[str]:
    return [
        "live", str(run), "--replay", "--db", str(db), "--from", str(start), "--retrain-every", "12h",
        "--train-span", "36h", "--no-sweep", "--accelerator", "cpu", "--workers", "1", "-q", *extra,
    ]  # fmt: skip


def test_a_replay_that_retrains_trades_what_walkforward_backtested_byte_for_byte(
    run_dir: Path, market: Path, walkforward: tuple[Path, Any], tmp_path: Path, one_torch_thread: None
) -> None:
    wf_out, result = walkforward
    first = result.plan.first  # walk-forward's t_0: its first fold was skipped, its three others trained
    assert [s.k for s in result.plan.skipped] == [0] and [f.k for f in result.plan.folds] == [1, 2, 3]
    out = tmp_path / "replay"
    replayed = runner.invoke(app, replay_args(run_dir, market, first, "--gate", "off", "--out", str(out)))
    assert replayed.exit_code == 0, replayed.output
    expected = (wf_out / "oos" / "trades.csv").read_bytes()
    assert (out / "trades.csv").read_bytes() == expected
    trades = pd.read_csv(out / "trades.csv")
    folds = [fold.name for fold in result.plan.folds]
    assert len(trades) > 20 and set(trades["model"]) == set(folds)  # every fold's model decided some trades
    logged = events(out)
    ends = [e for e in logged if e["event"] == "retrain_end"]
    assert [e["boundary"] for e in ends] == [first + k * 12 * HOUR for k in range(4)]
    assert [e["status"] for e in ends] == ["skipped", "finished", "finished", "finished"]
    assert "no Buy or Sell trade in the training split" in ends[0]["reason"]  # as walk-forward skipped it
    swaps = [e for e in logged if e["event"] == "swap"]
    assert [(s["model"], s["lag_s"]) for s in swaps] == [(name, 0) for name in folds]  # exactly at the boundary
    decisions = [e for e in logged if e["event"] == "decision"]
    assert all(d["model"] is None and d["reason"] == "no_model" for d in decisions if d["at"] < first + 12 * HOUR)
    for fold in result.plan.folds:  # each boundary's model decides the moments of its period, and only those
        inside = {d["model"] for d in decisions if fold.test_start <= d["at"] < fold.test_end}
        assert inside == {fold.name}
    with LiveState(market, "replay") as state:
        assert state.meta(MODEL_KEY)["name"] == folds[-1]
        assert state.meta(RETRAIN_KEY)["status"] == "swapped"
    # live-status follows the replay's own clock: "today" is the replay's last day, not the wall clock's
    summary = live_status(market, "replay")
    last_day = summary["last_moment"] // DAY
    assert summary["today_pnl"] == pytest.approx(trades.loc[trades["exit_time"] // DAY == last_day, "pnl"].sum())
    assert summary["today_pnl"] != 0.0 and summary["next_retraining"] is None  # the replay's schedule is over


def test_a_replay_that_retrains_equals_walkforward_with_each_models_own_thresholds_too(
    run_dir: Path, market: Path, walkforward: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    one_torch_thread: None,
) -> None:  # fmt: skip
    """`--sweep` (the default of both): each model trades the min-prob / min-EV its validation period chose."""
    from dataclasses import replace

    from lstm_trading.backtest import sweep as sweep_module
    from lstm_trading.runs.walkforward import TradeSource, walkforward_run

    monkeypatch.setattr(sweep_module, "MIN_SWEEP_TRADES", 4)  # the tiny folds' validation periods are short
    wf_out, result = walkforward
    out = tmp_path / "wf"
    shutil.copytree(wf_out, out)  # its folds are kept: only the stitched backtest is done again
    swept = walkforward_run(
        wf_config(), replace(_wf_settings(), sweep=True), db=market, symbol=SYMBOL,
        source=TradeSource(), out=out, echo=lambda _: None,
    )  # fmt: skip
    assert swept.trained == 0
    chosen = pd.read_csv(out / "folds.csv").dropna(subset=["min_prob"])
    assert len(chosen) >= 2 and not ((chosen["min_prob"] == 0.0) & (chosen["min_ev"] == -50.0)).all()
    replayed = runner.invoke(
        app,
        [*replay_args(run_dir, market, result.plan.first, "--gate", "off"), "--sweep", "--out", str(tmp_path / "rp")],
    )
    assert replayed.exit_code == 0, replayed.output
    assert (tmp_path / "rp" / "trades.csv").read_bytes() == (out / "oos" / "trades.csv").read_bytes()
    assert (out / "oos" / "trades.csv").read_bytes() != (wf_out / "oos" / "trades.csv").read_bytes()


def _spoil(run: Path) -> None:
    """A deliberately bad model that still loads: Buy with certainty whatever the window (its files re-signed)."""
    from safetensors.numpy import load_file, save_file

    from lstm_trading.models.bundle import content_sha256

    model = run / "model"
    weights = load_file(model / "weights.safetensors")
    weights["fc_class.weight"] = np.zeros_like(weights["fc_class.weight"])
    weights["fc_class.bias"] = np.array([30.0, -30.0, -30.0], dtype=weights["fc_class.bias"].dtype)
    save_file(weights, model / "weights.safetensors")
    document = json.loads((model / "bundle.json").read_text())
    document["weights"]["sha256"] = hashlib.sha256((model / "weights.safetensors").read_bytes()).hexdigest()
    document["content_sha256"] = content_sha256(document)
    (model / "bundle.json").write_text(json.dumps(document))


def test_the_gate_rejects_a_worse_model_and_the_one_in_use_decides_on(
    run_dir: Path, market: Path, walkforward: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    one_torch_thread: None,
) -> None:  # fmt: skip
    from lstm_trading.runs import walkforward as walkforward_module

    first = walkforward[1].plan.first
    real = walkforward_module.train_fold

    def worse_at_the_last_boundary(task: Any) -> Any:
        outcome = real(task)
        if task.k == 3:
            _spoil(task.run_dir)
        return outcome

    monkeypatch.setattr(walkforward_module, "train_fold", worse_at_the_last_boundary)
    out = tmp_path / "gated"
    settings = LiveSettings(
        replay=True, db=market, start=first, workers=1, retrain_every_s=12 * HOUR, train_span_s=36 * HOUR,
        gate_span_s=12 * HOUR, sweep=False, accelerator="cpu", out_dir=out,
    )  # fmt: skip
    replay_run(run_dir, settings, config=wf_config().backtest)
    logged = events(out)
    ends = {e["k"]: e for e in logged if e["event"] == "retrain_end"}
    last = ends[3]
    assert last["status"] == "rejected" and not last["swapping"], last
    gate = last["gate"]
    assert gate["trades"] > 0 and gate["new_log_loss"] > gate["current_log_loss"] + 0.01
    assert "nats worse than the current model's" in last["reason"]
    kept = [e["model"] for e in logged if e["event"] == "swap"][-1]  # the model in use before the last boundary
    assert kept in {ends[1]["name"], ends[2]["name"]} and ends[2]["gate"]["trades"] > 0
    boundary = last["boundary"]
    decided = {e["model"] for e in logged if e["event"] == "decision" and e["at"] >= boundary}
    assert decided == {kept}
    trades = pd.read_csv(out / "trades.csv")
    assert (trades.loc[trades["entry_time"] >= boundary, "model"] == kept).all()
    with LiveState(market, "replay") as state:
        assert state.meta(MODEL_KEY)["name"] == kept and state.meta(RETRAIN_KEY)["status"] == "rejected"
    # the gate's window is kept out of the new model's training: its last training trade's outcome is known
    # before the window opens
    window = last["window"]
    assert window["outcomes_known_by"] == boundary - 12 * HOUR


def test_a_run_trained_on_a_hand_made_journal_is_refused_for_retraining(
    run_dir: Path, market: Path, tiny_trades: pd.DataFrame, tmp_path: Path
) -> None:
    from lstm_trading.data.journal import write_journal
    from lstm_trading.models.bundle import load_bundle
    from lstm_trading.runs.retraining import retrain_source

    hand = tmp_path / "hand.xlsx"
    write_journal(hand, tiny_trades.head(40))  # a trader's own journal: no meta sheet of the labeller
    run = tmp_path / "hand-run"
    shutil.copytree(run_dir, run)
    bundle_json = run / "model" / "bundle.json"
    document = json.loads(bundle_json.read_text())
    document["training"]["sources"]["journal"] = str(hand)  # sources may be edited (relocating a run)
    bundle_json.write_text(json.dumps(document))
    args = replay_args(run, market, 1_704_322_800, "--gate-days", "12h", "--out", str(tmp_path / "rp"))
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(
        f"error: --retrain-every: {run} was trained on the hand-made journal {hand} (its meta sheet records no label "
        "settings)"
    ), result.stderr
    assert not (tmp_path / "rp").exists()
    # a journal of `lstm-trading label` names its settings: those label the new candles
    meta = {"labeller": "first-touch", "every_seconds": 2700, "horizon_seconds": 7200, "k_sl": 1.5, "k_tp": 2.5,
            "fee": 0.0002, "slippage": 0.0}  # fmt: skip
    write_journal(hand, tiny_trades.head(40), meta=meta)
    source = retrain_source(run, load_bundle(run), db=market, symbol=SYMBOL, backtest=BacktestConfig())
    labels = source.config.labels
    assert (labels.every_seconds, labels.horizon_seconds, labels.k_sl, labels.k_tp) == (2700, 7200, 1.5, 2.5)
    with pytest.raises(ConfigError, match="--train-span is for --retrain-every"):
        LiveSettings.from_flags(replay=True, start=1, train_span_s=DAY)
    with pytest.raises(ConfigError, match=r"--gate-days 6h is not longer than the label horizon 6h"):
        replay_run(
            run_dir,
            LiveSettings(
                replay=True,
                db=market,
                start=1_704_322_800,
                retrain_every_s=12 * HOUR,
                train_span_s=36 * HOUR,
                gate_span_s=6 * HOUR,
                out_dir=tmp_path / "rp2",
            ),  # fmt: skip
            config=BacktestConfig(),
        )


# --- paper mode on the fake exchange ---

PAPER = BacktestConfig(every_seconds=1800, min_prob=0.0, min_ev=-1.0, max_hold_seconds=2 * HOUR, fee=0.0, slippage=0.0)


@pytest.fixture(scope="module")
def paper_market(tiny_candles: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Four stored days of the tiny market (the fake exchange serves all six) and RUN trained on them."""
    import torch

    candles = tiny_candles.reset_index(drop=True)
    start = int(candles["timestamp"].iloc[0]) + 4 * DAY
    start -= start % (12 * HOUR)  # a retraining boundary (12 h since the epoch)
    folder = tmp_path_factory.mktemp("paper")
    db = folder / "seed.db"
    with CandleStore(db, create=True) as store:
        store.upsert(SYMBOL, candles[candles["timestamp"] < start], source="tiny")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = train_run_on(db, folder / "run", tiny_config(), before=start)
    finally:
        torch.set_num_threads(threads)
    return {"candles": candles, "start": start, "db": db, "run": run}


@pytest.fixture
def exchange(paper_market: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    db = tmp_path / "live.db"
    shutil.copyfile(paper_market["db"], db)
    clock = SimClock(paper_market["start"] - 10)
    fake = FakeCcxt(paper_market["candles"], clock)
    monkeypatch.setattr(brokers, "exchange_factory", lambda *args: fake)
    monkeypatch.setattr(live_runs, "clock_factory", lambda: clock)
    return {**paper_market, "db": db, "clock": clock, "fake": fake, "out": tmp_path / "log"}


def paper(ex: dict[str, Any], periods: int, **settings: Any) -> dict[str, Any]:
    chosen = LiveSettings(db=ex["db"], periods=periods, retries=1, out_dir=ex["out"], **settings)
    return live_run(ex["run"], chosen, config=PAPER, clock=ex["clock"], echo=ex.get("echo"))


class Killed:
    """A training whose process was killed: never done, no result written."""

    def done(self) -> bool:
        return False

    def result(self) -> dict[str, Any]:
        raise AssertionError("a killed job has no result")


def test_a_crash_while_training_or_swapping_leaves_one_named_model_and_a_restart_goes_on(
    exchange: dict[str, Any], monkeypatch: pytest.MonkeyPatch, one_torch_thread: None
) -> None:
    start, db = exchange["start"], exchange["db"]
    boundary = start + 12 * HOUR
    run_name = exchange["run"].name
    started: list[RetrainRequest] = []

    class Trainer(FoldTrainer):
        def start(self, request: RetrainRequest) -> Any:
            started.append(request)
            return Killed() if len(started) == 1 else super().start(request)  # the first one is killed

    monkeypatch.setattr(live_runs, "trainer_factory", lambda source, settings: Trainer(source, settings, inline=True))
    retraining = {"retrain_every_s": 12 * HOUR, "train_span_s": 36 * HOUR, "gate": False, "sweep": False,
                  "accelerator": "cpu"}  # fmt: skip
    # 1. up to the boundary's period: its training starts in the background, and the loop dies with it
    paper(exchange, 25, **retraining)
    with LiveState(db, "paper") as state:
        record = state.meta(RETRAIN_KEY)
        assert (record["boundary"], record["status"]) == (boundary, "running")
        assert state.meta(MODEL_KEY)["name"] == run_name
    # 2. the restart trains it again, and a crash in the commit that would swap it keeps RUN's model named
    real_commit = LiveState.commit

    def crash_on_swap(self: LiveState, step: Any) -> None:
        if MODEL_KEY in step.meta and step.meta[MODEL_KEY]["name"] != run_name:
            raise RuntimeError("killed during the swap")
        real_commit(self, step)

    monkeypatch.setattr(LiveState, "commit", crash_on_swap)
    with pytest.raises(RuntimeError, match="killed during the swap"):
        paper(exchange, 3, **retraining)
    assert [r.boundary for r in started] == [boundary, boundary]
    with LiveState(db, "paper") as state:
        assert state.meta(MODEL_KEY)["name"] == run_name  # the old model, whole
        record = state.meta(RETRAIN_KEY)
        assert record["status"] == "finished" and record["model"]["name"] == "000-" + _day(boundary)
        assert max(d["at"] for d in state.decisions()) == boundary  # the crashed period left nothing
    new = record["model"]["name"]
    # 3. the next start swaps it in at its first period, logs the lag, and decides with it
    monkeypatch.setattr(LiveState, "commit", real_commit)
    paper(exchange, 2, **retraining)
    with LiveState(db, "paper") as state:
        assert state.meta(MODEL_KEY)["name"] == new and state.meta(RETRAIN_KEY)["status"] == "swapped"
        by_moment = {d["at"]: d["model"] for d in state.decisions()}
    assert by_moment[boundary] == run_name  # training started after the boundary's decision
    assert by_moment[boundary + 1800] == by_moment[boundary + 2 * 1800] == new  # the period after it ended
    logged = events(exchange["out"])
    (swap,) = [e for e in logged if e["event"] == "swap"]
    assert swap["lag_s"] == 1800 and swap["model"] == new and swap["previous"] == run_name
    assert [e["event"] for e in logged].count("retrain_restart") == 1
    (end,) = [e for e in logged if e["event"] == "retrain_end"]
    assert end["window"]["outcomes_known_by"] == boundary and end["gate"]["reason"] == "--gate off"
    # 4. a restart after the swap resumes with the model the state names, not RUN's; no order was placed twice
    lines: list[str] = []
    paper({**exchange, "echo": lines.append}, 2, **retraining)
    assert f"model in use: {new}, as the account's state names it" in "\n".join(lines)
    with LiveState(db, "paper") as state:
        decisions, orders, fills = state.decisions(), state.orders(), state.fills()
    assert {d["model"] for d in decisions if d["at"] > boundary + 1800} == {new}
    assert len({o["client_id"] for o in orders}) == len(orders) and len(fills) > 0
    assert [d["at"] for d in decisions] == [start + i * 1800 for i in range(len(decisions))]  # each period once
    # live-status: the model, when it was trained, the next retraining and the last gate
    status = runner.invoke(app, ["live-status", "--db", str(db)])
    assert status.exit_code == 0, status.output
    assert f"model: {new} (trained " in status.stdout
    assert f"retraining: next at {_time(boundary + 12 * HOUR)}; last for {_time(boundary)} ({new}): swapped" in (
        status.stdout
    )


def _day(moment: int) -> str:
    from datetime import UTC, datetime

    return f"{datetime.fromtimestamp(moment, tz=UTC):%Y-%m-%d}"


def _time(moment: int) -> str:
    from lstm_trading.core.timeutil import format_time

    return format_time(moment)


def test_an_expired_model_opens_no_new_position_and_says_so_once(exchange: dict[str, Any]) -> None:
    summary = paper(exchange, 20, max_model_age_s=6 * HOUR)  # RUN's data ends at the start
    with LiveState(exchange["db"], "paper") as state:
        decisions = state.decisions()
    start = exchange["start"]
    expired = [d for d in decisions if d["at"] - (start - 60) > 6 * HOUR]
    fresh = [d for d in decisions if d["at"] - (start - 60) <= 6 * HOUR]
    assert expired and all(d["reason"] == "model_expired" and d["action"] != "open" for d in expired)
    assert any(d["action"] == "open" for d in fresh)
    guards = [e for e in events(exchange["out"]) if e["event"] == "guard" and e["guard"] == "model_expired"]
    assert len(guards) == 1 and guards[0]["at"] == expired[0]["at"] and guards[0]["expired"]
    assert summary["model"]["name"] == exchange["run"].name and summary["model"]["data_end"] == start - 60


def test_paper_mode_trains_in_a_process_of_its_own_and_decides_on_the_old_model_meanwhile(
    exchange: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    clock: SimClock = exchange["clock"]
    boundary = exchange["start"] + 12 * HOUR
    result = exchange["out"] / "retraining" / "results" / f"000-{_day(boundary)}.json"
    simulated = clock.sleep
    after_result = {"sleeps": 0}

    def sleep(seconds: float) -> None:
        """Simulated time, but real seconds pass once the training has started, until it has ended (then the
        loop is stopped two periods later, as Ctrl-C stops it)."""
        simulated(seconds)
        if clock.time > boundary + 60:
            if not result.exists():
                time.sleep(1.0)
            else:
                after_result["sleeps"] += 1
                if after_result["sleeps"] > 2:
                    raise KeyboardInterrupt

    monkeypatch.setattr(clock, "sleep", sleep)
    with pytest.raises(KeyboardInterrupt):
        paper(exchange, 400, retrain_every_s=12 * HOUR, train_span_s=36 * HOUR, gate_span_s=12 * HOUR, sweep=False,
              accelerator="cpu")  # fmt: skip
    logged = events(exchange["out"])
    (end,) = [e for e in logged if e["event"] == "retrain_end"]
    (swap,) = [e for e in logged if e["event"] == "swap"]
    assert end["status"] == "finished" and swap["lag_s"] >= 1800 and swap["model"] == f"000-{_day(boundary)}"
    with LiveState(exchange["db"], "paper") as state:
        decisions = state.decisions()
        assert state.meta(MODEL_KEY)["name"] == swap["model"]
    while_training = [d for d in decisions if boundary <= d["at"] < swap["at"]]
    assert while_training and {d["model"] for d in while_training} == {exchange["run"].name}
    assert {d["model"] for d in decisions if d["at"] >= swap["at"]} == {swap["model"]}


def test_the_gate_scores_runs_own_model_only_after_its_training_data(
    run_dir: Path, market: Path, walkforward: tuple[Path, Any], one_torch_thread: None
) -> None:
    """At the first retraining the model in use is RUN's own, which may have trained on the gate's window:
    the window then starts after its training data (plus a label horizon), so it is not scored on what it saw;
    a retrained model's training stops before the window by construction, and its window is not cut."""
    from lstm_trading.live.retraining import ModelInUse, RetrainSettings
    from lstm_trading.runs.retraining import RetrainSource, _labelled, gate_check

    out, result = walkforward
    config = wf_config()
    source = RetrainSource(run_dir=run_dir, config=config, db=market, symbol=SYMBOL, kind="lstm")
    labelled = _labelled(source)
    fold = result.plan.folds[-1]
    candidate = out / "folds" / fold.name
    boundary = fold.test_start
    settings = RetrainSettings(every_s=12 * HOUR, gate_span_s=24 * HOUR)
    horizon = config.labels.horizon_seconds

    def gate(current: ModelInUse) -> Any:
        return gate_check(source, settings, candidate, current, labelled.samples, boundary)

    whole = gate(ModelInUse("run", str(run_dir), data_end=None))
    assert whole.trades > 0
    seen_until = boundary - settings.gate_span_s + 2 * HOUR  # RUN trained on the window's first two hours
    cut = gate(ModelInUse("run", str(run_dir), data_end=seen_until))
    times = np.asarray(labelled.samples.start_time)
    expected = ((times >= seen_until + horizon) & (times + horizon <= boundary)).sum()
    assert 0 < cut.trades == expected < whole.trades
    retrained = gate(ModelInUse("001", str(run_dir), data_end=seen_until, boundary=boundary - 12 * HOUR))
    assert retrained.trades == whole.trades


# --- --warm-start ---


def test_a_warm_started_replay_equals_the_warm_started_walkforward(
    run_dir: Path, market: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    """`--warm-start` on both sides: each model starts from the one trained before it, at train.fine_tune_lr,
    with its scalers; the first from scratch (RUN's weights may have seen the replay's period)."""
    from dataclasses import replace

    from lstm_trading.runs.walkforward import TradeSource, walkforward_run

    wf_out = tmp_path / "wf"
    result = walkforward_run(
        wf_config(), replace(_wf_settings(), warm_start=True), db=market, symbol=SYMBOL, source=TradeSource(),
        out=wf_out, echo=lambda _: None,
    )  # fmt: skip
    assert not result.failures
    out = tmp_path / "replay"
    args = replay_args(run_dir, market, result.plan.first, "--gate", "off", "--warm-start", "--out", str(out))
    replayed = runner.invoke(app, args)
    assert replayed.exit_code == 0, replayed.output
    assert (out / "trades.csv").read_bytes() == (wf_out / "oos" / "trades.csv").read_bytes()
    names = [fold.name for fold in result.plan.folds]
    starts = [json.loads((out / "retraining" / "folds" / n / "fold.json").read_text())["warm_from"] for n in names]
    assert starts == ["", *names[:-1]]  # fold k from fold k-1, the first from scratch
    cold = runner.invoke(app, replay_args(run_dir, market, result.plan.first, "--gate", "off", "--out", str(out)))
    assert cold.exit_code == 0, cold.output  # the warm folds are not reused for a cold replay: trained again
    assert json.loads((out / "retraining" / "folds" / names[1] / "fold.json").read_text())["warm_from"] == ""


def test_paper_retraining_with_warm_start_starts_from_the_model_in_use(
    exchange: dict[str, Any], monkeypatch: pytest.MonkeyPatch, one_torch_thread: None
) -> None:
    from lstm_trading.models.bundle import load_bundle

    monkeypatch.setattr(
        live_runs, "trainer_factory", lambda source, settings: FoldTrainer(source, settings, inline=True)
    )
    paper(exchange, 27, retrain_every_s=12 * HOUR, train_span_s=36 * HOUR, gate=False, sweep=False,
          accelerator="cpu", warm_start=True)  # fmt: skip
    with LiveState(exchange["db"], "paper") as state:
        record = state.meta(RETRAIN_KEY)
        model = state.meta(MODEL_KEY)
    assert record["status"] == "swapped" and record["warm_from"] == str(exchange["run"].resolve())
    new = load_bundle(model["path"])
    own = load_bundle(exchange["run"])
    # a warm start keeps the scalers its weights were trained with (RUN's), where a cold one fits its own span's
    assert new.feature_scaler.to_json() == own.feature_scaler.to_json()
    fold = json.loads((Path(model["path"]) / "fold.json").read_text())
    assert fold["warm_from"] == exchange["run"].name


def test_warm_start_is_refused_for_a_gbm_run(market: Path, tmp_path: Path) -> None:
    from lstm_trading.live.retraining import RetrainSettings

    with pytest.raises(ConfigError, match="--warm-start: RUN's model is a gbm model"):
        RetrainSettings(every_s=12 * HOUR, warm_start=True).check_kind("gbm")
    RetrainSettings(every_s=12 * HOUR, warm_start=True).check_kind("lstm")


# --- a training a killed loop left running ---


def _holder(lock: Path, result: Path, release: Path) -> Any:
    """A process standing for a training that outlived its loop: it holds the boundary's lock until `release`
    exists, then writes its result and ends."""
    import subprocess
    import sys

    code = (
        "import fcntl, json, os, sys, time\n"
        "lock, result, release = sys.argv[1:4]\n"
        "handle = open(lock, 'a+b'); fcntl.flock(handle, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "while not os.path.exists(release): time.sleep(0.05)\n"
        "os.makedirs(os.path.dirname(result), exist_ok=True)\n"
        "open(result, 'w').write(json.dumps({'status': 'skipped', 'reason': 'the orphan finished'}))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(lock), str(result), str(release)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_a_restart_waits_for_the_training_a_killed_loop_left_running(tmp_path: Path) -> None:
    from lstm_trading.runs.retraining import RetrainSource, _job_main, _lock_path, training_alive

    source = RetrainSource(tmp_path / "run", wf_config(), tmp_path / "market.db", SYMBOL, "lstm")
    request = RetrainRequest(1_704_326_400, 0, None, tmp_path / "retraining")
    trainer = FoldTrainer(source, _retrain_settings())
    job = trainer._job(request)
    lock = _lock_path(job)
    lock.parent.mkdir(parents=True)
    release = tmp_path / "release"
    orphan = _holder(lock, job.result_path, release)
    try:
        assert training_alive(job)
        adopted = trainer.start(request)  # no snapshot, no second process: the market database does not even exist
        assert not adopted.done() and not job.snapshot.exists()
        release.touch()
        orphan.wait(timeout=10)
        assert adopted.done() and adopted.result() == {"status": "skipped", "reason": "the orphan finished"}
        assert not training_alive(job)
    finally:
        orphan.kill()
    # it finished just before the restart asked: its result is taken, nothing is trained again
    assert trainer.start(request).result() == {"status": "skipped", "reason": "the orphan finished"}
    (lock.parent / f"{job.name}.token").write_text("this one")
    _job_main(job, "this one")  # a process that gets the lock after a finished training trains nothing
    assert json.loads(job.result_path.read_text()) == {"status": "skipped", "reason": "the orphan finished"}
    # a training process that a restart superseded while it started up stands down without training
    (lock.parent / f"{job.name}.token").write_text("the restart's")
    job.result_path.unlink()
    _job_main(job, "the killed loop's")
    assert not job.result_path.exists()


def _retrain_settings() -> Any:
    from lstm_trading.live.retraining import RetrainSettings

    return RetrainSettings(every_s=12 * HOUR, train_span_s=36 * HOUR, gate=False, sweep=False, accelerator="cpu")
