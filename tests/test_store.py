"""The SQLite candle store: schema, sorted reads, idempotent upserts, all-or-nothing writes, locks, WAL, and
seed databases (read as they are, refused for writing, migrated)."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import dump_tables
from lstm_trading.core.errors import ConfigError, DataError
from lstm_trading.data.candles import Gap
from lstm_trading.data.store import CandleStore, UpsertResult, migrate_database

T0 = 1_748_736_000  # 2025-06-01 00:00 UTC


def candles(minutes: list[int] | range, shift: float = 0.0) -> pd.DataFrame:
    """Valid candles at T0 + minute * 60; `shift` moves every price (other values for the same minutes)."""
    m = np.asarray(list(minutes), dtype=np.int64)
    base = 2500.0 + m.astype(np.float64) + shift
    return pd.DataFrame(
        {
            "timestamp": T0 + 60 * m,
            "open": base,
            "high": base + 2.0,
            "low": base - 1.0,
            "close": base + 0.5,
            "volume": 10.0 + m,
        }
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "c.db"
    with CandleStore(path, create=True) as store:
        store.upsert("ETHUSDT", candles(range(10)))
    return path


# --- schema and reads ---


def test_schema_is_the_designs_and_the_seed_query_works(db: Path) -> None:
    connection = sqlite3.connect(db)
    info = connection.execute("PRAGMA table_info(candles)").fetchall()
    assert [(row[1], row[2], row[5]) for row in info] == [
        ("symbol", "TEXT", 1),
        ("timestamp", "INTEGER", 2),
        ("open", "REAL", 0),
        ("high", "REAL", 0),
        ("low", "REAL", 0),
        ("close", "REAL", 0),
        ("volume", "REAL", 0),
    ]
    rows = connection.execute("SELECT * FROM candles WHERE symbol = 'ETHUSDT'").fetchall()
    assert len(rows) == 10 and rows[0][:3] == ("ETHUSDT", T0, 2500.0)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()


def test_read_returns_a_sorted_candle_frame_for_a_time_range(db: Path) -> None:
    with CandleStore(db) as store:
        store.upsert("ETHUSDT", candles([12, 15]))
        everything = store.read("ETHUSDT")
        assert everything["timestamp"].tolist() == [T0 + 60 * m for m in [*range(10), 12, 15]]
        assert everything["timestamp"].dtype == np.int64 and everything["close"].dtype == np.float64
        pd.testing.assert_frame_equal(store.read("ETHUSDT", T0 + 120, T0 + 300), candles([2, 3, 4]))
        assert store.read("ETHUSDT", T0 + 130, T0 + 181)["timestamp"].tolist() == [T0 + 180]
        assert store.read("BTCUSDT").empty


def test_read_last_gives_the_last_rows_before_end(db: Path) -> None:
    with CandleStore(db) as store:
        pd.testing.assert_frame_equal(store.read_last("ETHUSDT", 3, end=T0 + 300), candles([2, 3, 4]))
        pd.testing.assert_frame_equal(store.read_last("ETHUSDT", 2), candles([8, 9]))
        assert len(store.read_last("ETHUSDT", 100)) == 10
        assert store.read_last("ETHUSDT", 0).empty


def test_time_range_symbols_and_gaps(db: Path) -> None:
    with CandleStore(db) as store:
        store.upsert("ETHUSDT", candles([13, 14, 20]))
        store.upsert("BTCUSDT", candles([0]))
        assert store.time_range("ETHUSDT") == (T0, T0 + 20 * 60, 13)
        assert store.time_range("SOLUSDT") is None
        assert store.symbols() == ["BTCUSDT", "ETHUSDT"]
        assert store.gaps("ETHUSDT") == [Gap(T0 + 600, T0 + 720, 3), Gap(T0 + 900, T0 + 1140, 5)]
        assert store.gaps("ETHUSDT", start=T0 + 780) == [Gap(T0 + 900, T0 + 1140, 5)]
        assert store.gaps("ETHUSDT", end=T0 + 600) == []


# --- upserts ---


def test_upsert_is_idempotent(db: Path) -> None:
    before = dump_tables(db)
    with CandleStore(db) as store:
        result = store.upsert("ETHUSDT", candles(range(10)))
    assert result == UpsertResult(0, 10, 0, 0, None, T0, T0 + 540)
    assert dump_tables(db) == before


def test_overlapping_upsert_adds_only_new_minutes(db: Path) -> None:
    with CandleStore(db) as store:
        result = store.upsert("ETHUSDT", candles(range(5, 15)))
        assert (result.added, result.already_present, result.conflicts) == (5, 5, 0)
        pd.testing.assert_frame_equal(store.read("ETHUSDT"), candles(range(15)))


def test_conflicts_are_counted_and_kept_unless_replace(db: Path) -> None:
    incoming = pd.concat([candles([3, 4]), candles([5, 6, 7], shift=0.25), candles([10])], ignore_index=True)
    with CandleStore(db) as store:
        result = store.upsert("ETHUSDT", incoming)
        assert result == UpsertResult(1, 2, 3, 0, T0 + 300, T0 + 180, T0 + 600)
        pd.testing.assert_frame_equal(store.read("ETHUSDT"), candles(range(11)))

        result = store.upsert("ETHUSDT", incoming, replace=True)
        assert result == UpsertResult(0, 3, 3, 3, T0 + 300, T0 + 180, T0 + 600)
        expected = pd.concat([candles(range(5)), candles([5, 6, 7], shift=0.25), candles([8, 9, 10])])
        pd.testing.assert_frame_equal(store.read("ETHUSDT"), expected.reset_index(drop=True))


def test_symbols_are_kept_apart(db: Path) -> None:
    with CandleStore(db) as store:
        result = store.upsert("ETHUSDT_SPOT", candles(range(3), shift=1.0))
        assert result.added == 3
        pd.testing.assert_frame_equal(store.read("ETHUSDT"), candles(range(10)))


def test_upsert_checks_the_candle_rules(db: Path) -> None:
    before = dump_tables(db)
    bad = candles(range(3))
    bad.loc[1, "high"] = 1.0
    with CandleStore(db) as store, pytest.raises(DataError, match=r"^binance page, row 2: high 1\.0 is below low"):
        store.upsert("ETHUSDT", bad, source="binance page")
    assert dump_tables(db) == before


def test_an_error_inside_the_transaction_leaves_every_table_as_it_was(db: Path) -> None:
    # A trigger fails the insert halfway through the new rows, after the symbol was registered.
    connection = sqlite3.connect(db)
    connection.execute(
        f"CREATE TRIGGER fail BEFORE INSERT ON candles WHEN NEW.timestamp = {T0 + 15 * 60} "
        "BEGIN SELECT RAISE(ABORT, 'disk trouble'); END"
    )
    connection.commit()
    connection.close()
    before = dump_tables(db)
    adopted = pytest.warns(UserWarning, match="already holds 10 candles imported without --exchange")
    with CandleStore(db) as store, adopted, pytest.raises(DataError, match="disk trouble"):
        store.upsert("ETHUSDT", candles(range(5, 20), shift=0.5), replace=True, exchange="bybit", market="linear")
    assert dump_tables(db) == before


def test_register_symbol_refuses_a_second_market_under_one_name(db: Path) -> None:
    with CandleStore(db) as store:
        store.register_symbol("ETHUSDT", "Bybit", "linear")
        store.register_symbol("ETHUSDT", "bybit", "LINEAR")  # the same again: nothing to do
        assert store.symbol_info("ETHUSDT") == ("bybit", "linear")
        with pytest.raises(DataError) as caught:
            store.upsert("ETHUSDT", candles([10]), exchange="binance", market="spot")
        assert str(caught.value) == (
            f"{db}: ETHUSDT holds bybit linear candles, not binance spot; two markets never mix under one name: "
            "use another --symbol or another --db"
        )
        with pytest.raises(ConfigError, match="--market: must be one of spot, linear, got 'perp'"):
            store.register_symbol("BTCUSDT", "bybit", "perp")
        assert store.time_range("ETHUSDT") == (T0, T0 + 540, 10)


# --- locks and WAL ---


def test_a_long_lock_by_another_writer_gives_a_clear_error(db: Path) -> None:
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with CandleStore(db, timeout=0.05) as store, pytest.raises(DataError) as caught:
            store.upsert("ETHUSDT", candles([10]))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert str(caught.value) == (
        f"{db}: the database is locked by another writer (waited 0.05 s); "
        "try again when the other import or download has finished"
    )


def test_a_short_lock_is_waited_for(db: Path) -> None:
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.05, lambda: other.execute("COMMIT"))
    release.start()
    try:
        with CandleStore(db, timeout=30) as store:
            assert store.upsert("ETHUSDT", candles([10])).added == 1
    finally:
        release.join()
        other.close()


def test_readers_see_a_consistent_snapshot_while_a_writer_is_busy(db: Path) -> None:
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO candles VALUES ('ETHUSDT', ?, 1, 1, 1, 1, 1)", (T0 + 6000,))
    try:
        with CandleStore(db, timeout=0.05) as store:
            assert len(store.read("ETHUSDT")) == 10
    finally:
        writer.execute("ROLLBACK")
        writer.close()


# --- files that are not candle databases ---


def test_missing_database_without_create(tmp_path: Path) -> None:
    path = tmp_path / "none.db"
    with pytest.raises(DataError) as caught:
        CandleStore(path)
    assert str(caught.value) == (
        f"{path}: no such database; import candles first with `lstm-trading ingest csv FILE --db {path}`"
    )
    assert not path.exists()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            lambda path: path.write_text("timestamp,open\n1,2\n"),
            "{path}: not a SQLite database; give the candle database made by ingest",
        ),
        (lambda path: path.write_bytes(b""), "{path}: the file is empty, not a candle database"),
        (
            "CREATE TABLE trades (start_time INTEGER, side TEXT)",
            "{path}: no candles table (tables found: trades); give a database made by `lstm-trading ingest` "
            "or by the original script",
        ),
        (
            "CREATE TABLE candles (symbol TEXT, timestamp INTEGER, price REAL)",
            "{path}: table candles lacks columns open, high, low, close, volume (columns found: symbol, timestamp, "
            "price); it is not a candle table",
        ),
        (
            "CREATE TABLE candles (symbol TEXT, timestamp INTEGER, open TEXT, high REAL, low REAL, close REAL, "
            "volume REAL)",
            "{path}: column candles.open is declared TEXT; candles need numbers there (timestamp INTEGER, "
            "prices and volume REAL)",
        ),
        (
            "PRAGMA user_version = 7",
            "{path}: made by a newer lstm-trading (schema 7, this one reads up to 1); upgrade lstm-trading",
        ),
    ],
)
def test_files_that_are_not_candle_databases_are_refused(tmp_path: Path, setup: object, message: str) -> None:
    path = tmp_path / "x.db"
    if isinstance(setup, str):
        connection = sqlite3.connect(path)
        connection.execute(setup)
        connection.commit()
        connection.close()
    else:
        setup(path)  # type: ignore[operator]
    before = path.read_bytes()
    with pytest.raises(DataError) as caught:
        CandleStore(path)
    assert str(caught.value) == message.format(path=path)
    assert path.read_bytes() == before


def test_values_that_are_not_numbers_in_a_keyed_table_are_named(db: Path) -> None:
    connection = sqlite3.connect(db)
    connection.execute("UPDATE candles SET close = 'oops' WHERE timestamp = ?", (T0 + 120,))
    connection.commit()
    connection.close()
    with CandleStore(db) as store, pytest.raises(DataError) as caught:
        store.read("ETHUSDT")
    assert str(caught.value) == (
        f"{db}: candle {T0 + 120} of ETHUSDT has close 'oops', not a number; the table was not written by "
        "lstm-trading: re-import the candles"
    )


# --- seed databases ---


def make_seed(path: Path, *, milliseconds: bool = True) -> list[tuple[object, ...]]:
    """The original script's table: no primary key, extra column, rows out of order, one exact duplicate."""
    scale = 1000 if milliseconds else 1
    frame = candles(range(6))
    rows = [
        (int(row.timestamp) * scale, row.open, row.high, row.low, row.close, row.volume, "ETHUSDT", 7.0)
        for row in frame.itertuples()
    ]
    rows = [rows[3], rows[0], rows[5], rows[1], rows[2], rows[4], rows[2]]
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE candles (timestamp INTEGER, open REAL, high REAL, low REAL, close REAL, volume REAL, "
        "symbol TEXT, turnover REAL)"
    )
    connection.executemany("INSERT INTO candles VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    connection.commit()
    connection.close()
    return rows


@pytest.mark.parametrize("milliseconds", [True, False])
def test_seed_database_reads_sorted_in_seconds(tmp_path: Path, milliseconds: bool) -> None:
    path = tmp_path / "seed.db"
    make_seed(path, milliseconds=milliseconds)
    before = path.read_bytes()
    with CandleStore(path) as store:
        assert store.legacy and store.extra_columns == ("turnover",)
        with pytest.warns(UserWarning, match="dropped 1 exact duplicate row"):
            pd.testing.assert_frame_equal(store.read("ETHUSDT"), candles(range(6)))
        with pytest.warns(UserWarning, match="duplicate"):
            pd.testing.assert_frame_equal(store.read("ETHUSDT", T0 + 60, T0 + 240), candles([1, 2, 3]))
        pd.testing.assert_frame_equal(store.read_last("ETHUSDT", 2, end=T0 + 120), candles([0, 1]))
        assert store.symbols() == ["ETHUSDT"]
        with pytest.warns(UserWarning, match="duplicate"):
            assert store.time_range("ETHUSDT") == (T0, T0 + 300, 6)
    assert path.read_bytes() == before  # reading never changes a seed database


def test_writing_into_a_seed_database_is_refused_naming_db_migrate(tmp_path: Path) -> None:
    path = tmp_path / "seed.db"
    make_seed(path)
    before = path.read_bytes()
    message = (
        f"{path}: the candles table has no primary key (symbol, timestamp) (a database from the original "
        f"script), so writing could duplicate minutes; run `lstm-trading db migrate {path}` to copy it into the "
        "current schema (the original is kept as a .bak file)"
    )
    with CandleStore(path) as store:
        with pytest.raises(DataError) as caught:
            store.upsert("ETHUSDT", candles([10]))
        assert str(caught.value) == message
        with pytest.raises(DataError):
            store.register_symbol("ETHUSDT", "bybit", "linear")
    assert path.read_bytes() == before


def test_migrate_replaces_the_seed_and_keeps_a_backup(tmp_path: Path) -> None:
    path = tmp_path / "seed.db"
    make_seed(path)
    original = path.read_bytes()
    with pytest.warns(UserWarning, match="duplicate"):
        assert migrate_database(path) == path
    assert (tmp_path / "seed.db.bak").read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.db", "seed.db.bak"]
    with CandleStore(path) as store:
        assert not store.legacy
        pd.testing.assert_frame_equal(store.read("ETHUSDT"), candles(range(6)))
        assert store.upsert("ETHUSDT", candles(range(4, 8))).added == 2
    assert migrate_database(path) == path  # already current: nothing to do
    assert not (tmp_path / "seed.db.1.bak").exists()


def test_migrate_to_another_file_and_a_second_backup_name(tmp_path: Path) -> None:
    path, out = tmp_path / "seed.db", tmp_path / "new.db"
    make_seed(path)
    before = dump_tables(path)
    with pytest.warns(UserWarning, match="duplicate"):
        assert migrate_database(path, out) == out
    assert dump_tables(path) == before
    with CandleStore(out) as store:
        pd.testing.assert_frame_equal(store.read("ETHUSDT"), candles(range(6)))
    (tmp_path / "seed.db.bak").write_text("an older backup")
    with pytest.warns(UserWarning, match="duplicate"):
        migrate_database(path)
    assert (tmp_path / "seed.db.bak").read_text() == "an older backup"
    assert (tmp_path / "seed.db.1.bak").exists()


def test_migrate_stops_on_conflicting_seed_rows_and_leaves_everything(tmp_path: Path) -> None:
    path = tmp_path / "seed.db"
    make_seed(path)
    connection = sqlite3.connect(path)
    connection.execute("INSERT INTO candles VALUES (?, 1.0, 2.0, 0.5, 1.5, 3.0, 'ETHUSDT', 0.0)", ((T0 + 120) * 1000,))
    connection.commit()
    connection.close()
    original = path.read_bytes()
    with pytest.raises(DataError, match="two different candles for 2025-06-01 00:02 UTC"):
        migrate_database(path)
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.db"]


def _copy_half_then_die(source: object, target: object, *args: object, **kwargs: object) -> None:
    """A copy killed halfway: half the bytes land in the target, then the process is interrupted."""
    data = Path(str(source)).read_bytes()
    Path(str(target)).write_bytes(data[: len(data) // 2])
    raise KeyboardInterrupt


def test_migrate_interrupted_while_copying_the_backup_leaves_no_bak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the .bak was copied in place, so an interrupted copy left a truncated file named like a
    backup. It is now written under a temporary name, flushed and linked into place."""
    path = tmp_path / "seed.db"
    make_seed(path)
    original = path.read_bytes()
    monkeypatch.setattr(shutil, "copy2", _copy_half_then_die)
    monkeypatch.setattr(shutil, "copyfile", _copy_half_then_die)
    with pytest.warns(UserWarning, match="duplicate"), pytest.raises(KeyboardInterrupt):
        migrate_database(path)
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.db"]  # no .bak, no temporary, no staging copy


def test_migrate_never_overwrites_a_backup_that_appears_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `.bak` made between choosing the name and writing it (another migration) is kept; the next name is
    taken, and the one the command names is the one written."""
    path = tmp_path / "seed.db"
    make_seed(path)
    original = path.read_bytes()
    real_copyfile = shutil.copyfile

    def copy_while_another_backup_appears(source: object, target: object, *args: object, **kwargs: object) -> object:
        (tmp_path / "seed.db.bak").write_text("another migration's backup")
        return real_copyfile(source, target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "copyfile", copy_while_another_backup_appears)
    with pytest.warns(UserWarning, match="duplicate"):
        migrate_database(path)
    assert (tmp_path / "seed.db.bak").read_text() == "another migration's backup"
    assert (tmp_path / "seed.db.1.bak").read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.db", "seed.db.1.bak", "seed.db.bak"]


def test_migrate_refuses_a_named_backup_that_exists_and_changes_nothing(tmp_path: Path) -> None:
    """The command names its .bak before migrating; if that name is taken by then, it is refused, not replaced."""
    path = tmp_path / "seed.db"
    make_seed(path)
    original = path.read_bytes()
    (tmp_path / "seed.db.bak").write_text("an older backup")
    with pytest.warns(UserWarning, match="duplicate"), pytest.raises(DataError) as caught:
        migrate_database(path, backup=tmp_path / "seed.db.bak")
    assert str(caught.value) == (
        f"{tmp_path / 'seed.db.bak'}: already exists and is kept; nothing was changed: run `lstm-trading db "
        f"migrate {path}` again to keep the original under the next free name"
    )
    assert path.read_bytes() == original
    assert (tmp_path / "seed.db.bak").read_text() == "an older backup"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.db", "seed.db.bak"]


def test_a_database_open_in_this_process_is_never_read_behind_sqlites_back(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POSIX drops all of a process's locks on a file when any descriptor of it closes: a header check with
    Python's open() beside an open connection (the live state, every period's candle store) would unlock it."""
    import builtins
    import io

    from lstm_trading.data import sqlite_files
    from lstm_trading.live.state import LiveState

    opened: list[str] = []
    real_open, real_io_open = builtins.open, io.open

    def recording(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def recording_io(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(str(file))
        return real_io_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording)
    monkeypatch.setattr(io, "open", recording_io)
    with CandleStore(db):  # the first connection checks the header: nothing else holds the file
        assert str(db) in opened
        opened.clear()
        with CandleStore(db) as second, LiveState(db, "acct"):
            assert len(second.read("ETHUSDT")) > 0
        assert str(db) not in opened
    assert not sqlite_files.open_here(db)  # every connection let go of its count
    opened.clear()
    with LiveState(db, "acct"), CandleStore(db):
        pass
    assert str(db) not in opened
