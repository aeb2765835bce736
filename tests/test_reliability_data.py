"""Reliability, round two: the faults reported against the candle inputs, each with the behaviour a user relies
on. A CSV's symbol column, TRUE/FALSE values, pipes and FIFOs, timestamps beyond pandas' range (CSV and
journal), a column given twice, databases that are read-only or damaged, and unreadable paths: one line on
stderr, exit code 2, and the database as it was."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import openpyxl
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import dump_tables
from lstm_trading.cli import app
from lstm_trading.core.errors import DataError
from lstm_trading.data.candles import first_unreadable_time, validate_candles
from lstm_trading.data.csv import read_candles_csv
from lstm_trading.data.journal import read_journal
from lstm_trading.data.store import CandleStore

runner = CliRunner()

HEADER = "timestamp,open,high,low,close,volume\n"
GOOD_ROWS = (
    "2025-06-01 00:00:00,2500.0,2501.0,2499.0,2500.5,10.0\n"
    "2025-06-01 00:01:00,2500.5,2502.0,2500.0,2501.0,11.0\n"
    "2025-06-01 00:02:00,2501.0,2503.0,2500.5,2502.0,12.0\n"
)
T0 = 1_748_736_000  # 2025-06-01 00:00 UTC
FEED_RESCUE_S = 5.0  # a reader that opens a FIFO twice waits forever: after this, the test gives it an empty one
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def ingest(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, ["ingest", "csv", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def gaps(db: Path) -> tuple[int, str, str]:
    result = runner.invoke(app, ["gaps", "--db", str(db)])
    return result.exit_code, result.stdout, result.stderr


def write(tmp_path: Path, text: str, name: str = "candles.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def with_column(name: str, values: list[str]) -> str:
    """GOOD_ROWS with one more column."""
    rows = GOOD_ROWS.splitlines()
    return (
        HEADER.rstrip("\n")
        + f",{name}\n"
        + "".join(f"{row},{value}\n" for row, value in zip(rows, values, strict=True))
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database holding the three good minutes as ETHUSDT."""
    path = tmp_path / "c.db"
    assert ingest(write(tmp_path, HEADER + GOOD_ROWS, "good.csv"), "--db", path)[0] == 0
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_refused(result: tuple[int, str, str], message: str) -> None:
    code, out, err = result
    assert (code, out, err) == (2, "", f"error: {message}\n")


# --- 1. a symbol column agrees with --symbol, never ignored ---


def test_a_symbol_column_naming_another_symbol_is_refused(db: Path, tmp_path: Path) -> None:
    # regression: a BTCUSDT file imported with --symbol ETHUSDT was stored as ETHUSDT
    before = dump_tables(db)
    path = write(tmp_path, with_column("symbol", ["BTCUSDT"] * 3))
    assert_refused(
        ingest(path, "--db", db, "--symbol", "ETHUSDT"),
        f"{path}, line 2: symbol 'BTCUSDT' is not ETHUSDT, the --symbol the candles are stored under (the file "
        "holds BTCUSDT); import it with --symbol BTCUSDT",
    )
    assert dump_tables(db) == before
    code, out, _ = ingest(path, "--db", db, "--symbol", "BTCUSDT")
    assert code == 0 and out.startswith(f"BTCUSDT in {db}: 3 rows added")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            ["ETHUSDT", "BTCUSDT", "ETHUSDT"],
            "{path}, line 3: symbol 'BTCUSDT' is not ETHUSDT, the --symbol the candles are stored under (the file "
            "holds BTCUSDT, ETHUSDT); split the file, one per symbol",
        ),
        (
            ["ETHUSDT", "", "ETHUSDT"],
            "{path}, line 3: symbol is empty; a symbol column must name the symbol on every line",
        ),
    ],
)
def test_a_symbol_column_with_other_or_missing_symbols_is_refused(
    db: Path, tmp_path: Path, values: list[str], message: str
) -> None:
    before = dump_tables(db)
    path = write(tmp_path, with_column("Symbol", values))
    assert_refused(ingest(path, "--db", db), message.format(path=path))
    assert dump_tables(db) == before


