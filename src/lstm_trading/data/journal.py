"""The Excel trade journal: read and validate its rows, write it back (sheets `tradesmain` and `meta`).

A journal holds one trade per row: `start_time` (Unix seconds or milliseconds, an Excel date-time in UTC, or
an ISO datetime), `entry_price` (-1 means no trade: Invalid), `side` (Buy or Sell, any case), and optionally
`stop_loss` and `take_profit` as prices. Rules (DESIGN.md "Targets" and "Window"): a start time inside a minute
moves up to the next minute boundary, the first moment the trade could be placed; a row that breaks a rule
is a `DataError` naming the file, the sheet and the Excel row (with `skip_bad_rows`, a warning per row).
The `meta` sheet (key, value) records how the journal was made, e.g. the labeller's `horizon_seconds`,
which the split's purge reads.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import openpyxl
import pandas as pd
from openpyxl import Workbook

from lstm_trading.core.atomic import write_with
from lstm_trading.core.errors import DataError
from lstm_trading.core.timeutil import MINUTE, TimeParseError, to_unix_seconds
from lstm_trading.data.candles import LATEST_TIMESTAMP, first_unreadable_time

JOURNAL_SHEET = "tradesmain"
META_SHEET = "meta"
REQUIRED_COLUMNS = ("start_time", "entry_price", "side")
LEVEL_COLUMNS = ("stop_loss", "take_profit")
TRADE_COLUMNS = (*REQUIRED_COLUMNS, "label", *LEVEL_COLUMNS, "row")
# Labels as the model numbers its classes (samples.CLASS_NAMES); `data` does not import the stages above it.
BUY, SELL, INVALID = 0, 1, 2
SIDES = {"buy": ("Buy", BUY), "sell": ("Sell", SELL)}
NO_TRADE_PRICE = -1.0
# 1973-03-03: a smaller number is no Unix time for candles but an Excel serial date (a date cell that lost its
# date format) or a typo.
_EARLIEST_SECONDS = 100_000_000
_EPOCH = datetime(1970, 1, 1)
_TIME_HELP = "use Unix seconds, milliseconds, an Excel date-time (UTC) or an ISO datetime such as 2025-06-01T12:00"


@dataclass(frozen=True)
class Journal:
    """A validated journal.

    `trades` has the columns `start_time` (int64 UTC seconds on minute boundaries), `entry_price` (float64, -1
    for Invalid), `side` ("Buy", "Sell" or "Invalid"), `label` (int64: 0 Buy, 1 Sell, 2 Invalid), `stop_loss` and
    `take_profit` (float64 prices, NaN where the journal gives none) and `row` (the Excel row, header = 1),
    sorted by `start_time`. `moved_to_boundary` counts start times moved up to the next minute boundary (callers
    warn with it); `skipped_rows` counts rows skipped with `skip_bad_rows=True`.
    """

    trades: pd.DataFrame
    meta: dict[str, str | float | int]
    path: Path
    moved_to_boundary: int
    skipped_rows: int


class _Trade(NamedTuple):
    """One valid row before its start time is converted (times are converted in bulk)."""

    row: int
    entry_price: float
    side: str
    label: int
    stop_loss: float
    take_profit: float


class _BadRow(Exception):
    """One row's problem, without the file and row (added where the row number is known)."""


