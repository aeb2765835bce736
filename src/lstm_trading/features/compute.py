"""The per-minute feature sets of DESIGN.md ("Features"), from TA-Lib, with the warm-up rule ("Warm-up").

Two sets, chosen by `features.feature_set` and recorded in the bundle (its `FeatureConfig`):

- `seed` (the default): the original design's 13 first differences, `FEATURE_NAMES`, unchanged.
- `levels`: the same indicators as levels against price, `LEVELS_NAMES`, each scale-free (a ratio or a
  return, so a model trained at one price level reads another) or bounded, because `MACD_pct` and
  `MACD_Signal_pct` are percentage changes of lines that cross zero (unbounded, start-dependent, meaningless near
  zero) and first differences throw away every level a trader reads: where the close sits against its averages
  and bands, how large ATR is against price. In order, with `c` the close and `c'` the previous row's close:
  `open_ret`, `high_ret`, `low_ret`, `close_ret` = `x / c' - 1` (the candle against the last close; simple
  returns, so the gbm kind compounds them exactly); `volume_z` = z-score of `log(1 + volume)` over
  `volume_window` rows (|z| <= sqrt(window - 1) by construction, 0 for constant volume); `close_SMA_10h` and
  `close_EMA_10h` = `c / average - 1`; `RSI_14h_frac` = RSI / 100 in [0, 1]; `MACD_close` and
  `MACD_Signal_close` = line / c; `BB_position` = `(c - lower) / (upper - lower)`: 0 at the lower band, 1 at
  the upper, 0.5 for a flat band, and within 0.5 +- sqrt(window - 1) / (2 sigma) by construction (the close is
  inside its own window); `BB_width` = `(upper - lower) / c` >= 0; `ATR_14h_close` = ATR / c >= 0. A value
  that is not finite (a zero price) is 0, as in the seed set.

`features.with_symbols` adds the chosen set's features of other symbols, named `SYMBOL.feature`, computed on
each symbol's own candles (so its own segments and warm-up) and kept at the minutes every symbol has
(`features/symbols.py`).

Every feature at row `i` depends only on candles `0..i` (TA-Lib's indicators are causal and `*_pct` compares a
value with the row before it), so features never look ahead. Recursive indicators (EMA, MACD, RSI, ATR) also
depend, fading geometrically, on where the history starts; the first `warmup_minutes` rows are therefore
dropped, never used as model input or targets, and nothing is back-filled.

Gaps (missing minutes) are never filled (DESIGN.md, "Gaps"). One longer than `max_gap_minutes` (default 60)
splits the history into segments: the indicators restart at each segment's first candle and its warm-up is
dropped again, so the first minute after a four-month gap is not a -31 % `close_pct` with stops 60 % too wide
from an ATR carried across it. Shorter gaps carry through: windows count rows (minutes of data), as the seed
did, and the `*_pct` of the first candle after a short gap is the change over the gap.

`write_features` is the one piece of I/O here: a CSV or Parquet file for a user to inspect.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import talib

from lstm_trading.core.atomic import write_with
from lstm_trading.core.config import FeatureConfig
from lstm_trading.core.errors import ConfigError, DataError
from lstm_trading.core.timeutil import MINUTE, format_time
from lstm_trading.features.symbols import other_candles, symbol_column

FEATURE_NAMES: tuple[str, ...] = (
    "open_pct",
    "high_pct",
    "low_pct",
    "close_pct",
    "volume_pct",
    "SMA_10h_pct",
    "EMA_10h_pct",
    "RSI_14h",
    "MACD_pct",
    "MACD_Signal_pct",
    "BB_Upper_pct",
    "BB_Lower_pct",
    "ATR_14h_pct",
)
LEVELS_NAMES: tuple[str, ...] = (
    "open_ret",
    "high_ret",
    "low_ret",
    "close_ret",
    "volume_z",
    "close_SMA_10h",
    "close_EMA_10h",
    "RSI_14h_frac",
    "MACD_close",
    "MACD_Signal_close",
    "BB_position",
    "BB_width",
    "ATR_14h_close",
)
SET_NAMES: dict[str, tuple[str, ...]] = {"seed": FEATURE_NAMES, "levels": LEVELS_NAMES}
INDICATOR_NAMES: tuple[str, ...] = (
    "SMA_10h",
    "EMA_10h",
    "RSI_14h",
    "MACD",
    "MACD_Signal",
    "BB_Upper",
    "BB_Lower",
    "ATR_14h",
)
CANDLE_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


def feature_names(config: FeatureConfig = FeatureConfig()) -> tuple[str, ...]:
    """The columns `compute_features` gives under `config` (before `atr`): the set's, then each other symbol's."""
    own = SET_NAMES[config.feature_set]
    return own + tuple(symbol_column(symbol, name) for symbol in config.with_symbols for name in own)


def candle_arrays(candles: pd.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Timestamps and float64 OHLCV arrays, checked once here: TA-Lib carries a NaN forward forever."""
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise DataError(
            f"candles lack the column(s) {', '.join(missing)}; a candle frame has {', '.join(CANDLE_COLUMNS)}"
        )
    timestamps = candles["timestamp"].to_numpy(dtype=np.int64)
    steps = np.diff(timestamps)
    if (steps <= 0).any():
        row = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise DataError(
            f"candles are not sorted by time with unique timestamps (row {row}, {format_time(timestamps[row])}); "
            "sort them and drop duplicates first (the store and the CSV importer return them so)"
        )
    columns = {name: candles[name].to_numpy(dtype=np.float64) for name in CANDLE_COLUMNS[1:]}
    for name, values in columns.items():
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"candles have a missing or infinite {name} at row {row} ({format_time(timestamps[row])}); "
                "re-import that range or drop the row: one NaN would spoil every later EMA, RSI and ATR"
            )
    return timestamps, columns


