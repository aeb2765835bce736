"""Bad input across every command: exit code 2, one line naming the file and the row or key, no traceback
(unless --debug), and every table and file left as it was. Then random input (hypothesis) through the CSV
import and the journal reader, and training on non-finite and zero-volume data."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import sqlite3
import subprocess
import sys
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import openpyxl
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import dump_tables, snapshot, tiny_config
from lstm_trading.cli import app
from lstm_trading.core.config import dump_config
from lstm_trading.core.errors import DataError, ModelFileError, error_line
from lstm_trading.data.journal import read_journal, write_journal
from lstm_trading.data.store import CandleStore
from lstm_trading.features.compute import compute_features
from lstm_trading.models.bundle import load_bundle
from test_csv_ingest import HEADER

T_NEW = 1_704_585_600  # 2024-01-07 00:00 UTC: the first minute after the tiny market, so a partial import would show


def candle_lines(count: int = 6, start: int = T_NEW) -> list[str]:
    """Good CSV lines (line 2 onwards of a file) for minutes the tiny database does not hold yet."""
    return [f"{start + 60 * i},2300.0,2301.5,2299.0,2300.5,{10 + i}.0\n" for i in range(count)]


def with_line(lines: list[str], line: int, text: str) -> list[str]:
    """Replace file line `line` (the header is line 1) by `text`."""
    changed = list(lines)
    changed[line - 2] = text + "\n"
    return changed


@dataclass
class World:
    """What a user has: a candle database, a trained run, a journal and a configuration, all copies."""

    folder: Path
    db: Path
    run: Path
    journal: Path
    config: Path
    stack: ExitStack
    monkeypatch: pytest.MonkeyPatch

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def csv(self, lines: list[str], header: str = HEADER) -> Path:
        return self.file("candles.csv", header + "".join(lines))

    def workbook(self, rows: list[list[Any]], sheet: str = "tradesmain") -> Path:
        book = openpyxl.Workbook()
        assert book.active is not None
        book.active.title = sheet
        for row in rows:
            book.active.append(row)
        path = self.folder / "journal.xlsx"
        book.save(path)
        return path

    def database(self, statements: str) -> Path:
        path = self.folder / "other.db"
        connection = sqlite3.connect(path)
        connection.executescript(statements)
        connection.close()
        return path

    def edit_bundle(self, edit: Callable[[dict[str, Any]], None]) -> Path:
        path = self.run / "model" / "bundle.json"
        document = json.loads(path.read_text())
        edit(document)
        path.write_text(json.dumps(document))
        return path

    def train(self, *extra: str | Path, trades: Path | None = None, config: Path | None = None) -> list[str]:
        return [
            "train",
            "--db",
            str(self.db),
            "--trades",
            str(trades or self.journal),
            "--config",
            str(config or self.config),
            "--out",
            str(self.folder / "new_run"),
            "--no-progress",
            "--accelerator",
            "cpu",
            *map(str, extra),
        ]


@pytest.fixture
def world(tiny_db: Path, tiny_run: Path, tiny_trades: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    db = tmp_path / "candles.db"
    shutil.copy(tiny_db, db)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    journal = tmp_path / "val.xlsx"
    write_journal(journal, tiny_trades[["start_time", "entry_price", "side"]], {"horizon_seconds": 6 * 3600})
    config = tmp_path / "tiny.toml"
    config.write_text(dump_config(tiny_config()))
    with ExitStack() as stack:
        yield World(tmp_path, db, run, journal, config, stack, monkeypatch)


# --- the table: (command line, the file the message must name, a stable part of the message) ---

Made = tuple[list[str], Path, str]


def _missing_column(w: World) -> Made:
    path = w.csv(["2024-01-07 00:00:00,1,2,1,1\n"], header="timestamp,open,high,low,close\n")
    return ["ingest", "csv", str(path), "--db", str(w.db)], path, "missing column volume (columns found:"


def _csv_line(text: str, line: int = 5) -> Callable[[World], list[str]]:
    def make(w: World) -> list[str]:
        return with_line(candle_lines(), line, text)

    return make


def _csv_case(make_lines: Callable[[World], list[str]], fragment: str) -> Callable[[World], Made]:
    def make(w: World) -> Made:
        path = w.csv(make_lines(w))
        return ["ingest", "csv", str(path), "--db", str(w.db)], path, fragment

    return make


def _csv_bytes(content: Callable[[World], bytes], fragment: str) -> Callable[[World], Made]:
    def make(w: World) -> Made:
        path = w.file("candles.csv", content(w))
        return ["ingest", "csv", str(path), "--db", str(w.db)], path, fragment

    return make


T5 = T_NEW + 180  # the open time on line 5


def _duplicate_minute(w: World) -> list[str]:
    lines = candle_lines()
    return [*lines, lines[1].replace(",2300.5,", ",2300.9,")]


def _journal(command: str, rows: list[list[Any]], fragment: str, sheet: str = "tradesmain") -> Callable[[World], Made]:
    def make(w: World) -> Made:
        path = w.workbook(rows, sheet=sheet)
        if command == "train":
            return w.train(trades=path), path, fragment
        args = [command, str(w.run), "--db", str(w.db), "--trades", str(path)]
        return args + (["--no-progress"] if command == "backtest" else []), path, fragment

    return make


T_TRADE = 1_704_412_800  # 2024-01-05 00:00 UTC, inside the tiny market
JOURNAL_HEADER = ["start_time", "entry_price", "side"]


def _wrong_sheet(w: World) -> Made:
    return w.train("--sheet", "trades"), w.journal, "no sheet 'trades'; the workbook has: tradesmain, meta"


def _outside_the_data(w: World) -> Made:
    path = w.workbook([JOURNAL_HEADER, [1_500_000_000, 300.0, "Buy"], [1_500_003_600, 310.0, "Sell"]])
    return w.train(trades=path), path, f"{w.db}: no ETHUSDT candles from 2017-07-"


def _not_sqlite(command: Callable[[World, Path], list[str]]) -> Callable[[World], Made]:
    def make(w: World) -> Made:
        path = w.file("notes.db", "these are not candles\n")
        return command(w, path), path, "not a SQLite database; give the candle database made by ingest"

    return make


def _no_candles_table(w: World) -> Made:
    path = w.database("CREATE TABLE trades (id INTEGER, price REAL); INSERT INTO trades VALUES (1, 2.0);")
    return ["predict", str(w.run), "--db", str(path)], path, "no candles table (tables found: trades)"


def _text_column(w: World) -> Made:
    path = w.database(
        "CREATE TABLE candles (symbol TEXT, timestamp INTEGER, open TEXT, high REAL, low REAL, close REAL, "
        "volume REAL, PRIMARY KEY (symbol, timestamp));"
    )
    out = w.folder / "features.csv"
    return ["features", "--db", str(path), "--out", str(out)], path, "column candles.open is declared TEXT"


def _text_value(w: World) -> Made:
    connection = sqlite3.connect(w.db)
    first = connection.execute("SELECT min(timestamp) FROM candles").fetchone()[0]
    connection.execute("UPDATE candles SET close = 'abc' WHERE timestamp = ?", (first + 600,))
    connection.commit()
    connection.close()
    out = w.folder / "labels.xlsx"
    return ["label", "--db", str(w.db), "--out", str(out)], w.db, f"candle {first + 600} of ETHUSDT has close 'abc'"


def _locked(w: World) -> Made:
    w.monkeypatch.setitem(CandleStore.__init__.__kwdefaults__, "timeout", 0.05)
    other = sqlite3.connect(w.db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another import holds the write lock
    w.stack.callback(other.close)
    w.stack.callback(other.execute, "ROLLBACK")
    path = w.csv(candle_lines())
    return ["ingest", "csv", str(path), "--db", str(w.db)], w.db, "the database is locked by another writer"


def _config(text: str, fragment: str) -> Callable[[World], Made]:
    def make(w: World) -> Made:
        path = w.file("bad.toml", text)
        return w.train(config=path), path, fragment

    return make


def _run_config(w: World) -> Made:
    path = w.run / "config.toml"
    head, backtest = path.read_text().split("[backtest]")
    path.write_text(head + "[backtest]" + backtest.replace("fee = 0.00055", "fee = '0.055%'", 1))
    return ["backtest", str(w.run), "--db", str(w.db), "--no-progress"], path, "backtest.fee: expected float"


def _model(command: str, edit: Callable[[World], Path], fragment: str) -> Callable[[World], Made]:
    def make(w: World) -> Made:
        path = edit(w)
        args = [command, str(w.run), "--db", str(w.db)] + (["--no-progress"] if command == "backtest" else [])
        return (args if command != "report" else [command, str(w.run)]), path, fragment

    return make


def _remove_weights(w: World) -> Path:
    path = w.run / "model" / "weights.safetensors"
    path.unlink()
    return path


def _truncate_weights(w: World, keep_checksum: bool = True) -> Path:
    path = w.run / "model" / "weights.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    if not keep_checksum:
        w.edit_bundle(lambda d: d["weights"].pop("sha256"))
    return path


def _pickle_as_weights(w: World) -> Path:
    import hashlib

    path = w.run / "model" / "weights.safetensors"
    path.write_bytes(pickle.dumps({"lstm.weight_ih_l0": np.zeros((64, 13))}))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    w.edit_bundle(lambda d: d["weights"].update(sha256=digest))  # whoever swapped the file fixed the checksum too
    return path


def _wider_model(w: World) -> Path:
    w.edit_bundle(lambda d: d["model"].update(hidden_size=32))
    return w.run / "model" / "weights.safetensors"


def _pickle_as_json(w: World) -> Path:
    path = w.run / "model" / "bundle.json"
    path.write_bytes(pickle.dumps({"format": "lstm-trading-bundle"}))
    return path


def _truncated_checkpoint(w: World) -> Made:
    path = w.run / "checkpoints" / "last.ckpt"
    path.write_bytes(path.read_bytes()[:1000])
    args = w.train("--resume")
    args[args.index("--out") + 1] = str(w.run)
    return args, path, "not a readable training checkpoint (RuntimeError: PytorchStreamReader failed"


def _out_is_a_file(command: str) -> Callable[[World], Made]:
    def make(w: World) -> Made:
        path = w.file("run.txt", "a file where the folder should go\n")
        args = w.train() if command == "train" else ["demo", "--out", str(path), "--days", "1", "--no-progress"]
        if command == "train":
            args[args.index("--out") + 1] = str(path)
        return args, path, f"--out {path}: is a file"

    return make


CASES: dict[str, Callable[[World], Made]] = {
    # CSV import (ingest csv)
    "csv: missing column": _missing_column,
    "csv: text in a price": _csv_case(_csv_line(f"{T5},2300.0,2.3O1,2299.0,2300.5,12.0"), "line 5: high '2.3O1'"),
    "csv: NaN": _csv_case(_csv_line(f"{T5},2300.0,2301.5,2299.0,NaN,12.0"), "line 5: close is missing (empty or NaN)"),
    "csv: negative price": _csv_case(
        _csv_line(f"{T5},-2300.0,2301.5,2299.0,2300.5,12.0"), "line 5: open is -2300.0; prices must be above 0"
    ),
    "csv: zero price": _csv_case(_csv_line(f"{T5},2300.0,2301.5,0,2300.5,12.0"), "line 5: low is 0.0"),
    "csv: high below low": _csv_case(
        _csv_line(f"{T5},2300.0,2298.0,2299.0,2300.5,12.0"), "line 5: high 2298.0 is below low 2299.0"
    ),
    "csv: duplicate minute with other values": _csv_case(
        _duplicate_minute, "lines 3 and 8: two different candles for 2024-01-07 00:01 UTC"
    ),
    "csv: seconds not on a minute": _csv_case(
        _csv_line(f"{T5 + 30},2300.0,2301.5,2299.0,2300.5,12.0"), f"line 5: timestamp {T5 + 30} is not on a minute"
    ),
    "csv: huge value": _csv_case(_csv_line(f"{T5},2300.0,2301.5,2299.0,2300.5,1e400"), "line 5: volume inf is not"),
    "csv: not a CSV (an Excel file)": _csv_bytes(lambda w: w.journal.read_bytes(), "is a ZIP or Excel file"),
    "csv: not a CSV (binary)": _csv_bytes(lambda w: bytes(range(256)), "not a CSV text file (it holds binary data)"),
    "csv: empty file": _csv_bytes(lambda w: b"", "the file is empty; a candle CSV needs the header"),
    # the trade journal (train, evaluate, backtest)
    "journal: wrong sheet": _wrong_sheet,
    "journal: missing column": _journal(
        "evaluate", [["start_time", "side"], [T_TRADE, "Buy"]], "missing column(s) entry_price in the header (row 1)"
    ),
    "journal: unknown side": _journal(
        "backtest", [JOURNAL_HEADER, [T_TRADE, 2300.0, "Buy"], [T_TRADE + 60, 2300.0, "Long"]], "row 3: side is 'Long'"
    ),
    "journal: entry price 0": _journal("train", [JOURNAL_HEADER, [T_TRADE, 0, "Buy"]], "row 2: entry_price is 0;"),
    "journal: start time as text": _journal(
        "train", [JOURNAL_HEADER, [T_TRADE, 2300.0, "Buy"], ["next Tuesday", 2300.0, "Sell"]], "row 3: start_time is"
    ),
    "journal: all rows outside the data": _outside_the_data,
    # candle databases
    "database: not SQLite (gaps)": _not_sqlite(lambda w, p: ["gaps", "--db", str(p)]),
    "database: not SQLite (db migrate)": _not_sqlite(lambda w, p: ["db", "migrate", str(p)]),
    "database: not SQLite (ingest exchange)": _not_sqlite(lambda w, p: ["ingest", "exchange", "--db", str(p)]),
    "database: no candles table": _no_candles_table,
    "database: wrong column types": _text_column,
    "database: text stored as a price": _text_value,
    "database: locked by a writer": _locked,
    # configuration
    "config: unknown key": _config("[train]\nepohcs = 3\n", "unknown key 'train.epohcs'; did you mean 'epochs'?"),
    "config: wrong type": _config("[train]\nbatch_size = 'eight'\n", "train.batch_size: expected int, got str"),
    "config: negative window": _config("[targets]\nmax_len = -5\n", "targets.max_len: must be at least 1 minute"),
    "config: batch of 0": _config("[train]\nbatch_size = 0\n", "train.batch_size: must be at least 1"),
    "config: not TOML": _config("[train\nepochs = 3\n", "not valid TOML: Expected ']'"),
    "config: the run's config.toml edited": _run_config,
    # model folders
    "model: missing file": _model("predict", _remove_weights, "weights.safetensors: missing"),
    "model: truncated weights": _model("evaluate", _truncate_weights, "checksum differs from bundle.json"),
    "model: truncated weights, no checksum": _model(
        "predict", lambda w: _truncate_weights(w, keep_checksum=False), "not a readable safetensors file"
    ),
    "model: edited JSON with wrong shapes": _model(
        "backtest",
        _wider_model,
        "tensor 'lstm.weight_ih_l0' has shape (64, 13), the model in bundle.json needs (128, 13)",
    ),
    "model: edited JSON with a wrong type": _model(
        "predict",
        lambda w: w.edit_bundle(lambda d: d["model"].update(hidden_size=1.5)),
        "malformed settings (model.hidden_size: expected int, got float 1.5)",
    ),
    "model: edited scaler": _model(
        "predict",
        lambda w: w.edit_bundle(lambda d: d["feature_scaler"].update(scale=[1.0])),
        "feature_scaler: expected 13 numbers per entry",
    ),
    "model: newer format version": _model(
        "predict", lambda w: w.edit_bundle(lambda d: d.update(format_version=2)), "format version 2 is newer"
    ),
    "model: a pickle renamed to .safetensors": _model("predict", _pickle_as_weights, "not a readable safetensors file"),
    "model: bundle.json replaced by a pickle": _model("report", _pickle_as_json, "not valid JSON"),
    "model: truncated checkpoint on --resume": _truncated_checkpoint,
    # output folders that are files
    "train --out is a file": _out_is_a_file("train"),
    "demo --out is a file": _out_is_a_file("demo"),
}


def test_the_table_covers_every_kind_of_input_and_command() -> None:
    kinds = {name.split(":")[0] for name in CASES}
    assert {"csv", "journal", "database", "config", "model"} <= kinds
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_naming_the_file_and_changes_nothing(world: World, case: str) -> None:
    args, named, fragment = CASES[case](world)
    before_db = dump_tables(world.db)
    before = snapshot(world.folder)
    result = CliRunner().invoke(app, args)
    world.stack.close()  # release what the case holds (a lock) before comparing
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert str(named) in result.stderr, result.stderr
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert dump_tables(world.db) == before_db
    after = snapshot(world.folder)
    assert {name: after.get(name) for name in before} == before  # nothing lost, nothing half-written


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("these are not candles\n")
    command = [sys.executable, "-m", "lstm_trading", "gaps", "--db", str(notes)]
    plain = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert (plain.returncode, plain.stderr) == (
        2,
        f"error: {notes}: not a SQLite database; give the candle database made by ingest\n",
    )
    debug = subprocess.run([*command[:3], "--debug", *command[3:]], capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1
    assert debug.stderr.startswith("Traceback (most recent call last):")
    assert f"lstm_trading.core.errors.DataError: {notes}: not a SQLite database" in debug.stderr


def test_rows_out_of_time_order_are_sorted_with_a_warning(world: World) -> None:
    lines = candle_lines()
    path = world.csv([lines[2], lines[0], lines[1], *lines[3:]])
    before = dump_tables(world.db)
    result = CliRunner().invoke(app, ["ingest", "csv", str(path), "--db", str(world.db)])
    assert result.exit_code == 0
    assert result.stderr == f"warning: {path}: rows are not in time order (first at line 3); sorted them\n"
    after = dump_tables(world.db)
    added = sorted(set(after["candles"]) - set(before["candles"]))
    assert [row[1] for row in added] == [T_NEW + 60 * i for i in range(6)]
    assert set(before["candles"]) <= set(after["candles"])


# --- random input: a clean import or a clean error; never a crash, a partial write or a broken row ---

_FIELDS = st.one_of(
    st.sampled_from(["", "nan", "inf", "-1", "0", "1e400", "abc", "2024-01-07 00:00:00", "2024-01-07T00:00:30Z"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=0.5, max_value=3.0).map(lambda v: f"{v:.3f}"),  # prices that may well form a candle
    st.integers(min_value=0, max_value=30).map(lambda m: str(T_NEW + 60 * m)),
    st.integers(min_value=-5, max_value=5).map(lambda m: str(T_NEW - 60 * m)),  # overlapping stored minutes
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=5),
)


def _candle_rule_breaks(path: Path) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(
            "SELECT * FROM candles WHERE typeof(timestamp) != 'integer' OR timestamp % 60 != 0 "
            "OR NOT (open > 0 AND high > 0 AND low > 0 AND close > 0 AND volume >= 0) "
            "OR low > min(open, close) OR high < max(open, close) OR abs(volume) > 3.4e38 OR abs(high) > 3.4e38"
        ).fetchall()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A store holding the five minutes before T_NEW, as bytes to copy for each example."""
    path = tmp_path_factory.mktemp("small") / "small.db"
    stamps = T_NEW - 60 * np.arange(5, 0, -1)
    candles = pd.DataFrame(
        {"timestamp": stamps, "open": 2.0, "high": 2.5, "low": 1.5, "close": 2.0, "volume": 1.0}
    ).astype({"timestamp": "int64"})
    with CandleStore(path, create=True) as store:
        store.upsert("ETHUSDT", candles)
    return path.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(_FIELDS, min_size=6, max_size=6), min_size=1, max_size=6), replace=st.booleans())