def read_journal(path: Path | str, *, sheet: str = JOURNAL_SHEET, skip_bad_rows: bool = False) -> Journal:
    """Read and validate a trade journal (.xlsx).

    Parameters
    ----------
    path
        The workbook.
    sheet
        The sheet with the trades; its first non-empty row is the header (column names in any case).
    skip_bad_rows
        Warn about each bad row and skip it instead of raising a `DataError` for the first one.

    Raises
    ------
    DataError
        The file is missing or not an .xlsx workbook, the sheet or a column is missing, a row is bad (unless
        `skip_bad_rows`), or no trade is left.
    """
    path = Path(path)
    where = f"{path}: sheet '{sheet}'"
    header_row, header, body, meta = _load(path, sheet)
    columns = _locate_columns(header, where, header_row)

    parsed: list[_Trade] = []
    raw_times: list[Any] = []
    bad: list[tuple[int, str]] = []  # (Excel row, problem)
    for row, cells in body:
        values = {name: _cell(cells, index) for name, index in columns.items()}
        if all(_is_empty(v) for v in values.values()):
            continue  # blank lines between trades are layout, not data
        try:
            entry, side, label = _entry_and_side(values["entry_price"], values["side"])
            stop_loss, take_profit = _levels(values.get("stop_loss"), values.get("take_profit"), entry, label)
        except _BadRow as error:
            bad.append((row, str(error)))
            continue
        raw_times.append(values["start_time"])
        parsed.append(_Trade(row, entry, side, label, stop_loss, take_profit))

    seconds, subsecond, time_problems = _start_times(raw_times)
    bad.extend((parsed[i].row, problem) for i, problem in time_problems.items())
    bad.sort()
    if bad and not skip_bad_rows:
        row, problem = bad[0]
        more = ""
        if len(bad) > 1:
            others = ", ".join(str(r) for r, _ in bad[1:6]) + (", ..." if len(bad) > 6 else "")
            more = f" ({len(bad) - 1} more bad rows: {others})"
        raise DataError(
            f"{where}, row {row}: {problem}{more}; fix the rows, or skip them with a warning each (--skip-bad-rows)"
        )
    for row, problem in bad:
        warnings.warn(f"{where}, row {row}: {problem}; row skipped", stacklevel=2)

    keep = [i for i in range(len(parsed)) if i not in time_problems]
    if not keep:
        if bad:
            raise DataError(f"{where} has no valid trades: all {len(bad)} rows are bad (see the warnings)")
        raise DataError(f"{where} has no trades below its header (row {header_row}); add one trade per row")
    kept = [parsed[i] for i in keep]
    start = seconds[keep]
    on_boundary = -(-start // MINUTE) * MINUTE  # inside a minute: the next boundary, the first possible placement
    trades = pd.DataFrame(
        {
            "start_time": on_boundary.astype(np.int64),
            "entry_price": np.array([t.entry_price for t in kept], dtype=np.float64),
            "side": pd.Series([t.side for t in kept], dtype=str),
            "label": np.array([t.label for t in kept], dtype=np.int64),
            "stop_loss": np.array([t.stop_loss for t in kept], dtype=np.float64),
            "take_profit": np.array([t.take_profit for t in kept], dtype=np.float64),
            "row": np.array([t.row for t in kept], dtype=np.int64),
        }
    )
    if (np.diff(trades["start_time"].to_numpy()) < 0).any():
        warnings.warn(f"{where}: rows are not in time order; sorted them by start_time", stacklevel=2)
        trades = trades.sort_values("start_time", kind="stable", ignore_index=True)
    return Journal(
        trades=trades,
        meta=meta,
        path=path,
        moved_to_boundary=int(((on_boundary != start) | subsecond[keep]).sum()),
        skipped_rows=len(bad),
    )


def write_journal(path: Path | str, trades: pd.DataFrame, meta: Mapping[str, object] | None = None) -> None:
    """Write trades as a journal `read_journal` reads back unchanged: sheet `tradesmain` and sheet `meta`.

    `start_time` (anything `to_unix_seconds` reads) is written as an Excel date-time in UTC; `stop_loss` and
    `take_profit` are written when the frame has them (both or neither), NaN as an empty cell. The file is
    written beside `path` and moved over it, so a crash never leaves half a journal.
    """
    path = Path(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in trades.columns]
    if missing:
        raise DataError(
            f"cannot write journal {path}: the trades lack {', '.join(missing)} "
            f"(they have {', '.join(map(str, trades.columns)) or 'no columns'})"
        )
    has_levels = [c in trades.columns for c in LEVEL_COLUMNS]
    if any(has_levels) and not all(has_levels):
        raise DataError(f"cannot write journal {path}: give both stop_loss and take_profit, or neither")
    try:
        seconds = to_unix_seconds(trades["start_time"])
    except TimeParseError as error:
        raise DataError(
            f"cannot write journal {path}: start_time of trade {error.position} is {error.value!r}, not a time"
        ) from None
    columns = [*REQUIRED_COLUMNS, *(LEVEL_COLUMNS if all(has_levels) else ())]

    # Not write-only mode: that leaves out the sheet's dimension, and read-only loading then parses the whole
    # sheet twice (measured: 2.4 s against 1.8 s to read 50,000 rows; writing takes as long either way).
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None  # a new workbook has one sheet
    sheet.title = JOURNAL_SHEET
    sheet.append(columns)
    stamps = [_EPOCH + timedelta(seconds=int(s)) for s in seconds]  # naive datetimes in UTC: Excel has no zones
    others = [trades[c].tolist() for c in columns[1:]]
    for stamp, *values in zip(stamps, *others, strict=True):
        sheet.append([stamp, *(_excel_value(v) for v in values)])
    meta_sheet = workbook.create_sheet(META_SHEET)
    meta_sheet.append(["key", "value"])
    for key, value in (meta or {}).items():
        if value is not None:
            meta_sheet.append([str(key), _excel_value(value)])
    write_with(path, workbook.save, suffix=".xlsx")


def _load(path: Path, sheet: str) -> tuple[int, tuple[Any, ...], list[tuple[int, tuple[Any, ...]]], dict[str, Any]]:
    """The header's row number and cells, the data rows (Excel row number, cells), and the meta sheet."""
    if not path.exists():
        raise DataError(f"{path}: no such journal file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a journal file")
    try:
        data = path.read_bytes()  # once, into memory: a pipe or process substitution cannot be read twice
    except PermissionError:
        raise DataError(f"{path}: cannot read the journal (permission denied); make it readable") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the journal: {error.strerror or error}") from None
    try:
        with io.BytesIO(data) as handle:
            workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True)
            try:
                names = {name.lower(): name for name in workbook.sheetnames}  # Excel's names ignore case
                if sheet.lower() not in names:
                    raise DataError(
                        f"{path}: no sheet '{sheet}'; the workbook has: {', '.join(workbook.sheetnames)}. "
                        "Choose the trades' sheet with --sheet"
                    )
                rows = list(enumerate(workbook[names[sheet.lower()]].iter_rows(min_row=1, values_only=True), start=1))
                meta = _read_meta(workbook) if sheet.lower() != META_SHEET else {}
            finally:
                workbook.close()
    except DataError:
        raise
    except OSError as error:
        raise DataError(f"{path}: cannot read the journal: {error.strerror or error}") from None
    except Exception as error:  # openpyxl signals a broken file with many exception types; never a traceback
        kind = "an old .xls workbook" if path.suffix.lower() == ".xls" else "not an Excel .xlsx workbook"
        raise DataError(
            f"{path}: {kind} ({type(error).__name__}); save the journal from Excel as 'Excel Workbook (.xlsx)'"
        ) from None
    for number, cells in rows:
        if not all(_is_empty(v) for v in cells):
            body = [(n, c) for n, c in rows[number:] if c]
            return number, cells, body, meta
    raise DataError(f"{path}: sheet '{sheet}' is empty; its first row should name the columns {_needed()}")


