"""The live state: round trips through SQLite, one transaction per step, accounts apart, the schema versioned,
and the candle store untouched beside it."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from lstm_trading.backtest.execution import LONG, SHORT, Costs, Order, PositionWatch, book_fill
from lstm_trading.core.errors import DataError
from lstm_trading.data.store import CandleStore
from lstm_trading.data.synthetic import synthetic_candles
from lstm_trading.live.state import SCHEMA_VERSION, LiveState, Position, Step, accounts

T0 = 1_717_200_000
COSTS = Costs(0.00055, 0.0001)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "candles.db"
    with CandleStore(path, create=True) as store:
        store.upsert("ETHUSDT", synthetic_candles(0.1, seed=2), source="synthetic")
    return path


def an_order(at: int = T0, direction: int = LONG) -> Order:
    return Order(at, direction, 1.5, 3000.0, 2970.0, 3045.0, 1.0, 1.5, 0.62)


def a_position(at: int = T0) -> Position:
    watch = PositionWatch(an_order(at), 3600, COSTS, checked=3, last_time=at + 120, last_close=3001.5)
    return Position(f"cid-{at}", watch, "ex-9", 3000.3)


def a_fill(at: int = T0, direction: int = SHORT):  # type: ignore[no-untyped-def]
    return book_fill(
        an_order(at, direction), COSTS, entry_index=0, exit_index=4, exit_time=at + 300, exit_price=2990.0,
        reason="take_profit", same_candle=False,
    )  # fmt: skip


SKIPPED = {"position_open": 2, "daily_loss_limit": 0, "no_equity": 0, "no_candle": 1}
TRADER = {"equity": 10_012.5, "flat_from": T0 + 300, "day": T0 // 86_400, "day_start_equity": 10_000.0,
          "skipped": SKIPPED, "signals": 7}  # fmt: skip


def test_a_step_round_trips_through_the_file(db: Path) -> None:
    position, fill = a_position(T0 + 900), a_fill()
    decision = {"at": T0 + 900, "action": "open", "reason": "order", "p_buy": 0.7, "stop_loss": 2970.0}
    with LiveState(db, "paper") as state:
        state.commit(
            Step(
                at=T0 + 900,
                trader=TRADER,
                position=position,
                decision=decision,
                fills=(("cid-old", fill),),
                orders=(("cid-old", "closed", {"at": T0}), (position.client_id, "filled", {"at": T0 + 900})),
                equity=10_012.5,
            )
        )
    with LiveState(db, "paper") as state:  # a new process: everything from the file
        restored = state.position()
        assert restored is not None and restored.record() == position.record()
        assert restored.watch == position.watch and restored.entry_executed == 3000.3
        assert state.fills() == [fill]
        assert state.decisions() == [decision] and state.decisions(last=1) == [decision]
        assert state.meta("trader") == TRADER and state.meta("last_moment") == T0 + 900
        assert [(o["client_id"], o["status"]) for o in state.orders()] == [
            ("cid-old", "closed"),
            (position.client_id, "filled"),
        ]
        assert state.equity() == [(T0 + 900, 10_012.5)]


def test_a_failed_step_writes_nothing(db: Path) -> None:
    with LiveState(db, "paper") as state:
        state.commit(Step(at=T0, trader=TRADER, position=a_position()))
        broken = {"at": T0 + 900, "action": "open", "not json": object()}
        with pytest.raises(TypeError):
            state.commit(Step(at=T0 + 900, trader={**TRADER, "equity": 1.0}, position=None, decision=broken))
        assert state.position() is not None and state.meta("last_moment") == T0
        assert state.meta("trader")["equity"] == 10_012.5 and state.decisions() == []


def test_a_write_blocked_by_another_writer_is_a_clear_error_and_writes_nothing(db: Path) -> None:
    with LiveState(db, "paper", timeout=0.05) as state:
        state.commit(Step(at=T0, trader=TRADER, position=a_position()))
        other = sqlite3.connect(db, isolation_level=None)  # a long ingest in another process holds the write lock
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(DataError, match="locked by another writer .*the live state was not written"):
                state.commit(Step(at=T0 + 900, trader=TRADER, position=None))
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert state.position() is not None and state.meta("last_moment") == T0
        state.commit(Step(at=T0 + 900, trader=TRADER, position=None))  # the next period writes as usual
        assert state.position() is None and state.meta("last_moment") == T0 + 900


def test_an_order_marked_sent_survives_a_crash_before_its_step(db: Path) -> None:
    with LiveState(db, "live") as state:
        state.order_sent("cid-1", T0, {"order": {"at": T0}})
    with LiveState(db, "live") as state:
        assert [(o["client_id"], o["status"]) for o in state.orders("sent")] == [("cid-1", "sent")]
        assert state.meta("last_moment") is None


def test_accounts_keep_apart_and_clear_forgets_only_one(db: Path) -> None:
    with LiveState(db, "paper") as paper, LiveState(db, "replay") as replay:
        paper.commit(Step(at=T0, trader=TRADER, position=a_position(), fills=(("a", a_fill()),)))
        replay.commit(Step(at=T0 + 60, trader=TRADER, position=None, fills=(("b", a_fill(T0 + 600)),)))
        replay.clear()
        assert replay.fills() == [] and replay.meta("trader") is None and replay.position() is None
        assert len(paper.fills()) == 1 and paper.position() is not None
    assert accounts(db) == ["paper"]


def test_the_candle_store_is_untouched_and_still_opens(db: Path) -> None:
    with CandleStore(db) as store:
        before = store.read("ETHUSDT")
    with LiveState(db, "paper") as state:
        state.commit(Step(at=T0, trader=TRADER, position=None))
    with CandleStore(db) as store:
        assert store.read("ETHUSDT").equals(before)
    tables = {row[0] for row in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"candles", "symbols", "live_schema", "live_position", "live_orders", "live_fills"} <= tables


def test_state_from_a_newer_version_is_refused(db: Path) -> None:
    LiveState(db, "paper").close()
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE live_schema SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(DataError) as caught:
        LiveState(db, "paper")
    assert str(caught.value) == (
        f"{db}: live state written by a newer lstm-trading (schema {SCHEMA_VERSION + 1}, this one reads up to "
        f"{SCHEMA_VERSION}); upgrade lstm-trading"
    )


def test_a_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such database; the live loop keeps its state in the candle database"):
        LiveState(tmp_path / "nope.db", "paper")


def test_nan_fields_round_trip(db: Path) -> None:
    watch = PositionWatch(an_order(), 3600, COSTS)  # nothing checked yet: last close NaN
    with LiveState(db, "paper") as state:
        state.commit(Step(at=T0, trader=TRADER, position=Position("cid", watch)))
        restored = state.position()
    assert restored is not None and math.isnan(restored.watch.last_close) and math.isnan(restored.entry_executed)


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not sqlite, just text that is long enough to have a header page\n" * 20)
    with pytest.raises(DataError, match=r"notes.db: not a database the live loop can read \(file is not a database\)"):
        accounts(path)


@pytest.mark.parametrize(
    ("table", "column", "value", "where"),
    [
        ("live_meta", "value", "{not json", "table live_meta, key 'trader' of account 'paper'"),
        ("live_fills", "record", '{"entry_time": 1}', "table live_fills, the fill entered at"),
        ("live_position", "record", '{"client_id": "x"}', "table live_position, the position of account 'paper'"),
        ("live_decisions", "record", "[1, 2", "table live_decisions, the decision at"),
    ],
)
def test_tampered_live_state_is_named_by_table_and_row(
    db: Path, table: str, column: str, value: str, where: str
) -> None:
    """Invalid JSON in live_meta or a fill record missing keys ended `live-status` and `live` in a traceback."""
    from typer.testing import CliRunner

    from lstm_trading.cli import app

    decision = {"at": T0 + 900, "action": "open", "reason": "order", "p_buy": 0.7, "stop_loss": 2970.0}
    with LiveState(db, "paper") as state:
        state.set_meta(settings={"mode": "paper", "symbol": "ETHUSDT"})
        state.commit(
            Step(at=T0 + 900, trader=TRADER, position=a_position(T0 + 900), decision=decision,
                 fills=(("cid-old", a_fill()),), equity=10_012.5)
        )  # fmt: skip
    connection = sqlite3.connect(db)
    key = " AND key = 'trader'" if table == "live_meta" else ""
    connection.execute(f"UPDATE {table} SET {column} = ? WHERE account = 'paper'{key}", (value,))
    connection.commit()
    connection.close()
    result = CliRunner().invoke(app, ["live-status", "--db", str(db), "--account", "paper"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {db}: {where}") and result.stderr.count("\n") == 1, result.stderr
    assert "the live state was edited or damaged" in result.stderr
