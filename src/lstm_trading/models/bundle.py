"""The model bundle: `bundle.json` + the model kind's files (`weights.safetensors` for the LSTM, LightGBM's text
trees for gbm). Loading never unpickles anything.

`bundle.json` carries everything needed to rebuild and use the model from the folder alone: the format
version, hyperparameters, feature names and indicator parameters, window length, both scalers' numbers,
class names, the training period, the data fingerprint and validation metrics.

The weights' sha256 is in `bundle.json`, and `bundle.json`'s own numbers are covered by `content_sha256`: the
sha256 of its canonical JSON without that key and without `training.sources` (where the run's candles and
journal lie, which a user may point elsewhere after moving them). A bundle written before the key existed
loads without that check; either way every number must be finite, and the loader refuses it otherwise.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lstm_trading import __version__
from lstm_trading.core.atomic import write_text_atomic
from lstm_trading.core.config import FeatureConfig, ModelConfig, TargetConfig, config_from_dict
from lstm_trading.core.errors import ConfigError, ModelFileError
from lstm_trading.core.run_folder import RunFolder
from lstm_trading.features.compute import history_minutes
from lstm_trading.models.base import Predictor
from lstm_trading.models.kinds import DEFAULT_KIND, loader_of
from lstm_trading.models.lstm.predictor import RUN_FOLDER_HINT, WEIGHTS_FILE, file_problem
from lstm_trading.models.training_record import TrainingRecord
from lstm_trading.samples.scalers import FeatureScaler, TargetScaler
from lstm_trading.samples.targets import CLASS_NAMES, class_weights_from_counts

if TYPE_CHECKING:
    from collections.abc import Sequence


FORMAT = "lstm-trading-bundle"
FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"
CHECKSUM_KEY = "content_sha256"
EDITABLE = ("training", "sources")  # the one part of bundle.json its checksum leaves out
MAX_DEPTH = 16  # bundle.json nests 4 levels deep; deeper is not a bundle (and recursion would overflow)


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
    def class_weights(self) -> np.ndarray | None:
        """The class weights its classification loss used (DESIGN.md "Probabilities"): recorded since bundles
        record them; an older bundle trained with inverse-frequency weights, recomputed from its class counts;
        None where neither is known (its probabilities are used as they are)."""
        if self.training.class_weights:
            return np.asarray(self.training.class_weights, dtype=np.float64)
        counts = self.training.class_counts
        if counts and all(name in counts for name in CLASS_NAMES):
            return class_weights_from_counts(np.array([counts[name] for name in CLASS_NAMES]), "inverse")
        return None

    @property
    def max_len(self) -> int:
        return self.target_config.max_len

    @property
    def json_path(self) -> Path | str:
        """Where the bundle came from, for error messages: its `bundle.json`, or a note that it was built here."""
        return self.path / BUNDLE_FILE if self.path is not None else "the bundle (not loaded from a file)"

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
    document = json.loads(json.dumps(document, allow_nan=False))  # as a reader will see it: lists, not tuples
    document[CHECKSUM_KEY] = content_sha256(document)
    write_text_atomic(directory / BUNDLE_FILE, json.dumps(document, indent=2, allow_nan=False) + "\n")
    return directory


def content_sha256(document: dict[str, Any]) -> str:
    """The sha256 of `document`'s canonical JSON (sorted keys, no spaces), leaving out `content_sha256` itself
    and `training.sources`."""
    covered = {key: value for key, value in document.items() if key != CHECKSUM_KEY}
    section, key = EDITABLE
    if isinstance(covered.get(section), dict):
        covered[section] = {k: v for k, v in covered[section].items() if k != key}
    text = json.dumps(covered, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _not_finite_or_too_deep(document: object, where: Path) -> None:
    """Refuse a number that is NaN or infinite anywhere in the document (Python's JSON reader accepts `NaN`,
    `Infinity` and `1e999`; a scaler holding one turns every prediction into NaN), and nesting deeper than
    any bundle's. Iterative, so a deep document cannot overflow the stack here."""
    stack: list[tuple[str, object, int]] = [("", document, 0)]
    while stack:
        name, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ModelFileError(f"{where}: not an lstm-trading bundle (nested more than {MAX_DEPTH} levels deep)")
        if isinstance(value, dict):
            stack.extend((f"{name}.{key}" if name else str(key), item, depth + 1) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((f"{name}[{i}]", item, depth + 1) for i, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise ModelFileError(
                f'{where}: "{name}" is {value}, not a finite number; the file was edited or damaged: '
                "restore it from a copy or retrain"
            )


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
    json_path = directory / BUNDLE_FILE
    problem = file_problem(json_path)  # before reading: a link to /dev/zero would never end
    if problem is not None:
        raise ModelFileError(f"{json_path}: {problem}; {RUN_FOLDER_HINT}")
    # the model's own files (weights.safetensors for an LSTM) are the kind's loader's to check, the same way
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{json_path}: not valid JSON ({error})") from None
    except RecursionError:
        raise ModelFileError(f"{json_path}: not an lstm-trading bundle (nested too deeply to read)") from None
    except OSError as error:
        raise ModelFileError(f"{json_path}: cannot be read ({error.strerror or error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ModelFileError(f'{json_path}: not an lstm-trading bundle (no "format": "{FORMAT}")')
    version = _require(document, "format_version", json_path)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f'{json_path}: "format_version" must be a whole number, not {version!r}')
    if version < 1:
        raise ModelFileError(
            f"{json_path}: format version {version} was never written by lstm-trading (versions run from 1 to "
            f"{FORMAT_VERSION}); the file was edited or damaged"
        )
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{json_path}: format version {version} is newer than this lstm-trading reads ({FORMAT_VERSION}); "
            "upgrade lstm-trading"
        )
    _not_finite_or_too_deep(document, json_path)
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
        listed = _require(features, "names", json_path)
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise ModelFileError(f'{json_path}: "features.names" must be a list of feature names')
        names = tuple(listed)
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
    # Last, so that an edit which breaks the structure is named above; one that keeps it (a number changed,
    # a feature renamed, weights swapped with their sha256 fixed) is caught here.
    if CHECKSUM_KEY in document and document[CHECKSUM_KEY] != content_sha256(document):
        raise ModelFileError(
            f"{json_path}: {CHECKSUM_KEY} differs from the file's contents: bundle.json was edited after training "
            f"(only {'.'.join(EDITABLE)} may be); restore it from a copy or retrain"
        )
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
