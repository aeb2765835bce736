"""CSV import end to end: the real candle files, every bad input with its message, and the CLI commands
`ingest csv`, `gaps` and `db migrate` (in-process, with typer's CliRunner)."""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import dump_tables
from lstm_trading.cli import app
from lstm_trading.core.errors import DataError
from lstm_trading.core.timeutil import parse_moment
from lstm_trading.data.candles import find_gaps
from lstm_trading.data.csv import read_candles_csv
from lstm_trading.data.store import CandleStore

runner = CliRunner()

HEADER = "timestamp,open,high,low,close,volume\n"
GOOD_ROWS = (
    "2025-06-01 00:00:00,2500.0,2501.0,2499.0,2500.5,10.0\n"
    "2025-06-01 00:01:00,2500.5,2502.0,2500.0,2501.0,11.0\n"
    "2025-06-01 00:02:00,2501.0,2503.0,2500.5,2502.0,12.0\n"
)


def ingest(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, ["ingest", "csv", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def write(tmp_path: Path, text: str, name: str = "candles.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- the real files ---


def test_bybit_file_reads_every_row_including_the_still_forming_last_one(bybit_csv: Path) -> None:
    candles = read_candles_csv(bybit_csv)
    assert len(candles) == 44_613
    assert candles["timestamp"].iloc[0] == parse_moment("2025-05-29 17:06")
    assert candles["timestamp"].iloc[-1] == parse_moment("2025-06-29 16:38")
    assert find_gaps(candles["timestamp"].to_numpy()) == []


def test_binance_file_imports_and_reports_its_one_270_minute_gap(binance_gap_csv: Path, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    code, out, err = ingest(binance_gap_csv, "--db", db, "--exchange", "binance", "--market", "spot")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"ETHUSDT in {db}: 50,000 rows added, 0 already present, 0 conflicts",
        "held: 2021-08-09 03:00 UTC to 2021-09-13 00:49 UTC (50,000 candles)",
        "gaps: 1 gap, 270 missing minutes; largest: 270 min from 2021-08-13 02:00 UTC",
        "long gaps (over 60 minutes): 1, 270 missing minutes, the longest 270 from 2021-08-13 02:00 UTC; each "
        "starts a new segment whose indicators restart and whose first 8,000 minutes of warm-up are not traded or "
        "trained on",
    ]
    with CandleStore(db) as store:
        assert [(gap.minutes, gap.first_missing) for gap in store.gaps("ETHUSDT")] == [
            (270, parse_moment("2021-08-13 02:00"))
        ]
        assert store.symbol_info("ETHUSDT") == ("binance", "spot")


def test_five_minute_file_is_refused_saying_so(bybit_5m_csv: Path, tmp_path: Path) -> None:
    code, out, err = ingest(bybit_5m_csv, "--db", tmp_path / "c.db")
    assert code == 2
    assert err == (
        f"error: {bybit_5m_csv}: holds 5-minute bars (25,919 of 25,919 steps between rows are 5 minutes); "
        "the store holds 1-minute candles only: use a file of 1-minute candles\n"
    )
    assert not (tmp_path / "c.db").exists()


def test_importing_the_same_file_twice_changes_nothing(bybit_csv: Path, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    assert ingest(bybit_csv, "--db", db)[0] == 0
    before = dump_tables(db)
    code, out, _ = ingest(bybit_csv, "--db", db)
    assert code == 0
    assert out.splitlines()[0] == f"ETHUSDT in {db}: 0 rows added, 44,613 already present, 0 conflicts"
    assert dump_tables(db) == before


def test_overlapping_file_adds_only_new_minutes(bybit_csv: Path, tmp_path: Path) -> None:
    lines = bybit_csv.read_text().splitlines(keepends=True)
    early = write(tmp_path, "".join(lines[:30_001]), "early.csv")  # header and the first 30,000 candles
    late = write(tmp_path, lines[0] + "".join(lines[20_001:]), "late.csv")  # candles 20,001 to the end
    db = tmp_path / "c.db"
    assert ingest(early, "--db", db)[1].splitlines()[0].endswith("30,000 rows added, 0 already present, 0 conflicts")
    out = ingest(late, "--db", db)[1].splitlines()
    assert out[0].endswith("14,613 rows added, 10,000 already present, 0 conflicts")
    assert out[1] == "held: 2025-05-29 17:06 UTC to 2025-06-29 16:38 UTC (44,613 candles)"
    with CandleStore(db) as store:
        pd.testing.assert_frame_equal(store.read("ETHUSDT"), read_candles_csv(bybit_csv))


def test_conflicting_minutes_are_reported_and_kept_unless_replace(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    ingest(write(tmp_path, HEADER + GOOD_ROWS), "--db", db)
    before = dump_tables(db)
    changed = GOOD_ROWS.replace("2500.5,10.0", "2500.7,10.0").replace("2502.0,12.0", "2502.0,99.0")
    changed += "2025-06-01 00:03:00,2502.0,2503.0,2501.0,2502.5,13.0\n"
    other = write(tmp_path, HEADER + changed, "other.csv")
    code, out, _ = ingest(other, "--db", db)
    assert code == 0
    assert out.splitlines()[:2] == [
        f"ETHUSDT in {db}: 1 rows added, 1 already present, 2 conflicts",
        "conflicts: 2 stored minutes have other values, first 2025-06-01 00:00 UTC; "
        "kept as stored (use --replace to overwrite)",
    ]
    after = dump_tables(db)
    assert after["candles"][:3] == before["candles"]  # the stored minutes are untouched, one minute was added

    code, out, _ = ingest(other, "--db", db, "--replace")
    assert code == 0
    assert out.splitlines()[1] == "conflicts: 2 stored minutes have other values, first 2025-06-01 00:00 UTC; replaced"
    with CandleStore(db) as store:
        stored = store.read("ETHUSDT")
    assert stored["close"].tolist() == [2500.7, 2501.0, 2502.0, 2502.5]
    assert stored["volume"].tolist() == [10.0, 11.0, 99.0, 13.0]
    assert ingest(other, "--db", db)[1].splitlines()[0].endswith("0 rows added, 4 already present, 0 conflicts")


# --- timestamps and harmless quirks ---


@pytest.mark.parametrize(
    "stamps",
    [
        ("1748736000", "1748736060", "1748736120"),
        ("1748736000000", "1748736060000", "1748736120000"),
        ("2025-06-01 00:00:00", "2025-06-01 00:01:00", "2025-06-01 00:02:00"),
        ("2025-06-01 00:00:00+00:00", "2025-06-01T00:01:00Z", "2025-06-01 02:02:00+02:00"),
    ],
)
def test_seconds_milliseconds_and_iso_times_store_the_same_candles(tmp_path: Path, stamps: tuple[str, ...]) -> None:
    rows = [line.split(",", 1)[1] for line in GOOD_ROWS.splitlines()]
    text = HEADER + "".join(f"{stamp},{row}\n" for stamp, row in zip(stamps, rows, strict=True))
    candles = read_candles_csv(write(tmp_path, text))
    assert candles["timestamp"].tolist() == [1_748_736_000, 1_748_736_060, 1_748_736_120]


def test_bom_capitalised_header_extra_columns_and_blank_lines_are_fine(tmp_path: Path) -> None:
    text = "\ufeffTimestamp,Open,High,Low,Close,Volume,Turnover\n" + "".join(
        f"{line},1.0\n" + ("\n" if i == 0 else "") for i, line in enumerate(GOOD_ROWS.splitlines())
    )
    assert len(read_candles_csv(write(tmp_path, text))) == 3
    # A blank line does not shift the line numbers in messages.
    bad = text.replace("2502.0,2500.0,2501.0", "2502.0,abc,2501.0")
    with pytest.raises(DataError, match=r"candles\.csv, line 4: low 'abc' is not a number"):
        read_candles_csv(write(tmp_path, bad))


def test_unsorted_and_duplicated_lines_are_repaired_with_warnings(tmp_path: Path) -> None:
    rows = GOOD_ROWS.splitlines(keepends=True)
    path = write(tmp_path, HEADER + rows[1] + rows[0] + rows[2] + rows[2])
    code, out, err = ingest(path, "--db", tmp_path / "c.db")
    assert code == 0
    assert err.splitlines() == [
        f"warning: {path}: rows are not in time order (first at line 3); sorted them",
        f"warning: {path}: dropped 1 exact duplicate row (first at line 5)",
    ]
    assert "3 rows added" in out


# --- bad input: one line, exit code 2, the database unchanged ---

BAD_FILES = {
    "missing column": (
        "timestamp,open,high,low,close\n2025-06-01 00:00:00,1,2,1,1\n",
        "{path}: missing column volume (columns found: 'timestamp', 'open', 'high', 'low', 'close'); "
        "the first line must be the header timestamp,open,high,low,close,volume",
    ),
    "text in a price": (
        HEADER + GOOD_ROWS.replace("2500.5,2502.0,2500.0", "2500.5,2.5O2,2500.0"),
        "{path}, line 3: high '2.5O2' is not a number",
    ),
    "NaN": (
        HEADER + GOOD_ROWS.replace("2502.0,12.0", "NaN,12.0"),
        "{path}, line 4: close is missing (empty or NaN); fill it in or remove the line "
        "(gaps are allowed, half candles are not)",
    ),
    "empty field": (
        HEADER + GOOD_ROWS.replace(",11.0", ","),
        "{path}, line 3: volume is missing (empty or NaN); fill it in or remove the line "
        "(gaps are allowed, half candles are not)",
    ),
    "zero price": (
        HEADER + GOOD_ROWS.replace("2499.0", "0"),
        "{path}, line 2: low is 0.0; prices must be above 0",
    ),
    "negative price": (
        HEADER + GOOD_ROWS.replace("2501.0,2503.0,", "-2501.0,2503.0,"),
        "{path}, line 4: open is -2501.0; prices must be above 0",
    ),
    "high below low": (
        HEADER + GOOD_ROWS.replace("2500.5,2502.0,2500.0", "2500.5,2499.0,2500.0"),
        "{path}, line 3: high 2499.0 is below low 2500.0",
    ),
    "huge value": (
        HEADER + GOOD_ROWS.replace("12.0", "1e400"),
        "{path}, line 4: volume inf is not a finite number in range (features are float32: at most 3.4e38)",
    ),
    "duplicate minute with other values": (
        HEADER + GOOD_ROWS + "2025-06-01 00:01:00,2500.5,2502.0,2500.0,2501.5,11.0\n",
        "{path}, lines 3 and 5: two different candles for 2025-06-01 00:01 UTC; "
        "keep the right one and remove the other",
    ),
    "seconds inside a minute": (
        HEADER + GOOD_ROWS.replace("00:01:00", "00:01:30"),
        "{path}, line 3: timestamp '2025-06-01 00:01:30' is not on a minute boundary (1748736090 s); "
        "1-minute candles are keyed by the minute they open",
    ),
    "timestamp as text": (
        HEADER + GOOD_ROWS.replace("2025-06-01 00:02:00", "June 1st"),
        "{path}, line 4: timestamp 'June 1st' is not a time; use Unix seconds, milliseconds or ISO datetimes "
        "such as 2025-06-01 12:00:00+00:00 (UTC)",
    ),
    "TRUE as a timestamp (pandas reads the column as booleans)": (
        HEADER + "TRUE,1,1,1,1,1\nFALSE,1,1,1,1,1\n",
        "{path}, line 2: timestamp 'True' is not a time; use Unix seconds, milliseconds or ISO datetimes "
        "such as 2025-06-01 12:00:00+00:00 (UTC)",
    ),
    "too many fields": (
        HEADER + GOOD_ROWS + "2025-06-01 00:03:00,1,2,1,1,1,7\n",
        "{path}, line 5: 7 fields where the header has 6; is this a comma-separated candle file?",
    ),
    "empty file": (
        "",
        "{path}: the file is empty; a candle CSV needs the header timestamp,open,high,low,close,volume "
        "and one line per minute",
    ),
    "header only": (
        HEADER,
        "{path}: no candles (only a header); a candle file needs one line per minute: "
        "timestamp,open,high,low,close,volume",
    ),
    "not a CSV": (
        '{"candles": [1, 2, 3]}\n',
        "{path}: missing columns timestamp, open, high, low, close, volume (columns found: "
        "'{{\"candles\": [1', ' 2', ' 3]}}'); the first line must be the header timestamp,open,high,low,close,volume",
    ),
    "semicolons": (
        HEADER.replace(",", ";") + GOOD_ROWS.replace(",", ";"),
        "{path}: missing columns timestamp, open, high, low, close, volume (columns found: "
        "'timestamp;open;high;low;close;volume'); the first line must be the header "
        "timestamp,open,high,low,close,volume",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_csv_gives_one_line_and_leaves_the_database_as_it_was(tmp_path: Path, case: str) -> None:
    db = tmp_path / "c.db"
    ingest(write(tmp_path, HEADER + GOOD_ROWS, "good.csv"), "--db", db)
    before = dump_tables(db)
    text, message = BAD_FILES[case]
    path = write(tmp_path, text)
    code, out, err = ingest(path, "--db", db)
    assert code == 2
    assert err == f"error: {message.format(path=path)}\n"
    assert out == ""
    assert dump_tables(db) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x01\x02binary\xff", "{path}: not a CSV text file (it holds binary data)"),
        (b"PK\x03\x04rest of a zip", "{path}: is a ZIP or Excel file, not a CSV file; export the sheet as CSV first"),
        (b"SQLite format 3\x00" + bytes(100), "{path}: is a SQLite database, not a CSV file; read databases with --db"),
        (HEADER.encode() + "2025-06-01 00:00:00,25\xe9,1,1,1,1\n".encode("latin-1"), "{path}: not a CSV text file"),
    ],
)
def test_files_that_are_not_csv_text_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "candles.csv"
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        read_candles_csv(path)
    assert str(caught.value).startswith(message.format(path=path))


def test_missing_file_is_named(tmp_path: Path) -> None:
    code, _, err = ingest(tmp_path / "nope.csv", "--db", tmp_path / "c.db")
    assert (code, err) == (2, f"error: {tmp_path / 'nope.csv'}: no such file\n")
    assert not (tmp_path / "c.db").exists()


def test_exchange_and_market_go_together_and_markets_never_mix(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    good = write(tmp_path, HEADER + GOOD_ROWS)
    code, _, err = ingest(good, "--db", db, "--exchange", "bybit")
    assert (code, err) == (2, "error: give --exchange and --market together, e.g. --exchange bybit --market linear\n")
    code, _, err = ingest(good, "--db", db, "--exchange", "bybit", "--market", "futures")
    assert (code, err) == (2, "error: --market: must be one of spot, linear, got 'futures'\n")
    assert ingest(good, "--db", db, "--exchange", "Bybit", "--market", "linear")[0] == 0
    before = dump_tables(db)
    code, _, err = ingest(good, "--db", db, "--exchange", "binance", "--market", "spot")
    assert code == 2
    assert err == (
        f"error: {db}: ETHUSDT holds bybit linear candles, not binance spot; two markets never mix under one name: "
        "use another --symbol or another --db\n"
    )
    assert dump_tables(db) == before


def test_candles_of_no_recorded_market_are_named_when_a_market_adopts_them(tmp_path: Path) -> None:
    # regression: a Bybit CSV imported without --exchange, then a Binance spot CSV with it, mixed both under
    # ETHUSDT without a word, and the Bybit candles were recorded as Binance spot
    db = tmp_path / "c.db"
    good = write(tmp_path, HEADER + GOOD_ROWS)
    assert ingest(good, "--db", db)[0] == 0
    code, _, err = ingest(good, "--db", db, "--exchange", "binance", "--market", "spot")
    assert code == 0
    assert err == (
        f"warning: {db}: ETHUSDT already holds 3 candles imported without --exchange; they are now recorded as "
        "binance spot: if they came from another market, move them under another --symbol or --db\n"
    )
    assert ingest(good, "--db", db, "--exchange", "binance", "--market", "spot")[2] == ""  # recorded: once only


# --- gaps and db migrate ---


def test_gaps_command_lists_each_gap_and_a_total(binance_gap_csv: Path, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    ingest(binance_gap_csv, "--db", db)
    result = runner.invoke(app, ["gaps", "--db", str(db), "--symbol", "ETHUSDT"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"ETHUSDT in {db}: 2021-08-09 03:00 UTC to 2021-09-13 00:49 UTC (50,000 candles)"
    assert any("2021-08-13 02:00 UTC" in line and "2021-08-13 06:29 UTC" in line and "270" in line for line in lines)
    assert any("total: 1 gap" in line and "270" in line for line in lines)

    after_gap = runner.invoke(app, ["gaps", "--db", str(db), "--start", "2021-08-14"])
    assert after_gap.stdout.splitlines()[1:] == ["no gaps"]


def test_gaps_command_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["gaps", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {tmp_path / 'none.db'}: no such database; import candles first with "
        f"`lstm-trading ingest csv FILE --db {tmp_path / 'none.db'}`\n"
    )
    db = tmp_path / "c.db"
    ingest(write(tmp_path, HEADER + GOOD_ROWS), "--db", db)
    result = runner.invoke(app, ["gaps", "--db", str(db), "--symbol", "BTCUSDT"])
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: {db}: no candles for BTCUSDT (symbols held: ETHUSDT); choose one with --symbol\n",
    )


def make_seed(path: Path) -> None:
    """A database as the original script wrote it: no primary key, milliseconds, an extra column."""
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE candles (timestamp INTEGER, open REAL, high REAL, low REAL, close REAL, volume REAL, "
        "symbol TEXT, turnover REAL)"
    )
    rows = [
        (1_748_736_060_000, 2500.5, 2502.0, 2500.0, 2501.0, 11.0, "ETHUSDT", 1.0),
        (1_748_736_000_000, 2500.0, 2501.0, 2499.0, 2500.5, 10.0, "ETHUSDT", 1.0),
        (1_748_736_180_000, 2502.0, 2503.0, 2501.0, 2502.5, 13.0, "ETHUSDT", 1.0),
    ]
    connection.executemany("INSERT INTO candles VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    connection.commit()
    connection.close()


def test_ingest_into_a_seed_database_is_refused_naming_db_migrate(tmp_path: Path) -> None:
    db = tmp_path / "seed.db"
    make_seed(db)
    before = dump_tables(db)
    code, _, err = ingest(write(tmp_path, HEADER + GOOD_ROWS), "--db", db)
    assert code == 2
    assert f"run `lstm-trading db migrate {db}` to copy it into the current schema" in err
    assert len(err.splitlines()) == 1
    assert dump_tables(db) == before


def test_db_migrate_command_then_ingest_works(tmp_path: Path) -> None:
    db = tmp_path / "seed.db"
    make_seed(db)
    result = runner.invoke(app, ["db", "migrate", str(db)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"migrated {db} -> {db}: ETHUSDT 3 candles",
        "dropped columns: turnover",
        f"original kept as {db}.bak",
    ]
    code, out, _ = ingest(write(tmp_path, HEADER + GOOD_ROWS), "--db", db)
    assert code == 0
    assert out.splitlines()[0] == f"ETHUSDT in {db}: 1 rows added, 2 already present, 0 conflicts"
    again = runner.invoke(app, ["db", "migrate", str(db)])
    assert again.stdout == f"{db}: already in the current schema; nothing to do\n"


def test_db_migrate_to_another_file_keeps_the_source(tmp_path: Path) -> None:
    db, new = tmp_path / "seed.db", tmp_path / "new.db"
    make_seed(db)
    before = dump_tables(db)
    result = runner.invoke(app, ["db", "migrate", str(db), "--out", str(new)])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == f"migrated {db} -> {new}: ETHUSDT 3 candles"
    assert dump_tables(db) == before
    again = runner.invoke(app, ["db", "migrate", str(db), "--out", str(new)])
    assert (again.exit_code, again.stderr) == (2, f"error: {new}: already exists; choose another --out or remove it\n")


# --- random input: a clean import or a clean error, never a crash ---

T_RANDOM = 1_748_736_000

_FIELDS = st.one_of(
    st.sampled_from(["", "nan", "inf", "-1", "0", "1e400", "abc", "2025-06-01 00:00:00", "2025-06-01T00:00:30Z"]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=0, max_value=600).map(lambda m: str(T_RANDOM + 60 * m)),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(_FIELDS, min_size=4, max_size=7), max_size=8))
def test_random_rows_import_cleanly_or_fail_cleanly(tmp_path: Path, rows: list[list[str]]) -> None:
    path = tmp_path / "random.csv"
    path.write_text(HEADER + "".join(",".join(row) + "\n" for row in rows), encoding="utf-8")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = read_candles_csv(path)
    except DataError as error:
        assert str(error).startswith(str(path))
        return
    stamps = frame["timestamp"].to_numpy()
    assert (stamps % 60 == 0).all() and (np.diff(stamps) > 0).all()
    assert (frame[["open", "high", "low", "close"]].to_numpy() > 0).all() and (frame["volume"] >= 0).all()
    assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()
    assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300))
def test_random_bytes_never_crash_the_reader(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "random.csv"
    path.write_bytes(content)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_candles_csv(path)
    except DataError as error:
        assert str(error).startswith(str(path))
