"""The live loop's state in the candle database: position, orders, decisions, fills, equity.

Why it is built this way:

- **Beside the candles, in tables of their own.** One file to back up; the `candles` schema is untouched.
  Every row belongs to an *account* (`paper`, `live`, `replay`, or a name given), so a replay never touches
  the state of a paper or live loop running on the same file.
- **One transaction per step.** An order is written as `sent` before it goes to the exchange; everything a
  period decides (decision, order status, position, the trader's equity and counters, the last moment done)
  is committed together afterwards. A crash between the two leaves a `sent` order that the next start looks up
  on the exchange by its client order id, so it is never placed twice.
- **Versioned.** `live_schema` holds the version; a file written by a newer lstm-trading is refused.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lstm_trading.backtest.execution import Costs, Fill, Order, PositionWatch
from lstm_trading.core.errors import DataError
from lstm_trading.data import sqlite_files
from lstm_trading.data.store import is_lock_error, write_transaction

_R = TypeVar("_R")


def _same(value: Any) -> Any:
    return value


SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS live_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS live_meta (
    account TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (account, key)
);
CREATE TABLE IF NOT EXISTS live_decisions (
    account TEXT NOT NULL, at INTEGER NOT NULL, action TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (account, at)
);
CREATE TABLE IF NOT EXISTS live_orders (
    account TEXT NOT NULL, client_id TEXT NOT NULL, at INTEGER NOT NULL, status TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (account, client_id)
);
CREATE TABLE IF NOT EXISTS live_position (
    account TEXT PRIMARY KEY, client_id TEXT NOT NULL, record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS live_fills (
    account TEXT NOT NULL, client_id TEXT NOT NULL, entry_time INTEGER NOT NULL, exit_time INTEGER NOT NULL,
    pnl REAL NOT NULL, record TEXT NOT NULL, PRIMARY KEY (account, client_id)
);
CREATE TABLE IF NOT EXISTS live_equity (
    account TEXT NOT NULL, at INTEGER NOT NULL, equity REAL NOT NULL, PRIMARY KEY (account, at)
);
"""
TABLES = ("live_meta", "live_decisions", "live_orders", "live_position", "live_fills", "live_equity")


# --- plain-number records of the execution objects ---


def order_record(order: Order) -> dict[str, Any]:
    return asdict(order)


def order_from(record: dict[str, Any]) -> Order:
    return Order(**record)


def fill_record(fill: Fill) -> dict[str, Any]:
    record = asdict(fill)
    record["order"] = order_record(fill.order)
    return record


def fill_from(record: dict[str, Any]) -> Fill:
    return Fill(**{**record, "order": order_from(record["order"])})