def compute_indicators(candles: pd.DataFrame, config: FeatureConfig = FeatureConfig()) -> pd.DataFrame:
    """The indicator levels (float64, TA-Lib) for every row of the history, NaN where TA-Lib has no value yet.

    Columns `INDICATOR_NAMES`, indexed by open timestamp. `compute_features` turns them into features; this
    frame is for inspection and tests (the ATR level is in price units).
    """
    timestamps, c = candle_arrays(candles)
    return pd.DataFrame(_levels(c, config), index=pd.Index(timestamps, name="timestamp"))


def _levels(c: dict[str, np.ndarray], config: FeatureConfig) -> dict[str, np.ndarray]:
    close = c["close"]
    macd, signal, _ = talib.MACD(close, config.macd_fast, config.macd_slow, config.macd_signal)
    upper, _, lower = talib.BBANDS(
        close, config.bollinger, config.bollinger_sigma, config.bollinger_sigma, talib.MA_Type.SMA
    )
    return {
        "SMA_10h": talib.SMA(close, config.sma),
        "EMA_10h": talib.EMA(close, config.ema),
        "RSI_14h": talib.RSI(close, config.rsi),
        "MACD": macd,
        "MACD_Signal": signal,
        "BB_Upper": upper,
        "BB_Lower": lower,
        "ATR_14h": talib.ATR(c["high"], c["low"], close, config.atr),
    }


