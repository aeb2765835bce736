"""The model bundle: `weights.safetensors` + `bundle.json`. Loading never unpickles anything.

`bundle.json` carries everything needed to rebuild and use the model from the folder alone: the format
version, hyperparameters, feature names and indicator parameters, window length, both scalers' numbers,
class names, the training period, the data fingerprint and validation metrics.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstm_trading import __version__
from lstm_trading.core.atomic import write_text_atomic
from lstm_trading.core.config import FeatureConfig, ModelConfig, TargetConfig, config_from_dict
from lstm_trading.core.errors import ConfigError, ModelFileError
from lstm_trading.core.run_folder import RunFolder
from lstm_trading.features.compute import history_minutes
from lstm_trading.models.base import Predictor
from lstm_trading.models.kinds import DEFAULT_KIND, loader_of
from lstm_trading.models.lstm.predictor import WEIGHTS_FILE
from lstm_trading.models.training_record import TrainingRecord
from lstm_trading.samples.scalers import FeatureScaler, TargetScaler
from lstm_trading.samples.targets import CLASS_NAMES

if TYPE_CHECKING:
    from collections.abc import Sequence


FORMAT = "lstm-trading-bundle"
FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"


@dataclass(frozen=True)
class Bundle:
    """A trained model with everything needed to predict in prices."""

    model: Predictor
    model_config: ModelConfig
    feature_config: FeatureConfig
    target_config: TargetConfig
    feature_names: tuple[str, ...]
    feature_scaler: FeatureScaler
    target_scaler: TargetScaler
    training: TrainingRecord = field(default_factory=TrainingRecord)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def kind(self) -> str:
        """The model kind (`models/kinds.py`): `lstm` for bundles written before kinds were recorded."""
        return self.model.kind

    @property
    def max_len(self) -> int:
        return self.target_config.max_len

    @property
    def history_minutes(self) -> int:
        """Candles needed before a moment: the window plus the indicator warm-up."""
        return history_minutes(self.feature_config, self.target_config.max_len)


def save_bundle(
    directory: Path | str,
    model: Predictor,
    *,
    model_config: ModelConfig,
    feature_config: FeatureConfig,
    target_config: TargetConfig,
    feature_names: Sequence[str],
    feature_scaler: FeatureScaler,
    target_scaler: TargetScaler,
    training: TrainingRecord,
    validation: dict[str, Any],
) -> Path:
    """Write the bundle into `directory` (weights first, then the JSON that names their checksum)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = model.save(directory)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "kind": model.kind,
        "model": asdict(model_config),
        "features": {"names": list(feature_names), "config": asdict(feature_config)},
        "targets": asdict(target_config),
        "feature_scaler": feature_scaler.to_json(),
        "target_scaler": target_scaler.to_json(),
        "class_names": list(CLASS_NAMES),
        "training": training.to_json(),
        "validation": validation,
        "weights": weights,
    }
    write_text_atomic(directory / BUNDLE_FILE, json.dumps(document, indent=2, allow_nan=False) + "\n")
    return directory


def _bundle_dir(path: Path) -> Path:
    """Accept the bundle folder itself or a run folder holding `model/`."""
    if (path / BUNDLE_FILE).exists() or (path / WEIGHTS_FILE).exists():
        return path
    if RunFolder(path).model.is_dir():
        return RunFolder(path).model
    return path


def _require(document: dict[str, Any], key: str, where: Path) -> Any:
    if key not in document:
        raise ModelFileError(f"{where}: missing key '{key}'; the bundle is incomplete or was edited by hand")
    return document[key]


def load_bundle(path: Path | str) -> Bundle:
    """Load and check a bundle; every problem is a `ModelFileError` that says what is wrong."""
    if not Path(path).exists():
        raise ModelFileError(f"{path}: no such run folder")
    directory = _bundle_dir(Path(path))
    json_path, weights_path = directory / BUNDLE_FILE, directory / WEIGHTS_FILE
    for needed in (json_path, weights_path):
        if not needed.exists():
            raise ModelFileError(f"{needed}: missing; a run folder holds model/{BUNDLE_FILE} and model/{WEIGHTS_FILE}")
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{json_path}: not valid JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ModelFileError(f'{json_path}: not an lstm-trading bundle (no "format": "{FORMAT}")')
    version = _require(document, "format_version", json_path)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{json_path}: format version {version} is newer than this lstm-trading reads ({FORMAT_VERSION}); "
            "upgrade lstm-trading"
        )
    try:
        features = _require(document, "features", json_path)
        # The configuration's own checks: unknown keys, wrong types and out-of-range values are named.
        settings = config_from_dict(
            {
                "model": _require(document, "model", json_path),
                "features": _require(features, "config", json_path),
                "targets": _require(document, "targets", json_path),
            }
        )
        model_config, feature_config, target_config = settings.model, settings.features, settings.targets
        names = tuple(str(n) for n in _require(features, "names", json_path))
    except (TypeError, ConfigError) as error:
        raise ModelFileError(f"{json_path}: malformed settings ({error})") from None
    if len(names) != model_config.input_size:
        raise ModelFileError(f"{json_path}: {len(names)} feature names for input_size {model_config.input_size}")
    try:
        feature_scaler = FeatureScaler.from_json(_require(document, "feature_scaler", json_path), len(names))
        target_scaler = TargetScaler.from_json(_require(document, "target_scaler", json_path))
    except ModelFileError as error:
        message = str(error)
        raise ModelFileError(message if message.startswith(str(json_path)) else f"{json_path}: {message}") from None
    weights_entry = _require(document, "weights", json_path)
    if not isinstance(weights_entry, dict):
        raise ModelFileError(f'{json_path}: "weights" must be an object with the file\'s sha256')
    model = loader_of(document.get("kind", DEFAULT_KIND), json_path)(directory, model_config, weights_entry)
    training = TrainingRecord.from_json(document.get("training"), json_path)
    meta = {key: document.get(key) for key in ("package_version", "validation", "class_names")}
    return Bundle(
        model=model,
        model_config=model_config,
        feature_config=feature_config,
        target_config=target_config,
        feature_names=names,
        feature_scaler=feature_scaler,
        target_scaler=target_scaler,
        training=training,
        meta=meta,
        path=directory,
    )
