"""CSV files of candles -> validated candle frames.

A file holds a header `timestamp,open,high,low,close,volume` (any case, other columns ignored) and one line per
1-minute candle; timestamps are Unix seconds, milliseconds or ISO datetimes (naive means UTC). A `symbol` column,
when the file has one, must name the symbol the candles are imported under on every row. Every error names the
file and its line (the header is line 1).

The input is read once, into memory, and parsed from there: a pipe, a FIFO or a process substitution
(`<(gzip -dc candles.csv.gz)`) can be read only once. A gzip-compressed file is decompressed.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from lstm_trading.core.errors import DataError
from lstm_trading.data.candles import check_header, validate_candles

_SNIFF_BYTES = 8192
_GZIP_MAGIC = b"\x1f\x8b"
_FIELDS_ERROR = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def read_candles_csv(path: Path, *, symbol: str | None = None) -> pd.DataFrame:
    """Read and validate a CSV of 1-minute candles; see `validate_candles` for the rules and repairs.

    `symbol` is the name the candles will be stored under: a `symbol` column in the file must name it on every
    row (without `symbol`, the rows must all name one symbol).
    """
    path = Path(path)
    data = _read_text_bytes(path)
    try:
        # Blank lines are kept as empty rows so that row positions map to file lines; they are dropped below.
        frame = pd.read_csv(io.BytesIO(data), encoding="utf-8-sig", skip_blank_lines=False, low_memory=False)
        # pandas renames a repeated name (`close.1`): the header as written, to refuse a column given twice.
        header = pd.read_csv(
            io.BytesIO(data), encoding="utf-8-sig", header=None, nrows=1, dtype=str, keep_default_na=False
        )
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
    if len(header) == 1 and len(header.columns) == len(frame.columns):
        check_header(header.iloc[0].tolist(), str(path))
    blank = frame.isna().all(axis=1).to_numpy()
    lines = np.arange(len(frame)) + 2
    if blank.any():
        frame = frame.loc[~blank].reset_index(drop=True)
        lines = lines[~blank]
    if len(frame) == 0 and len(frame.columns) > 0 and _all_unnamed(frame):
        raise _empty(path)
    return validate_candles(frame, str(path), lines=lines, symbol=symbol)


def _read_text_bytes(path: Path) -> bytes:
    """The whole input, read once (a pipe cannot be read twice), decompressed when gzip; refuses what is not text."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a CSV file")
    try:
        with path.open("rb") as handle:
            data = handle.read()
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(f"{path}: no such file") from None
    except PermissionError:
        raise DataError(
            f"{path}: cannot read the file (permission denied); make it readable, or give another file"
        ) from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror or error})") from None
    if data.startswith(_GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path}: a damaged gzip file ({error}); compress it again or give the plain CSV") from None
    head = data[:_SNIFF_BYTES]
    if not head.strip():
        raise _empty(path)
    if head.startswith(b"SQLite format 3\x00"):
        raise DataError(f"{path}: is a SQLite database, not a CSV file; read databases with --db")
    if head.startswith(b"PK\x03\x04"):
        raise DataError(f"{path}: is a ZIP or Excel file, not a CSV file; export the sheet as CSV first")
    if b"\x00" in head:
        raise DataError(f"{path}: not a CSV text file (it holds binary data)")
    return data


def _all_unnamed(frame: pd.DataFrame) -> bool:
    return all(str(column).startswith("Unnamed:") for column in frame.columns)


def _empty(path: Path) -> DataError:
    return DataError(
        f"{path}: the file is empty; a candle CSV needs the header timestamp,open,high,low,close,volume "
        "and one line per minute"
    )
