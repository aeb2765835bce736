"""Settings that pass a sign check but would fail later (an allocation, TA-Lib, numpy's seed) are refused at the
boundary, naming the key and the file; a refused `train` leaves an existing run as it found it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import snapshot
from lstm_trading.cli import app
from lstm_trading.core.config import Config, load_config
from lstm_trading.core.errors import ConfigError


def _error(text: bytes | str, tmp_path: Path) -> str:
    path = tmp_path / "bad.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value).removeprefix(f"{path}: ")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[features]\nbollinger_sigma = inf\n", "features.bollinger_sigma: must be a finite number, got inf"),
        ("[train]\nlr = nan\n", "train.lr: must be a finite number, got nan"),
        ("[features]\nsma = 10000000\n", "features.sma: must be at most 100,000 minutes (TA-Lib's longest period)"),
        ("[targets]\nmax_len = 100000000000000000000\n", "targets.max_len: must be at most 5,259,600 minutes"),
        ("[train]\nseed = 1180591620717411303424\n", "train.seed: must be in 0..4294967295"),
        ("[train]\nseed = -1\n", "train.seed: must be in 0..4294967295"),
        ("[model]\nhidden_size = 1000000\n", "model.hidden_size: must be at most 8,192"),
        ("[train]\nbatch_size = 10000000\n", "train.batch_size: must be at most 65,536 windows"),
        ('[train]\ndevices = "abc"\n', "train.devices: expected 'auto' or a positive number of devices, got 'abc'"),
    ],
)
def test_values_that_would_fail_later_are_named_with_the_file(toml: str, message: str, tmp_path: Path) -> None:
    assert _error(toml, tmp_path).startswith(message)


def test_a_config_with_a_byte_order_mark_reads_and_one_not_in_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[train]\nepochs = 3\n")
    assert load_config(path).train.epochs == 3
    assert _error(b"[train]\n# caf\xe9\nepochs = 3\n", tmp_path) == (
        "not UTF-8 text (byte 0xe9 at offset 13); save it as UTF-8"
    )


def test_flags_out_of_range_are_named_as_typed() -> None:
    with pytest.raises(ConfigError, match=r"^--seed: must be in 0\.\.4294967295"):
        Config().with_overrides("train", seed=-1)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seed", "-1"], "error: --seed: must be in 0..4294967295"),
        (["--devices", "abc"], "error: --devices: expected 'auto' or a positive number of devices, got 'abc'"),
        (["--max-len", "1e20"], "error: Invalid value for '--max-len'"),
        (["--accelerator", "tpu9"], "error: --accelerator: must be one of auto, cpu, cuda, gpu, got 'tpu9'"),
        (["--strategy", "dddp"], "error: train.strategy: unknown Lightning strategy 'dddp'"),
    ],
)
def test_overwrite_with_a_bad_setting_keeps_the_finished_run(tiny_run: Path, tmp_path: Path, flags, message) -> None:  # type: ignore[no-untyped-def]
    """`train --overwrite` used to delete model/, checkpoints/ and logs/ before rejecting the seed."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = snapshot(run)
    result = CliRunner().invoke(app, ["train", "--out", str(run), "--overwrite", "--trades", "none.xlsx", *flags])
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert snapshot(run) == before


def test_a_full_disk_while_evaluating_is_one_line_and_keeps_the_old_metrics(  # type: ignore[no-untyped-def]
    tiny_run: Path, tiny_db: Path, tiny_trades, tmp_path: Path, monkeypatch
) -> None:
    import errno

    from lstm_trading.core import atomic
    from lstm_trading.data.journal import write_journal

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    journal = tmp_path / "val.xlsx"
    write_journal(journal, tiny_trades[["start_time", "entry_price", "side"]], {})
    (run / "metrics.json").write_text('{"old": true}\n')

    def full(source: str, target: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full)
    args = ["evaluate", str(run), "--db", str(tiny_db), "--trades", str(journal)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"error: {run / 'metrics.json'}: cannot write (No space left on device); nothing was changed there"
    )
    assert (run / "metrics.json").read_text() == '{"old": true}\n'
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind


