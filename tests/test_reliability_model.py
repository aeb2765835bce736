"""Model files and the predict path refuse what would make a prediction meaningless (issue "Reliability, round
two"): NaN in bundle.json or the weights, an edited bundle.json, files that never end or are folders, sizes and
versions that do not add up, an entry price that is not a price, and a result that could not be printed.

Each test names the fault it guards; a tampered copy of `tiny_run` is made per test."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from lstm_trading.cli import app, main
from lstm_trading.core.config import ModelConfig
from lstm_trading.core.errors import ConfigError, DataError, ModelFileError
from lstm_trading.models.bundle import CHECKSUM_KEY, content_sha256, load_bundle
from lstm_trading.models.lstm import predictor
from lstm_trading.models.lstm.model import LSTMModel
from lstm_trading.predict import predict_moments, predict_signals, predict_windows, prediction_record, scaled_features
from lstm_trading.samples.scalers import FeatureScaler, TargetScaler

runner = CliRunner()


@pytest.fixture
def run(tiny_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def _bundle_json(run: Path) -> Path:
    return run / "model" / "bundle.json"


def _edit(run: Path, edit: Callable[[dict[str, Any]], None], *, seal: bool = False) -> Path:
    """Edit bundle.json; `seal`: recompute its checksum too, as whoever tampered with it could."""
    path = _bundle_json(run)
    document = json.loads(path.read_text())
    edit(document)
    if seal:
        document[CHECKSUM_KEY] = content_sha256(document)
    path.write_text(json.dumps(document))
    return path


def _as_old_bundle(document: dict[str, Any]) -> None:
    """A bundle written before bundle.json carried a checksum of its own."""
    document.pop(CHECKSUM_KEY)


def _reseal_weights(run: Path, state: dict[str, torch.Tensor]) -> None:
    """Write `state` as the weights and fix both checksums: only the numbers themselves can give it away."""
    weights = run / "model" / "weights.safetensors"
    save_file(state, str(weights), metadata={"format": "lstm-trading-bundle"})
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    _edit(run, lambda d: d["weights"].update(sha256=digest), seal=True)


def _one_line_error(result: Any) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return str(result.stderr.strip())


# --- 1. bundle.json's numbers are covered by a checksum; NaN anywhere is refused ---


def test_bundle_json_records_the_checksum_of_its_contents(tiny_run: Path) -> None:
    document = json.loads(_bundle_json(tiny_run).read_text())
    assert document[CHECKSUM_KEY] == content_sha256(document)
    assert content_sha256(document) == content_sha256(json.loads(json.dumps(document, indent=4)))  # canonical


def test_an_edited_scaler_number_is_refused_by_the_checksum(run: Path) -> None:
    # regression: the checksum covered only the weights, so bundle.json's numbers could change unnoticed
    path = _edit(run, lambda d: d["feature_scaler"]["offset"].__setitem__(3, 0.5))
    with pytest.raises(ModelFileError) as caught:
        load_bundle(run)
    assert str(caught.value) == (
        f"{path}: content_sha256 differs from the file's contents: bundle.json was edited after training "
        "(only training.sources may be); restore it from a copy or retrain"
    )


def test_training_sources_may_be_pointed_at_moved_files(run: Path, tmp_path: Path) -> None:
    _edit(run, lambda d: d["training"].update(sources={"db": str(tmp_path / "moved.db"), "symbol": "ETHUSDT"}))
    assert load_bundle(run).training.sources.db == str(tmp_path / "moved.db")


@pytest.mark.parametrize("old", [False, True], ids=["with checksum", "old bundle"])
@pytest.mark.parametrize(
    ("literal", "key", "shown"),
    [
        ("NaN", "feature_scaler.offset[3]", "nan"),
        ("Infinity", "feature_scaler.scale[0]", "inf"),
        ("-1e999", "target_scaler.data_min[1]", "-inf"),  # Python reads an overflowing number as infinity
        ("NaN", "validation.best_val_loss", "nan"),
    ],
)
def test_a_non_finite_number_in_bundle_json_is_refused_naming_the_key(
    run: Path, old: bool, literal: str, key: str, shown: str
) -> None:
    # regression: a NaN scaler offset predicted "Buy" from NaN probabilities with exit code 0
    marker = 123456.789

    def plant(document: dict[str, Any]) -> None:
        if old:
            _as_old_bundle(document)
        *parents, last = key.replace("[", ".").rstrip("]").split(".")
        target: Any = document
        for part in parents:
            target = target[part]
        target[int(last) if last.isdigit() else last] = marker

    path = _edit(run, plant)
    path.write_text(path.read_text().replace(str(marker), literal))
    with pytest.raises(ModelFileError) as caught:
        load_bundle(run)
    assert str(caught.value) == (
        f'{path}: "{key}" is {shown}, not a finite number; the file was edited or damaged: '
        "restore it from a copy or retrain"
    )


@pytest.mark.parametrize(
    ("entry", "value", "message"),
    [
        ("offset", float("nan"), "feature_scaler.offset[2] is nan, not a finite number"),
        ("scale", float("inf"), "feature_scaler.scale[2] is inf, not a finite number"),
        ("lower", float("nan"), "feature_scaler.lower[2] is nan, not a finite number"),
        ("upper", float("-inf"), "feature_scaler.upper[2] is -inf, not a finite number"),  # only +inf is open
    ],
)
def test_the_feature_scaler_refuses_non_finite_numbers(tiny_run: Path, entry: str, value: float, message: str) -> None:
    data = load_bundle(tiny_run).feature_scaler.to_json()
    data[entry][2] = value
    with pytest.raises(ModelFileError, match=f"^{re.escape(message)}"):
        FeatureScaler.from_json(data, 13)
    data[entry][2] = None if entry in ("lower", "upper") else 1.0  # an open bound (minmax) is fine
    FeatureScaler.from_json(data, 13)


def test_the_target_scaler_refuses_non_finite_numbers() -> None:
    with pytest.raises(ModelFileError, match=r"^target_scaler.data_min\[0\] is nan, not a finite number"):
        TargetScaler.from_json({"data_min": [float("nan"), 0.1], "data_range": [1.0, 1.0]})
    with pytest.raises(ModelFileError, match=r"^target_scaler.data_range\[1\] is inf, not a finite number"):
        TargetScaler.from_json({"data_min": [0.1, 0.1], "data_range": [1.0, float("inf")]})


def test_nan_weights_with_matching_checksums_are_refused(run: Path) -> None:
    # regression: NaN weights whose sha256 matched printed NaN probabilities (and "Buy") with exit code 0
    state = load_file(str(run / "model" / "weights.safetensors"))
    state["fc_class.bias"][0] = float("nan")
    _reseal_weights(run, state)
    with pytest.raises(ModelFileError) as caught:
        load_bundle(run)
    assert str(caught.value) == (
        f"{run / 'model' / 'weights.safetensors'}: tensor 'fc_class.bias' holds NaN or infinite numbers "
        "(1 of 10 tensors do); the model cannot predict: retrain it, or restore the run folder from a copy"
    )


def _nan_scaler(run: Path) -> Path:
    path = _edit(run, lambda d: d["feature_scaler"]["offset"].__setitem__(3, 123456.789))
    path.write_text(path.read_text().replace("123456.789", "NaN"))
    return path


def _nan_weights(run: Path) -> Path:
    state = load_file(str(run / "model" / "weights.safetensors"))
    state["lstm.weight_hh_l0"][5, 3] = float("nan")
    _reseal_weights(run, state)
    return run / "model" / "weights.safetensors"


@pytest.mark.parametrize("damage", [_nan_scaler, _nan_weights], ids=["NaN scaler", "NaN weights"])
@pytest.mark.parametrize("command", ["predict", "backtest", "live --replay"])
def test_every_command_stops_on_a_nan_bundle_in_one_line(
    run: Path, tiny_db: Path, tiny_candles: pd.DataFrame, tmp_path: Path, damage: Any, command: str
) -> None:
    # regression: predict printed "Buy" (exit 0, JSON with NaN), backtest reported 0 signals without a word,
    # and live --replay crashed with a traceback
    named = damage(run)
    start = str(int(tiny_candles["timestamp"].iloc[-600]))
    out = ["--out", str(tmp_path / "out")]
    args = {
        "predict": ["predict", str(run), "--db", str(tiny_db), "--json"],
        "backtest": ["backtest", str(run), "--db", str(tiny_db), "--no-progress", *out],
        "live --replay": ["live", str(run), "--replay", "--db", str(tiny_db), "--from", start, "-q", *out],
    }[command]
    result = runner.invoke(app, args)
    line = _one_line_error(result)
    assert line.startswith(f"error: {named}: "), line
    assert "not a finite number" in line or "holds NaN or infinite numbers" in line
    assert result.stdout == ""


@pytest.fixture
def nan_model(tiny_run: Path) -> Any:
    """The tiny bundle with a NaN weight planted in memory, past every load-time check."""
    bundle = load_bundle(tiny_run)
    model = LSTMModel.from_config(bundle.model_config)
    model.load_state_dict(bundle.model.model.state_dict())
    with torch.no_grad():
        model.fc_class.bias[1] = float("nan")
    return dataclasses.replace(bundle, model=predictor.LstmPredictor(model.eval()))


def test_non_finite_outputs_stop_prediction_naming_the_bundle(nan_model: Any, tiny_candles: pd.DataFrame) -> None:
    expected = (
        f"{nan_model.json_path}: the model gave NaN or infinite outputs for 2 of 2 windows of finite features; "
        "its weights or scaler numbers are damaged: retrain, or restore the run from a copy"
    )
    moments = tiny_candles["timestamp"].to_numpy()[[-100, -50]]
    with pytest.raises(ModelFileError) as caught:
        predict_moments(nan_model, tiny_candles, moments, workers=1)
    assert str(caught.value) == expected
    with pytest.raises(ModelFileError) as caught:  # the backtest's path
        predict_signals(nan_model, scaled_features(nan_model, tiny_candles), moments, workers=1)
    assert str(caught.value) == expected


def test_non_finite_inputs_are_blamed_on_the_data_not_the_model(tiny_run: Path) -> None:
    bundle = load_bundle(tiny_run)
    scaled = np.zeros((100, 13), dtype=np.float32)
    scaled[55, 4] = np.nan
    ends, lengths = np.array([50, 60]), np.array([20, 20])
    with pytest.raises(DataError, match=r"^1 of 2 windows hold NaN or infinite scaled features \(the first ends"):
        predict_windows(bundle, scaled, ends, lengths, workers=1)
    assert np.isfinite(predict_windows(bundle, scaled, ends[:1], lengths[:1], workers=1).proba).all()


def test_prediction_records_are_strict_json(tiny_run: Path, tiny_candles: pd.DataFrame) -> None:
    row = predict_moments(load_bundle(tiny_run), tiny_candles).iloc[0].copy()
    row["stop_loss_pct"] = float("nan")
    record = prediction_record(row)
    assert record["stop_loss_pct"] is None
    json.dumps(record, allow_nan=False)


# --- 2. --entry must be a price ---


@pytest.mark.parametrize("entry", ["-2000", "0", "nan", "inf"])
def test_predict_refuses_an_entry_that_is_not_a_price(tiny_run: Path, tiny_db: Path, entry: str) -> None:
    # regression: `--entry -2000` printed a decision with negative stop loss and take profit prices
    result = runner.invoke(app, ["predict", str(tiny_run), "--db", str(tiny_db), f"--entry={entry}"])
    assert _one_line_error(result) == (
        f"error: --entry {float(entry):g}: an entry price must be a positive, finite number "
        "(leave --entry out to use the last close)"
    )


def test_predict_moments_refuses_an_entry_that_is_not_a_price(tiny_run: Path, tiny_candles: pd.DataFrame) -> None:
    moments = tiny_candles["timestamp"].to_numpy()[[-100, -50]]
    with pytest.raises(ConfigError, match="^entry price -5 is not a positive, finite price$"):
        predict_moments(load_bundle(tiny_run), tiny_candles, moments, entry=[100.0, -5.0])


# --- 3. files that never end, folders, sizes, nesting, versions ---


@pytest.fixture
def hang_guard() -> Iterator[None]:
    """A read that never ends fails the test after 20 s instead of hanging the run."""

    def fail(*_: object) -> None:
        raise TimeoutError("still reading after 20 s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _link_to_dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _fifo(path: Path) -> None:
    os.mkfifo(path)


@pytest.mark.parametrize(
    ("name", "make", "kind"),
    [
        ("weights.safetensors", _link_to_dev_zero, "a device"),  # hashed in blocks: the alarm can stop it
        # bundle.json is read in one call, which /dev/zero would grow until memory runs out: a FIFO without a
        # writer blocks in open() instead, which the alarm interrupts
        ("bundle.json", _fifo, "a FIFO"),
    ],
)
def test_a_model_file_that_never_ends_is_refused_without_reading(
    run: Path, hang_guard: None, name: str, make: Callable[[Path], None], kind: str
) -> None:
    # regression: hashing a weights file linked to /dev/zero never ended
    path = run / "model" / name
    path.unlink()
    make(path)
    with pytest.raises(ModelFileError) as caught:
        load_bundle(run)
    assert str(caught.value) == (
        f"{path}: {kind}, not a regular file; a run folder holds model/bundle.json and model/weights.safetensors"
    )


@pytest.mark.parametrize("name", ["weights.safetensors", "bundle.json"])
def test_a_model_file_that_is_a_folder_is_refused(run: Path, name: str) -> None:
    # regression: a folder named weights.safetensors stopped predict with IsADirectoryError's traceback
    path = run / "model" / name
    path.unlink()
    path.mkdir()
    with pytest.raises(ModelFileError, match=f"^{path}: a folder, not a regular file; a run folder holds"):
        load_bundle(run)


def test_weights_of_the_wrong_size_are_refused_before_hashing(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = run / "model" / "weights.safetensors"
    size = weights.stat().st_size
    monkeypatch.setattr(predictor, "sha256_of", lambda path: pytest.fail("hashed a file of the wrong size"))
    with open(weights, "ab") as handle:
        handle.write(b"\0" * 1000)
    with pytest.raises(ModelFileError) as caught:
        load_bundle(run)
    assert str(caught.value) == (
        f"{weights}: checksum differs from bundle.json; the weights file is truncated or was replaced "
        f"(it has {size + 1000:,} bytes, its header describes {size:,})"
    )
    os.truncate(weights, size - 4)  # cut inside the last tensor, and no checksum to compare with
    _edit(run, lambda d: d["weights"].pop("sha256"), seal=True)
    with pytest.raises(ModelFileError) as caught:
        load_bundle(run)
    assert str(caught.value) == (
        f"{weights}: not a readable safetensors file (truncated or extended: it has {size - 4:,} bytes, "
        f"its header describes {size:,})"
    )


@pytest.mark.parametrize(
    ("depth", "message"),
    [
        (100_000, "not an lstm-trading bundle (nested too deeply to read)"),  # RecursionError in the reader
        (100, "not an lstm-trading bundle (nested more than 16 levels deep)"),
    ],
)
def test_a_deeply_nested_bundle_json_is_refused(run: Path, depth: int, message: str) -> None:
    path = _edit(run, lambda d: d.update(extra="PLACEHOLDER"))
    path.write_text(path.read_text().replace('"PLACEHOLDER"', "[" * depth + "]" * depth))
    with pytest.raises(ModelFileError) as caught:
        load_bundle(run)
    assert str(caught.value) == f"{path}: {message}"


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("1", "\"format_version\" must be a whole number, not '1'"),
        (1.0, '"format_version" must be a whole number, not 1.0'),
        (True, '"format_version" must be a whole number, not True'),
        (-7, "format version -7 was never written by lstm-trading (versions run from 1 to 1); "),
        (0, "format version 0 was never written by lstm-trading (versions run from 1 to 1); "),
    ],
)
def test_format_version_must_be_a_whole_number_from_one(run: Path, version: object, message: str) -> None:
    # regression: "1" read "newer than this lstm-trading reads (1)", and -7 loaded
    path = _edit(run, lambda d: d.update(format_version=version), seal=True)
    with pytest.raises(ModelFileError) as caught:
        load_bundle(run)
    assert str(caught.value).startswith(f"{path}: {message}")


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        (
            {"hidden_size": 4096},
            "tensor 'lstm.weight_ih_l0' has shape (64, 13), the model in bundle.json needs (16384, 13)",
        ),
        ({"num_layers": 16}, "holds 10 tensors; the model in bundle.json (num_layers 16) needs 70"),
    ],
)
def test_model_sizes_are_checked_against_the_weights_header_before_building_the_model(
    run: Path, monkeypatch: pytest.MonkeyPatch, sizes: dict[str, int], message: str
) -> None:
    # regression: hidden_size 10**9 failed allocating the model before any shape was compared
    monkeypatch.setattr(predictor.LSTMModel, "from_config", lambda config: pytest.fail("built the model"))
    _edit(run, lambda d: d["model"].update(sizes), seal=True)
    with pytest.raises(ModelFileError) as caught:
        load_bundle(run)
    assert str(caught.value) == f"{run / 'model' / 'weights.safetensors'}: {message}"


@pytest.mark.parametrize("config", [ModelConfig(), ModelConfig(input_size=5, hidden_size=7, num_layers=3)])
def test_expected_shapes_are_the_models_own(config: ModelConfig) -> None:
    model = LSTMModel.from_config(config)
    assert predictor.expected_shapes(config) == {name: tuple(t.shape) for name, t in model.state_dict().items()}


# --- 4. the bundle, not the data, is named for the bundle's faults ---


def test_renamed_feature_names_name_the_bundle(run: Path, tiny_candles: pd.DataFrame) -> None:
    # regression: "features (...) differ from the bundle's (...)" said neither which bundle nor whose fault
    path = _edit(run, lambda d: d["features"]["names"].__setitem__(0, "opn_pct"))
    with pytest.raises(ModelFileError, match=f"^{path}: content_sha256 differs"):
        load_bundle(run)
    _edit(run, _as_old_bundle)  # an old bundle has no checksum: the names are compared when predicting
    bundle = load_bundle(run)
    expected = (
        f"{path}: its features.names differ from the features its features.config computes (13 names, "
        "13 computed; differing: 'opn_pct' (computed: 'open_pct')); the file was edited or comes from another "
        "lstm-trading: restore it or retrain"
    )
    with pytest.raises(ModelFileError) as caught:
        predict_moments(bundle, tiny_candles)
    assert str(caught.value) == expected
    with pytest.raises(ModelFileError) as caught:  # backtest and evaluate
        scaled_features(bundle, tiny_candles)
    assert str(caught.value) == expected


def test_a_scaler_that_makes_features_nan_is_blamed_on_the_bundle(tiny_run: Path, tiny_candles: pd.DataFrame) -> None:
    # regression: "non-finite feature close_pct at ..." blamed the candles for the bundle's NaN offset
    bundle = load_bundle(tiny_run)
    offset = bundle.feature_scaler.offset.copy()
    offset[3] = math.nan
    broken = dataclasses.replace(bundle, feature_scaler=dataclasses.replace(bundle.feature_scaler, offset=offset))
    with pytest.raises(ModelFileError, match=f"^{bundle.json_path}: its feature_scaler turns feature close_pct at "):
        scaled_features(broken, tiny_candles)


# --- 5. a result that could not be printed is an error ---


class _BrokenStdout(io.StringIO):
    def __init__(self, error: OSError) -> None:
        super().__init__()
        self.error = error

    def write(self, text: str) -> int:
        raise self.error


@pytest.mark.parametrize(
    ("stdout", "message"),
    [
        (None, "error: stdout is closed, so the prediction would be lost; redirect it to a file instead"),
        (
            _BrokenStdout(BrokenPipeError(32, "Broken pipe")),
            "error: could not write the prediction to stdout (Broken pipe)",
        ),
        (
            _BrokenStdout(OSError(28, "No space left on device")),
            "error: could not write the prediction to stdout (No space left on device)",
        ),
    ],
    ids=["closed (>&-)", "broken pipe", "disk full"],
)
@pytest.mark.parametrize("as_json", [True, False], ids=["--json", "table"])
def test_predict_fails_when_its_result_cannot_be_written(
    tiny_run: Path,
    tiny_db: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stdout: Any,
    message: str,
    as_json: bool,
) -> None:
    # regression: `predict --json >&-` exited 0 with the result lost
    monkeypatch.setattr(
        sys, "argv", ["lstm-trading", "predict", str(tiny_run), "--db", str(tiny_db)] + ["--json"] * as_json
    )
    monkeypatch.setattr(sys, "stdout", stdout)
    with pytest.raises(SystemExit) as exited:
        main()
    monkeypatch.undo()
    assert exited.value.code == 2
    assert capsys.readouterr().err == message + "\n"


def test_predict_into_a_closed_pipe_says_so_in_one_line(tiny_run: Path, tiny_db: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written, as in `| head -0`
    try:
        done = subprocess.run(
            [sys.executable, "-m", "lstm_trading", "predict", str(tiny_run), "--db", str(tiny_db), "--json"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (2, "error: could not write the prediction to stdout (Broken pipe)\n")
