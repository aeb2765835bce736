"""The first-touch labeller: a trade journal made from the candles, for users who have none.

At each sampled moment `t` a long and a short trade are opened at the open of the candle opening at `t`, with
stop loss and take profit at `k_sl` and `k_tp` ATR (the ATR_14h of the last candle closed by `t`, DESIGN.md
"Targets"). The long is a Buy if its take profit is touched before its stop loss within the horizon and its
take-profit distance pays the round-trip costs; the short is a Sell likewise; anything else (neither wins, both
win, or a win too small to pay its costs) is Invalid (`entry_price = -1`). Only candles with an open time in
`[t, t + horizon)` are read: never one at or after `t + horizon`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from lstm_trading.core.config import LabelConfig, round_trip
from lstm_trading.core.errors import DataError
from lstm_trading.core.timeutil import MINUTE
from lstm_trading.features.compute import candle_arrays

JOURNAL_COLUMNS = ("start_time", "entry_price", "side", "stop_loss", "take_profit")
# Above this share of the median take-profit distance, costs decide more than the market does: say so.
COST_WARNING_SHARE = 0.25
# Elements per vectorised block: (moments, horizon minutes) float64 arrays of 32 MB each, whatever the horizon.
_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class LabelResult:
    """A journal (`trades`, columns `JOURNAL_COLUMNS`), its `meta` sheet and the figures users must see.

    `median_minutes_to_touch` is over the Buy and Sell rows: minutes from `t` to the close of the candle in which
    the winning take profit was touched (NaN without any). `cost_share_of_median_tp` is the round-trip cost
    (`2 * (fee + slippage)` of entry) divided by the median take-profit distance (`k_tp * ATR / entry`) over all
    labelled moments. `invalid_reasons` splits the Invalid count into `neither`, `both` and `costs`.
    """

    trades: pd.DataFrame
    meta: dict[str, float | int | str]
    counts: dict[str, int]
    median_minutes_to_touch: float
    cost_share_of_median_tp: float
    invalid_reasons: dict[str, int] = field(default_factory=dict)
    # moments on the sampling grid left out: no candle opens there (a gap), or no feature row is closed by then
    # (the warm-up after a long gap): counted, never an error while other moments remain
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Touches:
    """Per moment: the candle offset (from the entry candle) of the first touch of each level; `H` if none."""

    long_sl: np.ndarray
    long_tp: np.ndarray
    short_sl: np.ndarray
    short_tp: np.ndarray


def _first_true(hits: np.ndarray) -> np.ndarray:
    """Column of the first True in each row, or the row length where there is none."""
    first = np.argmax(hits, axis=1)
    return np.where(hits.any(axis=1), first, hits.shape[1])


def _first_touches(
    high: np.ndarray,
    low: np.ndarray,
    entry_row: np.ndarray,
    n_rows: np.ndarray,
    levels: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    horizon_rows: int,
) -> _Touches:
    """First touches of the four levels within each moment's `n_rows` candles from `entry_row`, block by block.

    The high/low arrays are padded with NaN so every window of `horizon_rows` exists; offsets at or past a
    moment's own `n_rows` (candles at or after `t + horizon`, where the data has gaps) are masked out unread.
    """
    pad = np.full(horizon_rows, np.nan)
    high_windows = sliding_window_view(np.concatenate([high, pad]), horizon_rows)
    low_windows = sliding_window_view(np.concatenate([low, pad]), horizon_rows)
    offsets = np.arange(horizon_rows)
    long_sl, long_tp, short_sl, short_tp = levels
    out = [np.empty(len(entry_row), dtype=np.int64) for _ in range(4)]
    step = max(1, _BLOCK_ELEMENTS // horizon_rows)
    for lo in range(0, len(entry_row), step):
        block = slice(lo, lo + step)
        inside = offsets[None, :] < n_rows[block, None]  # (B, H): candles opening before t + horizon
        highs = high_windows[entry_row[block]]  # (B, H)
        lows = low_windows[entry_row[block]]  # (B, H)
        out[0][block] = _first_true((lows <= long_sl[block, None]) & inside)
        out[1][block] = _first_true((highs >= long_tp[block, None]) & inside)
        out[2][block] = _first_true((highs >= short_sl[block, None]) & inside)
        out[3][block] = _first_true((lows <= short_tp[block, None]) & inside)
    return _Touches(*out)


def sample_moments(
    candle_times: np.ndarray,
    feature_times: np.ndarray,
    config: LabelConfig,
    start: int | None = None,
    end: int | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """The moments to label: multiples of `every` (from the epoch, so hourly moments fall on the hour) in
    `[start, end)` with a candle opening at `t`, features for the candle closed at `t` (row `t - 60`), and the
    whole horizon inside the data (`t + horizon <= last close`); and how many grid moments after the first
    feature row were left out, `in_gap` (no candle opens at `t`) and `in_warm_up` (a candle, but no feature row:
    the warm-up after a long gap).
    """
    if len(candle_times) == 0 or len(feature_times) == 0:
        return np.empty(0, dtype=np.int64), {"in_gap": 0, "in_warm_up": 0}
    every = config.every_seconds
    lo = int(feature_times[0]) + MINUTE
    if start is not None:
        lo = max(lo, int(start))
    hi = int(candle_times[-1]) + MINUTE - config.horizon_seconds + 1  # exclusive
    if end is not None:
        hi = min(hi, int(end))
    first = -(-lo // every) * every
    moments = np.arange(first, max(hi, first), every, dtype=np.int64)
    has_candle = np.isin(moments, candle_times, assume_unique=True)
    has_features = np.isin(moments - MINUTE, feature_times, assume_unique=True)
    skipped = {
        "in_gap": int(np.count_nonzero(~has_candle)),
        "in_warm_up": int(np.count_nonzero(has_candle & ~has_features)),
    }
    return moments[has_candle & has_features], skipped


@dataclass(frozen=True)
class _Entries:
    """Per sampled moment `t`: where its trade opens and how far its horizon reaches in the candle arrays."""

    moments: np.ndarray  # t, UTC seconds
    entry_row: np.ndarray  # row of the candle opening at t
    entry: np.ndarray  # that candle's open: the entry price
    atr: np.ndarray  # ATR of the last candle closed by t (feature row t - 60)
    n_rows: np.ndarray  # candles in [t, t + horizon): fewer than the horizon's minutes where the data has gaps


@dataclass(frozen=True)
class _Levels:
    """Per moment: stop loss and take profit of the long and the short, and the take-profit distance they share."""

    long_sl: np.ndarray
    long_tp: np.ndarray
    short_sl: np.ndarray
    short_tp: np.ndarray
    tp_distance: np.ndarray


@dataclass(frozen=True)
class _Outcome:
    """Per moment: which side won its race to the target, whether a win pays its costs, and the labels that follow."""

    long_first: np.ndarray  # the long's take profit strictly before its stop loss
    short_first: np.ndarray
    pays: np.ndarray  # the take-profit distance exceeds the round-trip costs
    buy: np.ndarray
    sell: np.ndarray

    @property
    def traded(self) -> np.ndarray:
        return self.buy | self.sell


def _entries(
    times: np.ndarray, open_: np.ndarray, features: pd.DataFrame, config: LabelConfig, moments: np.ndarray
) -> _Entries:
    """Look up each moment's entry candle, ATR row and horizon length once, so later steps only index arrays."""
    feature_times = features.index.to_numpy(dtype=np.int64)
    entry_row = np.searchsorted(times, moments)
    atr = features["atr"].to_numpy(dtype=np.float64)[np.searchsorted(feature_times, moments - MINUTE)]
    n_rows = np.searchsorted(times, moments + config.horizon_seconds) - entry_row  # candles in [t, t + horizon)
    return _Entries(moments=moments, entry_row=entry_row, entry=open_[entry_row], atr=atr, n_rows=n_rows)


