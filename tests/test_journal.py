"""The Excel trade journal: every accepted form of a row, every bad row with its message, and the round trip."""

from __future__ import annotations

import io
import warnings
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import openpyxl
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstm_trading.core.errors import DataError, WriteError
from lstm_trading.data.journal import read_journal, write_journal

T0 = 1_704_110_400  # 2024-01-01 12:00 UTC
HEADER = ["start_time", "entry_price", "side"]
LEVELS_HEADER = [*HEADER, "stop_loss", "take_profit"]


def _workbook(
    path: Path, rows: list[list[Any]], sheet: str = "tradesmain", meta: list[list[Any]] | None = None
) -> Path:
    """A journal as a user's Excel would hold it: one header row, then the rows as given."""
    book = openpyxl.Workbook()
    assert book.active is not None
    book.active.title = sheet
    for row in rows:
        book.active.append(row)
    if meta is not None:
        meta_sheet = book.create_sheet("meta")
        for row in meta:
            meta_sheet.append(row)
    book.save(path)
    return path


def _error(path: Path, **kwargs: Any) -> str:
    with pytest.raises(DataError) as error:
        read_journal(path, **kwargs)
    return str(error.value)


# --- accepted forms ---------------------------------------------------------------------------------------


def test_round_trip_keeps_trades_and_meta(tmp_path: Path) -> None:
    trades = pd.DataFrame(
        {
            "start_time": [T0, T0 + 3600, T0 + 7200, T0 + 10_800],
            "entry_price": [3000.5, -1.0, 2990.25, 3010.0],
            "side": ["Buy", "Invalid", "Sell", "Buy"],
            "stop_loss": [2990.0, np.nan, 3000.0, np.nan],
            "take_profit": [3020.0, np.nan, 2970.0, np.nan],
        }
    )
    meta = {"labeller": "first-touch", "horizon_seconds": 86_400, "k_sl": 2.5, "fee": 0.00055}
    write_journal(tmp_path / "val.xlsx", trades, meta)

    journal = read_journal(tmp_path / "val.xlsx")

    pd.testing.assert_frame_equal(journal.trades[list(trades.columns)], trades, check_dtype=False)
    assert journal.trades["label"].tolist() == [0, 2, 1, 0]
    assert journal.trades["row"].tolist() == [2, 3, 4, 5]
    assert journal.trades["start_time"].dtype == np.int64
    assert journal.trades["label"].dtype == np.int64
    assert journal.meta == meta
    assert journal.path == tmp_path / "val.xlsx"
    assert (journal.moved_to_boundary, journal.skipped_rows) == (0, 0)


def test_round_trip_without_levels(tmp_path: Path) -> None:
    trades = pd.DataFrame({"start_time": [T0, T0 + 60], "entry_price": [100.0, -1.0], "side": ["Sell", "Invalid"]})
    write_journal(tmp_path / "j.xlsx", trades)
    header = next(openpyxl.load_workbook(tmp_path / "j.xlsx")["tradesmain"].iter_rows(values_only=True))
    assert list(header) == HEADER

    journal = read_journal(tmp_path / "j.xlsx")

    pd.testing.assert_frame_equal(journal.trades[HEADER], trades, check_dtype=False)
    assert journal.trades["stop_loss"].isna().all() and journal.trades["take_profit"].isna().all()
    assert journal.meta == {}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.integers(0, 5_000_000),  # minutes after 2024-01-01
            st.sampled_from(["Buy", "Sell", "Invalid"]),
            st.floats(1.0, 1e6),
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_any_valid_journal_round_trips(tmp_path: Path, rows: list[tuple[int, str, float, bool]]) -> None:
    rows = sorted(rows, key=lambda r: r[0])
    entry = [-1.0 if side == "Invalid" else price for _, side, price, _ in rows]
    own = [levels and side != "Invalid" for _, side, _, levels in rows]
    below = [p * 0.99 if o else np.nan for p, o in zip(entry, own, strict=True)]
    above = [p * 1.01 if o else np.nan for p, o in zip(entry, own, strict=True)]
    is_buy = [side == "Buy" for _, side, _, _ in rows]
    trades = pd.DataFrame(
        {
            "start_time": [1_704_067_200 + 60 * minute for minute, *_ in rows],
            "entry_price": entry,
            "side": [side for _, side, _, _ in rows],
            "stop_loss": np.where(is_buy, below, above),
            "take_profit": np.where(is_buy, above, below),
        }
    )
    write_journal(tmp_path / "h.xlsx", trades, {"seed": 1})
    journal = read_journal(tmp_path / "h.xlsx")
    pd.testing.assert_frame_equal(journal.trades[list(trades.columns)], trades, check_dtype=False)


