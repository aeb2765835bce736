"""Crash safety: readers never wait for an import (WAL), every file is written beside its target and renamed,
and a training run killed anywhere is loadable or clearly incomplete, then resumes to the uninterrupted weights."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import tiny_config
from lstm_trading.cli import app
from lstm_trading.core import atomic as atomic
from lstm_trading.core.config import dump_config, load_config
from lstm_trading.core.errors import ModelFileError
from lstm_trading.data.journal import write_journal
from lstm_trading.data.store import CandleStore
from lstm_trading.models.bundle import load_bundle, save_bundle
from lstm_trading.models.lstm.training import AtomicCheckpointIO, load_checkpoint

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture
def inputs(tiny_db: Path, tiny_trades: pd.DataFrame, tmp_path: Path) -> dict[str, Path]:
    """A copy of the tiny database, its journal and a configuration file."""
    db = tmp_path / "candles.db"
    shutil.copy(tiny_db, db)
    journal = tmp_path / "val.xlsx"
    write_journal(journal, tiny_trades[["start_time", "entry_price", "side"]], {"horizon_seconds": 6 * 3600})
    config = tmp_path / "tiny.toml"
    config.write_text(dump_config(tiny_config().with_overrides("train", epochs=2, batch_size=16)))
    return {"db": db, "journal": journal, "config": config}


def _train_args(inputs: dict[str, Path]) -> list[str]:
    return ["train", "--db", str(inputs["db"]), "--trades", str(inputs["journal"]), "--config", str(inputs["config"])]


# --- WAL: an import in one process, a long read in another ---


def test_an_ingest_never_blocks_or_tears_a_long_read_in_another_process(
    inputs: dict[str, Path], bybit_csv: Path
) -> None:
    db = inputs["db"]
    with CandleStore(db) as store:
        held = len(store.read("ETHUSDT"))
    long_read = sqlite3.connect(db, isolation_level=None)
    assert long_read.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # set when the tool made the file
    long_read.execute("BEGIN")
    assert long_read.execute("SELECT count(*) FROM candles").fetchone()[0] == held  # its snapshot is now fixed

    ingest = subprocess.Popen(
        [sys.executable, "-m", "lstm_trading", "ingest", "csv", str(bybit_csv), "--db", str(db)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = set()
    while ingest.poll() is None:  # reads as `predict` and `train` make them, while the import runs
        with CandleStore(db) as store:
            frame = store.read("ETHUSDT")
        assert frame["timestamp"].is_monotonic_increasing
        seen.add(len(frame))
    out, err = ingest.communicate(timeout=120)

    assert ingest.returncode == 0, err
    assert "locked" not in err and f"ETHUSDT in {db}: 44,613 rows added" in out
    # The long read kept one consistent snapshot while the import committed, and never held the import up.
    assert long_read.execute("SELECT count(*) FROM candles").fetchone()[0] == held
    long_read.execute("COMMIT")
    long_read.close()
    assert seen <= {held, held + 44_613}  # any read saw all of the import or none of it
    with CandleStore(db) as store:
        assert len(store.read("ETHUSDT")) == held + 44_613


# --- every file is written beside its target and renamed ---

_TEMPORARY = re.compile(r"^\..+\.tmp$")  # atomic_path's temporary names
_AUDIT: dict[str, object] = {"root": None, "written": []}


def _audit(event: str, args: tuple[object, ...]) -> None:
    root = _AUDIT["root"]
    if root is None or event != "open" or not isinstance(args[0], str | bytes | os.PathLike):
        return
    path, mode, flags = args
    writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR))
    if writing and str(root) in os.fsdecode(path):  # type: ignore[arg-type]
        _AUDIT["written"].append(Path(os.fsdecode(path)))  # type: ignore[arg-type, union-attr]


sys.addaudithook(_audit)  # process-wide and permanent: a no-op while no test sets "root"


@pytest.fixture
def written(tmp_path: Path) -> Iterator[list[Path]]:
    """Every file Python opens for writing below tmp_path while the test runs."""
    _AUDIT["root"], _AUDIT["written"] = tmp_path, []
    try:
        yield _AUDIT["written"]  # type: ignore[misc]
    finally:
        _AUDIT["root"] = None


def test_every_command_writes_its_files_beside_them_and_renames(
    inputs: dict[str, Path], tmp_path: Path, written: list[Path]
) -> None:
    """Python-level writes of train, evaluate, backtest, report, features, label and the feature cache all go to
    a temporary file (Lightning's own logs aside); torch, safetensors and pyarrow write to the paths that
    `lstm_trading.core.atomic` gives them (the kill test below shows those)."""
    db, run = inputs["db"], tmp_path / "run"
    commands = [
        [*_train_args(inputs), "--out", str(run), "--epochs", "1", "--no-progress", "--accelerator", "cpu"],
        ["evaluate", str(run)],
        ["backtest", str(run), "--no-progress", "--seeds", "2"],
        ["report", str(run)],
        ["features", "--db", str(db), "--out", str(tmp_path / "features.csv")],
        ["features", "--db", str(db), "--out", str(tmp_path / "features.parquet")],
        ["label", "--db", str(db), "--out", str(tmp_path / "labels.xlsx"), "--horizon", "6h"],
    ]
    for command in commands:
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 0, (command, result.output, result.exception)
    assert (run / "report.html").exists() and (run / "backtest" / "stats.json").exists()
    logs = {run / "logs", run / "tensorboard"}
    direct = sorted({p for p in written if not _TEMPORARY.match(p.name) and not logs & set(p.parents)})
    assert direct == []
    assert any(p.parent == run / "backtest" for p in written) and any(p.suffix == ".tmp" for p in written)


class _Crash(Exception):
    pass


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 0}, path)

    def half_then_crash(obj: object, target: Path) -> None:
        Path(target).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise _Crash

    monkeypatch.setattr(torch, "save", half_then_crash)
    with pytest.raises(_Crash):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 1}, path)
    assert load_checkpoint(path)["epoch"] == 0 and io.load_checkpoint(path)["state_dict"]["w"].sum() == 3
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_a_bundle_interrupted_between_its_two_files_does_not_load(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The weights are renamed first, bundle.json second: a crash between leaves new weights beside the old
    JSON, which names the old weights' checksum, so loading refuses instead of using mismatched weights."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_run / "model", folder)
    old = load_bundle(folder)
    renames = []
    replace = atomic.os.replace

    def crash_on_the_json(source: str, target: str) -> None:
        renames.append(Path(target).name)
        if Path(target).name == "bundle.json":
            raise _Crash
        replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", crash_on_the_json)
    changed = old.model
    with torch.no_grad():
        changed.model.fc_class.bias.add_(1.0)
    with pytest.raises(_Crash):
        save_bundle(
            folder,
            changed,
            model_config=old.model_config,
            feature_config=old.feature_config,
            target_config=old.target_config,
            feature_names=old.feature_names,
            feature_scaler=old.feature_scaler,
            target_scaler=old.target_scaler,
            training=old.training,
            validation={},
        )
    monkeypatch.undo()
    assert renames == ["weights.safetensors", "bundle.json"]
    with pytest.raises(ModelFileError, match="weights.safetensors: checksum differs from bundle.json"):
        load_bundle(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["bundle.json", "weights.safetensors"]


# --- a training run killed anywhere ---

_CLEARLY_INCOMPLETE = (
    "bundle.json: missing; a run folder holds model/bundle.json and model/weights.safetensors",
    "weights.safetensors: checksum differs from bundle.json",
)


def test_train_killed_at_random_points_is_loadable_or_incomplete_and_resumes_to_the_same_weights(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    work = tmp_path / "kills"
    work.mkdir()
    spec = {
        "args": [*_train_args(inputs), "--no-progress", "--accelerator", "cpu"],
        "work": str(work),
        "seed": 20_240_107,
        "kills": 4,
    }
    (work / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, str(TESTS / "train_kill_runner.py"), str(work / "spec.json")],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((work / "summary.json").read_text())
    events = [tuple(e) for e in summary["events"]]
    # Lightning's checkpoints go through lstm_trading.core.atomic too (AtomicCheckpointIO): they are events here.
    assert ("write", "checkpoints/last.ckpt") in events and ("write", "checkpoints/best.ckpt") in events
    assert events[0] == ("write", "config.toml") and ("write", "model/weights.safetensors") in events
    assert tuple(summary["runs"][0]["event"]) == ("write", "model/bundle.json")

    reference = Path(summary["reference"])
    expected_last = load_checkpoint(reference / "checkpoints" / "last.ckpt")["state_dict"]
    expected_model = load_file(str(reference / "model" / "weights.safetensors"))
    assert len(summary["runs"]) == 4
    model = reference / "model"
    assert (model / "weights.safetensors").stat().st_mode == (model / "bundle.json").stat().st_mode  # not 0600
    for run in summary["runs"]:
        what = f"killed at {run['event']}"
        assert run["killed"] == -9, what  # SIGKILL: no clean-up ran
        after = Path(run["after_kill"])
        try:
            load_bundle(after)
        except ModelFileError as error:
            assert any(text in str(error) for text in _CLEARLY_INCOMPLETE), (what, str(error))
        for checkpoint in (after / "checkpoints").glob("*.ckpt"):
            load_checkpoint(checkpoint)  # a checkpoint under its own name is never half-written
        if (after / "config.toml").exists():
            assert load_config(after / "config.toml").train.epochs == 2
        for figure in after.glob("*.png"):
            assert figure.read_bytes().endswith(b"IEND\xaeB`\x82"), (what, figure)

        if (after / "checkpoints" / "last.ckpt").exists():
            assert run["resumed"] == 0, (what, run["resume_log"][-2000:])
        elif (after / "checkpoints" / "best.ckpt").exists():  # killed between the epoch's two checkpoints
            assert run["resumed"] == 2 and "Copy best.ckpt to last.ckpt" in run["resume_log"], what
            assert run["restarted"] == 0, what
        else:  # killed before its first checkpoint: --resume says how to start again, and that works
            assert run["resumed"] == 2 and "start it again with --overwrite instead of --resume" in run["resume_log"]
            assert run["restarted"] == 0, what
        folder = Path(run["folder"])
        final = load_checkpoint(folder / "checkpoints" / "last.ckpt")["state_dict"]
        for name, tensor in expected_last.items():
            torch.testing.assert_close(final[name], tensor, rtol=1e-6, atol=1e-7, msg=f"{what}: {name}")
        weights = load_file(str(folder / "model" / "weights.safetensors"))
        for name, tensor in expected_model.items():
            torch.testing.assert_close(weights[name], tensor, rtol=1e-6, atol=1e-7, msg=f"{what}: {name}")
        load_bundle(folder)
    assert {run["restarted"] for run in summary["runs"]} == {None, 0}  # both ways back were taken


def test_resuming_a_finished_run_in_a_moved_folder_keeps_its_model(
    tiny_run: Path, inputs: dict[str, Path], tmp_path: Path
) -> None:
    """Lightning records absolute checkpoint paths; a run folder copied elsewhere still resumes from its own."""
    run = tmp_path / "moved"
    shutil.copytree(tiny_run, run)
    config = tmp_path / "run.toml"
    config.write_text(dump_config(tiny_config()))  # the run's own settings: all its epochs are done
    args = [*_train_args(inputs), "--out", str(run), "--resume", "--no-progress", "--accelerator", "cpu"]
    args[args.index("--config") + 1] = str(config)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    original = json.loads((tiny_run / "model" / "bundle.json").read_text())["validation"]["best_val_loss"]
    resumed = json.loads((run / "model" / "bundle.json").read_text())["validation"]["best_val_loss"]
    assert resumed == pytest.approx(original)
    before, after = load_bundle(tiny_run), load_bundle(run)
    for a, b in zip(before.model.model.state_dict().values(), after.model.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
