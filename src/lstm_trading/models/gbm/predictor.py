"""The gradient-boosting baseline as a model kind: three LightGBM boosters behind the `Predictor` interface.

A classifier for the label (Buy / Sell / Invalid) and two regressors for the stop loss and take profit, in the
target scaler's units as the LSTM's heads; all three read `features.window_summary` of each window. They are
saved as LightGBM's own text model files, each named with its sha256 in `bundle.json`'s `weights` entry, and
loaded by LightGBM's text parser: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from lstm_trading.core.atomic import write_bytes_atomic
from lstm_trading.core.config import ModelConfig
from lstm_trading.core.errors import ModelFileError
from lstm_trading.models.base import Progress, WindowOutputs
from lstm_trading.models.gbm.features import CloseColumn, summary_width, window_summary

KIND = "gbm"
N_CLASSES = 3
# The role of each booster and its file in the bundle folder.
MODEL_FILES = {
    "classifier": "gbm_classifier.txt",
    "stop_loss": "gbm_stop_loss.txt",
    "take_profit": "gbm_take_profit.txt",
}
TEXT_HEADER = "tree\n"  # how every LightGBM text model file begins


@dataclass(frozen=True)
class GbmPredictor:
    """Three boosters over window summaries; `close` and `return_rows` rebuild the summary from the file alone."""

    classifier: lgb.Booster
    stop_loss: lgb.Booster
    take_profit: lgb.Booster
    close: CloseColumn
    return_rows: tuple[int, ...]
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
        """`batch_size` is the LSTM's and unused here; `workers` threads summarise the windows."""
        inputs = self.summarise(scaled, ends, lengths, workers=workers, progress=progress)  # (n, 5 F + 3)
        if len(inputs) == 0:
            return WindowOutputs(np.empty((0, N_CLASSES)), np.empty(0), np.empty(0))
        proba = np.asarray(self.classifier.predict(inputs), dtype=np.float64).reshape(len(inputs), N_CLASSES)
        sl = np.asarray(self.stop_loss.predict(inputs), dtype=np.float64)
        tp = np.asarray(self.take_profit.predict(inputs), dtype=np.float64)
        return WindowOutputs(proba, sl, tp)

    def summarise(
        self,
        scaled: np.ndarray,
        ends: np.ndarray,
        lengths: np.ndarray,
        *,
        workers: int | None = None,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """The boosters' inputs for windows `[end - length, end)` of `scaled`."""
        return window_summary(
            scaled, ends, lengths, self.close, return_rows=self.return_rows, workers=workers, progress=progress
        )

    def boosters(self) -> dict[str, lgb.Booster]:
        return {"classifier": self.classifier, "stop_loss": self.stop_loss, "take_profit": self.take_profit}

    def save(self, directory: Path) -> dict[str, Any]:
        files: dict[str, dict[str, str]] = {}
        for role, booster in self.boosters().items():
            path = directory / MODEL_FILES[role]
            data = booster.model_to_string().encode("utf-8")
            write_bytes_atomic(path, data)
            files[role] = {"file": path.name, "sha256": hashlib.sha256(data).hexdigest()}  # of what was written
        return {
            "format": "lightgbm-text",
            "files": files,
            "close_pct": {"column": self.close.index, "offset": self.close.offset, "scale": self.close.scale},
            "return_rows": list(self.return_rows),
        }


def _entry_part(weights_entry: dict[str, Any], key: str, kind: type, where: Path) -> Any:
    value = weights_entry.get(key)
    if not isinstance(value, kind):
        raise ModelFileError(
            f'{where}: "weights.{key}" is missing or not a {kind.__name__}; the bundle is incomplete or was edited'
        )
    return value


def _read_booster(directory: Path, role: str, files: dict[str, Any], where: Path) -> lgb.Booster:
    """One model file, checked against its checksum before LightGBM's text parser reads it."""
    path = directory / MODEL_FILES[role]
    recorded = files.get(role)
    if not isinstance(recorded, dict) or recorded.get("file") != path.name or not recorded.get("sha256"):
        raise ModelFileError(f'{where}: "weights.files.{role}" must name {path.name} and its sha256')
    if not path.exists():
        raise ModelFileError(f"{path}: missing; a gbm bundle holds bundle.json and {', '.join(MODEL_FILES.values())}")
    if not path.is_file():  # checked before hashing: a link to a device such as /dev/zero never ends
        raise ModelFileError(f"{path}: not a regular file; a gbm model file is LightGBM's text")
    data = path.read_bytes()  # read once: hashed, then parsed
    if hashlib.sha256(data).hexdigest() != recorded["sha256"]:
        raise ModelFileError(f"{path}: checksum differs from bundle.json; the model file is truncated or was replaced")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not text.startswith(TEXT_HEADER):
        raise ModelFileError(f"{path}: not a readable LightGBM model file (it does not begin with a 'tree' header)")
    try:
        return lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as error:
        raise ModelFileError(f"{path}: not a readable LightGBM model file ({error})") from None


def load_gbm(directory: Path, model_config: ModelConfig, weights_entry: dict[str, Any]) -> GbmPredictor:
    """The three boosters of `directory`, each checked against its sha256 in `bundle.json` and its input width."""
    where = directory / "bundle.json"
    files = _entry_part(weights_entry, "files", dict, where)
    close_entry = _entry_part(weights_entry, "close_pct", dict, where)
    rows = _entry_part(weights_entry, "return_rows", list, where)
    try:
        close = CloseColumn(int(close_entry["column"]), float(close_entry["offset"]), float(close_entry["scale"]))
        return_rows = tuple(int(r) for r in rows)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f'{where}: "weights.close_pct" or "weights.return_rows" is malformed ({error})') from None
    if not 0 <= close.index < model_config.input_size or not all(r >= 1 for r in return_rows):
        raise ModelFileError(f'{where}: "weights.close_pct.column" or "weights.return_rows" is out of range')
    boosters = {role: _read_booster(directory, role, files, where) for role in MODEL_FILES}
    width = summary_width(model_config.input_size, return_rows)
    for role, booster in boosters.items():
        if booster.num_feature() != width:
            raise ModelFileError(
                f"{directory / MODEL_FILES[role]}: takes {booster.num_feature()} inputs, but {model_config.input_size} "
                f"features summarise to {width}"
            )
    if boosters["classifier"].num_model_per_iteration() != N_CLASSES:
        raise ModelFileError(f"{directory / MODEL_FILES['classifier']}: not a {N_CLASSES}-class classifier")
    return GbmPredictor(
        classifier=boosters["classifier"],
        stop_loss=boosters["stop_loss"],
        take_profit=boosters["take_profit"],
        close=close,
        return_rows=return_rows,
    )