def test_random_rows_through_ingest_store_all_or_nothing(
    tmp_path: Path, small_db: bytes, rows: list[list[str]], replace: bool
) -> None:
    db = tmp_path / "random.db"
    db.write_bytes(small_db)
    path = tmp_path / "random.csv"
    path.write_text(HEADER + "".join(",".join(row) + "\n" for row in rows), encoding="utf-8")
    before = dump_tables(db)
    result = CliRunner().invoke(app, ["ingest", "csv", str(path), "--db", str(db), *(["--replace"] if replace else [])])
    assert result.exit_code in (0, 2), result.exception
    after = dump_tables(db)
    if result.exit_code == 2:
        assert result.stderr.startswith(f"error: {path}") and result.stderr.count("\n") == 1
        assert after == before
        return
    assert _candle_rule_breaks(db) == []
    stored = {row[1] for row in after["candles"]}
    assert {row[1] for row in before["candles"]} <= stored  # never a stored minute lost
    if not replace:
        assert set(before["candles"]) <= set(after["candles"])  # nor changed without --replace


_CELLS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-1, -1.0, 0, 2300.5, T_TRADE, T_TRADE * 1000, T_TRADE + 30, "Buy", "sell", "SELL ", "Long", ""]),
    st.sampled_from(["2024-01-05 00:00", "2024-01-05T00:00:30Z", "yesterday", "1e400", "-1", "2300,5"]),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    st.text(max_size=6).filter(lambda s: all(ch.isprintable() for ch in s)),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=st.sampled_from([JOURNAL_HEADER, [*JOURNAL_HEADER, "stop_loss", "take_profit"], ["Start Time", "Side"]]),
    rows=st.lists(st.lists(_CELLS, min_size=5, max_size=5), max_size=6),
    skip=st.booleans(),
)
def test_random_journal_rows_read_cleanly_or_fail_cleanly(
    tmp_path: Path, header: list[str], rows: list[list[Any]], skip: bool
) -> None:
    path = tmp_path / "random.xlsx"
    book = openpyxl.Workbook()
    assert book.active is not None
    book.active.title = "tradesmain"
    book.active.append(header)
    for row in rows:
        book.active.append(row[: len(header)])
    book.save(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            journal = read_journal(path, skip_bad_rows=skip)
    except DataError as error:
        assert str(error).startswith(str(path)) and "\n" not in str(error)
        return
    trades = journal.trades
    assert len(trades) > 0 and trades["start_time"].dtype == np.int64
    assert (trades["start_time"] % 60 == 0).all() and (trades["start_time"] >= 100_000_000).all()
    assert trades["start_time"].is_monotonic_increasing
    expected = trades["side"].map({"Buy": 0, "Sell": 1, "Invalid": 2})
    assert (trades["label"] == expected).all()
    invalid = trades["label"] == 2
    assert (trades.loc[invalid, "entry_price"] == -1).all()
    entry = trades.loc[~invalid, "entry_price"]
    assert (np.isfinite(entry) & (entry > 0)).all()
    levels = trades.loc[~invalid, ["stop_loss", "take_profit", "entry_price", "label"]].dropna()
    buy, sell = levels[levels["label"] == 0], levels[levels["label"] == 1]
    assert ((buy["stop_loss"] < buy["entry_price"]) & (buy["entry_price"] < buy["take_profit"])).all()
    assert ((sell["take_profit"] < sell["entry_price"]) & (sell["entry_price"] < sell["stop_loss"])).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=400), st.binary(max_size=200).map(lambda b: b"PK\x03\x04" + b)))