def test_a_symbol_column_that_agrees_in_any_case_imports_under_the_given_symbol(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    code, out, err = ingest(write(tmp_path, with_column("symbol", [" ethusdt", "ETHUSDT", "EthUsdt "])), "--db", db)
    assert (code, err) == (0, "")
    assert out.startswith(f"ETHUSDT in {db}: 3 rows added")
    assert {row[0] for row in dump_tables(db)["candles"]} == {"ETHUSDT"}


def test_a_library_caller_cannot_mix_symbols_either(tmp_path: Path) -> None:
    path = write(tmp_path, with_column("symbol", ["ETHUSDT", "BTCUSDT", "ETHUSDT"]))
    with pytest.raises(DataError) as caught:
        read_candles_csv(path)
    assert (
        str(caught.value)
        == f"{path}: holds candles of several symbols (BTCUSDT, ETHUSDT); split the file, one per symbol"
    )
    frame = read_candles_csv(write(tmp_path, HEADER + GOOD_ROWS)).assign(symbol="BTCUSDT")
    with CandleStore(tmp_path / "lib.db", create=True) as store, pytest.raises(DataError) as caught:
        store.upsert("ETHUSDT", frame)
    assert str(caught.value) == (
        "candles for ETHUSDT, row 1: symbol 'BTCUSDT' is not ETHUSDT, the --symbol the candles are stored under "
        "(the file holds BTCUSDT); import it with --symbol BTCUSDT"
    )
    assert dump_tables(tmp_path / "lib.db")["candles"] == []


# --- 2. TRUE/FALSE is not a number ---


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (  # regression: stored as 1.0 and 0.0
            HEADER
            + GOOD_ROWS.replace(",10.0\n", ",True\n").replace(",11.0\n", ",False\n").replace(",12.0\n", ",TRUE\n"),
            "{path}, line 2: volume 'True' is not a number",
        ),
        (
            HEADER + "".join(line.rsplit(",", 2)[0] + ",true,1\n" for line in GOOD_ROWS.splitlines()),
            "{path}, line 2: close 'True' is not a number",
        ),
        (HEADER + GOOD_ROWS.replace(",11.0\n", ",False\n"), "{path}, line 3: volume 'False' is not a number"),
    ],
)
def test_true_and_false_values_are_refused_naming_file_line_and_column(
    db: Path, tmp_path: Path, text: str, message: str
) -> None:
    before = dump_tables(db)
    path = write(tmp_path, text)
    assert_refused(ingest(path, "--db", db), message.format(path=path))
    assert dump_tables(db) == before


def test_booleans_in_a_frame_are_refused_too() -> None:
    frame = pd.DataFrame(
        {"timestamp": [T0, T0 + 60], "open": [1.0, 1.0], "high": [2.0, 2.0], "low": [1.0, 1.0], "close": [1.0, 1.0]}
    )
    for volume, row in (([True, False], 1), ([1.0, True], 2)):
        with pytest.raises(DataError, match=rf"^x, row {row}: volume 'True' is not a number$"):
            validate_candles(frame.assign(volume=pd.Series(volume, dtype=object)), "x", unit="row", line_offset=1)


# --- 3. the input is read once: pipes, FIFOs, process substitution, gzip ---


@contextmanager
def fifo_feeding(path: Path, data: bytes) -> Iterator[None]:
    """A FIFO at `path` that a background thread fills with `data` once. A reader that opened it a second time
    would wait forever: after FEED_RESCUE_S the thread gives it an empty second feed, so the test fails instead."""
    os.mkfifo(path)
    finished = threading.Event()

    def feed() -> None:
        try:
            with open(path, "wb") as pipe:  # waits for the reader
                pipe.write(data)
            if not finished.wait(FEED_RESCUE_S):
                with open(path, "wb"):
                    pass
        except OSError:
            pass

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        finished.set()
        if thread.is_alive():  # nobody opened the FIFO: open it for reading, so the writer's open returns
            descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            thread.join(5)
            os.close(descriptor)