def pct_change(values: np.ndarray, clip: float) -> np.ndarray:
    """`100 * (x_t / x_{t-1} - 1)` of a series, infinities and NaN to 0, clipped to `+-clip`; row 0 is 0."""
    values = np.asarray(values, dtype=np.float64)
    change = np.zeros_like(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(values[1:], values[:-1], out=change[1:])
    change[1:] -= 1.0
    change[1:] *= 100.0
    np.putmask(change, ~np.isfinite(change), 0.0)
    return np.clip(change, -clip, clip, out=change)


def first_feature_row(levels: dict[str, np.ndarray], config: FeatureConfig) -> int:
    """The first row kept: after the warm-up, and never before every indicator and its `_pct` are defined."""
    defined = [int(np.argmax(~np.isnan(v))) if (~np.isnan(v)).any() else len(v) for v in levels.values()]
    return max(config.warmup_minutes, max(defined, default=0) + 1)


def compute_features(candles: pd.DataFrame, config: FeatureConfig = FeatureConfig()) -> pd.DataFrame:
    """The features of each minute (`feature_names(config)`), plus the ATR level, for the rows after the warm-up.

    Parameters
    ----------
    candles
        A candle frame (`timestamp` open times in UTC seconds, `open`, `high`, `low`, `close`, `volume`), sorted
        with unique timestamps; gaps are allowed (see the module docstring: windows count rows). With
        `config.with_symbols`, also the other symbols' columns (`features/symbols.join_symbols`).
    config
        The feature set, indicator windows in minutes (rows), the warm-up, the `*_pct` clip, other symbols.

    Returns
    -------
    DataFrame indexed by int64 open timestamps (`timestamp`), columns `feature_names(config)` (float32, in that
    order) then `atr` (float64, the main symbol's ATR_14h level in price units, for targets and the labeller).
    The first `config.warmup_minutes` rows of every segment (more if an indicator's own look-back is longer) are
    dropped, so a history, or a segment after a long gap, no longer than that gives no rows; with other
    symbols, only the minutes where every symbol has a feature row remain.
    """
    main = _symbol_features(candles, config)
    if not config.with_symbols:
        return main
    common = main.index
    parts = []
    for symbol in config.with_symbols:
        other = _symbol_features(other_candles(candles, symbol), config).drop(columns="atr")
        other.columns = [symbol_column(symbol, str(name)) for name in other.columns]
        common = common[common.isin(other.index)]
        parts.append(other)
    own = [str(c) for c in main.columns if c != "atr"]
    joined = pd.concat([main.loc[common, own], *(part.loc[common] for part in parts)], axis=1)
    joined["atr"] = main.loc[common, "atr"]
    return joined


def _symbol_features(candles: pd.DataFrame, config: FeatureConfig) -> pd.DataFrame:
    """One symbol's features (its columns `CANDLE_COLUMNS`), segment by segment."""
    timestamps, c = candle_arrays(candles)
    bounds = segment_bounds(timestamps, config.max_gap_minutes)
    if len(bounds) > 1:
        parts = [_segment_features(timestamps[a:b], {k: v[a:b] for k, v in c.items()}, config) for a, b in bounds]
        return pd.concat(parts)
    return _segment_features(timestamps, c, config)


def segment_bounds(timestamps: np.ndarray, max_gap_minutes: int) -> list[tuple[int, int]]:
    """Row ranges `[start, end)` of the segments: runs of candles no more than `max_gap_minutes` missing
    minutes apart (a gap of G missing minutes puts consecutive open times (G + 1) * 60 seconds apart)."""
    if len(timestamps) == 0:
        return [(0, 0)]
    cuts = np.flatnonzero(np.diff(timestamps) > (max_gap_minutes + 1) * MINUTE) + 1
    edges = [0, *cuts.tolist(), len(timestamps)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _segment_features(timestamps: np.ndarray, c: dict[str, np.ndarray], config: FeatureConfig) -> pd.DataFrame:
    """`compute_features` for one segment: indicators from its first candle, its own warm-up dropped."""
    levels = _levels(c, config)
    if config.feature_set == "levels":
        levels |= _volume_levels(c["volume"], config)
    names = SET_NAMES[config.feature_set]
    first = first_feature_row(levels, config) if len(timestamps) else 0
    keep = slice(first, None)
    n = max(len(timestamps) - first, 0)
    # Built column by column as (13, n): each feature is one contiguous row, and pandas keeps a frame's
    # values as (columns, rows), so the transpose below becomes the frame without a copy.
    columns = np.empty((len(names), n), dtype=np.float32)
    if n and config.feature_set == "levels":
        for row, values in enumerate(_levels_columns(c, levels, first, config)):
            columns[row] = values
    elif n:
        sources = [c[name] for name in ("open", "high", "low", "close", "volume")]
        sources += [levels[name] for name in INDICATOR_NAMES]
        for row, (name, values) in enumerate(zip(FEATURE_NAMES, sources, strict=True)):
            if name == "RSI_14h":
                columns[row] = values[keep]
            else:  # the percentage change needs the row before the first one kept
                columns[row] = pct_change(values[first - 1 :], config.pct_clip)[1:]
    frame = pd.DataFrame(columns.T, index=pd.Index(timestamps[keep], name="timestamp"), columns=list(names), copy=False)
    frame["atr"] = levels["ATR_14h"][keep] if n else np.empty(0, dtype=np.float64)
    return frame


def _volume_levels(volume: np.ndarray, config: FeatureConfig) -> dict[str, np.ndarray]:
    """The rolling mean and (population) standard deviation of `log(1 + volume)`: log, because volume is
    heavy-tailed and its units differ between symbols; the z-score of the log is scale-free."""
    log_volume = np.log1p(np.maximum(volume, 0.0))
    return {
        "volume_mean": talib.SMA(log_volume, config.volume_window),
        "volume_std": talib.STDDEV(log_volume, config.volume_window, 1.0),
        "log_volume": log_volume,
    }


def _levels_columns(
    c: dict[str, np.ndarray], levels: dict[str, np.ndarray], first: int, config: FeatureConfig
) -> list[np.ndarray]:
    """The `levels` set's 13 columns for rows `first:` (float64), in `LEVELS_NAMES` order; the module docstring
    gives each definition and bound."""
    keep = slice(first, None)
    close = c["close"][keep]
    previous = c["close"][first - 1 : -1]  # the row before each kept one: first >= 1 (first_feature_row)
    upper, lower = levels["BB_Upper"][keep], levels["BB_Lower"][keep]
    width = upper - lower
    std = levels["volume_std"][keep]
    band_bound = np.sqrt(config.bollinger - 1) / (2 * config.bollinger_sigma)
    volume_bound = np.sqrt(config.volume_window - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        columns = [c[name][keep] / previous - 1 for name in ("open", "high", "low", "close")]
        z = np.where(std > 0, (levels["log_volume"][keep] - levels["volume_mean"][keep]) / std, 0.0)
        columns.append(np.clip(z, -volume_bound, volume_bound))  # the clip only catches rounding
        columns += [close / levels["SMA_10h"][keep] - 1, close / levels["EMA_10h"][keep] - 1]
        columns.append(levels["RSI_14h"][keep] / 100)
        columns += [levels["MACD"][keep] / close, levels["MACD_Signal"][keep] / close]
        position = np.where(width > 0, (close - lower) / width, 0.5)
        columns.append(np.clip(position, 0.5 - band_bound, 0.5 + band_bound))  # as for z: rounding only
        columns += [width / close, levels["ATR_14h"][keep] / close]
    for values in columns:
        np.putmask(values, ~np.isfinite(values), 0.0)
    return columns


def features_file_format(path: Path) -> str:
    """`csv` or `parquet` from the file's suffix, checked before any work is done (Parquet needs pyarrow)."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ConfigError(f"--out {path}: write features to a .csv or a .parquet file")
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ConfigError(
            f"--out {path}: writing Parquet needs pyarrow: pip install 'lstm-trading[parquet]', or write a .csv"
        )
    return suffix[1:]


def write_features(features: pd.DataFrame, path: Path) -> None:
    """Write features for a user to inspect: `.csv`, or `.parquet` (needs the optional pyarrow).

    The file is written beside `path` and renamed, so a crash never leaves half a file that reads."""
    path = Path(path)
    kind = features_file_format(path)
    if not path.parent.is_dir():
        raise DataError(f"{path}: cannot write the features: the folder {path.parent} does not exist")
    try:
        if kind == "parquet":
            write_with(path, features.to_parquet)
        else:
            write_with(path, features.to_csv)
    except OSError as error:
        raise DataError(f"{path}: cannot write the features ({error.strerror or error})") from None


def rows_dropped(config: FeatureConfig = FeatureConfig()) -> int:
    """How many leading rows `compute_features` drops: the warm-up, or more where a TA-Lib look-back is longer.

    Commands load this many candles before the first window they need.
    """
    from talib import abstract

    def lookback(name: str, **parameters: float) -> int:
        function = abstract.Function(name)  # type: ignore[attr-defined]
        function.parameters = parameters
        return int(function.lookback)

    longest = max(
        lookback("SMA", timeperiod=config.sma),
        lookback("EMA", timeperiod=config.ema),
        lookback("RSI", timeperiod=config.rsi),
        lookback("MACD", fastperiod=config.macd_fast, slowperiod=config.macd_slow, signalperiod=config.macd_signal),
        lookback("BBANDS", timeperiod=config.bollinger, nbdevup=config.bollinger_sigma, nbdevdn=config.bollinger_sigma),
        lookback("ATR", timeperiod=config.atr),
    )
    if config.feature_set == "levels":
        longest = max(longest, lookback("STDDEV", timeperiod=config.volume_window, nbdev=1.0))
    return max(config.warmup_minutes, longest + 1)


def history_minutes(config: FeatureConfig, max_len: int) -> int:
    """Candles needed before a moment: its window (`max_len` rows) plus the rows the indicators' warm-up drops."""
    return max_len + rows_dropped(config)