def test_written_start_time_is_an_excel_datetime_in_utc(tmp_path: Path) -> None:
    write_journal(tmp_path / "j.xlsx", pd.DataFrame({"start_time": [T0], "entry_price": [1.0], "side": ["Buy"]}))
    cell = openpyxl.load_workbook(tmp_path / "j.xlsx")["tradesmain"]["A2"]
    assert cell.is_date
    assert cell.value == datetime(2024, 1, 1, 12, 0)


def test_start_time_in_every_accepted_form(tmp_path: Path) -> None:
    path = _workbook(
        tmp_path / "forms.xlsx",
        [
            HEADER,
            [T0, 1.0, "Buy"],  # Unix seconds
            [T0 * 1000 + 60_000, 1.0, "Buy"],  # Unix milliseconds
            [datetime(2024, 1, 1, 12, 2), 1.0, "Buy"],  # an Excel date-time, read as UTC
            ["2024-01-01T12:03:00", 1.0, "Buy"],  # ISO text, naive = UTC
            ["2024-01-01 14:04:00+02:00", 1.0, "Buy"],  # ISO text with an offset
            [str(T0 + 300), 1.0, "Buy"],  # seconds typed as text
            [date(2024, 1, 2), 1.0, "Buy"],  # a date alone: midnight UTC
        ],
    )
    journal = read_journal(path)
    assert journal.trades["start_time"].tolist() == [T0 + 60 * i for i in range(6)] + [1_704_153_600]
    assert journal.moved_to_boundary == 0


def test_start_time_inside_a_minute_moves_up_to_the_next_boundary(tmp_path: Path) -> None:
    path = _workbook(
        tmp_path / "inside.xlsx",
        [
            HEADER,
            [T0, 1.0, "Buy"],
            [T0 + 1, 1.0, "Buy"],
            [datetime(2024, 1, 1, 12, 5, 59, 500_000), 1.0, "Buy"],
            [T0 * 1000 + 600_001, 1.0, "Buy"],  # one millisecond past 12:10
            ["2024-01-01T12:20:00.5Z", 1.0, "Buy"],
        ],
    )
    journal = read_journal(path)
    assert journal.trades["start_time"].tolist() == [T0, T0 + 60, T0 + 360, T0 + 660, T0 + 1260]
    assert journal.moved_to_boundary == 4


def test_side_in_any_case_is_normalised(tmp_path: Path) -> None:
    path = _workbook(
        tmp_path / "case.xlsx",
        [HEADER, [T0, 1.0, "buy"], [T0 + 60, 1.0, " SELL "], [T0 + 120, 1.0, "Buy"], [T0 + 180, 1.0, "sElL"]],
    )
    journal = read_journal(path)
    assert journal.trades["side"].tolist() == ["Buy", "Sell", "Buy", "Sell"]
    assert journal.trades["label"].tolist() == [0, 1, 0, 1]


def test_entry_price_minus_one_is_invalid_whatever_the_side_says(tmp_path: Path) -> None:
    path = _workbook(
        tmp_path / "invalid.xlsx",
        [
            LEVELS_HEADER,
            [T0, -1, "Buy", 1.0, 2.0],
            [T0 + 60, -1.0, None, None, None],
            [T0 + 120, "-1", "anything", None, None],
            [T0 + 180, -1, "Invalid", None, None],
        ],
    )
    trades = read_journal(path).trades
    assert trades["side"].tolist() == ["Invalid"] * 4
    assert trades["label"].tolist() == [2] * 4
    assert trades["entry_price"].tolist() == [-1.0] * 4
    assert trades["stop_loss"].isna().all() and trades["take_profit"].isna().all()


def test_header_names_in_any_case_and_extra_columns(tmp_path: Path) -> None:
    path = _workbook(
        tmp_path / "header.xlsx",
        [
            ["Notes", "Start Time", "SIDE", "Entry_Price", "Take Profit", "stop_loss"],
            ["first", T0, "Sell", 100.0, 90.0, 105.0],
        ],
    )
    trades = read_journal(path).trades
    assert trades.loc[0, ["entry_price", "stop_loss", "take_profit"]].tolist() == [100.0, 105.0, 90.0]
    assert list(trades.columns) == [
        "start_time",
        "entry_price",
        "side",
        "label",
        "stop_loss",
        "take_profit",
        "row",
    ]


