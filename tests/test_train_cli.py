"""`lstm-trading train` end to end: in-process, with its errors, and across two DDP processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_config
from lstm_trading.cli import app
from lstm_trading.core.config import dump_config
from lstm_trading.data.journal import write_journal


@pytest.fixture(scope="module")
def journal_and_config(tiny_trades, tmp_path_factory) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("train_cli")
    journal = folder / "val.xlsx"
    write_journal(journal, tiny_trades[["start_time", "entry_price", "side"]], {"horizon_seconds": 6 * 3600})
    config = folder / "tiny.toml"
    config.write_text(dump_config(tiny_config().with_overrides("train", epochs=2)))
    return journal, config


def _train_args(db: Path, journal: Path, config: Path, out: Path) -> list[str]:
    return ["train", "--db", str(db), "--trades", str(journal), "--config", str(config), "--out", str(out)]


def test_train_prints_the_split_and_writes_the_run(tiny_db: Path, journal_and_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    journal, config = journal_and_config
    out = tmp_path / "run"
    args = _train_args(tiny_db, journal, config, out) + ["--no-progress", "--accelerator", "cpu", "--lr", "0.002"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Samples by split" in result.stdout and "skipped trades:" in result.stdout
    assert "best validation loss" in result.stdout
    bundle = json.loads((out / "model" / "bundle.json").read_text())
    assert bundle["training"]["sources"]["journal"] == str(journal.resolve())
    assert "lr = 0.002" in (out / "config.toml").read_text()  # flags override the file, and are recorded
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "already holds a run" in again.stderr
    assert "Samples by split" not in again.stdout  # refused before the journal is read and the samples built


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--epochs", "0"], "--epochs: must be at least 1 (train.epochs = 0)"),
        (["--scaler", "robust"], "--scaler: must be 'standard' or 'minmax' (split.scaler = 'robust')"),
        (["--purge", "soon"], "--purge: not a duration: 'soon'"),
    ],
)
def test_train_flags_are_checked(tiny_db: Path, journal_and_config, tmp_path: Path, extra, message) -> None:  # type: ignore[no-untyped-def]
    journal, config = journal_and_config
    result = CliRunner().invoke(app, _train_args(tiny_db, journal, config, tmp_path / "x") + extra)
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_unknown_configuration_key_is_named(tiny_db: Path, journal_and_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    journal, _ = journal_and_config
    config = tmp_path / "bad.toml"
    config.write_text("[train]\nepohcs = 3\n")
    result = CliRunner().invoke(app, _train_args(tiny_db, journal, config, tmp_path / "x"))
    assert result.exit_code == 2
    assert "unknown key 'train.epohcs'; did you mean 'epochs'?" in result.stderr


def _run_cli(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "lstm_trading", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_two_ddp_processes_match_one_process_with_twice_the_batch(
    tiny_db: Path,
    journal_and_config,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """DDP averages gradients, so 2 processes x batch b must reach the weights of 1 process x batch 2b."""
    journal, config = journal_and_config
    common = ["--no-progress", "--accelerator", "cpu", "--epochs", "2"]
    _run_cli(
        _train_args(tiny_db, journal, config, tmp_path / "ddp")
        + common
        + ["--devices", "2", "--strategy", "ddp", "--batch-size", "4"],
        tmp_path,
    )
    _run_cli(_train_args(tiny_db, journal, config, tmp_path / "one") + common + ["--batch-size", "8"], tmp_path)
    ddp = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    one = torch.load(tmp_path / "one" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ddp["epoch"] == one["epoch"] == 1
    for name, tensor in one["state_dict"].items():
        torch.testing.assert_close(ddp["state_dict"][name], tensor, rtol=1e-4, atol=1e-5)
    assert (tmp_path / "ddp" / "model" / "bundle.json").exists()


def test_bf16_on_a_cpu_without_bf16_kernels_is_one_line_naming_32_true(
    tiny_db: Path,
    journal_and_config,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """oneDNN capped at AVX2 has no bf16 LSTM kernels on any CPU (so on Intel this imitates an AMD machine
    without AVX-512): the probe says no, and `train --precision bf16-mixed` is one line, nothing written."""
    journal, config = journal_and_config
    out = tmp_path / "run"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "from lstm_trading.models.lstm.trainer_settings import cpu_runs_bf16_lstm as p; print(p())",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout == "False\n"
    args = _train_args(tiny_db, journal, config, out) + ["--precision", "bf16-mixed", "--accelerator", "cpu"]
    result = subprocess.run(
        [sys.executable, "-m", "lstm_trading", *args, "--no-progress"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "error: train.precision = bf16-mixed: this CPU has no bf16 LSTM kernels (oneDNN needs AVX-512 bf16 or "
        "AMX); use --precision 32-true, which is as fast on CPU (benchmarks/README.md)"
    )
    assert len(result.stderr.splitlines()) == 1
    assert not out.exists()


def test_train_into_a_file_prints_a_line_per_epoch_and_notes_a_warmup_that_takes_the_run(  # type: ignore[no-untyped-def]
    tiny_db: Path, journal_and_config, tmp_path: Path
) -> None:
    """With stderr not a terminal (a log file, CI), a progress bar shows nothing until the end: a line per
    epoch instead, counted from 1 as `--epochs` is; and a warm-up as long as the run is said before it starts."""
    journal, config = journal_and_config
    args = _train_args(tiny_db, journal, config, tmp_path / "run") + ["--accelerator", "cpu", "--epochs", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert (
        "note: train.warmup_epochs = 1 covers all 1 epochs, so the learning rate never reaches lr = 0.003; "
        "set a smaller warmup_epochs in --config"
    ) in lines
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 1 and epochs[0].startswith("epoch 1/1: train_loss "), lines
    assert "val_loss " in epochs[0] and epochs[0].endswith(" s left")


def test_the_progress_bar_counts_epochs_from_one() -> None:
    from types import SimpleNamespace

    from lstm_trading.models.lstm.training import EpochBar

    bar = EpochBar()
    bar._trainer = SimpleNamespace(max_epochs=5)  # type: ignore[assignment]
    assert bar._get_train_description(4).strip() == "Epoch 5/5"
