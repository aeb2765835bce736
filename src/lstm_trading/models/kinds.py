"""The registry of model kinds: `bundle.json`'s `kind` names the loader. A new kind is a module plus a line here.

A bundle written before kinds existed has no `kind` and is an LSTM.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lstm_trading.core.config import ModelConfig
from lstm_trading.core.errors import ModelFileError
from lstm_trading.models.base import Predictor
from lstm_trading.models.gbm.predictor import KIND as GBM_KIND
from lstm_trading.models.gbm.predictor import load_gbm
from lstm_trading.models.lstm.predictor import KIND as LSTM_KIND
from lstm_trading.models.lstm.predictor import load_lstm

Loader = Callable[[Path, ModelConfig, dict[str, Any]], Predictor]

LOADERS: dict[str, Loader] = {
    LSTM_KIND: load_lstm,
    GBM_KIND: load_gbm,
}
DEFAULT_KIND = LSTM_KIND


def loader_of(kind: object, where: Path) -> Loader:
    """The loader of a bundle's `kind`, or a `ModelFileError` naming the kinds this version knows."""
    if not isinstance(kind, str) or kind not in LOADERS:
        raise ModelFileError(
            f"{where}: model kind {kind!r} is not one this lstm-trading knows ({', '.join(sorted(LOADERS))}); "
            "upgrade lstm-trading"
        )
    return LOADERS[kind]