def test_a_csv_fifo_is_read_once(tmp_path: Path) -> None:
    # regression: the format sniff drained the FIFO, then pandas opened it again and waited forever
    fifo, db = tmp_path / "candles.fifo", tmp_path / "c.db"
    with fifo_feeding(fifo, (HEADER + GOOD_ROWS).encode()):
        code, out, err = ingest(fifo, "--db", db)
    assert (code, err) == (0, "")
    assert out.startswith(f"ETHUSDT in {db}: 3 rows added")


def test_a_process_substitution_is_read_once(tmp_path: Path) -> None:
    # regression: `ingest csv <(gzip -dc f.gz)` said "the file is empty"; /dev/fd/N is what bash passes
    if not Path("/dev/fd").is_dir():
        pytest.skip("no /dev/fd on this system")
    read_end, write_end = os.pipe()
    os.write(write_end, (HEADER + GOOD_ROWS).encode())  # fits the pipe's buffer
    os.close(write_end)
    db = tmp_path / "c.db"
    try:
        code, out, err = ingest(f"/dev/fd/{read_end}", "--db", db)
    finally:
        os.close(read_end)
    assert (code, err) == (0, "")
    assert out.startswith(f"ETHUSDT in {db}: 3 rows added")


def test_a_gzip_csv_is_decompressed_and_a_damaged_one_named(tmp_path: Path) -> None:
    import gzip

    packed = gzip.compress((HEADER + GOOD_ROWS).encode())
    path = tmp_path / "candles.csv.gz"
    path.write_bytes(packed)
    pd.testing.assert_frame_equal(read_candles_csv(path), read_candles_csv(write(tmp_path, HEADER + GOOD_ROWS)))
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError) as caught:
        read_candles_csv(path)
    assert str(caught.value).startswith(f"{path}: a damaged gzip file (")
    assert str(caught.value).endswith("); compress it again or give the plain CSV")


def test_a_journal_from_a_pipe_is_read(tmp_path: Path) -> None:
    # sibling: the journal reader refused anything but a regular file, calling a pipe "a folder"
    book = openpyxl.Workbook()
    assert book.active is not None
    book.active.title = "tradesmain"
    for row in (["start_time", "entry_price", "side"], [T0, 2500.0, "Buy"]):
        book.active.append(row)
    saved = tmp_path / "val.xlsx"
    book.save(saved)
    fifo = tmp_path / "val.fifo"
    with fifo_feeding(fifo, saved.read_bytes()):
        journal = read_journal(fifo)
    assert journal.trades["start_time"].tolist() == [T0]


def test_a_fifo_as_the_database_is_refused_at_once(tmp_path: Path) -> None:
    # sibling: opening it to check the header waited for a writer, forever
    fifo = tmp_path / "c.db"
    with fifo_feeding(fifo, b""):
        assert_refused(
            gaps(fifo),
            f"{fifo}: not a regular file (a pipe, socket or device); SQLite needs the database as a file on disk",
        )


# --- 4. timestamps beyond pandas' range: one line naming the file and the row ---


@pytest.mark.parametrize("stamp", ["2300-06-01 00:02:00", "9999-12-31 23:59:00", "1600-01-01 00:00:00"])
def test_csv_timestamps_beyond_pandas_range_name_the_line(db: Path, tmp_path: Path, stamp: str) -> None:
    # regression: pandas' OutOfBoundsDatetime traceback
    before = dump_tables(db)
    path = write(tmp_path, HEADER + GOOD_ROWS.replace("2025-06-01 00:02:00", stamp))
    assert_refused(
        ingest(path, "--db", db),
        f"{path}, line 4: timestamp '{stamp}' is outside 1970 to 2100; use Unix seconds, milliseconds or ISO datetimes",
    )
    assert dump_tables(db) == before


def test_the_first_unreadable_time_is_found_in_a_long_column() -> None:
    values = pd.Series(["2025-06-01 00:00:00"] * 5000, dtype=object)
    values[3210] = "2300-01-01"
    values[4000] = "also not a time"
    assert first_unreadable_time(values) == 3210


