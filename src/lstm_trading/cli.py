"""The `lstm-trading` command: parse, call the library, print. No logic lives here.

Every `LstmTradingError` becomes one line on stderr and exit code 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from lstm_trading.errors import LstmTradingError


class _OneLineErrors(TyperGroup):
    """Turns every `LstmTradingError` into one line on stderr and exit code 2, also under `CliRunner`."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except LstmTradingError as error:
            if _state["debug"]:
                raise
            err_console.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_OneLineErrors,
    name="lstm-trading",
    help="Train an LSTM on 1-minute candles to decide Buy / Sell / no trade, with stop loss and take profit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ingest_app = typer.Typer(help="Bring candles into the SQLite store.", no_args_is_help=True)
db_app = typer.Typer(help="Maintain candle databases.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
app.add_typer(db_app, name="db")

console = Console()
err_console = Console(stderr=True)

_state = {"debug": False}

DB_OPTION = typer.Option(Path("bybit1min.db"), "--db", help="SQLite candle database.")
SYMBOL_OPTION = typer.Option("ETHUSDT", "--symbol", help="Symbol name in the store.")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _state["debug"] = debug


# --- commands are added below, one section per module ---


# --- ingest exchange (data/exchange.py) ---


@ingest_app.command("exchange")
def ingest_exchange(
    db: Path = DB_OPTION,
    exchange_id: str = typer.Option("bybit", "--exchange", help="Any exchange ccxt knows (ccxt.exchanges)."),
    symbol: str = SYMBOL_OPTION,
    market: str = typer.Option("linear", "--market", help="linear (USDT perpetual) or spot."),
    since: str | None = typer.Option(
        None, "--since", help="Fill every missing minute from here on (gaps included); default: after the last stored."
    ),
    until: str | None = typer.Option(
        None, "--until", help="Stop before this moment (default: the last closed minute)."
    ),
    page_limit: int | None = typer.Option(
        None, "--page-limit", min=1, help="Candles per request (default: the exchange's maximum, e.g. Bybit 1000)."
    ),
    retries: int = typer.Option(5, "--retries", min=0, help="Retries after a network error or rate limit, then stop."),
    backoff: float = typer.Option(1.0, "--backoff", min=0.0, help="Seconds before the first retry; doubles each time."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary: only warnings and errors (cron)."),
) -> None:
    """Download 1-minute candles with ccxt: incremental, resumable, safe to run every minute from cron."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # ccxt takes half a second to import: only this command pays for it.
    from lstm_trading.data import exchange
    from lstm_trading.data.candles import describe_gaps
    from lstm_trading.data.store import CandleStore
    from lstm_trading.timeutil import format_time, parse_moment

    start = parse_moment(since) if since is not None else None
    end = parse_moment(until) if until is not None else None
    source = exchange.source_factory(exchange_id, market, page_limit=page_limit)
    bar = Progress(
        TextColumn(f"{symbol} minutes"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet or not err_console.is_terminal,
        transient=True,
    )
    task = bar.add_task("download", total=None, rate="")

    def progress(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)
        speed = bar.tasks[task].speed
        bar.update(task, rate=f"{speed:,.0f} min/s" if speed else "")

    def show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
        err_console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)

    try:
        with warnings.catch_warnings(), bar, CandleStore(db, create=True) as store:
            warnings.simplefilter("always")  # one warning per page, even when two pages read alike
            warnings.showwarning = show_warning
            result = exchange.ingest(
                store, source, symbol, since=start, until=end, retries=retries, backoff_s=backoff, progress=progress
            )
    except KeyboardInterrupt:
        err_console.print("interrupted: every finished page is stored; run the command again to resume")
        raise typer.Exit(130) from None
    if quiet or result.pages == 0:
        return  # cron: silent when there was nothing to do
    console.print(
        f"{symbol} ({source.exchange_id} {market}, {result.exchange_symbol}): {result.added:,} rows added "
        f"from {result.pages:,} request{'s' if result.pages != 1 else ''}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if result.held is not None:
        first, last, count = result.held
        held = f"held: {format_time(first)} to {format_time(last)}, {count:,} minutes"
        console.print(held, markup=False, highlight=False, soft_wrap=True)
    gaps = describe_gaps(result.gaps)
    if result.gaps:
        gaps += f" (`lstm-trading gaps --db {db} --symbol {symbol}` lists them; --since fetches them again)"
    console.print(gaps, markup=False, highlight=False, soft_wrap=True)


# --- data/csv.py, data/store.py: ingest csv, db migrate, gaps ---
# Imports inside the commands keep `lstm-trading ingest` from importing torch and the other stages.


def _show_warnings(caught: list[warnings.WarningMessage]) -> None:
    for warning in caught:
        err_console.print(f"warning: {warning.message}", markup=False, highlight=False, soft_wrap=True)


@ingest_app.command("csv")
def ingest_csv(
    file: Path = typer.Argument(..., help="CSV with the header timestamp,open,high,low,close,volume."),
    db: Path = DB_OPTION,
    symbol: str = SYMBOL_OPTION,
    exchange: str | None = typer.Option(None, "--exchange", help="Exchange the candles come from, e.g. bybit."),
    market: str | None = typer.Option(None, "--market", help="spot or linear (with --exchange)."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite stored minutes whose values differ."),
) -> None:
    """Import 1-minute candles from a CSV file: idempotent, one transaction per file."""
    from lstm_trading.data.candles import describe_gaps
    from lstm_trading.data.csv import read_candles_csv
    from lstm_trading.data.store import CandleStore
    from lstm_trading.errors import ConfigError
    from lstm_trading.timeutil import format_time

    if (exchange is None) != (market is None):
        raise ConfigError("give --exchange and --market together, e.g. --exchange bybit --market linear")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        candles = read_candles_csv(file)
    _show_warnings(caught)
    with CandleStore(db, create=True) as store:
        result = store.upsert(symbol, candles, replace=replace, source=str(file), exchange=exchange, market=market)
        held = store.time_range(symbol)
        gaps = store.gaps(symbol)
    console.print(
        f"{symbol} in {db}: {result.added:,} rows added, {result.already_present:,} already present, "
        f"{result.conflicts:,} conflicts",
        markup=False,
        highlight=False,
    )
    if result.first_conflict is not None:
        what = "replaced" if replace else "kept as stored (use --replace to overwrite)"
        first = format_time(result.first_conflict)
        console.print(
            f"conflicts: {result.conflicts:,} stored minutes have other values, first {first}; {what}",
            markup=False,
            highlight=False,
        )
    if held is not None:
        span = f"{format_time(held[0])} to {format_time(held[1])}"
        console.print(f"held: {span} ({held[2]:,} candles)", markup=False, highlight=False)
    console.print(f"gaps: {describe_gaps(gaps)}", markup=False, highlight=False)


@db_app.command("migrate")
def db_migrate(
    database: Path = typer.Argument(..., help="Database from the original script (no primary key)."),
    out: Path | None = typer.Option(None, "--out", help="Write the migrated copy here and keep DATABASE as is."),
) -> None:
    """Copy a seed database into the current schema (the original is kept as a .bak file)."""
    from lstm_trading.data.store import CandleStore, backup_path, migrate_database

    with CandleStore(database) as store:
        legacy, extra = store.legacy, store.extra_columns
    if not legacy and out is None:
        console.print(f"{database}: already in the current schema; nothing to do", markup=False, highlight=False)
        return
    backup = None if out is not None else backup_path(database)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        target = migrate_database(database, out)
    _show_warnings(caught)
    with CandleStore(target) as store:
        held = {symbol: store.time_range(symbol) for symbol in store.symbols()}
    counts = ", ".join(f"{symbol} {value[2]:,} candles" for symbol, value in held.items() if value) or "no candles"
    console.print(f"migrated {database} -> {target}: {counts}", markup=False, highlight=False)
    if extra:
        console.print(f"dropped columns: {', '.join(extra)}", markup=False, highlight=False)
    if backup is not None:
        console.print(f"original kept as {backup}", markup=False, highlight=False)


@app.command("gaps")
def gaps_command(
    db: Path = DB_OPTION,
    symbol: str = SYMBOL_OPTION,
    start: str | None = typer.Option(None, "--start", help="Only from this moment (ISO or Unix time)."),
    end: str | None = typer.Option(None, "--end", help="Only before this moment (ISO or Unix time)."),
) -> None:
    """List the missing minutes (gaps) of a symbol's candles."""
    from rich.table import Table

    from lstm_trading.data.store import CandleStore
    from lstm_trading.errors import DataError
    from lstm_trading.timeutil import format_time, parse_moment

    first = None if start is None else parse_moment(start)
    last = None if end is None else parse_moment(end)
    with CandleStore(db) as store:
        held = store.time_range(symbol)
        if held is None:
            have = ", ".join(store.symbols()) or "none"
            raise DataError(f"{db}: no candles for {symbol} (symbols held: {have}); choose one with --symbol")
        gaps = store.gaps(symbol, first, last)
    span = f"{format_time(held[0])} to {format_time(held[1])}"
    console.print(f"{symbol} in {db}: {span} ({held[2]:,} candles)", markup=False, highlight=False)
    if not gaps:
        console.print("no gaps", markup=False, highlight=False)
        return
    total = sum(gap.minutes for gap in gaps)
    table = Table(title=f"Gaps in {symbol}", show_footer=True)
    table.add_column("first missing", footer=f"total: {len(gaps):,} gap{'s' if len(gaps) > 1 else ''}")
    table.add_column("last missing")
    table.add_column("minutes", justify="right", footer=f"{total:,}")
    for gap in gaps:
        table.add_row(format_time(gap.first_missing), format_time(gap.last_missing), f"{gap.minutes:,}")
    console.print(table)


def main() -> None:
    """Console-script entry point."""
    app()