def test_blank_rows_are_skipped_and_rows_keep_their_excel_numbers(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "blank.xlsx", [HEADER, [T0, 1.0, "Buy"], [None, None, None], [T0 + 60, 2.0, "Sell"]])
    journal = read_journal(path)
    assert journal.trades["row"].tolist() == [2, 4]
    assert journal.skipped_rows == 0


def test_unsorted_rows_are_sorted_with_a_warning(tmp_path: Path) -> None:
    path = _workbook(
        tmp_path / "unsorted.xlsx", [HEADER, [T0 + 120, 1.0, "Buy"], [T0, 2.0, "Sell"], [T0 + 60, 3.0, "Buy"]]
    )
    with pytest.warns(UserWarning, match="rows are not in time order; sorted them by start_time"):
        journal = read_journal(path)
    assert journal.trades["start_time"].tolist() == [T0, T0 + 60, T0 + 120]
    assert journal.trades["row"].tolist() == [3, 4, 2]
    assert journal.trades["entry_price"].tolist() == [2.0, 3.0, 1.0]


def test_sheet_name_is_chosen_and_matched_in_any_case(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "named.xlsx", [HEADER, [T0, 1.0, "Buy"]], sheet="Trades 2024")
    assert len(read_journal(path, sheet="Trades 2024").trades) == 1
    assert len(read_journal(path, sheet="trades 2024").trades) == 1


def test_meta_sheet_values_keep_their_types(tmp_path: Path) -> None:
    path = _workbook(
        tmp_path / "meta.xlsx",
        [HEADER, [T0, 1.0, "Buy"]],
        meta=[["key", "value"], ["horizon_seconds", 3600], ["fee", 0.001], ["symbol", "ETHUSDT"], ["empty", None]],
    )
    assert read_journal(path).meta == {"horizon_seconds": 3600, "fee": 0.001, "symbol": "ETHUSDT"}


# --- bad rows ---------------------------------------------------------------------------------------------

SKIP_HINT = "; fix the rows, or skip them with a warning each (--skip-bad-rows)"
TIME_HELP = "use Unix seconds, milliseconds, an Excel date-time (UTC) or an ISO datetime such as 2025-06-01T12:00"


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ([T0, 100.0, "hold"], "side is 'hold'; use Buy or Sell (or entry_price -1 for no trade)"),
        ([T0, 100.0, None], "side is empty; use Buy or Sell (or entry_price -1 for no trade)"),
        ([T0, 100.0, "Invalid"], "side is 'Invalid'; use Buy or Sell (or entry_price -1 for no trade)"),
        ([T0, 100.0, 1], "side is 1; use Buy or Sell (or entry_price -1 for no trade)"),
        ([T0, None, "Buy"], "entry_price is empty; give the fill price, or -1 for no trade (Invalid)"),
        ([T0, 0, "Buy"], "entry_price is 0; give a positive fill price, or -1 for no trade (Invalid)"),
        ([T0, -5.5, "Sell"], "entry_price is -5.5; give a positive fill price, or -1 for no trade (Invalid)"),
        ([T0, "abc", "Buy"], "entry_price is 'abc', not a number; give the fill price, or -1 for no trade"),
        ([T0, "3000,5", "Buy"], "entry_price is '3000,5', not a number; give the fill price, or -1 for no trade"),
        (["yesterday", 100.0, "Buy"], f"start_time is 'yesterday', not a time; {TIME_HELP}"),
        ([None, 100.0, "Buy"], f"start_time is empty; {TIME_HELP}"),
        (
            [45292.5, 100.0, "Buy"],
            f"start_time 45292.5 is before 1973: an Excel date without its date format, or a typo? {TIME_HELP}",
        ),
        ([True, 100.0, "Buy"], f"start_time is True, not a time; {TIME_HELP}"),
    ],
)
def test_bad_row_names_file_sheet_and_row(tmp_path: Path, row: list[Any], problem: str) -> None:
    path = _workbook(tmp_path / "bad.xlsx", [HEADER, [T0 - 60, 1.0, "Buy"], row])
    assert _error(path) == f"{path}: sheet 'tradesmain', row 3: {problem}{SKIP_HINT}"


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ([T0, 100.0, "Buy", 95.0, None], "stop_loss is given but take_profit is empty; give both or neither"),
        ([T0, 100.0, "Sell", None, 95.0], "take_profit is given but stop_loss is empty; give both or neither"),
        (
            [T0, 100.0, "Buy", 105.0, 110.0],
            "a Buy needs stop_loss < entry_price < take_profit, got stop_loss 105, entry_price 100, take_profit 110",
        ),
        (
            [T0, 100.0, "Buy", 95.0, 100.0],
            "a Buy needs stop_loss < entry_price < take_profit, got stop_loss 95, entry_price 100, take_profit 100",
        ),
        (
            [T0, 100.0, "sell", 95.0, 90.0],
            "a Sell needs take_profit < entry_price < stop_loss, got take_profit 90, entry_price 100, stop_loss 95",
        ),
        ([T0, 100.0, "Buy", "low", 110.0], "stop_loss is 'low'; give a positive price"),
        ([T0, 100.0, "Sell", 105.0, -3.0], "take_profit is -3; give a positive price"),
    ],
)
def test_bad_levels_name_the_row(tmp_path: Path, row: list[Any], problem: str) -> None:
    path = _workbook(tmp_path / "levels.xlsx", [LEVELS_HEADER, row])
    assert _error(path) == f"{path}: sheet 'tradesmain', row 2: {problem}{SKIP_HINT}"


