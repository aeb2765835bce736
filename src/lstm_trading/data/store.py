"""SQLite candle store: schema, sorted reads, idempotent upserts, gaps, WAL, and migration of seed databases.

Schema (DESIGN.md, "Candles table"):

    candles(symbol TEXT, timestamp INTEGER, open, high, low, close, volume REAL, PRIMARY KEY(symbol, timestamp))
    symbols(symbol TEXT PRIMARY KEY, exchange TEXT, market TEXT)
    funding(symbol TEXT, timestamp INTEGER, rate REAL, PRIMARY KEY(symbol, timestamp))

(`funding`: a perpetual's historical funding rates, timestamps in UTC seconds, rates as fractions per period.)

so `SELECT * FROM candles WHERE symbol = 'ETHUSDT'` works as in the seed. A seed database (a `candles` table
without that primary key, maybe with millisecond timestamps or extra columns) is read as it is, and refused
for writing: without the key, a second import would duplicate minutes. `migrate_database` copies it into this
schema. The database runs in WAL mode as soon as the tool creates or writes it, so readers see a consistent
snapshot while an import writes.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import stat
import struct
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import pandas as pd

from lstm_trading.core.errors import ConfigError, DataError
from lstm_trading.data import sqlite_files
from lstm_trading.data.candles import (
    CANDLE_COLUMNS,
    VALUE_COLUMNS,
    Gap,
    empty_candles,
    find_gaps,
    validate_candles,
)

SCHEMA_VERSION = 1
MARKETS = ("spot", "linear")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS candles (
    symbol TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    open REAL NOT NULL,
    high REAL NOT NULL,
    low REAL NOT NULL,
    close REAL NOT NULL,
    volume REAL NOT NULL,
    PRIMARY KEY (symbol, timestamp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS symbols (
    symbol TEXT PRIMARY KEY,
    exchange TEXT NOT NULL,
    market TEXT NOT NULL
);
"""
# Made on the first funding write (older stores lack it; reading a store without it finds no rates).
_FUNDING_SCHEMA = """
CREATE TABLE IF NOT EXISTS funding (
    symbol TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    rate REAL NOT NULL,
    PRIMARY KEY (symbol, timestamp)
) WITHOUT ROWID
"""
_SQLITE_HEADER = b"SQLite format 3\x00"
# Primary SQLite result codes (https://sqlite.org/rescode.html); extended codes keep them in the low byte.
_READONLY, _IOERR, _CORRUPT, _CANTOPEN, _NOTADB = 8, 10, 11, 14, 26
# The first byte of a b-tree page: interior index, interior table, leaf index, leaf table.
_BTREE_PAGE_TYPES = (2, 5, 10, 13)
_ROW = np.dtype([(name, np.int64 if name == "timestamp" else np.float64) for name in CANDLE_COLUMNS])
_SELECT = "SELECT timestamp, open, high, low, close, volume FROM candles"
# Seed tables may hold milliseconds; this reads any row's open time in seconds (for filters and order).
_SEED_SECONDS = "(CASE WHEN timestamp >= 100000000000 THEN timestamp / 1000.0 ELSE timestamp END)"
_DIFFERS = " OR ".join(f"c.{name} IS NOT i.{name}" for name in VALUE_COLUMNS)


@dataclass(frozen=True)
class UpsertResult:
    """What an upsert did. `first` and `last` are the open times of the first and last candle given."""

    added: int
    already_present: int
    conflicts: int
    replaced: int
    first_conflict: int | None
    first: int | None
    last: int | None


@dataclass(frozen=True)
class FundingUpsertResult:
    """What a funding upsert did: rates added, identical ones already held, and stored ones that differ (kept)."""

    added: int
    already_present: int
    conflicts: int
    first_conflict: int | None