def _levels(entry: np.ndarray, atr: np.ndarray, config: LabelConfig) -> _Levels:
    """Stops at `k_sl` and targets at `k_tp` ATR from entry, mirrored for the short."""
    sl_distance, tp_distance = config.k_sl * atr, config.k_tp * atr
    return _Levels(
        long_sl=entry - sl_distance,
        long_tp=entry + tp_distance,
        short_sl=entry + sl_distance,
        short_tp=entry - tp_distance,
        tp_distance=tp_distance,
    )


def _decide(touches: _Touches, levels: _Levels, entry: np.ndarray, config: LabelConfig) -> _Outcome:
    """Buy where only the long wins and the win pays its costs, Sell likewise for the short; else Invalid."""
    # Strictly before: when stop and target fall in the same candle, the stop is assumed first (pessimistic).
    long_first = touches.long_tp < touches.long_sl
    short_first = touches.short_tp < touches.short_sl
    pays = levels.tp_distance > round_trip(config.fee, config.slippage) * entry
    return _Outcome(
        long_first=long_first,
        short_first=short_first,
        pays=pays,
        buy=long_first & ~short_first & pays,
        sell=short_first & ~long_first & pays,
    )


def _journal(entries: _Entries, levels: _Levels, outcome: _Outcome) -> pd.DataFrame:
    """The journal rows in time order: Invalid rows get `entry_price = -1` and no levels."""
    buy, sell, traded = outcome.buy, outcome.sell, outcome.traded
    side = np.full(len(entries.moments), "Invalid", dtype=object)
    side[buy] = "Buy"
    side[sell] = "Sell"
    return pd.DataFrame(
        {
            "start_time": entries.moments,
            "entry_price": np.where(traded, entries.entry, -1.0),
            "side": side,
            "stop_loss": np.where(buy, levels.long_sl, np.where(sell, levels.short_sl, np.nan)),
            "take_profit": np.where(buy, levels.long_tp, np.where(sell, levels.short_tp, np.nan)),
        }
    )