@dataclass
class Position:
    """The open position: its client order id, what the exchange reported at entry, and its watch (paper)."""

    client_id: str
    watch: PositionWatch
    exchange_order_id: str = ""
    entry_executed: float = math.nan  # the exchange's average fill price (live); NaN in paper

    @property
    def order(self) -> Order:
        return self.watch.order

    def record(self) -> dict[str, Any]:
        watch = self.watch
        return {
            "client_id": self.client_id,
            "exchange_order_id": self.exchange_order_id,
            "entry_executed": None if math.isnan(self.entry_executed) else self.entry_executed,
            "order": order_record(watch.order),
            "max_hold_seconds": watch.max_hold_seconds,
            "costs": asdict(watch.costs),
            "same_candle": watch.same_candle,
            "checked": watch.checked,
            "last_time": watch.last_time,
            "last_close": None if math.isnan(watch.last_close) else watch.last_close,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Position:
        watch = PositionWatch(
            order_from(record["order"]),
            int(record["max_hold_seconds"]),
            Costs(**record["costs"]),
            record["same_candle"],
            checked=int(record["checked"]),
            last_time=int(record["last_time"]),
            last_close=math.nan if record["last_close"] is None else float(record["last_close"]),
        )
        executed = record.get("entry_executed")
        return cls(
            record["client_id"], watch, record.get("exchange_order_id", ""), math.nan if executed is None else executed
        )


@dataclass(frozen=True)
class Step:
    """Everything one period changed, committed in one transaction by `LiveState.commit`."""

    at: int
    trader: dict[str, Any]
    position: Position | None
    decision: dict[str, Any] | None = None
    fills: tuple[tuple[str, Fill], ...] = ()
    orders: tuple[tuple[str, str, dict[str, Any]], ...] = ()  # (client id, status, record)
    equity: float | None = None
    # live_meta keys written with the period: a model swap (the model in use and its retraining's record) is
    # part of the transaction of the first decision it makes
    meta: dict[str, Any] = field(default_factory=dict)


def _without(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in keys}


class LiveState:
    """One account's state in a SQLite file (WAL, like the candle store); use as a context manager."""

    def __init__(self, path: Path | str, account: str, *, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.account = account
        self.timeout = timeout
        if not self.path.exists():
            raise DataError(f"{self.path}: no such database; the live loop keeps its state in the candle database")
        try:
            self._connection = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        except sqlite3.DatabaseError as error:
            raise DataError(f"{self.path}: cannot keep the live state there ({error})") from None
        self._held = sqlite_files.hold(self.path)  # nothing reads the file behind SQLite's back meanwhile
        try:
            self._connection.execute("PRAGMA journal_mode = WAL")
            self._connection.executescript(_SCHEMA)  # IF NOT EXISTS: idempotent, so no transaction needed
        except sqlite3.DatabaseError as error:
            self.close()
            raise DataError(f"{self.path}: cannot keep the live state there ({error})") from None
        try:
            self._check_version()
        except BaseException:
            self.close()
            raise

    def _check_version(self) -> None:
        row = self._connection.execute("SELECT version FROM live_schema").fetchone()
        if row is None:
            with self._transaction() as connection:
                connection.execute("INSERT INTO live_schema (version) VALUES (?)", (SCHEMA_VERSION,))
        elif int(row[0]) > SCHEMA_VERSION:
            raise DataError(
                f"{self.path}: live state written by a newer lstm-trading (schema {row[0]}, this one reads up to "
                f"{SCHEMA_VERSION}); upgrade lstm-trading"
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One all-or-nothing write. A lock held past the timeout (a long ingest in another process) becomes a
        `DataError`, so the loop skips the period and retries from the committed state instead of crashing."""
        try:
            with write_transaction(self._connection):
                yield self._connection
        except sqlite3.OperationalError as error:
            if not is_lock_error(error):
                raise
            raise DataError(
                f"{self.path}: the database is locked by another writer (waited {self.timeout:g} s); "
                "the live state was not written"
            ) from None

    # --- reading ---

    def _read(self, table: str, row: str, text: str, build: Callable[[Any], _R] = _same) -> _R:
        """A stored JSON record, rebuilt; an edited or damaged one is a `DataError` naming the table and row,
        never a traceback (`live-status` and `live` read the state first)."""
        try:
            return build(json.loads(text))
        except (json.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError) as error:
            what = f"missing key {error}" if isinstance(error, KeyError) else str(error)
            raise DataError(
                f"{self.path}: table {table}, {row} of account '{self.account}': not a valid record ({what}); "
                "the live state was edited or damaged: restore the database from a backup or use another --account"
            ) from None

    def meta(self, key: str) -> Any:
        row = self._connection.execute(
            "SELECT value FROM live_meta WHERE account = ? AND key = ?", (self.account, key)
        ).fetchone()
        return None if row is None else self._read("live_meta", f"key '{key}'", row[0])

    def position(self) -> Position | None:
        row = self._connection.execute("SELECT record FROM live_position WHERE account = ?", (self.account,)).fetchone()
        return None if row is None else self._read("live_position", "the position", row[0], Position.from_record)

    def orders(self, status: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT client_id, status, record FROM live_orders WHERE account = ?"
        params: list[object] = [self.account]
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        rows = self._connection.execute(sql + " ORDER BY at", params).fetchall()
        return [{**self._read("live_orders", f"order '{c}'", r, dict), "client_id": c, "status": s} for c, s, r in rows]

    def fills(self) -> list[Fill]:
        rows = self._connection.execute(
            "SELECT entry_time, record FROM live_fills WHERE account = ? ORDER BY entry_time", (self.account,)
        ).fetchall()
        return [self._read("live_fills", f"the fill entered at {t}", r, fill_from) for t, r in rows]

    def decisions(self, last: int | None = None) -> list[dict[str, Any]]:
        if last is None:
            rows = self._connection.execute(
                "SELECT at, record FROM live_decisions WHERE account = ? ORDER BY at", (self.account,)
            ).fetchall()
        else:
            rows = self._connection.execute(
                "SELECT at, record FROM (SELECT at, record FROM live_decisions WHERE account = ? ORDER BY at DESC "
                "LIMIT ?) ORDER BY at",
                (self.account, last),
            ).fetchall()
        return [self._read("live_decisions", f"the decision at {a}", r, dict) for a, r in rows]

    def equity(self) -> list[tuple[int, float]]:
        rows = self._connection.execute(
            "SELECT at, equity FROM live_equity WHERE account = ? ORDER BY at", (self.account,)
        ).fetchall()
        return [(int(a), float(e)) for a, e in rows]

    # --- writing: each call one transaction ---

    def set_meta(self, **values: Any) -> None:
        with self._transaction() as connection:
            for key, value in values.items():
                self._put_meta(connection, key, value)

    def _put_meta(self, connection: sqlite3.Connection, key: str, value: Any) -> None:
        connection.execute(
            "INSERT OR REPLACE INTO live_meta (account, key, value) VALUES (?, ?, ?)",
            (self.account, key, json.dumps(value, allow_nan=True)),
        )

    def order_sent(self, client_id: str, at: int, record: dict[str, Any]) -> None:
        """Before the order goes to the exchange: a crash after this leaves a trace to look up on restart."""
        with self._transaction() as connection:
            self._put_order(connection, client_id, at, "sent", record)

    def _put_order(
        self, connection: sqlite3.Connection, client_id: str, at: int, status: str, record: dict[str, Any]
    ) -> None:
        connection.execute(
            "INSERT OR REPLACE INTO live_orders (account, client_id, at, status, record) VALUES (?, ?, ?, ?, ?)",
            (self.account, client_id, at, status, json.dumps(_without(record, "client_id", "status"))),
        )

    def commit(self, step: Step) -> None:
        """One period's changes, all or nothing; `last_moment` moves to `step.at` with them."""
        with self._transaction() as connection:
            for client_id, status, record in step.orders:
                self._put_order(connection, client_id, int(record.get("at", step.at)), status, record)
            for client_id, fill in step.fills:
                connection.execute(
                    "INSERT OR REPLACE INTO live_fills (account, client_id, entry_time, exit_time, pnl, record) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (self.account, client_id, fill.entry_time, fill.exit_time, fill.pnl, json.dumps(fill_record(fill))),
                )
            connection.execute("DELETE FROM live_position WHERE account = ?", (self.account,))
            if step.position is not None:
                connection.execute(
                    "INSERT INTO live_position (account, client_id, record) VALUES (?, ?, ?)",
                    (self.account, step.position.client_id, json.dumps(step.position.record())),
                )
            if step.decision is not None:
                connection.execute(
                    "INSERT OR REPLACE INTO live_decisions (account, at, action, record) VALUES (?, ?, ?, ?)",
                    (self.account, step.at, step.decision["action"], json.dumps(step.decision)),
                )
            if step.equity is not None:
                connection.execute(
                    "INSERT OR REPLACE INTO live_equity (account, at, equity) VALUES (?, ?, ?)",
                    (self.account, step.at, step.equity),
                )
            for key, value in step.meta.items():
                self._put_meta(connection, key, value)
            self._put_meta(connection, "trader", step.trader)
            self._put_meta(connection, "last_moment", step.at)

    def clear(self) -> None:
        """Forget this account (a replay starts from nothing each time)."""
        with self._transaction() as connection:
            for table in TABLES:
                connection.execute(f"DELETE FROM {table} WHERE account = ?", (self.account,))  # noqa: S608

    def close(self) -> None:
        self._connection.close()
        sqlite_files.release(self._held)
        self._held = None

    def __enter__(self) -> LiveState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def accounts(path: Path | str) -> list[str]:
    """The accounts with state in a database (for `live-status` without `--account`)."""
    connection = sqlite3.connect(Path(path))
    try:
        if connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'live_meta'").fetchone() is None:
            return []
        return [str(a) for (a,) in connection.execute("SELECT DISTINCT account FROM live_meta ORDER BY account")]
    except sqlite3.DatabaseError as error:
        message = f"{path}: not a database the live loop can read ({error}); give the right one with --db"
        raise DataError(message) from None
    finally:
        connection.close()
