"""CSV files of candles -> validated candle frames.

A file holds a header `timestamp,open,high,low,close,volume` (any case, other columns ignored) and one line per
1-minute candle; timestamps are Unix seconds, milliseconds or ISO datetimes (naive means UTC). Every error
names the file and its line (the header is line 1).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from lstm_trading.core.errors import DataError
from lstm_trading.data.candles import validate_candles

_SNIFF_BYTES = 8192
_FIELDS_ERROR = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def read_candles_csv(path: Path) -> pd.DataFrame:
    """Read and validate a CSV of 1-minute candles; see `validate_candles` for the rules and repairs."""
    path = Path(path)
    _check_text_file(path)
    try:
        # Blank lines are kept as empty rows so that row positions map to file lines; they are dropped below.
        frame = pd.read_csv(path, encoding="utf-8-sig", skip_blank_lines=False, low_memory=False)
    except pd.errors.EmptyDataError:
        raise _empty(path) from None
    except pd.errors.ParserError as error:
        match = _FIELDS_ERROR.search(str(error))
        if match:
            expected, line, saw = match.groups()
            raise DataError(
                f"{path}, line {line}: {saw} fields where the header has {expected}; "
                "is this a comma-separated candle file?"
            ) from None
        raise DataError(f"{path}: not a readable CSV file ({error})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a CSV text file (it is not UTF-8 text)") from None
    blank = frame.isna().all(axis=1).to_numpy()
    lines = np.arange(len(frame)) + 2
    if blank.any():
        frame = frame.loc[~blank].reset_index(drop=True)
        lines = lines[~blank]
    if len(frame) == 0 and len(frame.columns) > 0 and _all_unnamed(frame):
        raise _empty(path)
    return validate_candles(frame, str(path), lines=lines)


def _check_text_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a CSV file")
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if not head.strip():
        raise _empty(path)
    if head.startswith(b"SQLite format 3\x00"):
        raise DataError(f"{path}: is a SQLite database, not a CSV file; read databases with --db")
    if head.startswith(b"PK\x03\x04"):
        raise DataError(f"{path}: is a ZIP or Excel file, not a CSV file; export the sheet as CSV first")
    if b"\x00" in head:
        raise DataError(f"{path}: not a CSV text file (it holds binary data)")


def _all_unnamed(frame: pd.DataFrame) -> bool:
    return all(str(column).startswith("Unnamed:") for column in frame.columns)


def _empty(path: Path) -> DataError:
    return DataError(
        f"{path}: the file is empty; a candle CSV needs the header timestamp,open,high,low,close,volume "
        "and one line per minute"
    )