TIME_HELP = "use Unix seconds, milliseconds, an Excel date-time (UTC) or an ISO datetime such as 2025-06-01T12:00"
SKIP_HINT = "; fix the rows, or skip them with a warning each (--skip-bad-rows)"


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ("2300-01-01T00:00", "'2300-01-01T00:00'"),  # regression: OutOfBoundsDatetime traceback
        ("9999-12-31", "'9999-12-31'"),
        ("1600-01-01", "'1600-01-01'"),
        (datetime(9999, 12, 31), "9999-12-31 00:00:00"),  # an Excel date-time past 2100
        (1e20, "1e+20"),  # seconds far in the future
        (1e300, "1e+300"),  # overflows int64
    ],
)
def test_journal_start_times_beyond_the_candles_years_name_the_row(tmp_path: Path, cell: Any, shown: str) -> None:
    book = openpyxl.Workbook()
    assert book.active is not None
    book.active.title = "tradesmain"
    for row in (["start_time", "entry_price", "side"], [T0, 2500.0, "Buy"], [cell, 2500.0, "Buy"]):
        book.active.append(row)
    path = tmp_path / "val.xlsx"
    book.save(path)
    with pytest.raises(DataError) as caught:
        read_journal(path)
    assert str(caught.value) == (
        f"{path}: sheet 'tradesmain', row 3: start_time {shown} is outside 1973 to 2100, the years candles can "
        f"have: a typo? {TIME_HELP}{SKIP_HINT}"
    )
    with pytest.warns(UserWarning, match="row 3: start_time .* is outside 1973 to 2100"):
        assert read_journal(path, skip_bad_rows=True).trades["row"].tolist() == [2]


# --- 5. a column given twice ---


@pytest.mark.parametrize(
    ("header", "columns"),
    [
        ("timestamp,open,high,low,close,volume,Close", "(columns 5 and 7: 'close' and 'Close')"),  # regression
        ("timestamp,open,high,low,close,volume,close", "(columns 5 and 7: 'close' and 'close')"),
        ("timestamp,open,high,low,close,volume, VOLUME ", "(columns 6 and 7: 'volume' and ' VOLUME ')"),
    ],
)
def test_a_column_given_twice_is_refused_naming_both(db: Path, tmp_path: Path, header: str, columns: str) -> None:
    before = dump_tables(db)
    name = header.rsplit(",", 1)[1].strip().lower()
    path = write(tmp_path, header + "\n" + "".join(f"{row},2500.0\n" for row in GOOD_ROWS.splitlines()))
    assert_refused(ingest(path, "--db", db), f"{path}: column '{name}' appears twice in the header {columns}; keep one")
    assert dump_tables(db) == before


def test_a_symbol_column_given_twice_and_ignored_columns_given_twice() -> None:
    frame = pd.DataFrame(
        [[T0, 1.0, 2.0, 1.0, 1.0, 1.0, "ETHUSDT", "BTCUSDT", 7, 8]],
        columns=["timestamp", "open", "high", "low", "close", "volume", "symbol", "SYMBOL", "turnover", "Turnover"],
    )
    with pytest.raises(DataError) as caught:
        validate_candles(frame, "x")
    assert (
        str(caught.value)
        == "x: column 'symbol' appears twice in the header (columns 7 and 8: 'symbol' and 'SYMBOL'); keep one"
    )
    assert len(validate_candles(frame.drop(columns=["SYMBOL"]), "x")) == 1  # unknown columns may repeat: ignored


# --- 6. what is wrong with a database: read-only, damaged, or not one ---


