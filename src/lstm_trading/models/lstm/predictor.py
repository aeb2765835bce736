"""The LSTM as a model kind: `LSTMModel` behind the `Predictor` interface, its weights in safetensors."""

from __future__ import annotations

import hashlib
import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lstm_trading.core.atomic import atomic_path
from lstm_trading.core.config import ModelConfig
from lstm_trading.core.errors import ModelFileError
from lstm_trading.models.base import Progress, WindowOutputs
from lstm_trading.models.lstm.inference import run_windows
from lstm_trading.models.lstm.model import LSTMModel

KIND = "lstm"
WEIGHTS_FILE = "weights.safetensors"
FORMAT = "lstm-trading-bundle"


MAX_HEADER_BYTES = 100_000_000  # the safetensors library refuses a larger header too
RUN_FOLDER_HINT = f"a run folder holds model/bundle.json and model/{WEIGHTS_FILE}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be a model file, or None when it is a regular file (or a link to one).

    Checked before anything reads it: a link to a device such as `/dev/zero` never ends, so hashing it hangs;
    a folder or a FIFO cannot be read as a file either.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        kind = "a folder"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    elif stat.S_ISFIFO(mode):
        kind = "a FIFO"
    else:
        kind = "a special file"
    return f"{kind}, not a regular file"


class _NotSafetensors(Exception):
    """The file does not hold a safetensors header; the message says what is wrong."""


