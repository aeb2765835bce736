"""Time on input: everything inside the package is candle open time in UTC seconds (`int64`).

Inputs arrive as Unix seconds, Unix milliseconds (ccxt, most CSVs), ISO strings with or without an offset
(naive means UTC) or datetimes; they are converted here, once, at the boundary.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from lstm_trading.core.errors import ConfigError

MINUTE = 60
DAY = 86_400  # a UTC day: daily loss limits, daily returns and model ages count in them
# Unix seconds stay below 1e11 until the year 5138; milliseconds pass 1e11 in 1973.
_MILLISECONDS_ABOVE = 1e11


class TimeParseError(ValueError):
    """A value that is not a time; `position` is its index in the input (for row numbers in messages)."""

    def __init__(self, position: int, value: Any) -> None:
        super().__init__(f"not a time: {value!r}")
        self.position = position
        self.value = value


def _numeric_to_seconds(values: np.ndarray) -> np.ndarray:
    """Seconds or milliseconds (told apart by magnitude, per value) to int64 seconds, rounding up."""
    values = values.astype(np.float64)
    millis = np.abs(values) >= _MILLISECONDS_ABOVE
    seconds = np.where(millis, values / 1000.0, values)
    return np.ceil(seconds - 1e-9).astype(np.int64)


def to_unix_seconds(values: Sequence[Any] | pd.Series | np.ndarray) -> np.ndarray:
    """Convert timestamps of any accepted form to int64 UTC seconds.

    Raises `TimeParseError` with the position of the first value that is not a time, so callers can name
    the file's line.
    """
    series = pd.Series(values)
    if len(series) == 0:
        return np.empty(0, dtype=np.int64)
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        stamps = series if series.dt.tz is not None else series.dt.tz_localize("UTC")
        if stamps.isna().any():
            position = int(np.flatnonzero(stamps.isna().to_numpy())[0])
            raise TimeParseError(position, series.iloc[position])
        return _datetimes_to_seconds(stamps)
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        array = series.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(array)
        if bad.any():
            position = int(np.flatnonzero(bad)[0])
            raise TimeParseError(position, series.iloc[position])
        return _numeric_to_seconds(array)
    if pd.api.types.is_bool_dtype(series.dtype):
        raise TimeParseError(0, series.iloc[0])
    numbers = pd.to_numeric(series, errors="coerce")
    if pd.api.types.is_bool_dtype(numbers.dtype):  # TRUE/FALSE text is not a time
        raise TimeParseError(0, series.iloc[0])
    if numbers.notna().all():
        return to_unix_seconds(numbers)
    result = np.empty(len(series), dtype=np.int64)
    is_number = numbers.notna().to_numpy()
    if is_number.any():
        result[is_number] = _numeric_to_seconds(numbers[is_number].to_numpy(dtype=np.float64))
    text_positions = np.flatnonzero(~is_number)
    text = series.iloc[text_positions]
    parsed = pd.to_datetime(text.astype(str), utc=True, errors="coerce", format="ISO8601")
    if parsed.isna().any():
        position = int(text_positions[np.flatnonzero(parsed.isna().to_numpy())[0]])
        raise TimeParseError(position, series.iloc[position])
    result[text_positions] = _datetimes_to_seconds(parsed)
    return result


def _datetimes_to_seconds(stamps: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    index = pd.DatetimeIndex(stamps).tz_convert("UTC").as_unit("ns")
    nanos = index.asi8
    return -(-nanos // 1_000_000_000)  # ceiling division: a moment inside a second moves up


# 9999-12-31 23:59:59 UTC: the last moment an ISO datetime can name; beyond it a number is a typo, not a time.
_LAST_SECOND = 253_402_300_799
MOMENT_FORMS = "give Unix seconds or an ISO datetime such as 2025-06-01T12:00, UTC"


def parse_moment(text: str | int | float | datetime, *, option: str | None = None) -> int:
    """One moment from the command line or an API call: Unix seconds, milliseconds or an ISO datetime.

    A value that is not a time, or lies before 1970 or after the year 9999, is a `ConfigError` naming `option`
    (the flag, e.g. `--at`), the value and the accepted forms.
    """
    if isinstance(text, datetime):
        moment = text if text.tzinfo else text.replace(tzinfo=UTC)
        return math.ceil(moment.timestamp())
    try:
        with np.errstate(all="ignore"):  # a huge number overflows int64: refused below, no numpy warning
            seconds = int(to_unix_seconds([text])[0])
    except (TimeParseError, ValueError, OverflowError):  # pandas reads past 2262 as out of bounds
        seconds = -1
    if not 0 <= seconds <= _LAST_SECOND:
        where = f"{option}: " if option else ""
        raise ConfigError(f"{where}cannot read {text!r} as a time ({MOMENT_FORMS})")
    return seconds


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int, *, option: str = "duration") -> int:
    """A duration like `15m`, `24h`, `90d` to seconds (a bare integer means seconds)."""
    if isinstance(text, int):
        seconds = text
    else:
        match = _DURATION.match(text)
        if match:
            seconds = round(float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])
        elif text.strip().isdigit():
            seconds = int(text.strip())
        else:
            raise ConfigError(f"{option}: not a duration: {text!r}; use e.g. 30s, 15m, 24h or 90d")
    if seconds <= 0:
        raise ConfigError(f"{option}: must be positive, got {text!r}")
    return seconds


def parse_fraction(text: str | float, *, option: str = "value") -> float:
    """`0.055%` -> 0.00055; a bare number is taken as a fraction already."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ConfigError(f"{option}: not a number or percentage: {text!r}; use e.g. 0.055%") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{option}: must be a non-negative number, got {text!r}")
    return value


def format_time(seconds: int | np.integer) -> str:
    """UTC seconds as `2025-06-01 12:00 UTC` for messages and tables."""
    return datetime.fromtimestamp(int(seconds), tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
