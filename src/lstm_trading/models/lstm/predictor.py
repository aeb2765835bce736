"""The LSTM as a model kind: `LSTMModel` behind the `Predictor` interface, its weights in safetensors."""

from __future__ import annotations

import hashlib
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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    """The weights of `directory`, checked against the checksum in `bundle.json` and the model's shapes."""
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.exists():
        raise ModelFileError(f"{weights_path}: missing; a run folder holds model/bundle.json and model/{WEIGHTS_FILE}")
    expected_sha = weights_entry.get("sha256")
    if expected_sha is not None and expected_sha != sha256_of(weights_path):
        raise ModelFileError(
            f"{weights_path}: checksum differs from bundle.json; the weights file is truncated or was replaced"
        )
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFileError(f"{weights_path}: not a readable safetensors file ({error})") from None
    model = LSTMModel.from_config(model_config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ModelFileError(f"{weights_path}: tensors do not match the model (missing {missing}, unexpected {extra})")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise ModelFileError(
                f"{weights_path}: tensor '{name}' has shape {tuple(state[name].shape)}, "
                f"the model in bundle.json needs {tuple(tensor.shape)}"
            )
    model.load_state_dict({name: t.to(torch.float32) for name, t in state.items()})
    return LstmPredictor(model.eval())
