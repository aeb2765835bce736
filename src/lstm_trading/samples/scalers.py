"""Scalers fitted on the training period only: features (clipped standardisation or the seed's MinMax) and the
SL/TP targets (MinMax on the training Buy and Sell trades). Their numbers go to `bundle.json` as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from sklearn.preprocessing import MinMaxScaler

from lstm_trading.core.errors import DataError, ModelFileError
from lstm_trading.samples.targets import Samples


@dataclass(frozen=True)
class FeatureScaler:
    """Feature scaling fitted on training rows only; plain numbers so it saves as JSON.

    `standard` (default): clip each feature to its training 0.1 % / 99.9 % quantiles, then standardise.
    `minmax`: the seed's MinMaxScaler to [0, 1] (DESIGN.md "Scalers" says why it is not the default).
    """

    kind: str
    lower: np.ndarray
    upper: np.ndarray
    offset: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, rows: np.ndarray, kind: str = "standard") -> FeatureScaler:
        rows = np.asarray(rows, dtype=np.float64)
        if len(rows) == 0:
            raise DataError("cannot fit the feature scaler: the training period has no feature rows")
        if kind == "standard":
            lower, upper = np.quantile(rows, [0.001, 0.999], axis=0)
            clipped = np.clip(rows, lower, upper)
            offset, scale = clipped.mean(axis=0), clipped.std(axis=0)
        elif kind == "minmax":
            fitted = MinMaxScaler(feature_range=(0.0, 1.0)).fit(rows)
            lower, upper = np.full(rows.shape[1], -np.inf), np.full(rows.shape[1], np.inf)
            offset, scale = fitted.data_min_, fitted.data_range_
        else:
            raise DataError(f"unknown scaler {kind!r}; use 'standard' or 'minmax'")
        scale = np.where(scale > 1e-12, scale, 1.0)
        return cls(kind=kind, lower=lower, upper=upper, offset=offset, scale=scale)

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Scaled float32 copy: (clip(x) - offset) / scale."""
        clipped = np.clip(values, self.lower.astype(np.float32), self.upper.astype(np.float32))
        return ((clipped - self.offset.astype(np.float32)) / self.scale.astype(np.float32)).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "lower": _finite_or_none(self.lower),
            "upper": _finite_or_none(self.upper),
            "offset": self.offset.tolist(),
            "scale": self.scale.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], n_features: int) -> Self:
        try:
            kind = str(data["kind"])
            lower = np.array([-np.inf if v is None else v for v in data["lower"]], dtype=np.float64)
            upper = np.array([np.inf if v is None else v for v in data["upper"]], dtype=np.float64)
            offset = np.asarray(data["offset"], dtype=np.float64)
            scale = np.asarray(data["scale"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as error:
            raise ModelFileError(f"feature_scaler: missing or malformed entry ({error})") from None
        if any(a.shape != (n_features,) for a in (lower, upper, offset, scale)):
            raise ModelFileError(f"feature_scaler: expected {n_features} numbers per entry")
        if kind not in ("standard", "minmax"):
            raise ModelFileError(f"feature_scaler: unknown kind {kind!r} (standard or minmax)")
        # the clip bounds may be open (null: no bound), every other number must be finite
        _require_finite("feature_scaler.lower", lower, allow=-np.inf)
        _require_finite("feature_scaler.upper", upper, allow=np.inf)
        _require_finite("feature_scaler.offset", offset)
        _require_finite("feature_scaler.scale", scale)
        if np.any(scale <= 0):
            raise ModelFileError("feature_scaler: non-positive scale")
        if np.any(lower > upper):
            raise ModelFileError("feature_scaler: a lower clip bound above its upper bound")
        return cls(kind=kind, lower=lower, upper=upper, offset=offset, scale=scale)


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def _require_finite(name: str, values: np.ndarray, allow: float | None = None) -> None:
    """A `ModelFileError` naming the entry and position of the first NaN or infinite number (except `allow`)."""
    bad = ~np.isfinite(values)
    if allow is not None:
        bad &= values != allow
    if bad.any():
        i = int(np.argmax(bad))
        raise ModelFileError(f"{name}[{i}] is {values[i]}, not a finite number; a scaler holds finite numbers only")


@dataclass(frozen=True)
class TargetScaler:
    """The seed's MinMaxScaler for stop loss and take profit distances, fitted on training Buy/Sell trades."""

    data_min: np.ndarray  # (2,): stop loss, take profit
    data_range: np.ndarray

    @classmethod
    def fit(cls, samples: Samples) -> TargetScaler:
        trade = samples.is_trade
        if not trade.any():
            raise DataError("the training split has no Buy or Sell trade: nothing to learn stop losses from")
        pairs = np.column_stack([samples.stop_loss_pct[trade], samples.take_profit_pct[trade]])
        fitted = MinMaxScaler().fit(pairs)
        data_range = np.where(fitted.data_range_ > 1e-12, fitted.data_range_, 1.0)
        return cls(data_min=fitted.data_min_.astype(np.float64), data_range=data_range.astype(np.float64))

    def transform(self, stop_loss_pct: np.ndarray, take_profit_pct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            (stop_loss_pct - self.data_min[0]) / self.data_range[0],
            (take_profit_pct - self.data_min[1]) / self.data_range[1],
        )

    def inverse(self, stop_loss: np.ndarray, take_profit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            stop_loss * self.data_range[0] + self.data_min[0],
            take_profit * self.data_range[1] + self.data_min[1],
        )

    def to_json(self) -> dict[str, Any]:
        return {"data_min": self.data_min.tolist(), "data_range": self.data_range.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        try:
            data_min = np.asarray(data["data_min"], dtype=np.float64)
            data_range = np.asarray(data["data_range"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as error:
            raise ModelFileError(f"target_scaler: missing or malformed entry ({error})") from None
        if data_min.shape != (2,) or data_range.shape != (2,):
            raise ModelFileError("target_scaler: expected two numbers each, with positive ranges")
        _require_finite("target_scaler.data_min", data_min)
        _require_finite("target_scaler.data_range", data_range)
        if np.any(data_range <= 0):
            raise ModelFileError("target_scaler: expected two numbers each, with positive ranges")
        return cls(data_min=data_min, data_range=data_range)
