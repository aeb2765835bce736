"""Walk-forward folds: rolling retraining periods by time, each purged of labels that see its test period.

Fold k tests `[t_k, t_k + test_span)`, `t_k = first + k * step` (DESIGN.md, "Walk-forward"). It trains on the
trades whose label horizon ends before `t_k` (`start + horizon <= t_k`) within its training span (sliding: the
last `train_span`; expanding: everything before); its validation split is the last `val` share of those by count,
purged from the rest by `split_by_time`, the time split every run uses. `first` is the first moment at which a
fold has a whole training span: the first trade plus `train_span`. A fold whose spans hold too few trades or no
usable candle is skipped with the reason; the seed of a fold comes from (seed, `t_k`), so inserting or skipping a
fold changes no other fold's model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from lstm_trading.core.config import MAX_SEED, SplitConfig
from lstm_trading.core.errors import ConfigError, DataError
from lstm_trading.core.timeutil import DAY, MINUTE, format_time
from lstm_trading.samples.split import Split, split_by_time
from lstm_trading.samples.targets import Samples

SCHEMES = ("sliding", "expanding")
MIN_TRAIN_TRADES = 20  # fewer training trades after the purge: the fold is skipped


@dataclass(frozen=True)
class FoldSettings:
    """How the folds are cut: spans in seconds (whole minutes), the scheme, the validation share, the purge."""

    train_span: int
    test_span: int
    step: int | None = None  # None: the test span
    scheme: str = "sliding"
    val: float = 0.15
    horizon_seconds: int = 86_400  # the label horizon: the purge
    min_train_trades: int = MIN_TRAIN_TRADES
    # live retraining's gate: the trades of the last `holdout_seconds` before t_k are kept out of the fold's
    # training (the gate scores the new model on them); 0, the walk-forward's: none
    holdout_seconds: int = 0

    def __post_init__(self) -> None:
        for flag, value in (("--train-span", self.train_span), ("--test-span", self.test_span), ("--step", self.step)):
            if value is not None and (value <= 0 or value % MINUTE):
                raise ConfigError(f"{flag}: must be a positive number of whole minutes, got {value} s")
        if self.step is not None and self.step < self.test_span:
            raise ConfigError(
                f"--step {_span(self.step)} is shorter than --test-span {_span(self.test_span)}: test periods would "
                "overlap and a moment would be decided by two models; use a step of at least the test span"
            )
        if self.scheme not in SCHEMES:
            raise ConfigError(f"--scheme: must be one of {', '.join(SCHEMES)}, got {self.scheme!r}")
        if not 0 < self.val < 1:
            raise ConfigError(f"--val: must be a fraction in (0, 1), got {self.val!r}")
        if self.horizon_seconds < 0:
            raise ConfigError(f"--purge: must not be negative, got {self.horizon_seconds} s")
        if self.holdout_seconds < 0 or self.holdout_seconds % MINUTE:
            raise ConfigError(f"--gate-days: must be a whole number of minutes, got {self.holdout_seconds} s")
        if self.min_train_trades < 2:
            raise ConfigError(f"min_train_trades: must be at least 2, got {self.min_train_trades}")

    @property
    def stride(self) -> int:
        return self.test_span if self.step is None else self.step


@dataclass(frozen=True)
class Fold:
    """One fold: its test period, where its training span starts, its samples split, its seed."""

    k: int
    test_start: int  # t_k
    test_end: int  # exclusive; the data's end for a last, shorter fold
    train_start: int  # first moment of the training span (the first trade's, for expanding)
    split: Split  # train / val (the span's trades, purged) and test (the trades inside the test period)
    seed: int

    @property
    def name(self) -> str:
        return fold_name(self.k, self.test_start)


@dataclass(frozen=True)
class SkippedFold:
    k: int
    test_start: int
    test_end: int
    reason: str

    @property
    def name(self) -> str:
        return fold_name(self.k, self.test_start)


@dataclass(frozen=True)
class FoldPlan:
    first: int
    folds: list[Fold]
    skipped: list[SkippedFold]


def fold_name(k: int, test_start: int) -> str:
    """`007-2025-06-12`: the index (the folder names sort in time order) and the day the test period starts."""
    return f"{k:03d}-{datetime.fromtimestamp(test_start, tz=UTC):%Y-%m-%d}"


def fold_seed(seed: int, test_start: int) -> int:
    """A fold's training seed from (seed, t_k): the same fold gets the same model whatever folds precede it."""
    digest = hashlib.sha256(f"lstm-trading walk-forward {seed} {test_start}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (MAX_SEED + 1)


def _span(seconds: int) -> str:
    for unit, size in (("d", DAY), ("h", 3600), ("m", MINUTE)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def plan_folds(
    samples: Samples,
    usable_times: np.ndarray,
    data_end: int,
    settings: FoldSettings,
    *,
    seed: int,
    first: int | None = None,
) -> FoldPlan:
    """Cut the samples into folds (module docstring). `usable_times`: open times of the feature rows a window may
    use (after the warm-up, outside long gaps); `data_end`: the close of the last candle; `first`: the first
    fold's t_k instead of the first trade plus the training span (live retraining's `--from`).

    A `ConfigError` when the test span is longer than the data or no fold's training span fits in it; a
    `DataError` when every fold was skipped (their reasons in the message).
    """
    if len(samples) == 0:
        raise DataError("no usable trades to cut into folds")
    order = np.argsort(samples.start_time, kind="stable")
    samples = samples.subset(order)
    starts = samples.start_time
    data_start = int(starts[0])
    if settings.test_span > data_end - data_start:
        raise ConfigError(
            f"--test-span {_span(settings.test_span)} is longer than the data: the trades start at "
            f"{format_time(data_start)} and the candles end at {format_time(data_end)} "
            f"({(data_end - data_start) / DAY:.1f} days); choose a shorter --test-span"
        )
    first = data_start + settings.train_span if first is None else first
    if first >= data_end:
        raise ConfigError(
            f"--train-span {_span(settings.train_span)}: no fold fits, the first whole training span "
            f"(from the first trade at {format_time(data_start)}) ends at {format_time(first)}, after the end of the "
            f"candles at {format_time(data_end)}; choose a shorter --train-span or add candles"
        )
    horizon = settings.horizon_seconds
    config = SplitConfig(train=1 - settings.val, val=settings.val, test=0.0, purge_seconds=horizon)
    usable = np.asarray(usable_times, dtype=np.int64)
    folds: list[Fold] = []
    skipped: list[SkippedFold] = []
    k = 0
    while first + k * settings.stride < data_end:
        t_k = first + k * settings.stride
        test_end = min(t_k + settings.test_span, data_end)
        train_start = t_k - settings.train_span if settings.scheme == "sliding" else data_start
        cutoff = t_k - settings.holdout_seconds
        in_span = (starts >= train_start) & (starts + horizon <= cutoff)  # the label is known before t_k
        crossing = int(((starts >= train_start) & (starts < t_k) & ~in_span).sum())
        test = samples.subset((starts >= t_k) & (starts < test_end))
        reason = _skip_reason(samples.subset(in_span), usable, t_k, test_end, settings)
        if reason is not None:
            skipped.append(SkippedFold(k, t_k, test_end, reason))
            k += 1
            continue
        inner = split_by_time(samples.subset(in_span), config, horizon_seconds=horizon)
        reason = _split_reason(inner)
        if reason is not None:
            skipped.append(SkippedFold(k, t_k, test_end, reason))
            k += 1
            continue
        purged = {"train": inner.purged["train"], "val": crossing, "test": 0}
        split = Split(train=inner.train, val=inner.val, test=test, purged=purged)
        folds.append(Fold(k, t_k, test_end, train_start, split, fold_seed(seed, t_k)))
        k += 1
    if not folds:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in skipped[:3]) + (" ..." if len(skipped) > 3 else "")
        raise DataError(
            f"no fold left: all {len(skipped)} folds were skipped ({reasons}); use a longer --train-span, "
            "more trades (a shorter labelling step) or data without long gaps"
        )
    return FoldPlan(first, folds, skipped)


def _skip_reason(span: Samples, usable: np.ndarray, t_k: int, test_end: int, settings: FoldSettings) -> str | None:
    """Why a fold cannot be trained or tested: no candle to decide on in its test period, too few trades."""
    test_rows = int(np.searchsorted(usable, test_end, side="left") - np.searchsorted(usable, t_k, side="left"))
    if test_rows == 0:
        return f"no usable candle in the test period {format_time(t_k)} to {format_time(test_end)}"
    if len(span) < settings.min_train_trades:
        return (
            f"{len(span)} trades in the training span whose label horizon ends before {format_time(t_k)}, "
            f"fewer than {settings.min_train_trades}"
        )
    return None


def _split_reason(split: Split) -> str | None:
    if not split.train.is_trade.any():
        return "no Buy or Sell trade in the training split (no stop loss or take profit to learn)"
    if len(split.val) == 0 or not split.val.is_trade.any():
        return "no Buy or Sell trade in the validation split (early stopping needs some)"
    return None


def fold_samples(samples: Samples, rows: np.ndarray, *, fold: str, part: str) -> Samples:
    """The samples of the journal rows `rows`, in time order: how a fold's worker finds the trades its plan
    chose among the samples it built from its own candles. A row it cannot find is a `DataError`."""
    wanted = np.asarray(rows, dtype=np.int64)
    index = np.flatnonzero(np.isin(samples.journal_row, wanted))
    if len(index) != len(np.unique(wanted)):
        missing = np.setdiff1d(wanted, samples.journal_row)
        raise DataError(
            f"fold {fold}: {len(missing)} {part} trades of the plan (journal rows {missing[:3].tolist()}) have no "
            "window in the fold's candles; the candle database changed while the walk-forward ran: run it again"
        )
    index = index[np.argsort(samples.start_time[index], kind="stable")]
    return samples.subset(index)
