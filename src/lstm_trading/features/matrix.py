"""The feature matrix: one contiguous float32 array of feature rows with their open times and ATR.

Windows are index ranges into it (`samples/windows.py`), never copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class FeatureMatrix:
    """The feature rows of one history: `values` (N, F) float32, `timestamps` (N,) int64 open times, `atr`."""

    values: np.ndarray
    timestamps: np.ndarray
    atr: np.ndarray
    names: tuple[str, ...]
    # Rows more than this many missing minutes apart lie in different segments (DESIGN.md, "Gaps"): no window
    # spans two. None: one segment (a matrix built by hand).
    max_gap_minutes: int | None = None

    @classmethod
    def from_frame(cls, features: pd.DataFrame, max_gap_minutes: int | None = None) -> FeatureMatrix:
        """From `compute_features`' frame: the feature columns in order, then `atr`."""
        names = tuple(str(c) for c in features.columns if c != "atr")
        return cls(
            values=np.ascontiguousarray(features[list(names)].to_numpy(dtype=np.float32)),
            timestamps=features.index.to_numpy(dtype=np.int64),
            atr=features["atr"].to_numpy(dtype=np.float64),
            names=names,
            max_gap_minutes=max_gap_minutes,
        )

    def __len__(self) -> int:
        return len(self.timestamps)

    def with_values(self, values: np.ndarray) -> FeatureMatrix:
        return FeatureMatrix(values, self.timestamps, self.atr, self.names, self.max_gap_minutes)