def _median_minutes_to_touch(times: np.ndarray, entries: _Entries, touches: _Touches, outcome: _Outcome) -> float:
    """Median minutes from `t` to the close of the candle where the winning target was touched; NaN without any."""
    traded = outcome.traded
    touch_offset = np.where(outcome.buy, touches.long_tp, touches.short_tp)[traded]
    touch_close = times[entries.entry_row[traded] + touch_offset] + MINUTE
    minutes = (touch_close - entries.moments[traded]) / MINUTE
    return float(np.median(minutes)) if len(minutes) else float("nan")


def _cost_share(entries: _Entries, levels: _Levels, config: LabelConfig) -> float:
    """Round-trip costs over the median take-profit distance, both as fractions of entry; NaN with no moments."""
    if not len(entries.moments):
        return float("nan")
    return float(round_trip(config.fee, config.slippage) / np.median(levels.tp_distance / entries.entry))


def _meta(config: LabelConfig, symbol: str | None) -> dict[str, float | int | str]:
    """The journal's `meta` sheet: how it was labelled, so a later step (the split's purge) can read the horizon."""
    meta: dict[str, float | int | str] = {
        "labeller": "first-touch",
        "every_seconds": config.every_seconds,
        "horizon_seconds": config.horizon_seconds,
        "k_sl": config.k_sl,
        "k_tp": config.k_tp,
        "fee": config.fee,
        "slippage": config.slippage,
    }
    if symbol is not None:
        meta["symbol"] = symbol
    return meta


def _invalid_reasons(outcome: _Outcome) -> dict[str, int]:
    """Why moments are Invalid: neither side won, both did, or the one win does not pay its costs."""
    invalid = ~outcome.traded
    long_first, short_first = outcome.long_first, outcome.short_first
    return {
        "neither": int((invalid & ~long_first & ~short_first).sum()),
        "both": int((invalid & long_first & short_first).sum()),
        "costs": int((invalid & (long_first ^ short_first) & ~outcome.pays).sum()),
    }


def label_first_touch(
    candles: pd.DataFrame,
    features: pd.DataFrame,
    config: LabelConfig = LabelConfig(),
    *,
    start: int | None = None,
    end: int | None = None,
    symbol: str | None = None,
) -> LabelResult:
    """Label sampled moments Buy, Sell or Invalid by which of SL and TP the price touches first.

    Parameters
    ----------
    candles
        A candle frame (open times in UTC seconds), sorted and unique; the highs and lows decide the touches.
    features
        `compute_features(candles)`: its `atr` column at row `t - 60` sets the levels, and its index says where
        the warm-up is over (no moment is labelled before features exist).
    config
        Sampling step, horizon, ATR multiples, fee and slippage (fractions of the price, per side).
    start, end
        Label only moments in `[start, end)` (UTC seconds); candles outside still serve as history and horizon.
    symbol
        Recorded in `meta` when given.

    Returns
    -------
    LabelResult
        The journal rows in time order (Invalid rows have `entry_price = -1` and no levels), `meta` for the
        journal's `meta` sheet (`horizon_seconds` is what the split's purge reads), and the summary figures.
    """
    if "atr" not in features.columns:
        raise DataError("features lack the 'atr' column; pass the frame that compute_features returns")
    times, prices = candle_arrays(candles)
    moments, skipped = sample_moments(times, features.index.to_numpy(dtype=np.int64), config, start, end)
    entries = _entries(times, prices["open"], features, config, moments)
    levels = _levels(entries.entry, entries.atr, config)
    horizon_rows = -(-config.horizon_seconds // MINUTE)
    touches = _first_touches(
        prices["high"],
        prices["low"],
        entries.entry_row,
        entries.n_rows,
        (levels.long_sl, levels.long_tp, levels.short_sl, levels.short_tp),
        horizon_rows,
    )
    outcome = _decide(touches, levels, entries.entry, config)
    return LabelResult(
        trades=_journal(entries, levels, outcome),
        meta=_meta(config, symbol),
        counts={
            "Buy": int(outcome.buy.sum()),
            "Sell": int(outcome.sell.sum()),
            "Invalid": int((~outcome.traded).sum()),
        },
        median_minutes_to_touch=_median_minutes_to_touch(times, entries, touches, outcome),
        cost_share_of_median_tp=_cost_share(entries, levels, config),
        invalid_reasons=_invalid_reasons(outcome),
        skipped=skipped,
    )


def cost_warning(result: LabelResult) -> str | None:
    """A plain warning when the round-trip costs eat more than `COST_WARNING_SHARE` of a typical take profit.

    With the seed's 2 / 3 ATR on 1-minute ATR, stops sit about 0.2 % from entry and a 0.13 % round trip takes
    a large bite of every win; users must see that before they train on such labels.
    """
    share = result.cost_share_of_median_tp
    if not share > COST_WARNING_SHARE:  # also False for NaN (nothing labelled)
        return None
    return (
        f"round-trip costs are {share:.0%} of the median take-profit distance: stops and targets of "
        f"{result.meta['k_sl']:g} / {result.meta['k_tp']:g} ATR (1-minute ATR) sit close to entry, so costs decide "
        "many labels; consider a larger --k-tp and --k-sl"
    )