def test_several_bad_rows_are_counted_in_the_message(tmp_path: Path) -> None:
    path = _workbook(
        tmp_path / "many.xlsx",
        [HEADER, [T0, 1.0, "Buy"], [T0, 1.0, "up"], ["soon", 1.0, "Buy"], [T0, 0, "Sell"], [T0, 2.0, "Sell"]],
    )
    assert _error(path) == (
        f"{path}: sheet 'tradesmain', row 3: side is 'up'; use Buy or Sell (or entry_price -1 for no trade) "
        f"(2 more bad rows: 4, 5){SKIP_HINT}"
    )


def test_skip_bad_rows_warns_per_row_and_counts(tmp_path: Path) -> None:
    path = _workbook(
        tmp_path / "skip.xlsx",
        [HEADER, [T0, 1.0, "Buy"], [T0 + 60, 1.0, "up"], ["soon", 1.0, "Buy"], [T0 + 180, 2.0, "Sell"]],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        journal = read_journal(path, skip_bad_rows=True)
    messages = [str(w.message) for w in caught]
    assert messages == [
        f"{path}: sheet 'tradesmain', row 3: side is 'up'; use Buy or Sell (or entry_price -1 for no trade); "
        "row skipped",
        f"{path}: sheet 'tradesmain', row 4: start_time is 'soon', not a time; {TIME_HELP}; row skipped",
    ]
    assert journal.skipped_rows == 2
    assert journal.trades["row"].tolist() == [2, 5]


def test_all_rows_bad_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "allbad.xlsx", [HEADER, [T0, 1.0, "up"], [T0, 0, "Buy"]])
    with pytest.warns(UserWarning):
        message = _error(path, skip_bad_rows=True)
    assert message == f"{path}: sheet 'tradesmain' has no valid trades: all 2 rows are bad (see the warnings)"


# --- bad files and sheets ---------------------------------------------------------------------------------


def test_wrong_sheet_lists_the_sheets_there(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "sheets.xlsx", [HEADER, [T0, 1.0, "Buy"]], sheet="Sheet1", meta=[["key", "value"]])
    assert _error(path) == (
        f"{path}: no sheet 'tradesmain'; the workbook has: Sheet1, meta. Choose the trades' sheet with --sheet"
    )


def test_missing_columns_lists_missing_and_present(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "cols.xlsx", [["start_time", "price", "direction"], [T0, 1.0, "Buy"]])
    assert _error(path) == (
        f"{path}: sheet 'tradesmain': missing column(s) entry_price, side in the header (row 1); the columns there "
        "are: start_time, price, direction. A journal needs start_time, entry_price and side (and optionally "
        "stop_loss and take_profit)"
    )


def test_stop_loss_without_take_profit_column(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "one.xlsx", [[*HEADER, "stop_loss"], [T0, 1.0, "Buy", 0.5]])
    assert _error(path) == (
        f"{path}: sheet 'tradesmain': has a stop_loss column but no take_profit column; give both or neither"
    )


def test_duplicate_column(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "dup.xlsx", [[*HEADER, "Side"], [T0, 1.0, "Buy", "Sell"]])
    assert _error(path) == (
        f"{path}: sheet 'tradesmain': column 'side' appears twice in the header (row 1, columns C and D); keep one"
    )


def test_header_only_is_an_empty_journal(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "empty.xlsx", [HEADER, [None, None, None]])
    assert _error(path) == (f"{path}: sheet 'tradesmain' has no trades below its header (row 1); add one trade per row")


def test_empty_sheet(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "blank.xlsx", [])
    assert _error(path) == (
        f"{path}: sheet 'tradesmain' is empty; its first row should name the columns start_time, entry_price and "
        "side (and optionally stop_loss and take_profit)"
    )