def candle_db(path: Path, minutes: int = 3000) -> Path:
    """A database of the current schema with enough candles for several pages (WAL mode, as the tool makes it)."""
    m = np.arange(minutes)
    frame = pd.DataFrame(
        {"timestamp": T0 + 60 * m, "open": 2500.0 + m, "high": 2502.0 + m, "low": 2499.0 + m, "close": 2500.5 + m}
    ).assign(volume=10.0)
    with CandleStore(path, create=True) as store:
        store.upsert("ETHUSDT", frame)
    return path


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` (a file or a folder) not writable by this process: chmod, or as root, which ignores permissions,
    the immutable flag (`chattr +i`, which stops root too)."""
    if not AS_ROOT:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("runs as root, which ignores permissions, and cannot set the immutable flag (chattr +i) here")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def test_a_wal_database_in_a_read_only_folder_says_so(tmp_path: Path) -> None:
    # regression: "not a SQLite database"
    folder = tmp_path / "shared"
    folder.mkdir()
    path = candle_db(folder / "c.db")
    before, digest = dump_tables(path), sha256(path)
    message = (
        f"{path}: cannot read the database: the folder {folder} is read-only (not writable), and a database in WAL "
        f"mode needs to create c.db-shm there even to be read; make the folder writable, or copy the database into "
        "a writable folder"
    )
    with read_only(folder):
        assert_refused(gaps(path), message)
        assert_refused(ingest(write(tmp_path, HEADER + GOOD_ROWS), "--db", path), message)
    assert sha256(path) == digest
    assert dump_tables(path) == before


def test_a_read_only_database_file_is_read_but_not_written(tmp_path: Path) -> None:
    path = candle_db(tmp_path / "c.db")
    before = dump_tables(path)
    new_minutes = HEADER + "2025-06-10 00:00:00,2500.0,2501.0,2499.0,2500.5,10.0\n"
    with read_only(path):
        assert gaps(path)[0] == 0
        assert_refused(
            ingest(write(tmp_path, new_minutes), "--db", path),
            f"{path}: cannot write the database: the file is read-only (not writable), and writing candles needs to "
            "change it; make it writable, or use another --db",
        )
    assert dump_tables(path) == before


def recover_hint(path: Path) -> str:
    return (
        f"; restore it from a backup, or salvage what is readable with `sqlite3 {path} .recover | sqlite3 recovered.db`"
    )


def test_a_database_cut_to_a_third_is_damaged_not_foreign(tmp_path: Path) -> None:
    # regression: "not a SQLite database"
    path = candle_db(tmp_path / "c.db")
    size = path.stat().st_size
    os.truncate(path, size // 3)
    digest = sha256(path)
    message = (
        f"{path}: the database is damaged (PRAGMA integrity_check: database disk image is malformed); the file is cut "
        f"short: {size // 3:,} bytes, where its header records {size // 4096:,} pages of 4,096 bytes ({size:,} "
        f"bytes){recover_hint(path)}"
    )
    assert_refused(gaps(path), message)
    assert_refused(ingest(write(tmp_path, HEADER + GOOD_ROWS), "--db", path), message)
    assert sha256(path) == digest  # diagnosing never writes


def test_a_database_whose_first_page_is_overwritten_is_damaged(tmp_path: Path) -> None:
    # regression: "not a SQLite database"
    path = candle_db(tmp_path / "c.db")
    with path.open("r+b") as handle:
        handle.write(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    digest = sha256(path)
    assert_refused(
        gaps(path),
        f"{path}: the database is damaged (PRAGMA integrity_check: file is not a database); its first page, which "
        f"holds the SQLite header, is overwritten{recover_hint(path)}",
    )
    assert sha256(path) == digest


def test_a_database_whose_schema_page_is_overwritten_is_damaged(tmp_path: Path) -> None:
    path = candle_db(tmp_path / "c.db")
    with path.open("r+b") as handle:
        handle.seek(100)  # the header stays; the page after it, the schema, does not
        handle.write(np.random.default_rng(1).integers(0, 256, 4096 - 100, dtype=np.uint8).tobytes())
    digest = sha256(path)
    assert_refused(
        gaps(path),
        f"{path}: the database is damaged (PRAGMA integrity_check: database disk image is malformed)"
        + recover_hint(path),
    )
    assert sha256(path) == digest


def test_text_that_fills_whole_pages_is_still_not_a_database(tmp_path: Path) -> None:
    # the damage heuristic looks for SQLite pages; a text file of 8 KiB with a CR (13, a leaf page's first byte)
    # where a second page would start is still text
    data = bytearray((b"2025-06-01 00:00:00,2500.0,2501.0\n" * 300)[:8192])
    for offset in (512, 1024, 2048, 4096):
        data[offset] = 13
    path = tmp_path / "notes.db"
    path.write_bytes(bytes(data))
    assert_refused(gaps(path), f"{path}: not a SQLite database; give the candle database made by ingest")


def seed_with_damaged_pages(path: Path) -> None:
    """A seed-format table (no primary key, milliseconds) of 5,000 candles, two of its pages overwritten."""
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE candles (timestamp INTEGER, open REAL, high REAL, low REAL, close REAL, volume REAL, symbol TEXT)"
    )
    connection.executemany(
        "INSERT INTO candles VALUES (?, ?, ?, ?, ?, ?, 'ETHUSDT')",
        [((T0 + 60 * m) * 1000, 2500.0, 2501.0, 2499.0, 2500.5, 1.0) for m in range(5000)],
    )
    connection.commit()
    connection.close()
    with path.open("r+b") as handle:
        handle.seek(3 * 4096)
        handle.write(np.random.default_rng(2).integers(0, 256, 2 * 4096, dtype=np.uint8).tobytes())


def test_a_seed_database_with_damaged_pages_gives_one_line_in_gaps(tmp_path: Path) -> None:
    # regression: pandas' DatabaseError traceback (seed tables are read through pandas)
    path = tmp_path / "seed.db"
    seed_with_damaged_pages(path)
    digest = sha256(path)
    code, out, err = gaps(path)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {path}: the database is damaged (PRAGMA integrity_check: ")
    assert err.endswith(recover_hint(path) + "\n") and err.count("\n") == 1
    assert "*** in database" not in err  # the first line that names the problem, not the heading
    assert sha256(path) == digest


def test_migrating_a_damaged_seed_database_keeps_it_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "seed.db"
    seed_with_damaged_pages(path)
    digest = sha256(path)
    result = runner.invoke(app, ["db", "migrate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}: the database is damaged (PRAGMA integrity_check: ")
    assert sha256(path) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.db"]  # no backup, no half-migrated copy


@pytest.mark.skipif(AS_ROOT, reason="root reads files without read permission")
def test_an_unreadable_database_is_one_line(tmp_path: Path) -> None:
    # (the store's message; the shared --db option of the CLI still lets click check readability first)
    path = candle_db(tmp_path / "c.db")
    mode = path.stat().st_mode
    path.chmod(0)
    try:
        with pytest.raises(DataError) as caught:
            CandleStore(path)
    finally:
        path.chmod(mode)
    assert str(caught.value) == (
        f"{path}: cannot read the database (permission denied); make it readable, or give another --db"
    )


# --- 7. an unreadable CSV path: one line, not typer's usage box ---


def test_a_folder_as_the_csv_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "candles.csv"
    folder.mkdir()
    assert_refused(ingest(folder, "--db", tmp_path / "c.db"), f"{folder}: is a folder, not a CSV file")
    assert not (tmp_path / "c.db").exists()


def test_click_does_not_judge_the_csv_unreadable_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # regression: click's `os.access` check printed a 5-line usage box; as root it always passes, so it is
    # made to fail here: the reader alone decides (and here it can read the file)
    path = write(tmp_path, HEADER + GOOD_ROWS)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == path else real_access(p, mode, **kw))
    code, out, err = ingest(path, "--db", tmp_path / "c.db")
    assert (code, err) == (0, "")
    assert "3 rows added" in out


@pytest.mark.skipif(AS_ROOT, reason="root reads files and folders without read permission")
@pytest.mark.parametrize("kind", ["file", "folder"])
def test_an_unreadable_csv_is_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "candles.csv"
    if kind == "file":
        path.write_text(HEADER + GOOD_ROWS)
    else:
        path.mkdir()
    path.chmod(0)
    try:
        result = ingest(path, "--db", tmp_path / "c.db")
    finally:
        path.chmod(0o700)
    expected = "cannot read the file (permission denied); make it readable, or give another file"
    assert_refused(result, f"{path}: {expected if kind == 'file' else 'is a folder, not a CSV file'}")