@contextmanager
def write_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """One all-or-nothing write: `BEGIN IMMEDIATE` takes the write lock now (waiting up to the connection's
    timeout for other writers), and any error rolls back. The candle store and the live state share it."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def is_lock_error(error: sqlite3.OperationalError) -> bool:
    """Whether another writer held the lock past the timeout (worth a retry later, not a corrupt file)."""
    return "locked" in str(error) or "busy" in str(error)


class CandleStore:
    """A SQLite file of 1-minute candles; use as a context manager.

    Parameters
    ----------
    path
        The database file. Without `create`, a missing file is a `DataError`.
    create
        Create the file and the schema when they are missing.
    timeout
        Seconds a write waits for another writer's lock before giving up with a `DataError`.
    """

    def __init__(self, path: Path | str, *, create: bool = False, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.legacy = False
        self.extra_columns: tuple[str, ...] = ()
        self._wal = False
        self._text_times = False
        if not sqlite_files.open_here(self.path):  # else checked when it was opened: reading it now would drop
            _check_file(self.path, create)  # this process's SQLite locks on it (`sqlite_files`)
        try:
            self._connection = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        except sqlite3.Error as error:
            raise DataError(f"{self.path}: cannot open the database ({error})") from None
        self._held = sqlite_files.hold(self.path)
        try:
            with self._errors():
                self._inspect(create)
        except BaseException:
            self.close()
            raise

    # --- opening ---

    def _inspect(self, create: bool) -> None:
        connection = self._connection
        tables = {row[0].lower(): row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise DataError(
                f"{self.path}: made by a newer lstm-trading (schema {version}, this one reads up to "
                f"{SCHEMA_VERSION}); upgrade lstm-trading"
            )
        if "candles" not in tables:
            if not create:
                found = ", ".join(sorted(tables.values())) or "none"
                raise DataError(
                    f"{self.path}: no candles table (tables found: {found}); give a database made by "
                    "`lstm-trading ingest` or by the original script"
                )
            with self._errors(writing=True):
                self._set_wal()
                connection.executescript(_SCHEMA)
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
        columns = {
            str(row[1]).lower(): (str(row[2] or ""), int(row[5]))
            for row in connection.execute("PRAGMA table_info(candles)")
        }
        missing = [name for name in ("symbol", *CANDLE_COLUMNS) if name not in columns]
        if missing:
            raise DataError(
                f"{self.path}: table candles lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"(columns found: {', '.join(columns)}); it is not a candle table"
            )
        for name in CANDLE_COLUMNS:
            declared = columns[name][0]
            if _affinity(declared) in ("TEXT", "BLOB") and declared:
                raise DataError(
                    f"{self.path}: column candles.{name} is declared {declared}; candles need numbers there "
                    "(timestamp INTEGER, prices and volume REAL)"
                )
        keys = {name for name, (_, pk) in columns.items() if pk}
        self.legacy = keys != {"symbol", "timestamp"}
        self.extra_columns = tuple(name for name in columns if name not in ("symbol", *CANDLE_COLUMNS))
        if self.legacy:
            first = connection.execute("SELECT typeof(timestamp) FROM candles LIMIT 1").fetchone()
            self._text_times = first is not None and first[0] == "text"

    # --- reading ---

    def read(self, symbol: str, start: int | None = None, end: int | None = None) -> pd.DataFrame:
        """The candles of `symbol` with open time `start <= s < end` (UTC seconds), sorted by time."""
        if self.legacy:
            return self._read_seed(symbol, start, end)
        where, params = _range("timestamp", symbol, start, end)
        return self._fetch(f"{_SELECT} WHERE {where} ORDER BY timestamp", params, symbol)

    def read_last(self, symbol: str, rows: int, *, end: int | None = None) -> pd.DataFrame:
        """The last `rows` candles of `symbol` with open time before `end` (all when `end` is None), sorted."""
        if rows <= 0:
            return empty_candles()
        if self.legacy:
            return self._read_seed(symbol, None, end, last=rows)
        where, params = _range("timestamp", symbol, None, end)
        frame = self._fetch(f"{_SELECT} WHERE {where} ORDER BY timestamp DESC LIMIT ?", [*params, rows], symbol)
        return frame.iloc[::-1].reset_index(drop=True)

    def time_range(self, symbol: str) -> tuple[int, int, int] | None:
        """First and last open time of `symbol` and its number of candles; None when it has none."""
        if self.legacy:
            frame = self.read(symbol)
            if frame.empty:
                return None
            return int(frame["timestamp"].iloc[0]), int(frame["timestamp"].iloc[-1]), len(frame)
        with self._errors():
            first, last, count = self._connection.execute(
                "SELECT min(timestamp), max(timestamp), count(*) FROM candles WHERE symbol = ?", (symbol,)
            ).fetchone()
        return None if count == 0 else (int(first), int(last), int(count))

    def symbols(self) -> list[str]:
        """The symbols that have candles, sorted."""
        if self.legacy:
            sql = "SELECT DISTINCT symbol FROM candles ORDER BY symbol"
        else:
            # A skip-scan over the primary key: one probe per symbol instead of reading every row.
            sql = (
                "WITH RECURSIVE s(symbol) AS (SELECT min(symbol) FROM candles UNION ALL "
                "SELECT (SELECT min(symbol) FROM candles WHERE symbol > s.symbol) FROM s WHERE s.symbol IS NOT NULL) "
                "SELECT symbol FROM s WHERE symbol IS NOT NULL"
            )
        with self._errors():
            return [str(row[0]) for row in self._connection.execute(sql)]

    def symbol_info(self, symbol: str) -> tuple[str, str] | None:
        """The (exchange, market) registered for `symbol`, or None."""
        with self._errors():
            if not self._has_table("symbols"):
                return None
            row = self._connection.execute(
                "SELECT exchange, market FROM symbols WHERE symbol = ?", (symbol,)
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def read_funding(self, symbol: str, start: int | None = None, end: int | None = None) -> pd.DataFrame:
        """The stored funding rates of `symbol` with `start <= timestamp < end`: columns timestamp (UTC seconds,
        int64) and rate (a fraction per period), sorted; empty where none are stored."""
        frame = pd.DataFrame({"timestamp": np.empty(0, np.int64), "rate": np.empty(0, np.float64)})
        with self._errors():
            if not self._has_table("funding"):
                return frame
            where, params = _range("timestamp", symbol, start, end)
            rows = self._connection.execute(
                f"SELECT timestamp, rate FROM funding WHERE {where} ORDER BY timestamp", params
            ).fetchall()
        if not rows:
            return frame
        stamps, rates = zip(*rows, strict=True)
        if not all(isinstance(t, int) for t in stamps) or not all(isinstance(r, int | float) for r in rates):
            raise DataError(f"{self.path}: table funding holds {symbol} rows that are not numbers; ingest them again")
        return pd.DataFrame({"timestamp": np.asarray(stamps, np.int64), "rate": np.asarray(rates, np.float64)})

    def funding_range(self, symbol: str) -> tuple[int, int, int] | None:
        """First and last stored funding time of `symbol` and the number of rates; None when none are stored."""
        with self._errors():
            if not self._has_table("funding"):
                return None
            first, last, count = self._connection.execute(
                "SELECT min(timestamp), max(timestamp), count(*) FROM funding WHERE symbol = ?", (symbol,)
            ).fetchone()
        return None if count == 0 else (int(first), int(last), int(count))

    def gaps(self, symbol: str, start: int | None = None, end: int | None = None) -> list[Gap]:
        """Runs of missing minutes between the first and last candle of `symbol` in `[start, end)`."""
        if self.legacy:
            return find_gaps(self.read(symbol, start, end)["timestamp"].to_numpy())
        where, params = _range("timestamp", symbol, start, end)
        with self._errors():
            cursor = self._connection.execute(f"SELECT timestamp FROM candles WHERE {where} ORDER BY timestamp", params)
            stamps = np.fromiter(cursor, dtype=np.dtype([("timestamp", np.int64)]))["timestamp"]
        return find_gaps(stamps)

    def _fetch(self, sql: str, params: list[object], symbol: str) -> pd.DataFrame:
        # np.fromiter over the cursor: half the time of pd.read_sql_query, which builds Python lists first.
        with self._errors():
            try:
                rows = np.fromiter(self._connection.execute(sql, params), dtype=_ROW)
            except (TypeError, ValueError):
                raise self._bad_value(symbol) from None
        frame = pd.DataFrame({name: rows[name] for name in CANDLE_COLUMNS})
        if not all(np.isfinite(rows[name]).all() for name in VALUE_COLUMNS):
            raise self._bad_value(symbol)
        return frame

    def _bad_value(self, symbol: str) -> DataError:
        """Name the first stored value that is not a number (a table written by some other tool)."""
        for name in CANDLE_COLUMNS:
            allowed = "('integer')" if name == "timestamp" else "('integer', 'real')"
            row = self._connection.execute(
                f"SELECT timestamp, {name} FROM candles WHERE symbol = ? AND typeof({name}) NOT IN {allowed} "
                "ORDER BY timestamp LIMIT 1",
                (symbol,),
            ).fetchone()
            if row is not None:
                return DataError(
                    f"{self.path}: candle {row[0]!r} of {symbol} has {name} {row[1]!r}, not a number; "
                    "the table was not written by lstm-trading: re-import the candles"
                )
        return DataError(f"{self.path}: candles of {symbol} hold values that are not numbers; re-import them")

    def _read_seed(self, symbol: str, start: int | None, end: int | None, *, last: int | None = None) -> pd.DataFrame:
        """Seed tables: milliseconds become seconds, extra columns are ignored, and the candle rules are checked
        (the seed wrote without a key, so duplicates are possible)."""
        filter_in_sql = not self._text_times
        where, params = _range(_SEED_SECONDS, symbol, start, end) if filter_in_sql else ("symbol = ?", [symbol])
        order = f"{_SEED_SECONDS} DESC" if last is not None else _SEED_SECONDS
        sql = f"{_SELECT} WHERE {where} ORDER BY {order}"
        if last is not None and filter_in_sql:
            sql += f" LIMIT {int(last)}"
        with self._errors():
            frame = pd.read_sql_query(sql, self._connection, params=params)
        if frame.empty:
            return empty_candles()
        if last is not None:
            frame = frame.iloc[::-1].reset_index(drop=True)
        with warnings.catch_warnings():
            # The table's row order is not the file's; sorting here is expected, not news.
            warnings.filterwarnings("ignore", message=".*not in time order")
            candles = validate_candles(
                frame, f"{self.path} (table candles, {symbol})", unit="row", line_offset=1, check_interval=False
            )
        if not filter_in_sql:
            stamps = candles["timestamp"]
            keep = np.ones(len(candles), dtype=bool)
            if start is not None:
                keep &= (stamps >= start).to_numpy()
            if end is not None:
                keep &= (stamps < end).to_numpy()
            candles = candles.loc[keep].reset_index(drop=True)
            if last is not None:
                candles = candles.iloc[-last:].reset_index(drop=True)
        return candles

    # --- writing ---

    def register_symbol(self, symbol: str, exchange: str, market: str) -> None:
        """Record where `symbol`'s candles come from; a second exchange or market under one name is refused."""
        _check_symbol(symbol)
        origin = _origin(exchange, market)
        self._check_writable()
        with self._transaction() as connection:
            self._register(connection, symbol, *origin)

    def _register(self, connection: sqlite3.Connection, symbol: str, exchange: str, market: str) -> None:
        row = connection.execute("SELECT exchange, market FROM symbols WHERE symbol = ?", (symbol,)).fetchone()
        if row is None:
            connection.execute("INSERT INTO symbols VALUES (?, ?, ?)", (symbol, exchange, market))
        elif (row[0], row[1]) != (exchange, market):
            raise DataError(
                f"{self.path}: {symbol} holds {row[0]} {row[1]} candles, not {exchange} {market}; "
                "two markets never mix under one name: use another --symbol or another --db"
            )

    def _warn_adopted(self, connection: sqlite3.Connection, symbol: str, exchange: str, market: str) -> None:
        """A file that names its market adopts the symbol's candles of no recorded market: said, since they may
        come from another one. (`ingest exchange` and `live` adopt them silently: that is the CSV-then-keep-current
        path, where the market is the same.)"""
        if connection.execute("SELECT 1 FROM symbols WHERE symbol = ?", (symbol,)).fetchone() is not None:
            return
        (held,) = connection.execute("SELECT count(*) FROM candles WHERE symbol = ?", (symbol,)).fetchone()
        if held:
            warnings.warn(
                f"{self.path}: {symbol} already holds {held:,} candles imported without --exchange; they are now "
                f"recorded as {exchange} {market}: if they came from another market, move them under another "
                "--symbol or --db",
                stacklevel=3,
            )

    def upsert(
        self,
        symbol: str,
        candles: pd.DataFrame,
        *,
        replace: bool = False,
        source: str = "",
        exchange: str | None = None,
        market: str | None = None,
    ) -> UpsertResult:
        """Add candles in one transaction: new minutes are inserted, identical ones left alone.

        A stored minute with other values is a conflict: counted, its first minute reported, and kept as
        stored unless `replace`. With `exchange` and `market`, the symbol is registered in the same
        transaction (see `register_symbol`). Any error leaves the database as it was.
        """
        _check_symbol(symbol)
        origin = None if exchange is None and market is None else _origin(exchange or "", market or "")
        self._check_writable()
        frame = validate_candles(
            candles, source or f"candles for {symbol}", unit="row", line_offset=1, check_interval=False, symbol=symbol
        )
        columns = [frame[name].to_numpy().tolist() for name in CANDLE_COLUMNS]
        with self._transaction() as connection:
            if origin is not None:
                self._warn_adopted(connection, symbol, *origin)
                self._register(connection, symbol, *origin)
            if frame.empty:
                return UpsertResult(0, 0, 0, 0, None, None, None)
            connection.execute("DROP TABLE IF EXISTS temp.incoming")
            connection.execute(
                "CREATE TEMP TABLE incoming (timestamp INTEGER PRIMARY KEY, open REAL, high REAL, low REAL, "
                "close REAL, volume REAL)"
            )
            connection.executemany("INSERT INTO temp.incoming VALUES (?, ?, ?, ?, ?, ?)", zip(*columns, strict=True))
            present, conflicts, first_conflict = connection.execute(
                f"SELECT count(*), total(differs), min(CASE WHEN differs THEN ts END) FROM ("
                f"SELECT i.timestamp AS ts, ({_DIFFERS}) AS differs FROM temp.incoming AS i "
                "JOIN candles AS c ON c.symbol = ? AND c.timestamp = i.timestamp)",
                (symbol,),
            ).fetchone()
            conflicts = int(conflicts)
            if replace and conflicts:
                updates = ", ".join(f"{name} = excluded.{name}" for name in VALUE_COLUMNS)
                changed = " OR ".join(f"candles.{name} IS NOT excluded.{name}" for name in VALUE_COLUMNS)
                connection.execute(
                    "INSERT INTO candles (symbol, timestamp, open, high, low, close, volume) "
                    "SELECT ?, timestamp, open, high, low, close, volume FROM temp.incoming WHERE true "
                    f"ON CONFLICT (symbol, timestamp) DO UPDATE SET {updates} WHERE {changed}",
                    (symbol,),
                )
            else:
                connection.execute(
                    "INSERT OR IGNORE INTO candles (symbol, timestamp, open, high, low, close, volume) "
                    "SELECT ?, timestamp, open, high, low, close, volume FROM temp.incoming",
                    (symbol,),
                )
            connection.execute("DROP TABLE temp.incoming")
        stamps = frame["timestamp"]
        return UpsertResult(
            added=len(frame) - int(present),
            already_present=int(present) - conflicts,
            conflicts=conflicts,
            replaced=conflicts if replace else 0,
            first_conflict=None if first_conflict is None else int(first_conflict),
            first=int(stamps.iloc[0]),
            last=int(stamps.iloc[-1]),
        )

    def upsert_funding(self, symbol: str, rates: pd.DataFrame, *, source: str = "") -> FundingUpsertResult:
        """Add funding rates (columns timestamp in UTC seconds, rate as a fraction) in one transaction.

        New funding times are inserted, identical ones left alone; a stored time with another rate is a
        conflict, counted and kept as stored. Any error leaves the table as it was.
        """
        _check_symbol(symbol)
        self._check_writable()
        what = source or f"funding rates for {symbol}"
        missing = [name for name in ("timestamp", "rate") if name not in rates.columns]
        if missing:
            raise DataError(f"{what}: no {' or '.join(missing)} column")
        stamps = rates["timestamp"].to_numpy()
        values = pd.to_numeric(rates["rate"], errors="coerce").to_numpy(dtype=np.float64)
        if not np.issubdtype(stamps.dtype, np.integer):
            raise DataError(f"{what}: timestamps must be whole UTC seconds, got {stamps.dtype}")
        if len(stamps) and int(stamps.max()) >= 100_000_000_000:
            raise DataError(f"{what}: timestamp {int(stamps.max())} is in milliseconds; give UTC seconds")
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise DataError(f"{what}: rate of row {bad[0] + 1} ({rates['rate'].iloc[bad[0]]!r}) is not a number")
        if len(np.unique(stamps)) != len(stamps):
            raise DataError(f"{what}: a funding time appears twice")
        rows = list(zip(stamps.astype(np.int64).tolist(), values.tolist(), strict=True))
        with self._transaction() as connection:
            connection.execute(_FUNDING_SCHEMA)
            if not rows:
                return FundingUpsertResult(0, 0, 0, None)
            connection.execute("DROP TABLE IF EXISTS temp.incoming_funding")
            connection.execute("CREATE TEMP TABLE incoming_funding (timestamp INTEGER PRIMARY KEY, rate REAL)")
            connection.executemany("INSERT INTO temp.incoming_funding VALUES (?, ?)", rows)
            present, conflicts, first_conflict = connection.execute(
                "SELECT count(*), total(f.rate IS NOT i.rate), "
                "min(CASE WHEN f.rate IS NOT i.rate THEN i.timestamp END) FROM temp.incoming_funding AS i "
                "JOIN funding AS f ON f.symbol = ? AND f.timestamp = i.timestamp",
                (symbol,),
            ).fetchone()
            connection.execute(
                "INSERT OR IGNORE INTO funding (symbol, timestamp, rate) SELECT ?, timestamp, rate "
                "FROM temp.incoming_funding",
                (symbol,),
            )
            connection.execute("DROP TABLE temp.incoming_funding")
        conflicts = int(conflicts)
        return FundingUpsertResult(
            added=len(rows) - int(present),
            already_present=int(present) - conflicts,
            conflicts=conflicts,
            first_conflict=None if first_conflict is None else int(first_conflict),
        )

    def _check_writable(self) -> None:
        if self.legacy:
            raise DataError(
                f"{self.path}: the candles table has no primary key (symbol, timestamp) (a database from the "
                f"original script), so writing could duplicate minutes; run `lstm-trading db migrate {self.path}` "
                "to copy it into the current schema (the original is kept as a .bak file)"
            )

    def _set_wal(self) -> None:
        """WAL: readers keep a consistent snapshot while one writer appends; set once, stored in the file."""
        if not self._wal:
            mode = self._connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._wal = str(mode).lower() == "wal"

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection
        with self._errors(writing=True):
            self._set_wal()
            if not self._has_table("symbols"):
                connection.executescript(_SCHEMA)
            with write_transaction(connection):
                yield connection

    def _has_table(self, name: str) -> bool:
        row = self._connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return row.fetchone() is not None

    @contextmanager
    def _errors(self, *, writing: bool = False) -> Iterator[None]:
        """SQLite errors become `DataError`s naming the file and saying what is wrong: a lock held past `timeout`,
        a read-only file or folder (and what `writing` or reading needed there), a damaged file. pandas wraps
        the errors of its queries (seed tables) in its own `DatabaseError`: unwrapped the same way."""
        try:
            yield
        except sqlite3.Error as error:
            raise self._explain(error, writing) from None
        except pd.errors.DatabaseError as error:
            cause = error.__cause__
            if isinstance(cause, sqlite3.Error):
                raise self._explain(cause, writing) from None
            raise DataError(f"{self.path}: database error: {error}") from None

    def _explain(self, error: sqlite3.Error, writing: bool) -> DataError:
        if isinstance(error, sqlite3.OperationalError) and is_lock_error(error):
            return DataError(
                f"{self.path}: the database is locked by another writer (waited {self.timeout:g} s); "
                "try again when the other import or download has finished"
            )
        code = getattr(error, "sqlite_errorcode", 0) & 0xFF
        if code in (_READONLY, _CANTOPEN) or "readonly" in str(error):
            return _read_only(self.path, error, writing)
        if code in (_CORRUPT, _NOTADB, _IOERR):
            return _damaged(self.path, error)
        if isinstance(error, sqlite3.OperationalError):
            return DataError(f"{self.path}: {error}")
        return DataError(f"{self.path}: database error: {error}")

    # --- lifetime ---

    def close(self) -> None:
        """Close the connection (the last one out folds the WAL back into the file)."""
        self._connection.close()
        sqlite_files.release(self._held)
        self._held = None

    def __enter__(self) -> CandleStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def migrate_database(source: Path, target: Path | None = None, *, backup: Path | None = None) -> Path:
    """Copy a seed-shaped database into the current schema and return the new database's path.

    Without `target` the source is replaced safely: the new database is written to a separate file first,
    the original is copied to `backup` (default: the first free `*.bak` name; see `write_backup`), and only
    then is the new file renamed over the source. A database already in the current schema is left as it is
    (or copied, when `target` is given).
    """
    source = Path(source)
    out = Path(target) if target is not None else source
    if target is not None and out.exists():
        raise DataError(f"{out}: already exists; choose another --out or remove it")
    staging = out.with_name(out.name + ".migrating")
    with CandleStore(source) as old:
        if target is None and not old.legacy:
            return source
        _remove_database(staging)  # left over from an interrupted migration
        try:
            with CandleStore(staging, create=True) as new:
                for symbol in old.symbols():
                    new.upsert(symbol, old.read(symbol), source=f"{source} ({symbol})")
                    info = old.symbol_info(symbol)
                    if info is not None:
                        new.register_symbol(symbol, *info)
                    rates = old.read_funding(symbol)
                    if len(rates):
                        new.upsert_funding(symbol, rates, source=f"{source} (funding of {symbol})")
        except BaseException:
            _remove_database(staging)
            raise
    if target is None:
        wal = Path(f"{source}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            _remove_database(staging)
            raise DataError(f"{source}: in use by another program; close it and run the migration again")
        try:
            write_backup(source, backup)
        except BaseException:
            _remove_database(staging)
            raise
        for leftover in (wal, Path(f"{source}-shm")):
            leftover.unlink(missing_ok=True)
    os.replace(staging, out)
    return out


def backup_path(source: Path) -> Path:
    """The `*.bak` name `migrate_database` will use for `source` (the first free one)."""
    return _free_backup_path(Path(source))


def write_backup(source: Path, backup: Path | None = None) -> Path:
    """Copy `source` byte for byte to `backup` (default: the first free `*.bak` name) and return the name.

    The copy is written beside it under a temporary name, flushed to disk, then hard-linked into place, so an
    interrupted copy leaves no file that looks like a backup, and an existing file is never replaced: a
    default name taken meanwhile moves on to the next free one; a given `backup` that exists is refused.
    """
    source = Path(source)
    handle, name = tempfile.mkstemp(prefix=f".{source.name}.", suffix=".bak.tmp", dir=source.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        shutil.copyfile(source, temporary)
        shutil.copystat(source, temporary)
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        candidate = Path(backup) if backup is not None else _free_backup_path(source)
        while not _link_new(temporary, candidate):
            if backup is not None:
                raise DataError(
                    f"{backup}: already exists and is kept; nothing was changed: run `lstm-trading db migrate "
                    f"{source}` again to keep the original under the next free name"
                )
            candidate = _free_backup_path(source)
        _fsync_folder(candidate.parent)
        return candidate
    finally:
        temporary.unlink(missing_ok=True)


def _link_new(temporary: Path, target: Path) -> bool:
    """Give `temporary`'s file the name `target` unless that name exists (False then); never replaces a file."""
    try:
        os.link(temporary, target)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # A filesystem without hard links (FAT, some network mounts): check, then rename.
        if target.exists():
            return False
        os.replace(temporary, target)
    return True


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable before the next step relies on it (POSIX; a no-op elsewhere)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some filesystems cannot sync a folder; the file itself is on disk
    finally:
        os.close(descriptor)


def _free_backup_path(source: Path) -> Path:
    candidate = source.with_name(source.name + ".bak")
    number = 1
    while candidate.exists():
        candidate = source.with_name(f"{source.name}.{number}.bak")
        number += 1
    return candidate


def _remove_database(path: Path) -> None:
    for part in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        part.unlink(missing_ok=True)


def _check_file(path: Path, create: bool) -> bool:
    """Refuse what is not a SQLite file before SQLite sees it; True when a new database will be made."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a candle database")
    if not path.exists():
        if not create:
            raise DataError(
                f"{path}: no such database; import candles first with `lstm-trading ingest csv FILE --db {path}`"
            )
        if not path.parent.exists():
            raise DataError(f"{path}: the folder {path.parent} does not exist")
        return True
    if not stat.S_ISREG(path.stat().st_mode):  # opening a FIFO would wait for a writer, forever
        raise DataError(
            f"{path}: not a regular file (a pipe, socket or device); SQLite needs the database as a file on disk"
        )
    try:
        with path.open("rb") as handle:
            head = handle.read(len(_SQLITE_HEADER))
    except PermissionError:
        raise DataError(
            f"{path}: cannot read the database (permission denied); make it readable, or give another --db"
        ) from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the database ({error.strerror or error})") from None
    if not head:
        if create:
            return True
        raise DataError(f"{path}: the file is empty, not a candle database")
    if head != _SQLITE_HEADER:
        if _looks_like_sqlite_pages(path):
            raise _damaged(path, None)
        raise DataError(f"{path}: not a SQLite database; give the candle database made by ingest")
    return False


def _looks_like_sqlite_pages(path: Path) -> bool:
    """Whether a file without the SQLite header is still made of SQLite pages (its first page overwritten): a
    whole number of pages of one of SQLite's page sizes, the second of them a b-tree page with a sane header."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        for page_size in (512 << shift for shift in range(8)):  # 512 to 65,536 bytes
            if size % page_size or size < 2 * page_size:
                continue
            handle.seek(page_size)
            kind, freeblock, cells, content, fragmented = struct.unpack(">BHHHB", handle.read(8))
            content = content or 65_536
            if (
                kind in _BTREE_PAGE_TYPES
                and freeblock < page_size
                and 8 <= content <= page_size
                and cells * 2 + 8 <= page_size
                and fragmented <= 60
            ):
                return True
    return False


def _read_only(path: Path, error: sqlite3.Error, writing: bool) -> DataError:
    """What could not be written (the folder, the file) and what the command needed there."""
    folder = path.absolute().parent
    wal = _header_byte(path, 18) == 2  # the file format's read version: 2 is WAL
    if not os.access(folder, os.W_OK):
        if wal and not writing:
            return DataError(
                f"{path}: cannot read the database: the folder {folder} is read-only (not writable), and a database "
                f"in WAL mode needs to create {path.name}-shm there even to be read; make the folder writable, or "
                "copy the database into a writable folder"
            )
        return DataError(
            f"{path}: cannot write the database: the folder {folder} is read-only (not writable), and writing "
            f"candles needs to create {path.name}-wal and {path.name}-shm there; make the folder writable, or use "
            "a --db in a writable folder"
        )
    if not os.access(path, os.W_OK):
        return DataError(
            f"{path}: cannot write the database: the file is read-only (not writable), and writing candles needs "
            "to change it; make it writable, or use another --db"
        )
    return DataError(f"{path}: cannot {'write' if writing else 'read'} the database ({error})")


def _damaged(path: Path, error: sqlite3.Error | None) -> DataError:
    """A damaged file: `PRAGMA integrity_check`'s first line, run on a read-only connection (a diagnosis never
    writes), and whether the file is shorter than its header says."""
    report = _integrity_check(path)
    if report == "ok" and error is not None:
        return DataError(f"{path}: database error: {error} (PRAGMA integrity_check finds nothing wrong)")
    detail = ""
    if error is None:
        detail = "; its first page, which holds the SQLite header, is overwritten"
    else:
        size = path.stat().st_size
        header = _header(path)
        if header is not None:
            page_size, pages = header
            if size < page_size * pages:
                detail = (
                    f"; the file is cut short: {size:,} bytes, where its header records {pages:,} pages of "
                    f"{page_size:,} bytes ({page_size * pages:,} bytes)"
                )
    return DataError(
        f"{path}: the database is damaged (PRAGMA integrity_check: {report}){detail}; restore it from a backup, or "
        f"salvage what is readable with `sqlite3 {path} .recover | sqlite3 recovered.db`"
    )


def _integrity_check(path: Path) -> str:
    try:
        connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        return str(error)
    try:
        row = connection.execute("PRAGMA integrity_check(1)").fetchone()
    except sqlite3.Error as error:
        return str(error)
    finally:
        connection.close()
    lines = [] if row is None else str(row[0]).splitlines()
    # Its first line may only name the schema ("*** in database main ***"); the problem comes next.
    return next((line for line in lines if not line.startswith("*** in database")), lines[0] if lines else "no result")


def _header(path: Path) -> tuple[int, int] | None:
    """Page size and page count from the file's header, when the count is valid (SQLite's rule: the change
    counter at offset 24 equals the version-valid-for number at offset 92)."""
    with path.open("rb") as handle:
        head = handle.read(100)
    if len(head) < 100 or not head.startswith(_SQLITE_HEADER):
        return None
    (page_size,) = struct.unpack_from(">H", head, 16)
    changes, pages = struct.unpack_from(">II", head, 24)
    (valid_for,) = struct.unpack_from(">I", head, 92)
    if changes != valid_for or pages == 0:
        return None
    return (65_536 if page_size == 1 else page_size), pages


def _header_byte(path: Path, offset: int) -> int | None:
    try:
        with path.open("rb") as handle:
            head = handle.read(offset + 1)
    except OSError:
        return None
    return head[offset] if len(head) > offset and head.startswith(_SQLITE_HEADER) else None


def _origin(exchange: str, market: str) -> tuple[str, str]:
    exchange, market = exchange.strip().lower(), market.strip().lower()
    if not exchange:
        raise ConfigError("--exchange: give the exchange's name, e.g. bybit or binance")
    if market not in MARKETS:
        raise ConfigError(f"--market: must be one of {', '.join(MARKETS)}, got {market!r}")
    return exchange, market


def _check_symbol(symbol: str) -> None:
    if not symbol or symbol != symbol.strip():
        raise ConfigError(f"--symbol: give a symbol name such as ETHUSDT, got {symbol!r}")


def _range(column: str, symbol: str, start: int | None, end: int | None) -> tuple[str, list[object]]:
    where: list[str] = ["symbol = ?"]
    params: list[object] = [symbol]
    if start is not None:
        where.append(f"{column} >= ?")
        params.append(int(start))
    if end is not None:
        where.append(f"{column} < ?")
        params.append(int(end))
    return " AND ".join(where), params


def _affinity(declared: str) -> str:
    """SQLite's column affinity rules (https://sqlite.org/datatype3.html, section 3.1)."""
    kind = declared.upper()
    if "INT" in kind:
        return "INTEGER"
    if any(word in kind for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in kind or not kind:
        return "BLOB"
    if any(word in kind for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"
