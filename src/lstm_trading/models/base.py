"""The model interface: what every model kind gives the one prediction path (`predict.py`).

A kind takes scaled feature rows and windows into them (`ends`, `lengths`: the rows `[end - length, end)`,
DESIGN.md's "Window") and returns class probabilities and the SL/TP head outputs in the target scaler's units.
Everything before (features, scaling) and after (inverse scaling, prices, decisions) is shared by all kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

Progress = Callable[[float, int], None]  # progress(windows done, windows in all)


class WindowOutputs(NamedTuple):
    """One row per window: `proba` (n, 3) Buy / Sell / Invalid; `sl`, `tp` (n,) scaled distances."""

    proba: np.ndarray
    sl: np.ndarray
    tp: np.ndarray


class Predictor(Protocol):
    """A trained model of some kind, ready to predict windows."""

    @property
    def kind(self) -> str:
        """The registry name of the kind (`models/kinds.py`), recorded in `bundle.json`."""
        ...

    def predict_windows(
        self,
        scaled: np.ndarray,
        ends: np.ndarray,
        lengths: np.ndarray,
        *,
        batch_size: int = 64,
        workers: int | None = None,
        progress: Progress | None = None,
    ) -> WindowOutputs: ...

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the model's files into `directory`; the `weights` entry of `bundle.json` (file names, sha256)."""
        ...