def test_random_bytes_as_a_journal_fail_cleanly(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "random.xlsx"
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        read_journal(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


# --- training on bad numbers: a clear stop, and zero volume handled by the feature rules ---


def test_a_non_finite_batch_stops_train_naming_the_batch_and_the_feature(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lstm_trading.models.lstm.batches import SampleWindows

    original = SampleWindows.collate
    calls = []

    def poisoned(self: SampleWindows, positions: Any) -> Any:
        batch = original(self, positions)
        calls.append(len(calls))
        if len(calls) == 2:  # the second training batch: volume_pct of its second sample, first step
            batch.features[1, 0, 4] = math.inf
        return batch

    monkeypatch.setattr(SampleWindows, "collate", poisoned)
    result = CliRunner().invoke(app, world.train("--epochs", "1"))
    assert result.exit_code == 2, result.exception
    assert result.stderr.startswith("error: non-finite input (the loss is still finite) in epoch 0, batch 1 (")
    assert "; first non-finite feature: volume_pct, column 4 at step 0 of sample " in result.stderr
    assert result.stderr.count("\n") == 1
    with pytest.raises(ModelFileError, match="bundle.json: missing"):
        load_bundle(world.folder / "new_run")  # no model from a run that stopped


def test_zero_volume_minutes_train_and_predict_end_to_end(
    tiny_candles: pd.DataFrame, world: World, tmp_path: Path
) -> None:
    candles = tiny_candles.copy()
    minute = np.arange(len(candles))
    candles.loc[minute % 7 == 0, "volume"] = 0.0  # x / 0: an infinite change
    candles.loc[(minute >= 3000) & (minute < 3200), "volume"] = 0.0  # 0 / 0: no change at all
    db = tmp_path / "zero_volume.db"
    with CandleStore(db, create=True) as store:
        store.upsert("ETHUSDT", candles)
    features = compute_features(candles, tiny_config().features)
    volume_pct = features["volume_pct"]
    assert np.isfinite(features.to_numpy()).all()
    previous_zero = candles.set_index("timestamp")["volume"].shift(1).reindex(features.index) == 0
    assert previous_zero.sum() > 200 and (volume_pct[previous_zero] == 0).all()  # DESIGN.md: inf and NaN to 0

    args = world.train("--epochs", "1", "--batch-size", "32")
    args[args.index("--db") + 1] = str(db)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    bundle = load_bundle(world.folder / "new_run")
    assert all(torch.isfinite(p).all() for p in bundle.model.model.parameters())
    predicted = CliRunner().invoke(app, ["predict", str(world.folder / "new_run"), "--db", str(db), "--json"])
    assert predicted.exit_code == 0, predicted.output
    probabilities = json.loads(predicted.stdout)["probabilities"]
    assert math.isclose(sum(probabilities.values()), 1.0, rel_tol=1e-5)


TIME_FLAGS = [
    (["ingest", "exchange", "--db", "{db}"], "--from"),
    (["ingest", "exchange", "--db", "{db}"], "--to"),
    (["gaps", "--db", "{db}"], "--from"),
    (["gaps", "--db", "{db}"], "--to"),
    (["features", "--db", "{db}", "--out", "{dir}/f.csv"], "--from"),
    (["features", "--db", "{db}", "--out", "{dir}/f.csv"], "--to"),
    (["label", "--db", "{db}", "--out", "{dir}/val.xlsx"], "--from"),
    (["label", "--db", "{db}", "--out", "{dir}/val.xlsx"], "--to"),
    (["predict", "{run}", "--db", "{db}"], "--at"),
    (["backtest", "{run}", "--db", "{db}"], "--from"),
    (["backtest", "{run}", "--db", "{db}"], "--to"),
    (["live", "{run}", "--db", "{db}", "--replay"], "--from"),
    (["live", "{run}", "--db", "{db}", "--replay"], "--to"),
    (["live", "{run}", "--db", "{db}"], "--from"),
]
DURATION_FLAGS = [
    (["label", "--db", "{db}", "--out", "{dir}/val.xlsx"], "--every"),
    (["label", "--db", "{db}", "--out", "{dir}/val.xlsx"], "--horizon"),
    (["train", "--db", "{db}", "--out", "{dir}/run"], "--purge"),
    (["backtest", "{run}", "--db", "{db}"], "--every"),
    (["backtest", "{run}", "--db", "{db}"], "--max-hold"),
    (["live", "{run}", "--db", "{db}"], "--every"),
    (["live", "{run}", "--db", "{db}"], "--max-hold"),
    (["live", "{run}", "--db", "{db}"], "--max-model-age"),
]


def _time_flag_args(tmp_path: Path, command: list[str], flag: str, value: str) -> list[str]:
    places = {"db": str(tmp_path / "missing.db"), "run": str(tmp_path / "no-run"), "dir": str(tmp_path)}
    return [part.format(**places) for part in command] + [flag, value]


@pytest.mark.parametrize(("command", "flag"), TIME_FLAGS, ids=[" ".join([c[0], *c[-1:], f]) for c, f in TIME_FLAGS])
@pytest.mark.parametrize("value", ["yesterday-ish", "2025-13-45", "1e30"])
def test_a_bad_time_flag_names_the_flag_the_value_and_the_forms(
    tmp_path: Path, command: list[str], flag: str, value: str
) -> None:
    """Regression: `predict --at yesterday-ish` said "not a time" without naming --at. Flags are read before
    the run, database or exchange, so a missing run folder or database does not hide the bad value."""
    result = CliRunner().invoke(app, _time_flag_args(tmp_path, command, flag, value))
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr == (
        f"error: {flag}: cannot read {value!r} as a time (give Unix seconds or an ISO datetime such as "
        "2025-06-01T12:00, UTC)\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("command", "flag"), DURATION_FLAGS, ids=[f"{c[0]} {f}" for c, f in DURATION_FLAGS])
def test_a_bad_duration_flag_names_the_flag_the_value_and_the_forms(
    tmp_path: Path, command: list[str], flag: str
) -> None:
    result = CliRunner().invoke(app, _time_flag_args(tmp_path, command, flag, "soon"))
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr == f"error: {flag}: not a duration: 'soon'; use e.g. 30s, 15m, 24h or 90d\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "old", "new"),
    [
        (["ingest", "exchange", "--db", "{db}"], "--since", "--from"),
        (["ingest", "exchange", "--db", "{db}"], "--until", "--to"),
        (["gaps", "--db", "{db}"], "--start", "--from"),
        (["gaps", "--db", "{db}"], "--end", "--to"),
    ],
)
def test_time_ranges_are_from_and_to_everywhere_with_the_old_names_kept(
    tmp_path: Path, command: list[str], old: str, new: str
) -> None:
    """One vocabulary for time ranges; the old names still parse (and are named as the new one in errors)."""
    result = CliRunner().invoke(app, _time_flag_args(tmp_path, command, old, "yesterday-ish"))
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {new}: "), result.stderr


@pytest.mark.parametrize("command", ["label", "features"])
def test_an_existing_output_is_replaced_only_with_overwrite(tiny_db: Path, tmp_path: Path, command: str) -> None:
    """`label --out existing.xlsx` silently replaced a journal, and `features --out` the source CSV."""
    out = tmp_path / ("val.xlsx" if command == "label" else "features.csv")
    out.write_bytes(b"precious")
    args = [command, "--db", str(tiny_db), "--out", str(out)] + (["--horizon", "6h"] if command == "label" else [])
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2
    assert refused.stderr == f"error: --out {out}: exists; add --overwrite to replace it, or choose another file\n"
    assert out.read_bytes() == b"precious"
    replaced = CliRunner().invoke(app, [*args, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert out.read_bytes() != b"precious"


def test_an_error_kept_as_one_line_names_foreign_types_and_is_never_empty() -> None:
    """Failed folds, trials and retrainings are recorded by `error_line`: a table row must say what happened."""
    assert error_line(DataError("bybit1min.db row 12: NaN close\nsecond line")) == "bybit1min.db row 12: NaN close"
    assert error_line(IndexError("list index out of range")) == "IndexError: list index out of range"
    assert error_line(IndexError("list index out of range"), name_type=False) == "list index out of range"
    assert error_line(DataError("")) == "DataError"  # an empty message used to leave an empty reason, or fail
    assert error_line(ConnectionError("  \n")) == "ConnectionError"
    assert error_line(KeyboardInterrupt()) == "KeyboardInterrupt"