def _read_meta(workbook: Any) -> dict[str, Any]:
    """The `meta` sheet's key-value rows (a first row `key, value` is the header); absent sheet: {}."""
    if META_SHEET not in workbook.sheetnames:
        return {}
    meta: dict[str, Any] = {}
    for cells in workbook[META_SHEET].iter_rows(min_row=1, values_only=True):
        key = _cell(cells, 0)
        if _is_empty(key) or (not meta and str(key).strip().lower() == "key"):
            continue
        value = _cell(cells, 1)
        if _is_empty(value):
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        meta[str(key).strip()] = value.strip() if isinstance(value, str) else value
    return meta


def _locate_columns(header: tuple[Any, ...], where: str, header_row: int) -> dict[str, int]:
    """Column index of each known column, by name in any case (`Start Time` is `start_time`)."""
    names = [str(v).strip() if not _is_empty(v) else "" for v in header]
    positions: dict[str, int] = {}
    for index, name in enumerate(names):
        key = name.lower().replace(" ", "_")
        if key in (*REQUIRED_COLUMNS, *LEVEL_COLUMNS):
            if key in positions:
                raise DataError(
                    f"{where}: column '{key}' appears twice in the header (row {header_row}, columns "
                    f"{_column_letter(positions[key])} and {_column_letter(index)}); keep one"
                )
            positions[key] = index
    missing = [c for c in REQUIRED_COLUMNS if c not in positions]
    if missing:
        present = ", ".join(n for n in names if n) or "none"
        raise DataError(
            f"{where}: missing column(s) {', '.join(missing)} in the header (row {header_row}); "
            f"the columns there are: {present}. A journal needs {_needed()}"
        )
    levels = [c for c in LEVEL_COLUMNS if c in positions]
    if len(levels) == 1:
        other = next(c for c in LEVEL_COLUMNS if c not in positions)
        raise DataError(f"{where}: has a {levels[0]} column but no {other} column; give both or neither")
    return positions