class _WrongSize(Exception):
    """A safetensors header whose file is shorter or longer than the header describes."""


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor shapes a safetensors file's header names, after checking the file's size against it.

    Reads only the 8-byte little-endian header length and the JSON header, which gives each tensor's byte
    offsets: the data ends where the last tensor ends, so a complete file has exactly `8 + header + data`
    bytes. Raises `_NotSafetensors` or `_WrongSize`; nothing has hashed or mapped the file by then.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise _NotSafetensors(f"{size:,} bytes, too short to hold a safetensors header")
        length = int.from_bytes(prefix, "little")
        first = handle.read(1)
        if first != b"{" or not 2 <= length <= MAX_HEADER_BYTES:
            raise _NotSafetensors("it does not start with a safetensors header")
        if 8 + length > size:
            raise _WrongSize(f"it has {size:,} bytes, its header alone needs {8 + length:,}")
        try:
            header = json.loads(first + handle.read(length - 1))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise _NotSafetensors(f"its header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise _NotSafetensors("its header is not a JSON object")
    shapes: dict[str, tuple[int, ...]] = {}
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            shape = tuple(entry["shape"])
            start, end = entry["data_offsets"]
            numbers = (*shape, start, end)
            valid = isinstance(entry["dtype"], str) and all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers
            )
        except (TypeError, KeyError, ValueError):
            valid = False
        if not valid:
            raise _NotSafetensors(f"its header's entry for tensor {name!r} is malformed")
        shapes[name] = shape
        data_end = max(data_end, end)
    if 8 + length + data_end != size:
        raise _WrongSize(f"it has {size:,} bytes, its header describes {8 + length + data_end:,}")
    return shapes


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The tensors of `LSTMModel.from_config(config)` by name, worked out without building it.

    A `bundle.json` edited to `hidden_size = 10**9` would otherwise fail allocating the model (even on the
    meta device, whose size arithmetic overflows) before any shape is compared. `nn.LSTM` stores four gates
    per layer; tests/test_reliability_model.py holds this equal to the model's own `state_dict`.
    """
    gates, hidden = 4 * config.hidden_size, config.hidden_size
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(config.num_layers):
        shapes[f"lstm.weight_ih_l{layer}"] = (gates, config.input_size if layer == 0 else hidden)
        shapes[f"lstm.weight_hh_l{layer}"] = (gates, hidden)
        shapes[f"lstm.bias_ih_l{layer}"] = (gates,)
        shapes[f"lstm.bias_hh_l{layer}"] = (gates,)
    for head, width in (("fc_class", config.output_size), ("fc_sl", 1), ("fc_tp", 1)):
        shapes[f"{head}.weight"] = (width, hidden)
        shapes[f"{head}.bias"] = (width,)
    return shapes


@dataclass(frozen=True)
class LstmPredictor:
    """An `LSTMModel` in eval mode; windows run batched, time-chunked, on one-thread workers (`inference.py`)."""

    model: LSTMModel
    kind: str = KIND

    def predict_windows(
        self,
        scaled: np.ndarray,
        ends: np.ndarray,
        lengths: np.ndarray,
        *,
        batch_size: int = 64,
        workers: int | None = None,
        progress: Progress | None = None,
    ) -> WindowOutputs:
        proba, sl, tp = run_windows(
            self.model, scaled, ends, lengths, batch_size=batch_size, workers=workers, progress=progress
        )
        return WindowOutputs(proba, sl, tp)

    def save(self, directory: Path) -> dict[str, Any]:
        weights = {name: tensor.detach().cpu().contiguous() for name, tensor in self.model.state_dict().items()}
        with atomic_path(directory / WEIGHTS_FILE) as temporary:
            save_file(weights, str(temporary), metadata={"format": FORMAT})
        return {"file": WEIGHTS_FILE, "sha256": sha256_of(directory / WEIGHTS_FILE)}


def load_lstm(directory: Path, model_config: ModelConfig, weights_entry: dict[str, Any]) -> LstmPredictor:
    """The weights of `directory`, checked before the model is built: a regular file whose size matches its
    safetensors header, tensor shapes that match `bundle.json`'s model, the checksum in `bundle.json`, and
    finite numbers only."""
    weights_path = directory / WEIGHTS_FILE
    problem = file_problem(weights_path)
    if problem is not None:
        raise ModelFileError(f"{weights_path}: {problem}; {RUN_FOLDER_HINT}")
    expected_sha = weights_entry.get("sha256")
    try:
        shapes = tensor_shapes(weights_path)
    except _NotSafetensors as error:
        raise ModelFileError(f"{weights_path}: not a readable safetensors file ({error})") from None
    except _WrongSize as error:
        if expected_sha is None:
            raise ModelFileError(
                f"{weights_path}: not a readable safetensors file (truncated or extended: {error})"
            ) from None
        # save() writes a complete file, whose size its header describes exactly, so a file of another size
        # cannot have the recorded checksum: refused without hashing a file that may be huge
        raise ModelFileError(
            f"{weights_path}: checksum differs from bundle.json; the weights file is truncated or was replaced "
            f"({error})"
        ) from None
    if model_config.num_layers > len(shapes):  # never a match; and no list of a million layers' names
        raise ModelFileError(
            f"{weights_path}: holds {len(shapes)} tensors; the model in bundle.json "
            f"(num_layers {model_config.num_layers}) needs "
            f"{4 * model_config.num_layers + 6}"
        )
    expected = expected_shapes(model_config)
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    if missing or extra:
        raise ModelFileError(f"{weights_path}: tensors do not match the model (missing {missing}, unexpected {extra})")
    for name, shape in expected.items():
        if shapes[name] != shape:
            raise ModelFileError(
                f"{weights_path}: tensor '{name}' has shape {shapes[name]}, the model in bundle.json needs {shape}"
            )
    if expected_sha is not None and expected_sha != sha256_of(weights_path):
        raise ModelFileError(
            f"{weights_path}: checksum differs from bundle.json; the weights file is truncated or was replaced"
        )
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFileError(f"{weights_path}: not a readable safetensors file ({error})") from None
    damaged = [name for name, tensor in state.items() if not bool(torch.isfinite(tensor).all())]
    if damaged:
        # a checksum only proves the file is the one saved: training that diverged saves NaN weights too
        raise ModelFileError(
            f"{weights_path}: tensor '{damaged[0]}' holds NaN or infinite numbers ({len(damaged)} of {len(state)} "
            "tensors do); the model cannot predict: retrain it, or restore the run folder from a copy"
        )
    model = LSTMModel.from_config(model_config)
    model.load_state_dict({name: t.to(torch.float32) for name, t in state.items()})
    return LstmPredictor(model.eval())
