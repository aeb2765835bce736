"""The candle rules, checked once at the boundary: every frame that enters the store passes through here.

A candle frame has the columns of `CANDLE_COLUMNS`: `timestamp` (int64 open time, UTC seconds, on a minute
boundary), then `open, high, low, close, volume` (float64, finite, prices > 0, volume >= 0,
low <= open, close <= high), sorted ascending, unique timestamps, a default RangeIndex. A `symbol` column in
the input, when there is one, must name the symbol the candles are stored under on every row: candles of
another market are never stored under a name by accident.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lstm_trading.core.errors import DataError
from lstm_trading.core.timeutil import MINUTE, TimeParseError, format_time, to_unix_seconds

CANDLE_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
SYMBOL_COLUMN = "symbol"
PRICE_COLUMNS = ("open", "high", "low", "close")
VALUE_COLUMNS = (*PRICE_COLUMNS, "volume")

# Features are float32: a value beyond its range becomes inf there, so it is refused here.
_LARGEST_VALUE = float(np.finfo(np.float32).max)
# Open times before 1970 or from 2100 on are misread units or typing errors, not candles.
LATEST_TIMESTAMP = 4_102_444_800  # 2100-01-01 00:00 UTC


@dataclass(frozen=True)
class Gap:
    """A run of missing minutes: the open times of the first and last missing candle, and how many."""

    first_missing: int
    last_missing: int
    minutes: int


def find_gaps(timestamps: np.ndarray) -> list[Gap]:
    """The missing minutes between sorted, unique open times (UTC seconds), in time order."""
    stamps = np.asarray(timestamps, dtype=np.int64)
    if stamps.size < 2:
        return []
    steps = np.diff(stamps)
    after = np.flatnonzero(steps > MINUTE)
    return [
        Gap(
            first_missing=int(stamps[i] + MINUTE),
            last_missing=int(stamps[i + 1] - MINUTE),
            minutes=int(steps[i] // MINUTE - 1),
        )
        for i in after
    ]


def describe_gaps(gaps: list[Gap], largest: int = 3) -> str:
    """One line for people: the count, the total missing minutes and the largest gaps."""
    if not gaps:
        return "no gaps"
    total = sum(gap.minutes for gap in gaps)
    biggest = sorted(gaps, key=lambda gap: (-gap.minutes, gap.first_missing))[:largest]
    parts = ", ".join(f"{gap.minutes:,} min from {format_time(gap.first_missing)}" for gap in biggest)
    return f"{len(gaps):,} gap{'s' if len(gaps) > 1 else ''}, {total:,} missing minutes; largest: {parts}"


def describe_long_gaps(gaps: list[Gap], max_gap_minutes: int, warmup_minutes: int) -> str | None:
    """The gaps that split the history into segments (longer than `features.max_gap_minutes`, DESIGN.md
    "Gaps") in one line: count, total and longest, and what they cost; None when there is none."""
    long = [gap for gap in gaps if gap.minutes > max_gap_minutes]
    if not long:
        return None
    total = sum(gap.minutes for gap in long)
    longest = max(long, key=lambda gap: (gap.minutes, -gap.first_missing))
    return (
        f"long gaps (over {max_gap_minutes} minutes): {len(long):,}, {total:,} missing minutes, the longest "
        f"{longest.minutes:,} from {format_time(longest.first_missing)}; each starts a new segment whose indicators "
        f"restart and whose first {warmup_minutes:,} minutes of warm-up are not traded or trained on"
    )


def empty_candles() -> pd.DataFrame:
    """A candle frame with no rows and the right dtypes."""
    return pd.DataFrame(
        {name: np.empty(0, dtype=np.int64 if name == "timestamp" else np.float64) for name in CANDLE_COLUMNS}
    )


def validate_candles(
    frame: pd.DataFrame,
    source: str,
    *,
    line_offset: int = 2,
    lines: np.ndarray | None = None,
    unit: str = "line",
    check_interval: bool = True,
    symbol: str | None = None,
) -> pd.DataFrame:
    """Check the candle rules and return a clean candle frame.

    Errors are `DataError`s that name `source` and the line: frame position `i` is line `i + line_offset`
    (a CSV's header is line 1), or `lines[i]` when given (a reader that dropped blank lines). `unit` names
    what is counted ("line" for files, "row" for tables). Repairable input is repaired with a warning:
    unsorted rows are sorted, identical duplicate rows dropped. Duplicates that disagree are an error: the
    tool cannot know which one the exchange meant. With `check_interval`, input whose bars are mostly
    another interval apart (a 5-minute file) is refused: the store holds 1-minute candles only. Columns are
    matched ignoring case and surrounding spaces (two columns with one such name are refused); other columns
    are ignored, except `symbol`: every row's symbol must be `symbol` (ignoring case and surrounding spaces),
    and without `symbol` the rows must all name one symbol.
    """

    def line(position: int) -> int:
        return int(lines[position]) if lines is not None else int(position) + line_offset

    def where(position: int) -> str:
        return f"{source}, {unit} {line(position)}"

    columns = _find_columns(frame, source)
    if len(frame) == 0:
        raise DataError(
            f"{source}: no candles (only a header); a candle file needs one line per minute: "
            + ",".join(CANDLE_COLUMNS)
        )
    symbol_column = _find_symbol_column(frame)
    if symbol_column is not None:
        _check_symbols(frame[symbol_column], symbol, source, unit, where)
    stamps = _timestamps(frame[columns["timestamp"]], where)
    values = {name: _numbers(frame[columns[name]], name, where) for name in VALUE_COLUMNS}
    _check_values(values, where)
    _check_minutes(stamps, frame[columns["timestamp"]], where)

    order = np.arange(len(stamps))
    if np.any(stamps[1:] < stamps[:-1]):
        first = int(np.flatnonzero(stamps[1:] < stamps[:-1])[0]) + 1
        warnings.warn(
            f"{source}: rows are not in time order (first at {unit} {line(first)}); sorted them", stacklevel=2
        )
        order = np.argsort(stamps, kind="stable")
        stamps = stamps[order]
        values = {name: column[order] for name, column in values.items()}

    keep = _drop_duplicates(stamps, values, order, source, unit, line)
    if keep is not None:
        stamps = stamps[keep]
        values = {name: column[keep] for name, column in values.items()}
    if check_interval:
        _check_interval(stamps, source)

    clean = pd.DataFrame({"timestamp": stamps, **values})
    return clean.reset_index(drop=True)


def check_header(names: list[object] | pd.Index, source: str) -> None:
    """Refuse a header in which two columns give one of the known names (ignoring case and surrounding spaces):
    which of them holds the candles is anyone's guess. Unknown columns may repeat: they are ignored."""
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        key = str(name).strip().lower()
        if key not in (*CANDLE_COLUMNS, SYMBOL_COLUMN):
            continue
        if key in seen:
            first = seen[key]
            raise DataError(
                f"{source}: column '{key}' appears twice in the header (columns {first + 1} and {index + 1}: "
                f"{str(names[first])!r} and {str(name)!r}); keep one"
            )
        seen[key] = index


def _find_columns(frame: pd.DataFrame, source: str) -> dict[str, str]:
    check_header(frame.columns, source)
    found: dict[str, str] = {}
    for column in frame.columns:
        found.setdefault(str(column).strip().lower(), column)
    missing = [name for name in CANDLE_COLUMNS if name not in found]
    if missing:
        have = ", ".join(repr(str(column)) for column in frame.columns) or "none"
        raise DataError(
            f"{source}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(columns found: {have}); the first line must be the header " + ",".join(CANDLE_COLUMNS)
        )
    return {name: found[name] for name in CANDLE_COLUMNS}


def _find_symbol_column(frame: pd.DataFrame) -> str | None:
    return next((column for column in frame.columns if str(column).strip().lower() == SYMBOL_COLUMN), None)


def _check_symbols(column: pd.Series, symbol: str | None, source: str, unit: str, where: Callable[[int], str]) -> None:
    """Every row names `symbol` (or, without one, the same symbol): a file's own symbol column is never ignored."""
    values = column.reset_index(drop=True)
    names = values.astype(str).str.strip()
    missing = (values.isna() | (names == "")).to_numpy()
    if missing.any():
        position = int(np.flatnonzero(missing)[0])
        raise DataError(f"{where(position)}: symbol is empty; a symbol column must name the symbol on every {unit}")
    held = ", ".join(sorted(names.unique())[:5]) + (", ..." if names.nunique() > 5 else "")
    if symbol is None:
        if names.str.upper().nunique() > 1:
            raise DataError(f"{source}: holds candles of several symbols ({held}); split the file, one per symbol")
        return
    other = (names.str.upper() != symbol.strip().upper()).to_numpy()
    if other.any():
        position = int(np.flatnonzero(other)[0])
        several = names.str.upper().nunique() > 1
        fix = "split the file, one per symbol" if several else f"import it with --symbol {names.iloc[position]}"
        raise DataError(
            f"{where(position)}: symbol {names.iloc[position]!r} is not {symbol}, the --symbol the candles are "
            f"stored under (the file holds {held}); {fix}"
        )


def _show(value: object) -> str:
    """A value as the user wrote it: text quoted, numbers plain (not numpy's `np.float64(...)`)."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value) if isinstance(value, str) else str(value)


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _timestamps(column: pd.Series, where: Callable[[int], str]) -> np.ndarray:
    values = column.reset_index(drop=True)
    if pd.api.types.is_bool_dtype(values.dtype):
        values = values.astype(str)  # a column of TRUE/FALSE: refused below as text, not read as 1/0
    outside_range = "is outside 1970 to 2100; use Unix seconds, milliseconds or ISO datetimes"
    try:
        with np.errstate(invalid="ignore", over="ignore"):
            stamps = to_unix_seconds(values)
    except TimeParseError as error:
        if _is_missing(error.value):
            raise DataError(f"{where(error.position)}: timestamp is missing; fill it in or remove the line") from None
        raise DataError(
            f"{where(error.position)}: timestamp {_show(error.value)} is not a time; use Unix seconds, milliseconds "
            "or ISO datetimes such as 2025-06-01 12:00:00+00:00 (UTC)"
        ) from None
    except (ValueError, OverflowError):  # a datetime beyond pandas' nanosecond range (before 1677, after 2262)
        position = first_unreadable_time(values)
        raise DataError(f"{where(position)}: timestamp {_show(values.iloc[position])} {outside_range}") from None
    outside = (stamps < 0) | (stamps >= LATEST_TIMESTAMP)
    if outside.any():
        position = int(np.flatnonzero(outside)[0])
        raise DataError(f"{where(position)}: timestamp {_show(column.iloc[position])} {outside_range}")
    return stamps


def first_unreadable_time(values: pd.Series) -> int:
    """The position of the first value `to_unix_seconds` refuses, for a column it refused as a whole with an
    error that names no position (pandas' out-of-range datetimes): bisection over prefixes, so a long column
    costs a few conversions, not one per row."""
    readable, unreadable = 0, len(values)  # values[:readable] converts, values[:unreadable] does not
    while unreadable - readable > 1:
        middle = (readable + unreadable) // 2
        try:
            with np.errstate(all="ignore"):
                to_unix_seconds(values.iloc[:middle])
            readable = middle
        except (ValueError, OverflowError):
            unreadable = middle
    return unreadable - 1


def _numbers(column: pd.Series, name: str, where: Callable[[int], str]) -> np.ndarray:
    if pd.api.types.is_bool_dtype(column.dtype):  # TRUE/FALSE: pandas reads them as booleans, not as 1 and 0
        raise DataError(f"{where(0)}: {name} {str(column.iloc[0])!r} is not a number")
    if column.dtype == object:
        flags = column.map(lambda value: isinstance(value, bool | np.bool_)).to_numpy(dtype=bool)
        if flags.any():
            position = int(np.flatnonzero(flags)[0])
            raise DataError(f"{where(position)}: {name} {str(column.iloc[position])!r} is not a number")
    if pd.api.types.is_numeric_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        numbers = pd.to_numeric(column, errors="coerce")
        not_number = (numbers.isna() & column.notna()).to_numpy()
        if not_number.any():
            position = int(np.flatnonzero(not_number)[0])
            raise DataError(f"{where(position)}: {name} {_show(column.iloc[position])} is not a number")
        values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    missing = np.isnan(values)
    if missing.any():
        position = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"{where(position)}: {name} is missing (empty or NaN); fill it in or remove the line "
            "(gaps are allowed, half candles are not)"
        )
    too_large = ~(np.abs(values) <= _LARGEST_VALUE)
    if too_large.any():
        position = int(np.flatnonzero(too_large)[0])
        raise DataError(
            f"{where(position)}: {name} {_show(values[position])} is not a finite number in range "
            "(features are float32: at most 3.4e38)"
        )
    return values


def _check_values(values: dict[str, np.ndarray], where: Callable[[int], str]) -> None:
    for name in PRICE_COLUMNS:
        bad = values[name] <= 0
        if bad.any():
            position = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where(position)}: {name} is {_show(values[name][position])}; prices must be above 0")
    bad = values["volume"] < 0
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where(position)}: volume is {_show(values['volume'][position])}; volume cannot be negative")
    high, low = values["high"], values["low"]
    bad = high < low
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where(position)}: high {_show(high[position])} is below low {_show(low[position])}")
    for name in ("open", "close"):
        bad = (values[name] < low) | (values[name] > high)
        if bad.any():
            position = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{where(position)}: {name} {_show(values[name][position])} lies outside the candle's range "
                f"low {_show(low[position])} to high {_show(high[position])}"
            )


def _check_minutes(stamps: np.ndarray, column: pd.Series, where: Callable[[int], str]) -> None:
    off = stamps % MINUTE != 0
    if off.any():
        position = int(np.flatnonzero(off)[0])
        raise DataError(
            f"{where(position)}: timestamp {_show(column.iloc[position])} is not on a minute boundary "
            f"({stamps[position]} s); 1-minute candles are keyed by the minute they open"
        )


def _drop_duplicates(
    stamps: np.ndarray,
    values: dict[str, np.ndarray],
    order: np.ndarray,
    source: str,
    unit: str,
    line: Callable[[int], int],
) -> np.ndarray | None:
    """Index of the rows to keep after dropping identical duplicates, or None when there are none."""
    repeated = np.flatnonzero(stamps[1:] == stamps[:-1]) + 1
    if repeated.size == 0:
        return None
    # Rows with one timestamp are adjacent after the stable sort; compare each with the first of its run.
    run_start = np.flatnonzero(np.r_[True, stamps[1:] != stamps[:-1]])
    first_of_run = run_start[np.searchsorted(run_start, repeated, side="right") - 1]
    differs = np.zeros(repeated.size, dtype=bool)
    for column in values.values():
        differs |= column[repeated] != column[first_of_run]
    if differs.any():
        k = int(np.flatnonzero(differs)[0])
        a, b = sorted((line(int(order[first_of_run[k]])), line(int(order[repeated[k]]))))
        raise DataError(
            f"{source}, {unit}s {a} and {b}: two different candles for {format_time(stamps[repeated[k]])}; "
            f"keep the right one and remove the other"
        )
    first_line = min(line(int(order[i])) for i in repeated)
    warnings.warn(
        f"{source}: dropped {repeated.size} exact duplicate row{'s' if repeated.size > 1 else ''} "
        f"(first at {unit} {first_line})",
        stacklevel=3,
    )
    keep = np.ones(stamps.size, dtype=bool)
    keep[repeated] = False
    return keep


def _check_interval(stamps: np.ndarray, source: str) -> None:
    if stamps.size < 2:
        return
    steps = np.diff(stamps)
    kinds, counts = np.unique(steps, return_counts=True)
    common = int(kinds[np.argmax(counts)])
    if common == MINUTE:
        return
    minutes = common // MINUTE
    raise DataError(
        f"{source}: holds {minutes}-minute bars ({int(counts.max()):,} of {steps.size:,} steps between rows "
        f"are {minutes} minutes); the store holds 1-minute candles only: use a file of 1-minute candles"
    )