def _entry_and_side(entry_cell: Any, side_cell: Any) -> tuple[float, str, int]:
    """Entry price, normalised side and label; -1 is no trade (Invalid), whatever the side says."""
    if _is_empty(entry_cell):
        raise _BadRow("entry_price is empty; give the fill price, or -1 for no trade (Invalid)")
    entry = _number(entry_cell)
    if entry is None:
        raise _BadRow(f"entry_price is {entry_cell!r}, not a number; give the fill price, or -1 for no trade")
    if entry == NO_TRADE_PRICE:
        return NO_TRADE_PRICE, "Invalid", INVALID
    if not (math.isfinite(entry) and entry > 0):
        raise _BadRow(f"entry_price is {_show(entry)}; give a positive fill price, or -1 for no trade (Invalid)")
    if _is_empty(side_cell):
        raise _BadRow("side is empty; use Buy or Sell (or entry_price -1 for no trade)")
    side = SIDES.get(str(side_cell).strip().lower()) if isinstance(side_cell, str) else None
    if side is None:
        raise _BadRow(f"side is {side_cell!r}; use Buy or Sell (or entry_price -1 for no trade)")
    return entry, side[0], side[1]


def _levels(sl_cell: Any, tp_cell: Any, entry: float, label: int) -> tuple[float, float]:
    """The row's own stop loss and take profit prices, checked against its side; NaN where it gives none."""
    if label == INVALID or (_is_empty(sl_cell) and _is_empty(tp_cell)):
        return math.nan, math.nan  # no trade has no levels; a trade without levels gets them from ATR
    for name, cell in (("stop_loss", sl_cell), ("take_profit", tp_cell)):
        if _is_empty(cell):
            other = "take_profit" if name == "stop_loss" else "stop_loss"
            raise _BadRow(f"{other} is given but {name} is empty; give both or neither")
    stop_loss, take_profit = _number(sl_cell), _number(tp_cell)
    for name, cell, value in (("stop_loss", sl_cell, stop_loss), ("take_profit", tp_cell, take_profit)):
        if value is None or not (math.isfinite(value) and value > 0):
            raise _BadRow(f"{name} is {cell!r}; give a positive price")
    assert stop_loss is not None and take_profit is not None
    if label == BUY and not stop_loss < entry < take_profit:
        raise _BadRow(
            f"a Buy needs stop_loss < entry_price < take_profit, got stop_loss {_show(stop_loss)}, "
            f"entry_price {_show(entry)}, take_profit {_show(take_profit)}"
        )
    if label == SELL and not take_profit < entry < stop_loss:
        raise _BadRow(
            f"a Sell needs take_profit < entry_price < stop_loss, got take_profit {_show(take_profit)}, "
            f"entry_price {_show(entry)}, stop_loss {_show(stop_loss)}"
        )
    return stop_loss, take_profit


