"""Model files cannot run code: a pickle that writes a file when unpickled is planted wherever a model file is
read (bundle weights, bundle.json, the checkpoint `--resume` continues from, the best checkpoint loaded after
training). The file is never written, and the command stops with one clear line and exit code 2."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_config
from lstm_trading.cli import app
from lstm_trading.core.config import dump_config
from lstm_trading.data.journal import write_journal


class WritesAFile:
    """Unpickling this object writes `target`: the smallest stand-in for code hidden in a model file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (self.target, "code from a model file ran"))


@pytest.fixture
def setup(tiny_run: Path, tiny_db: Path, tiny_trades: pd.DataFrame, tmp_path: Path) -> dict[str, Path]:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    journal = tmp_path / "val.xlsx"
    write_journal(journal, tiny_trades[["start_time", "entry_price", "side"]], {"horizon_seconds": 6 * 3600})
    config = tmp_path / "tiny.toml"
    config.write_text(dump_config(tiny_config()))  # the run's own settings: nothing is left to train
    return {"run": run, "db": tiny_db, "journal": journal, "config": config, "marker": tmp_path / "pwned.txt"}


def payload(marker: Path) -> bytes:
    return pickle.dumps({"state_dict": WritesAFile(marker)})


def test_the_payload_does_run_code_when_unpickled(tmp_path: Path) -> None:
    """So the tests below can fail: plain unpickling, and torch.load without weights_only, run it."""
    marker = tmp_path / "ran.txt"
    pickle.loads(payload(marker))
    assert marker.read_text() == "code from a model file ran"
    marker.unlink()
    checkpoint = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "extra": WritesAFile(marker)}, checkpoint)
    torch.load(checkpoint, weights_only=False)
    assert marker.exists()


def _plant_weights(s: dict[str, Path]) -> None:
    weights = s["run"] / "model" / "weights.safetensors"
    weights.write_bytes(payload(s["marker"]))
    path = s["run"] / "model" / "bundle.json"
    document = json.loads(path.read_text())
    document["weights"]["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()  # the checksum fixed too
    path.write_text(json.dumps(document))


def _plant_json(s: dict[str, Path]) -> None:
    (s["run"] / "model" / "bundle.json").write_bytes(payload(s["marker"]))


def _plant_checkpoint(name: str, *, torch_format: bool) -> object:
    def plant(s: dict[str, Path]) -> None:
        path = s["run"] / "checkpoints" / name
        if torch_format:  # what a real checkpoint looks like, with one object that runs code
            real = torch.load(path, map_location="cpu", weights_only=True)
            torch.save({**real, "hyper_parameters": WritesAFile(s["marker"])}, path)
        else:
            path.write_bytes(payload(s["marker"]))

    return plant


def _train(s: dict[str, Path]) -> list[str]:
    return [
        "train",
        "--db",
        str(s["db"]),
        "--trades",
        str(s["journal"]),
        "--config",
        str(s["config"]),
        "--out",
        str(s["run"]),
        "--resume",
        "--no-progress",
        "--accelerator",
        "cpu",
    ]


PLACES = {
    "weights.safetensors (predict)": (
        _plant_weights,
        lambda s: ["predict", str(s["run"]), "--db", str(s["db"])],
        "model/weights.safetensors: not a readable safetensors file",
    ),
    "weights.safetensors (evaluate)": (
        _plant_weights,
        lambda s: ["evaluate", str(s["run"]), "--db", str(s["db"])],
        "model/weights.safetensors: not a readable safetensors file",
    ),
    "weights.safetensors (backtest)": (
        _plant_weights,
        lambda s: ["backtest", str(s["run"]), "--db", str(s["db"]), "--no-progress"],
        "model/weights.safetensors: not a readable safetensors file",
    ),
    "bundle.json (predict)": (
        _plant_json,
        lambda s: ["predict", str(s["run"]), "--db", str(s["db"])],
        "model/bundle.json: not valid JSON",
    ),
    "bundle.json (report)": (_plant_json, lambda s: ["report", str(s["run"])], "model/bundle.json: not valid JSON"),
    "last.ckpt on --resume (a torch checkpoint)": (
        _plant_checkpoint("last.ckpt", torch_format=True),
        _train,
        "checkpoints/last.ckpt: refused: loading it would unpickle Python objects beyond tensors and numbers",
    ),
    "last.ckpt on --resume (a plain pickle)": (
        _plant_checkpoint("last.ckpt", torch_format=False),
        _train,
        "checkpoints/last.ckpt: refused: loading it would unpickle Python objects beyond tensors and numbers",
    ),
    "best.ckpt, loaded after training": (
        _plant_checkpoint("best.ckpt", torch_format=True),
        _train,
        "checkpoints/best.ckpt: refused: loading it would unpickle Python objects beyond tensors and numbers",
    ),
}


@pytest.mark.parametrize("place", list(PLACES))
def test_a_planted_pickle_never_runs(setup: dict[str, Path], place: str) -> None:
    plant, command, message = PLACES[place]
    plant(setup)  # type: ignore[operator]
    result = CliRunner().invoke(app, command(setup))  # type: ignore[operator]
    assert not setup["marker"].exists()
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.startswith(f"error: {setup['run']}/") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
