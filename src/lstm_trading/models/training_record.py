"""What a bundle records about its training: typed and checked on load, instead of `meta.get(...) or {}` chains.

Written by `runs/train.py`, read by evaluate (the test split, the class counts), backtest (the test period),
live (the data's symbol and age) and the report. Keys missing from an older bundle take the empty defaults;
a key of the wrong type is a `ModelFileError` naming it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lstm_trading.core.errors import ModelFileError


@dataclass(frozen=True)
class DataFingerprint:
    """The candles the run was trained from: symbol, first and last open time, rows."""

    symbol: str | None = None
    first_timestamp: int | None = None
    last_timestamp: int | None = None
    rows: int | None = None


@dataclass(frozen=True)
class Sources:
    """Where the run's candles and journal came from (the defaults of `evaluate`, `backtest`, `predict`)."""

    db: str | None = None
    symbol: str | None = None
    journal: str | None = None
    sheet: str | None = None


@dataclass(frozen=True)
class TrainingRecord:
    data: DataFingerprint = field(default_factory=DataFingerprint)
    train_period: tuple[int, int] | None = None  # open times of the first and last training feature row
    split_sizes: dict[str, int] = field(default_factory=dict)
    purged: dict[str, int] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)
    # the classification loss's class weights, Buy, Sell, Invalid (DESIGN.md "Probabilities"); () in older bundles
    class_weights: tuple[float, ...] = ()
    sources: Sources = field(default_factory=Sources)
    test_start_times: tuple[int, ...] = ()
    val_start_times: tuple[int, ...] = ()  # the validation trades' moments: where `backtest --sweep` picks thresholds
    epochs_run: int | None = None
    seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["train_period"] = list(self.train_period) if self.train_period else None
        document["test_start_times"] = list(self.test_start_times)
        document["val_start_times"] = list(self.val_start_times)
        document["class_weights"] = list(self.class_weights)
        document["sources"] = {key: value for key, value in document["sources"].items() if value is not None}
        return document

    @classmethod
    def from_json(cls, value: object, where: Path) -> TrainingRecord:
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise ModelFileError(f'{where}: "training" must be an object, not {type(value).__name__}')

        def part(key: str, kind: type, default: Any) -> Any:
            item = value.get(key, default)
            if item is None:
                return default
            if not isinstance(item, kind) or (kind is int and isinstance(item, bool)):
                raise ModelFileError(f'{where}: "training.{key}" must be {kind.__name__}, not {type(item).__name__}')
            return item

        def ints(key: str) -> list[int]:
            items = part(key, list, [])
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
                raise ModelFileError(f'{where}: "training.{key}" must be a list of whole numbers (UTC seconds)')
            return items

        def counts(key: str) -> dict[str, int]:
            items = part(key, dict, {})
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in items.values()):
                raise ModelFileError(f'{where}: "training.{key}" must map names to whole numbers')
            return {str(k): int(v) for k, v in items.items()}

        def record(key: str, kind: type) -> Any:
            items = part(key, dict, {})
            known = {f.name for f in fields(kind)}
            unknown = sorted(set(items) - known)
            if unknown:
                raise ModelFileError(f'{where}: "training.{key}" has unknown keys {unknown}')
            return kind(**items)

        weights = part("class_weights", list, [])
        if not all(isinstance(w, int | float) and not isinstance(w, bool) and w >= 0 for w in weights):
            raise ModelFileError(f'{where}: "training.class_weights" must be a list of non-negative numbers')
        period = ints("train_period")
        if period and len(period) != 2:
            raise ModelFileError(f'{where}: "training.train_period" must be [first, last]')
        return cls(
            data=record("data", DataFingerprint),
            train_period=(period[0], period[1]) if period else None,
            split_sizes=counts("split_sizes"),
            purged=counts("purged"),
            class_counts=counts("class_counts"),
            class_weights=tuple(float(w) for w in weights),
            sources=record("sources", Sources),
            test_start_times=tuple(ints("test_start_times")),
            val_start_times=tuple(ints("val_start_times")),
            epochs_run=part("epochs_run", int, None),
            seed=part("seed", int, None),
        )