def _start_times(cells: list[Any]) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """UTC seconds for each cell (Excel date-times directly, numbers and text in bulk), whether the cell had a
    fraction of a second (rounded up already, so 12:05:59.5 counts as moved to 12:06), and per-position problems.

    Excel stores date-times as fractions of a day, so they are rounded to the millisecond before the ceiling to
    whole seconds: 12:34:00 must not become 12:34:00.000001 and then move up a minute.
    """
    seconds = np.zeros(len(cells), dtype=np.int64)
    subsecond = np.zeros(len(cells), dtype=bool)
    problems: dict[int, str] = {}
    bulk: list[int] = []
    for i, cell in enumerate(cells):
        if isinstance(cell, datetime | date):
            moment = cell if isinstance(cell, datetime) else datetime(cell.year, cell.month, cell.day)
            try:
                if moment.tzinfo is not None:
                    moment = moment.astimezone(UTC).replace(tzinfo=None)
            except (OverflowError, ValueError):  # an offset that pushes the year past 9999 or before 1
                problems[i] = _outside(cell)
                continue
            micros = (moment - _EPOCH) // timedelta(microseconds=1)
            millis = (micros + 500) // 1000
            seconds[i] = -(-millis // 1000)
            subsecond[i] = millis % 1000 != 0
        elif _is_empty(cell):
            problems[i] = "start_time is empty; " + _TIME_HELP
        elif isinstance(cell, bool) or not isinstance(cell, int | float | str):
            problems[i] = f"start_time is {cell!r}, not a time; {_TIME_HELP}"
        else:
            bulk.append(i)
            subsecond[i] = _has_fraction_of_second(cell)
    pending = bulk
    while pending:  # bulk conversion; a bad value is set aside and the rest converted again
        values = pd.Series([cells[i] for i in pending], dtype=object)
        try:
            with np.errstate(all="ignore"):  # a huge number overflows int64: refused below, no numpy warning
                seconds[pending] = to_unix_seconds(values)
            pending = []
        except TimeParseError as error:
            bad = pending[error.position]
            problems[bad] = f"start_time is {cells[bad]!r}, not a time; {_TIME_HELP}"
            pending = [i for i in pending if i != bad]
        except (ValueError, OverflowError):  # a datetime beyond pandas' range (before 1677, after 2262)
            bad = pending[first_unreadable_time(values)]
            problems[bad] = _outside(cells[bad])
            pending = [i for i in pending if i != bad]
    for i in range(len(cells)):
        if i in problems:
            continue
        number = None if isinstance(cells[i], datetime | date) else _number(cells[i])
        if seconds[i] >= LATEST_TIMESTAMP or (seconds[i] < 0 and number is not None and number > 0):
            problems[i] = _outside(cells[i])  # (a huge number wraps around to a negative int64)
        elif seconds[i] < _EARLIEST_SECONDS:
            problems[i] = (
                f"start_time {cells[i]!r} is before 1973: an Excel date without its date format, or a typo? "
                + _TIME_HELP
            )
    return seconds, subsecond, problems


def _outside(cell: Any) -> str:
    shown = str(cell) if isinstance(cell, datetime | date) else repr(cell)
    return f"start_time {shown} is outside 1973 to 2100, the years candles can have: a typo? {_TIME_HELP}"


def _has_fraction_of_second(cell: int | float | str) -> bool:
    """Whether seconds, milliseconds or an ISO time carry a fraction of a second (malformed values: False)."""
    number = _number(cell)
    if number is not None:
        return bool(number % (1000.0 if abs(number) >= 1e11 else 1.0))  # to_unix_seconds' magnitude rule
    if "." not in str(cell):  # an ISO time has a fraction only after a decimal point
        return False
    try:
        moment = pd.Timestamp(str(cell).strip())
    except ValueError:
        return False
    return bool(moment.microsecond or moment.nanosecond)


def _number(cell: Any) -> float | None:
    """A cell as a float: numbers, and numbers typed as text; None otherwise."""
    if isinstance(cell, bool):
        return None
    if isinstance(cell, int | float):
        return float(cell)
    if isinstance(cell, str):
        try:
            return float(cell.strip())  # no separators: '3000,5' must not silently become 30005
        except ValueError:
            return None
    return None


def _excel_value(value: object) -> object:
    """Plain Python values for openpyxl: numpy scalars unwrapped, NaN and None as empty cells."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool | int | float | str | datetime):
        return value
    return str(value)


def _cell(cells: tuple[Any, ...], index: int) -> Any:
    return cells[index] if index < len(cells) else None


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _show(value: float) -> str:
    return f"{value:.10g}"


def _column_letter(index: int) -> str:
    return openpyxl.utils.get_column_letter(index + 1)


def _needed() -> str:
    return "start_time, entry_price and side (and optionally stop_loss and take_profit)"