NOT_XLSX = "not an Excel .xlsx workbook"
SAVE_HINT = "save the journal from Excel as 'Excel Workbook (.xlsx)'"


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("csv_renamed.xlsx", b"start_time,entry_price,side\n1704110400,1.0,Buy\n", "BadZipFile"),
        ("random.xlsx", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "BadZipFile"),
        ("empty.xlsx", b"", "BadZipFile"),
        ("trades.csv", b"start_time,entry_price,side\n", "BadZipFile"),
    ],
)
def test_a_file_that_is_not_xlsx_is_a_data_error(tmp_path: Path, name: str, content: bytes, kind: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert _error(path) == f"{path}: {NOT_XLSX} ({kind}); {SAVE_HINT}"


def test_a_zip_that_is_not_a_workbook_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "archive.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    assert _error(path).startswith(f"{path}: {NOT_XLSX} (")


def test_an_old_xls_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "old.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504))  # the OLE2 signature of .xls files
    assert _error(path) == f"{path}: an old .xls workbook (BadZipFile); {SAVE_HINT}"


def test_missing_file_and_folder(tmp_path: Path) -> None:
    assert _error(tmp_path / "nope.xlsx") == f"{tmp_path / 'nope.xlsx'}: no such journal file"
    assert _error(tmp_path) == f"{tmp_path}: is a folder, not a journal file"


# --- writing ----------------------------------------------------------------------------------------------


def test_write_replaces_atomically_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "val.xlsx"
    first = pd.DataFrame({"start_time": [T0], "entry_price": [1.0], "side": ["Buy"]})
    write_journal(path, first)
    write_journal(path, pd.DataFrame({"start_time": [T0, T0 + 60], "entry_price": [1.0, 2.0], "side": ["Buy"] * 2}))
    assert len(read_journal(path).trades) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["val.xlsx"]


def test_a_failed_write_keeps_the_old_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "val.xlsx"
    write_journal(path, pd.DataFrame({"start_time": [T0], "entry_price": [1.0], "side": ["Buy"]}))

    save = openpyxl.Workbook.save

    def crash(self: openpyxl.Workbook, filename: str) -> None:
        whole = io.BytesIO()
        save(self, whole)  # type: ignore[arg-type]
        Path(filename).write_bytes(whole.getvalue()[:100])  # half a workbook, then the disk is full
        raise OSError("disk full")

    monkeypatch.setattr(openpyxl.Workbook, "save", crash)
    new = pd.DataFrame({"start_time": [T0, T0 + 60], "entry_price": [1.0, 2.0], "side": ["Buy", "Sell"]})
    with pytest.raises(WriteError, match=f"^{path}: cannot write \\(disk full\\); nothing was changed there$"):
        write_journal(path, new)
    monkeypatch.undo()
    assert len(read_journal(path).trades) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["val.xlsx"]


def test_a_bad_start_time_is_refused_before_writing(tmp_path: Path) -> None:
    bad = pd.DataFrame({"start_time": [T0, "never"], "entry_price": [1.0, 2.0], "side": ["Buy", "Sell"]})
    with pytest.raises(DataError) as error:
        write_journal(tmp_path / "val.xlsx", bad)
    assert (
        str(error.value)
        == f"cannot write journal {tmp_path / 'val.xlsx'}: start_time of trade 1 is 'never', not a time"
    )
    assert not (tmp_path / "val.xlsx").exists()


def test_write_accepts_datetimes_and_refuses_incomplete_frames(tmp_path: Path) -> None:
    stamps = pd.Series([datetime(2024, 1, 1, 13, 0, tzinfo=UTC)])
    write_journal(tmp_path / "d.xlsx", pd.DataFrame({"start_time": stamps, "entry_price": [1.0], "side": ["Sell"]}))
    assert read_journal(tmp_path / "d.xlsx").trades["start_time"].tolist() == [T0 + 3600]

    with pytest.raises(DataError) as error:
        write_journal(tmp_path / "x.xlsx", pd.DataFrame({"start_time": [T0], "side": ["Buy"]}))
    assert str(error.value) == (
        f"cannot write journal {tmp_path / 'x.xlsx'}: the trades lack entry_price (they have start_time, side)"
    )
    with pytest.raises(DataError) as error:
        write_journal(
            tmp_path / "x.xlsx",
            pd.DataFrame({"start_time": [T0], "entry_price": [1.0], "side": ["Buy"], "stop_loss": [0.5]}),
        )
    assert str(error.value) == (
        f"cannot write journal {tmp_path / 'x.xlsx'}: give both stop_loss and take_profit, or neither"
    )
    assert not (tmp_path / "x.xlsx").exists()