def test_resume_after_a_failed_last_checkpoint_says_so(  # type: ignore[no-untyped-def]
    tiny_run: Path, tiny_candles, tiny_trades, tmp_path: Path
) -> None:
    """After a disk-full `train`, `--resume` said "stopped before its first epoch ended" although best.ckpt
    existed."""
    import warnings

    from conftest import tiny_config
    from lstm_trading.core.errors import DataError
    from lstm_trading.runs.train import prepare, train_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "checkpoints" / "last.ckpt").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(tiny_candles, tiny_trades, tiny_config(), symbol="ETHUSDT")
    with pytest.raises(DataError, match="last.ckpt is missing but best.ckpt exists beside it"):
        train_run(prepared, tiny_config(), run, resume=True, accelerator="cpu", progress=False)


def test_resume_with_other_model_sizes_is_refused_and_keeps_the_run(tiny_run: Path, tmp_path: Path) -> None:
    """`train --resume --config other.toml` with another model size rewrote the run's config.toml, then failed
    with advice that could not work."""
    from conftest import tiny_config
    from lstm_trading.core.config import dump_config

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    other = tmp_path / "other.toml"
    other.write_text(dump_config(tiny_config().with_overrides("model", hidden_size=32)))
    before = snapshot(run)
    result = CliRunner().invoke(
        app, ["train", "--out", str(run), "--resume", "--config", str(other), "--trades", "none.xlsx"]
    )
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: --resume {run}: the run was trained with other settings: model.hidden_size = 32 (the run has 16); "
        "resume without --config (the run's config.toml is used) or train anew with --overwrite\n"
    )
    assert snapshot(run) == before


def test_a_backtest_that_cannot_write_its_files_leaves_none_of_them(  # type: ignore[no-untyped-def]
    tiny_run: Path, tiny_db: Path, tmp_path: Path, monkeypatch
) -> None:
    """`backtest` never leaves trades.csv without equity.csv and stats.json: a full disk at the last of the
    three keeps the folder as it was."""
    import errno
    import os

    from lstm_trading.core import atomic

    out = tmp_path / "bt"
    out.mkdir()
    (out / "trades.csv").write_text("old\n")
    real = os.replace

    def full_at_stats(source: str, target: str) -> None:
        if Path(target).name == "stats.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(source, target)

    monkeypatch.setattr(atomic.os, "replace", full_at_stats)
    args = ["backtest", str(tiny_run), "--db", str(tiny_db), "--random-runs", "5", "--no-progress", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "cannot write (No space left on device)" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["trades.csv"] and (out / "trades.csv").read_text() == "old\n"


def test_cuda_is_refused_before_any_write_where_the_machine_has_none() -> None:
    import torch

    from lstm_trading.core.config import TrainConfig
    from lstm_trading.models.lstm.trainer_settings import check_trainer

    if torch.cuda.is_available():  # a GPU machine: the check lets it through, and more GPUs than it has are refused
        check_trainer(TrainConfig(precision="32-true"), "cuda")
        with pytest.raises(ConfigError, match="GPUs asked for"):
            check_trainer(TrainConfig(devices=str(torch.cuda.device_count() + 1)), "cuda")
        return
    with pytest.raises(ConfigError, match="^--accelerator cuda: this machine has no CUDA device; use cpu or auto$"):
        check_trainer(TrainConfig(), "cuda")


def test_gpu_and_cuda_mean_the_same_accelerator_everywhere() -> None:
    """`--accelerator gpu` was CUDA to the device check but CPU to the precision choice."""
    import torch

    from lstm_trading.models.lstm.trainer_settings import on_cuda, resolve_precision

    assert on_cuda("gpu") and on_cuda("cuda") and not on_cuda("cpu")
    assert on_cuda("auto") == torch.cuda.is_available()
    if not torch.cuda.is_available():  # bf16 for a GPU is not judged by this CPU's kernels
        assert resolve_precision("bf16-mixed", "gpu") == resolve_precision("bf16-mixed", "cuda") == "bf16-mixed"
