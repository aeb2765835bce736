"""The candle rules: what `validate_candles` accepts, repairs and refuses, and how gaps are found."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstm_trading.core.errors import DataError
from lstm_trading.data.candles import CANDLE_COLUMNS, Gap, describe_gaps, find_gaps, validate_candles

T0 = 1_748_538_360  # 2025-05-29 17:06 UTC, a minute boundary


def frame(minutes: list[int] | None = None, **overrides: list[object]) -> pd.DataFrame:
    """Small valid candles at T0 + minute * 60, with columns overridden per test."""
    minutes = list(range(5)) if minutes is None else minutes
    n = len(minutes)
    data: dict[str, list[object]] = {
        "timestamp": [T0 + 60 * m for m in minutes],
        "open": [100.0 + i for i in range(n)],
        "high": [102.0 + i for i in range(n)],
        "low": [99.0 + i for i in range(n)],
        "close": [101.0 + i for i in range(n)],
        "volume": [5.0 + i for i in range(n)],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def test_clean_frame_comes_back_as_a_candle_frame() -> None:
    raw = frame()
    raw.index = pd.Index([10, 11, 12, 13, 14])
    clean = validate_candles(raw, "x.csv")
    assert tuple(clean.columns) == CANDLE_COLUMNS
    assert clean["timestamp"].dtype == np.int64
    assert all(clean[name].dtype == np.float64 for name in CANDLE_COLUMNS[1:])
    assert isinstance(clean.index, pd.RangeIndex) and clean.index[0] == 0
    assert clean["timestamp"].tolist() == [T0 + 60 * m for m in range(5)]


def test_column_names_match_ignoring_case_and_spaces_and_extra_columns_are_dropped() -> None:
    raw = frame().rename(columns={"timestamp": " Timestamp", "open": "OPEN"})
    raw["turnover"] = 1.0
    clean = validate_candles(raw, "x.csv")
    assert tuple(clean.columns) == CANDLE_COLUMNS


def test_timestamp_forms_all_read_as_the_same_seconds() -> None:
    stamps = [T0, (T0 + 60) * 1000, "2025-05-29 17:08:00", "2025-05-29 17:09:00+00:00", "2025-05-29T19:10:00+02:00"]
    clean = validate_candles(frame(timestamp=stamps), "x.csv")
    assert clean["timestamp"].tolist() == [T0 + 60 * m for m in range(5)]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"open": [100.0, "abc", 102.0, 103.0, 104.0]}, "x.csv, line 3: open 'abc' is not a number"),
        ({"close": [101.0, 102.0, np.nan, 104.0, 105.0]}, "x.csv, line 4: close is missing (empty or NaN)"),
        ({"high": [102.0, np.inf, 104.0, 105.0, 106.0]}, "x.csv, line 3: high inf is not a finite number in range"),
        ({"volume": [5.0, 1e39, 5.0, 5.0, 5.0]}, "x.csv, line 3: volume 1e+39 is not a finite number in range"),
        ({"low": [99.0, 0.0, 101.0, 102.0, 103.0]}, "x.csv, line 3: low is 0.0; prices must be above 0"),
        ({"open": [100.0, 101.0, -1.0, 103.0, 104.0]}, "x.csv, line 4: open is -1.0; prices must be above 0"),
        ({"volume": [5.0, 6.0, 7.0, -8.0, 9.0]}, "x.csv, line 5: volume is -8.0; volume cannot be negative"),
        ({"high": [102.0, 98.0, 104.0, 105.0, 106.0]}, "x.csv, line 3: high 98.0 is below low 100.0"),
        (
            {"open": [100.0, 101.0, 200.0, 103.0, 104.0]},
            "x.csv, line 4: open 200.0 lies outside the candle's range low 101.0 to high 104.0",
        ),
        (
            {"timestamp": [T0, T0 + 60, T0 + 150, T0 + 180, T0 + 240]},
            f"x.csv, line 4: timestamp {T0 + 150} is not on a minute boundary",
        ),
        (
            {"timestamp": [T0, T0 + 60, "yesterday", T0 + 180, T0 + 240]},
            "x.csv, line 4: timestamp 'yesterday' is not a time; use Unix seconds, milliseconds or ISO datetimes",
        ),
        ({"timestamp": [T0, T0 + 60, None, T0 + 180, T0 + 240]}, "x.csv, line 4: timestamp is missing"),
        (
            {"timestamp": [T0, T0 + 60, T0 + 120, 99_999_999_999_999_999, T0 + 240]},
            "x.csv, line 5: timestamp 99999999999999999 is outside 1970 to 2100",
        ),
    ],
)
def test_bad_values_are_refused_naming_the_line(overrides: dict[str, list[object]], message: str) -> None:
    with pytest.raises(DataError) as caught:
        validate_candles(frame(**overrides), "x.csv")
    assert str(caught.value).startswith(message)


def test_missing_columns_are_listed_with_the_columns_found() -> None:
    with pytest.raises(DataError) as caught:
        validate_candles(frame().drop(columns=["volume", "low"]), "x.csv")
    assert str(caught.value) == (
        "x.csv: missing columns low, volume (columns found: 'timestamp', 'open', 'high', 'close'); "
        "the first line must be the header timestamp,open,high,low,close,volume"
    )


def test_no_rows_is_an_error() -> None:
    with pytest.raises(DataError, match=r"^x\.csv: no candles \(only a header\)"):
        validate_candles(frame([]), "x.csv")


def test_unsorted_rows_are_sorted_with_a_warning() -> None:
    with pytest.warns(UserWarning, match=r"x\.csv: rows are not in time order \(first at line 5\); sorted them"):
        clean = validate_candles(frame([0, 1, 3, 2, 4]), "x.csv")
    assert clean["timestamp"].tolist() == [T0 + 60 * m for m in range(5)]
    # The values travel with their timestamps.
    assert clean["open"].tolist() == [100.0, 101.0, 103.0, 102.0, 104.0]


def test_identical_duplicates_are_dropped_with_a_warning() -> None:
    raw = frame().iloc[[0, 1, 1, 2, 3, 4, 4]].reset_index(drop=True)
    with pytest.warns(UserWarning, match=r"x\.csv: dropped 2 exact duplicate rows \(first at line 4\)"):
        clean = validate_candles(raw, "x.csv")
    pd.testing.assert_frame_equal(clean, validate_candles(frame(), "x.csv"))


def test_duplicates_with_different_values_name_both_lines() -> None:
    raw = frame().iloc[[0, 1, 2, 2, 3, 4]].reset_index(drop=True)
    raw.loc[3, "close"] = 101.5
    with pytest.raises(DataError) as caught:
        validate_candles(raw, "x.csv")
    assert str(caught.value) == (
        "x.csv, lines 4 and 5: two different candles for 2025-05-29 17:08 UTC; keep the right one and remove the other"
    )


def test_line_numbers_follow_line_offset_and_explicit_lines() -> None:
    bad = frame(low=[99.0, 0.0, 101.0, 102.0, 103.0])
    with pytest.raises(DataError, match=r"^t, row 2: low"):
        validate_candles(bad, "t", line_offset=1, unit="row")
    with pytest.raises(DataError, match=r"^x\.csv, line 30: low"):
        validate_candles(bad, "x.csv", lines=np.array([2, 30, 40, 41, 42]))


def test_bars_another_interval_apart_are_refused_saying_so() -> None:
    with pytest.raises(DataError) as caught:
        validate_candles(frame([0, 5, 10, 15, 20]), "five.csv")
    assert str(caught.value) == (
        "five.csv: holds 5-minute bars (4 of 4 steps between rows are 5 minutes); "
        "the store holds 1-minute candles only: use a file of 1-minute candles"
    )
    # Without the interval check (pages from an exchange), a sparse slice is fine.
    assert len(validate_candles(frame([0, 5, 10, 15, 20]), "page", check_interval=False)) == 5


def test_one_minute_candles_with_gaps_are_accepted() -> None:
    clean = validate_candles(frame([0, 1, 2, 10, 11, 12, 13]), "x.csv")
    assert len(clean) == 7


def test_find_gaps_reports_first_and_last_missing_minute() -> None:
    stamps = np.array([T0 + 60 * m for m in (0, 1, 2, 5, 6, 10)], dtype=np.int64)
    assert find_gaps(stamps) == [
        Gap(first_missing=T0 + 180, last_missing=T0 + 240, minutes=2),
        Gap(first_missing=T0 + 420, last_missing=T0 + 540, minutes=3),
    ]
    assert find_gaps(stamps[:3]) == []
    assert find_gaps(np.array([], dtype=np.int64)) == []


def test_describe_gaps_gives_count_total_and_largest_first() -> None:
    gaps = [Gap(T0, T0 + 60, 2), Gap(T0 + 600, T0 + 1200, 11), Gap(T0 + 3600, T0 + 3600, 1)]
    assert describe_gaps(gaps, largest=2) == (
        "3 gaps, 14 missing minutes; largest: 11 min from 2025-05-29 17:16 UTC, 2 min from 2025-05-29 17:06 UTC"
    )
    assert describe_gaps([]) == "no gaps"


def test_conflicting_duplicates_far_apart_in_the_file_name_their_own_lines() -> None:
    raw = pd.concat([frame(), frame().iloc[[1]].assign(volume=99.0)], ignore_index=True)
    with pytest.warns(UserWarning, match="not in time order"), pytest.raises(DataError) as caught:
        validate_candles(raw, "x.csv")
    assert str(caught.value).startswith("x.csv, lines 3 and 7: two different candles for 2025-05-29 17:07 UTC")
