"""The `lstm-trading` command: parse, call the library, print. No logic lives here.

Every `LstmTradingError` becomes one line on stderr and exit code 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import typer
from rich.console import Console
from typer.core import TyperGroup

from lstm_trading.core.errors import LstmTradingError
from lstm_trading.core.timeutil import format_time

if TYPE_CHECKING:
    from lstm_trading.core.config import BacktestConfig


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
        except OSError as error:  # a file the command reads or writes, refused by the system: name it
            if _state["debug"] or error.filename is None:
                raise
            err_console.print(
                f"error: {error.filename}: {error.strerror or error}", markup=False, highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None
        except typer.BadParameter as error:  # a flag's value typer cannot parse: one line, not a usage box
            err_console.print(f"error: {error.format_message()}", markup=False, highlight=False, soft_wrap=True)
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

# readable=False: the store says in one line what is wrong with a database; typer's check prints a usage box
DB_OPTION = typer.Option(Path("bybit1min.db"), "--db", help="SQLite candle database.", readable=False)
SYMBOL_OPTION = typer.Option("ETHUSDT", "--symbol", help="Symbol name in the store.")
# The trading flags `backtest` and `live` share (read by `_trading_settings`): one declaration each.
EVERY_OPTION = typer.Option(None, "--every", help="Decision interval, e.g. 15m (default from the run).")
MIN_PROB_OPTION = typer.Option(None, "--min-prob", help="Trade only where the side's probability is at least this.")
MIN_EV_OPTION = typer.Option(
    None,
    "--min-ev",
    help="Trade only where EV = p TP - (1 - p) SL - costs exceeds this, in % of entry (default 0).",
)
LEVELS_OPTION = typer.Option(
    None, "--levels", help="Stop loss and take profit from the model's heads (model) or k x ATR (atr)."
)
FEE_OPTION = typer.Option(None, "--fee", help="Taker fee per side, e.g. 0.055%.")
SLIPPAGE_OPTION = typer.Option(None, "--slippage", help="Slippage per side, e.g. 0.01%.")
MAX_HOLD_OPTION = typer.Option(None, "--max-hold", help="Close a position after this, e.g. 24h.")
RISK_OPTION = typer.Option(
    None, "--risk", help="Size positions to lose this share of equity at the stop, e.g. 1% (default: fixed share)."
)
POSITION_SHARE_OPTION = typer.Option(
    None, "--position-share", help="Share of equity per position, the maximum with --risk (default 100%)."
)
DAILY_LOSS_LIMIT_OPTION = typer.Option(
    None, "--daily-loss-limit", help="Kill switch: no new entries for the UTC day after losing this share, e.g. 3%."
)
FUNDING_OPTION = typer.Option(
    None,
    "--funding",
    help="Perpetuals: funding per 8 h, longs pay when positive, e.g. 0.01% (the default); 0 turns it off. "
    "Stored rates (ingest funding) replace it; spot symbols pay none.",
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _state["debug"] = debug


def _moment(text: str | None, option: str) -> int | None:
    """A time flag's value in UTC seconds, None when not given. Every time flag goes through here, so a bad
    value is one line naming the flag, the value and the accepted forms (Unix seconds, ISO datetime, UTC)."""
    from lstm_trading.core.timeutil import parse_moment

    return None if text is None else parse_moment(text, option=option)


@overload
def _duration(text: str, option: str) -> int: ...
@overload
def _duration(text: str | None, option: str) -> int | None: ...
def _duration(text: str | None, option: str) -> int | None:
    """A duration flag's value (`15m`, `24h`, `90d`) in seconds, None when not given; errors name the flag."""
    from lstm_trading.core.timeutil import parse_duration

    return None if text is None else parse_duration(text, option=option)


def _on_off(text: str, option: str) -> bool:
    from lstm_trading.core.errors import ConfigError

    if text.lower() not in ("on", "off"):
        raise ConfigError(f"{option}: expected on or off, got {text!r}")
    return text.lower() == "on"


def _trading_settings(
    run: Path,
    *,
    every: str | None,
    min_prob: float | None,
    fee: str | None,
    slippage: str | None,
    max_hold: str | None,
    risk: str | None,
    position_share: str | None,
    daily_loss_limit: str | None,
    funding: str | None,
    min_ev: float | None = None,
    levels: str | None = None,
    base: BacktestConfig | None = None,
) -> BacktestConfig:
    """The run's backtest settings (or `base`) with the flags `backtest` and `live` share applied: one reading of
    them, so a replay and a backtest given the same flags trade with the same settings."""
    from lstm_trading.core.config import Config
    from lstm_trading.core.timeutil import parse_fraction
    from lstm_trading.runs.backtest import run_config

    def fraction(text: str | None, option: str) -> float | None:
        return None if text is None else parse_fraction(text, option=option)

    def signed(text: str | None, option: str) -> float | None:  # a funding rate may be negative
        if text is None or not text.strip().startswith("-"):
            return fraction(text, option)
        return -parse_fraction(text.strip()[1:], option=option)

    return (
        Config(backtest=run_config(run) if base is None else base)
        .with_overrides(
            "backtest",
            every_seconds=_duration(every, "--every"),
            min_prob=min_prob,
            min_ev=min_ev,
            levels=levels,
            fee=fraction(fee, "--fee"),
            slippage=fraction(slippage, "--slippage"),
            max_hold_seconds=_duration(max_hold, "--max-hold"),
            risk=fraction(risk, "--risk"),
            position_share=fraction(position_share, "--position-share"),
            daily_loss_limit=fraction(daily_loss_limit, "--daily-loss-limit"),
            funding=signed(funding, "--funding"),
        )
        .backtest
    )


def _progress_bar(label: str, *, enabled: bool, remaining: bool = False) -> tuple[Any, Any]:
    """A transient bar on stderr, drawn only in a terminal (piped, it would leave a blank line on stderr):
    done / total and the elapsed time, or with `remaining` the rate and the time left."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[ProgressColumn] = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn("{task.fields[rate]}"), TimeRemainingColumn()] if remaining else [TimeElapsedColumn()]
    bar = Progress(*columns, console=err_console, disable=not enabled or not err_console.is_terminal, transient=True)
    return bar, bar.add_task(label, total=None, rate="")


def _refuse_existing(out: Path, overwrite: bool) -> None:
    """An output file that exists is replaced only with --overwrite: a journal or a source CSV is never lost to
    a typo (as `train` refuses an occupied run folder)."""
    from lstm_trading.core.errors import ConfigError

    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; name the file to write")
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out}: exists; add --overwrite to replace it, or choose another file")


# --- commands are added below, one section per module ---


# --- ingest exchange (data/exchange.py) ---


@ingest_app.command("exchange")
def ingest_exchange(
    db: Path = DB_OPTION,
    exchange_id: str = typer.Option("bybit", "--exchange", help="Any exchange ccxt knows (ccxt.exchanges)."),
    symbol: str = SYMBOL_OPTION,
    market: str = typer.Option("linear", "--market", help="linear (USDT perpetual) or spot."),
    since: str | None = typer.Option(
        None,
        "--from",
        "--since",
        help="Fill every missing minute from here on (gaps included); default: after the last stored.",
    ),
    until: str | None = typer.Option(
        None, "--to", "--until", help="Stop before this moment (default: the last closed minute)."
    ),
    page_limit: int | None = typer.Option(
        None, "--page-limit", min=1, help="Candles per request (default: the exchange's maximum, e.g. Bybit 1000)."
    ),
    retries: int = typer.Option(5, "--retries", min=0, help="Retries after a network error or rate limit, then stop."),
    backoff: float = typer.Option(1.0, "--backoff", min=0.0, help="Seconds before the first retry; doubles each time."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary: only warnings and errors (cron)."),
) -> None:
    """Download 1-minute candles with ccxt: incremental, resumable, safe to run every minute from cron."""

    # ccxt takes half a second to import: only this command pays for it.
    from lstm_trading.data import exchange
    from lstm_trading.data.candles import describe_gaps
    from lstm_trading.data.store import CandleStore

    start = _moment(since, "--from")
    end = _moment(until, "--to")
    source = exchange.source_factory(exchange_id, market, page_limit=page_limit)
    bar, task = _progress_bar(f"{symbol} minutes", enabled=not quiet, remaining=True)

    def progress(done: int, total: int) -> None:
        bar.start()  # only once there is something to fetch: a run with nothing to do shows nothing
        bar.update(task, completed=done, total=total)
        speed = bar.tasks[task].speed
        bar.update(task, rate=f"{speed:,.0f} min/s" if speed else "")

    def show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
        err_console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)

    try:
        with warnings.catch_warnings(), CandleStore(db, create=True) as store:
            warnings.simplefilter("always")  # one warning per page, even when two pages read alike
            warnings.showwarning = show_warning
            result = exchange.ingest(
                store, source, symbol, since=start, until=end, retries=retries, backoff_s=backoff, progress=progress
            )
    except KeyboardInterrupt:
        err_console.print("interrupted: every finished page is stored; run the command again to resume")
        raise typer.Exit(130) from None
    finally:
        bar.stop()
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
    _print_long_gaps(result.gaps)


def _print_long_gaps(gaps: Any) -> None:
    """The gaps that split the history into segments, with the default feature settings (`FeatureConfig`)."""
    from lstm_trading.core.config import FeatureConfig
    from lstm_trading.data.candles import describe_long_gaps

    features = FeatureConfig()
    line = describe_long_gaps(gaps, features.max_gap_minutes, features.warmup_minutes)
    if line is not None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@ingest_app.command("funding")
def ingest_funding_command(
    db: Path = DB_OPTION,
    symbol: str = SYMBOL_OPTION,
    exchange_id: str = typer.Option("bybit", "--exchange", help="The perpetual's exchange (ccxt.exchanges)."),
    since: str | None = typer.Option(
        None, "--from", "--since", help="Download the rates from here on (default: after the last stored)."
    ),
    until: str | None = typer.Option(None, "--to", "--until", help="Stop before this moment (default: now)."),
    retries: int = typer.Option(5, "--retries", min=0, help="Retries after a network error or rate limit, then stop."),
    backoff: float = typer.Option(1.0, "--backoff", min=0.0, help="Seconds before the first retry; doubles each time."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary: only warnings and errors (cron)."),
) -> None:
    """Download a perpetual's historical funding rates with ccxt; backtests and replays charge them instead of
    the constant --funding."""
    from lstm_trading.data import exchange
    from lstm_trading.data.store import CandleStore

    source = exchange.funding_source_factory(exchange_id)
    with warnings.catch_warnings(record=True) as caught, CandleStore(db, create=True) as store:
        warnings.simplefilter("always")
        try:
            result = exchange.ingest_funding(
                store,
                source,
                symbol,
                since=_moment(since, "--from"),
                until=_moment(until, "--to"),
                retries=retries,
                backoff_s=backoff,
            )
        finally:
            _show_warnings(caught)
    if quiet or result.pages == 0:
        return
    _echo_plain(
        f"{symbol} funding ({source.exchange_id}, {result.exchange_symbol}): {result.added:,} rates added from "
        f"{result.pages:,} request{'s' if result.pages != 1 else ''}"
    )
    if result.held is not None:
        first, last, count = result.held
        _echo_plain(f"held: {format_time(first)} to {format_time(last)}, {count:,} rates")
    if result.market is None:
        _echo_plain(
            f"note: {db} records no market for {symbol}: backtests charge funding only to symbols recorded as "
            f"perpetuals (`lstm-trading ingest exchange --db {db} --symbol {symbol} --market linear` records it)"
        )


# --- data/csv.py, data/store.py: ingest csv, db migrate, gaps ---
# Imports inside the commands keep `lstm-trading ingest` from importing torch and the other stages.


def _show_warnings(caught: list[warnings.WarningMessage]) -> None:
    for warning in caught:
        err_console.print(f"warning: {warning.message}", markup=False, highlight=False, soft_wrap=True)


@ingest_app.command("csv")
def ingest_csv(
    # readable=False: click's own check ends in a usage box; the reader says what is wrong in one line.
    file: Path = typer.Argument(
        ..., help="CSV with the header timestamp,open,high,low,close,volume (a pipe or .gz works).", readable=False
    ),
    db: Path = DB_OPTION,
    symbol: str = SYMBOL_OPTION,
    exchange: str | None = typer.Option(None, "--exchange", help="Exchange the candles come from, e.g. bybit."),
    market: str | None = typer.Option(None, "--market", help="spot or linear (with --exchange)."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite stored minutes whose values differ."),
) -> None:
    """Import 1-minute candles from a CSV file: idempotent, one transaction per file."""
    from lstm_trading.core.errors import ConfigError
    from lstm_trading.data.candles import describe_gaps
    from lstm_trading.data.csv import read_candles_csv
    from lstm_trading.data.store import CandleStore

    if (exchange is None) != (market is None):
        raise ConfigError("give --exchange and --market together, e.g. --exchange bybit --market linear")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        candles = read_candles_csv(file, symbol=symbol)
    _show_warnings(caught)
    with CandleStore(db, create=True) as store, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = store.upsert(symbol, candles, replace=replace, source=str(file), exchange=exchange, market=market)
        held = store.time_range(symbol)
        gaps = store.gaps(symbol)
    _show_warnings(caught)
    console.print(
        f"{symbol} in {db}: {result.added:,} rows added, {result.already_present:,} already present, "
        f"{result.conflicts:,} conflicts",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if result.first_conflict is not None:
        what = "replaced" if replace else "kept as stored (use --replace to overwrite)"
        first = format_time(result.first_conflict)
        console.print(
            f"conflicts: {result.conflicts:,} stored minutes have other values, first {first}; {what}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if held is not None:
        span = f"{format_time(held[0])} to {format_time(held[1])}"
        console.print(f"held: {span} ({held[2]:,} candles)", markup=False, highlight=False, soft_wrap=True)
    console.print(f"gaps: {describe_gaps(gaps)}", markup=False, highlight=False, soft_wrap=True)
    _print_long_gaps(gaps)


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
        console.print(f"{database}: already in the current schema; nothing to do", markup=False, soft_wrap=True)
        return
    backup = None if out is not None else backup_path(database)  # never an existing file: it is kept, not replaced
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        target = migrate_database(database, out, backup=backup)
    _show_warnings(caught)
    with CandleStore(target) as store:
        held = {symbol: store.time_range(symbol) for symbol in store.symbols()}
    counts = ", ".join(f"{symbol} {value[2]:,} candles" for symbol, value in held.items() if value) or "no candles"
    console.print(f"migrated {database} -> {target}: {counts}", markup=False, highlight=False, soft_wrap=True)
    if extra:
        console.print(f"dropped columns: {', '.join(extra)}", markup=False, highlight=False, soft_wrap=True)
    if backup is not None:
        console.print(f"original kept as {backup}", markup=False, highlight=False, soft_wrap=True)


@app.command("gaps")
def gaps_command(
    db: Path = DB_OPTION,
    symbol: str = SYMBOL_OPTION,
    start: str | None = typer.Option(None, "--from", "--start", help="Only from this moment (ISO or Unix time)."),
    end: str | None = typer.Option(None, "--to", "--end", help="Only before this moment (ISO or Unix time)."),
) -> None:
    """List the missing minutes (gaps) of a symbol's candles."""
    from rich.table import Table

    from lstm_trading.core.errors import DataError
    from lstm_trading.data.store import CandleStore

    first = _moment(start, "--from")
    last = _moment(end, "--to")
    with CandleStore(db) as store:
        held = store.time_range(symbol)
        if held is None:
            have = ", ".join(store.symbols()) or "none"
            raise DataError(f"{db}: no candles for {symbol} (symbols held: {have}); choose one with --symbol")
        gaps = store.gaps(symbol, first, last)
    span = f"{format_time(held[0])} to {format_time(held[1])}"
    console.print(f"{symbol} in {db}: {span} ({held[2]:,} candles)", markup=False, highlight=False, soft_wrap=True)
    if not gaps:
        console.print("no gaps", markup=False, highlight=False, soft_wrap=True)
        return
    total = sum(gap.minutes for gap in gaps)
    table = Table(title=f"Gaps in {symbol}", show_footer=True)
    table.add_column("first missing", footer=f"total: {len(gaps):,} gap{'s' if len(gaps) > 1 else ''}")
    table.add_column("last missing")
    table.add_column("minutes", justify="right", footer=f"{total:,}")
    for gap in gaps:
        table.add_row(format_time(gap.first_missing), format_time(gap.last_missing), f"{gap.minutes:,}")
    console.print(table)


# --- features, label (runs/features.py, samples/labels.py) ---

FEATURE_SET_OPTION = typer.Option(
    None,
    "--feature-set",
    help="seed (default: the original 13 changes) or levels (the same indicators as scale-free levels against "
    "price; README, Features).",
)
WITH_OPTION = typer.Option(
    None,
    "--with",
    "--with-symbols",
    help="Add another symbol's features from the same --db, aligned on the minute (repeatable: --with BTCUSDT).",
)


def _feature_overrides(config: Any, feature_set: str | None, with_symbols: list[str] | None) -> Any:
    return config.with_overrides(
        "features", feature_set=feature_set, with_symbols=tuple(with_symbols) if with_symbols else None
    )


@app.command("features")
def features_command(
    db: Path = DB_OPTION,
    symbol: str = SYMBOL_OPTION,
    out: Path = typer.Option(..., "--out", help="File to write: .csv, or .parquet (needs the parquet extra)."),
    start: str | None = typer.Option(None, "--from", help="Only rows from this moment (ISO or Unix time)."),
    end: str | None = typer.Option(None, "--to", help="Only rows before this moment (ISO or Unix time)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    feature_set: str | None = FEATURE_SET_OPTION,
    with_symbols: list[str] | None = WITH_OPTION,
) -> None:
    """Write the features (13 per symbol) and the ATR level of each minute after the warm-up, for inspection."""
    from lstm_trading.core.config import Config
    from lstm_trading.core.errors import DataError
    from lstm_trading.features.compute import features_file_format, write_features
    from lstm_trading.runs.features import candles_and_features

    config = _feature_overrides(Config(), feature_set, with_symbols).features
    features_file_format(out)  # a wrong suffix fails now, not after the features are computed
    _refuse_existing(out, overwrite)
    first = _moment(start, "--from")
    last = _moment(end, "--to")
    _, features = candles_and_features(db, symbol, config)
    held = f"{format_time(features.index[0])} to {format_time(features.index[-1])}"
    features = features.loc[first : None if last is None else last - 1]
    if features.empty:
        raise DataError(f"no feature rows of {symbol} in --from/--to; its features run from {held}")
    write_features(features, out)
    span = f"{format_time(features.index[0])} to {format_time(features.index[-1])}"
    console.print(
        f"wrote {len(features):,} rows ({span}) of {features.shape[1] - 1} features and atr to {out}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@app.command("label")
def label_command(
    db: Path = DB_OPTION,
    symbol: str = SYMBOL_OPTION,
    out: Path = typer.Option(..., "--out", help="Journal to write (.xlsx): sheets tradesmain and meta."),
    every: str = typer.Option("60m", "--every", help="Time between labelled moments (whole minutes)."),
    horizon: str = typer.Option("24h", "--horizon", help="How long a trade may take to touch its stop or target."),
    k_sl: float = typer.Option(2.0, "--k-sl", help="Stop loss distance in ATR_14h."),
    k_tp: float = typer.Option(3.0, "--k-tp", help="Take profit distance in ATR_14h."),
    fee: str = typer.Option("0.055%", "--fee", help="Taker fee per side (0.055% or 0.00055)."),
    slippage: str = typer.Option("0.01%", "--slippage", help="Slippage per side."),
    start: str | None = typer.Option(None, "--from", help="Only moments from this one (ISO or Unix time)."),
    end: str | None = typer.Option(None, "--to", help="Only moments before this one (ISO or Unix time)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out journal."),
) -> None:
    """Make a trade journal from the candles: Buy or Sell where the take profit is touched before the stop."""
    from lstm_trading.core.config import Config, round_trip
    from lstm_trading.core.errors import ConfigError, DataError
    from lstm_trading.core.timeutil import parse_fraction
    from lstm_trading.data.candles import find_gaps
    from lstm_trading.data.journal import write_journal
    from lstm_trading.runs.features import candles_and_features
    from lstm_trading.samples.labels import cost_warning, label_first_touch

    if out.suffix.lower() != ".xlsx":
        raise ConfigError(f"--out {out}: the journal is an Excel workbook; name it .xlsx")
    _refuse_existing(out, overwrite)
    config = (
        Config()
        .with_overrides(  # through the overrides, so a value out of range is named by its flag
            "labels",
            every_seconds=_duration(every, "--every"),
            horizon_seconds=_duration(horizon, "--horizon"),
            k_sl=k_sl,
            k_tp=k_tp,
            fee=parse_fraction(fee, option="--fee"),
            slippage=parse_fraction(slippage, option="--slippage"),
        )
        .labels
    )
    first = _moment(start, "--from")
    last = _moment(end, "--to")
    candles, features = candles_and_features(db, symbol)
    result = label_first_touch(candles, features, config, start=first, end=last, symbol=symbol)
    trades = result.trades
    if trades.empty:
        raise DataError(
            f"no moments to label: {symbol} has features from {format_time(features.index[0])} and candles to "
            f"{format_time(candles['timestamp'].iloc[-1])}, and each moment needs its whole --horizon {horizon} "
            "inside them (and inside --from/--to)"
        )
    write_journal(out, trades, result.meta)

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    counts, reasons, total = result.counts, result.invalid_reasons, len(trades)
    span = f"{format_time(trades['start_time'].iloc[0])} to {format_time(trades['start_time'].iloc[-1])}"
    say(f"{symbol}: {total:,} moments every {every} from {span}, horizon {horizon}, SL {k_sl:g} / TP {k_tp:g} ATR")
    say(
        ", ".join(f"{side} {counts[side]:,} ({counts[side] / total:.1%})" for side in ("Buy", "Sell", "Invalid"))
        + f"; Invalid: {reasons['neither']:,} neither side won, {reasons['both']:,} both, "
        f"{reasons['costs']:,} too small for the costs"
    )
    say(f"median minutes to first touch (of the winning take profits): {result.median_minutes_to_touch:g}")
    _print_long_gaps(find_gaps(candles["timestamp"].to_numpy()))
    if any(result.skipped.values()):
        say(
            f"skipped moments: {result.skipped['in_warm_up']:,} inside the warm-up after a long gap, "
            f"{result.skipped['in_gap']:,} inside gaps (no candle to enter at)"
        )
    say(
        f"costs: {round_trip(config.fee, config.slippage):.3%} round trip = {result.cost_share_of_median_tp:.1%} "
        "of the median take-profit distance"
    )
    warning = cost_warning(result)
    if warning is not None:
        err_console.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    say(f"journal written to {out}")


# --- training, prediction, demo (runs/train.py, runs/predict.py, demo.py) ---


def _print_split(prepared: Any) -> None:
    from rich.table import Table

    split, report = prepared.split, prepared.report
    table = Table(title="Samples by split (time order)")
    for column in ("split", "trades", "Buy", "Sell", "Invalid", "purged", "from", "to"):
        table.add_column(column, justify="right" if column not in ("split", "from", "to") else "left")
    for name in ("train", "val", "test"):
        part = getattr(split, name)
        counts = part.class_counts()
        span = (format_time(part.start_time[0]), format_time(part.start_time[-1])) if len(part) else ("-", "-")
        table.add_row(
            name, str(len(part)), *(str(counts[c]) for c in ("Buy", "Sell", "Invalid")), str(split.purged[name]), *span
        )
    console.print(table)
    console.print(
        f"skipped trades: {report.skipped} ({report.skipped_no_history} before the usable candles, "
        f"{report.skipped_short_history} with too little history, {report.skipped_after_data} after the data, "
        f"{report.skipped_in_gap} inside a long gap or the warm-up after it)"
    )
    if report.long_gaps:
        console.print(
            f"long gaps: {report.long_gaps} split the candles into segments (the longest "
            f"{report.longest_gap_minutes:,} minutes with the warm-up after it); indicators restart after each"
        )


CACHE_DIR_OPTION = typer.Option(
    None, "--cache-dir", help="Feature cache folder (default: DB.features beside --db, or runtime.cache_dir)."
)
CACHE_OPTION = typer.Option(
    None, "--cache/--no-cache", help="Load features computed before from the same candles (default on)."
)


def _runtime_overrides(config: Any, *, cache: bool | None, cache_dir: Path | None, workers: int | None = None) -> Any:
    return config.with_overrides(
        "runtime", cache=cache, cache_dir=None if cache_dir is None else str(cache_dir), workers=workers
    )


def _chunk_len(text: str) -> int | str:
    from lstm_trading.core.errors import ConfigError

    if text == "auto" or text.isdigit():
        return text if text == "auto" else int(text)
    raise ConfigError(f"--chunk-len: expected 'auto' or a number of steps (0: off), got {text!r}")


@app.command("train")
def train_command(
    db: Path = DB_OPTION,
    symbol: str = SYMBOL_OPTION,
    trades: Path = typer.Option(Path("val.xlsx"), "--trades", help="Trade journal (.xlsx)."),
    sheet: str = typer.Option("tradesmain", "--sheet", help="Journal sheet."),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="Warn about bad journal rows and skip them."),
    out: Path = typer.Option(..., "--out", help="Run folder, e.g. runs/first."),
    config_file: Path | None = typer.Option(None, "--config", help="TOML configuration; flags override it."),
    max_len: int | None = typer.Option(None, "--max-len", help="Window length in minutes (default 129600)."),
    min_history: int | None = typer.Option(None, "--min-history", help="Shortest usable window in minutes."),
    epochs: int | None = typer.Option(None, "--epochs"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr"),
    seed: int | None = typer.Option(None, "--seed"),
    scaler: str | None = typer.Option(None, "--scaler", help="standard (default) or minmax (the seed's)."),
    purge: str | None = typer.Option(None, "--purge", help="Outcome horizon for the purge when the journal has none."),
    precision: str | None = typer.Option(None, "--precision", help="auto, 32-true, 16-mixed or bf16-mixed."),
    devices: str | None = typer.Option(None, "--devices", help="auto or a number of devices (processes on CPU)."),
    strategy: str | None = typer.Option(None, "--strategy", help="Lightning strategy, e.g. ddp."),
    accelerator: str = typer.Option("auto", "--accelerator", help="auto, cpu or cuda."),
    chunk_len: str | None = typer.Option(
        None,
        "--chunk-len",
        help="LSTM steps per checkpointed chunk: memory bounded at any window length; auto (default): measured "
        "fastest; 0: off.",
    ),
    cache_dir: Path | None = CACHE_DIR_OPTION,
    cache: bool | None = CACHE_OPTION,
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run in --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    model_kind: str = typer.Option(
        "lstm", "--model", help="Model kind: lstm (default) or gbm (a LightGBM baseline on window summaries)."
    ),
    checkpoint_criterion: str | None = typer.Option(
        None,
        "--checkpoint-criterion",
        help="What picks the best epoch, stops early and halves the rate: val_class_loss (default, the "
        "classification log-loss) or val_loss (classification + SL/TP regression, the seed's).",
    ),
    n_seeds: int = typer.Option(
        1,
        "--n-seeds",
        help="Train seeds --seed .. --seed+N-1 (into RUN/seeds/seed-S), print test metrics as mean ± std, keep "
        "the best-validation seed as RUN's model.",
    ),
    feature_set: str | None = FEATURE_SET_OPTION,
    with_symbols: list[str] | None = WITH_OPTION,
) -> None:
    """Train a model (the LSTM, or `--model gbm`) on a journal's trades and write the run folder (logs, model
    bundle, and the LSTM's checkpoints)."""
    from lstm_trading.core.config import load_config
    from lstm_trading.core.run_folder import RunFolder
    from lstm_trading.runs.train import check_training, prepare_journal, train_run, train_seeds

    recorded = RunFolder(out).config
    # --resume without --config continues with the run's own settings, not the defaults
    config = load_config(config_file if config_file is not None or not resume or not recorded.exists() else recorded)
    config = config.with_overrides("targets", max_len=max_len, min_history=min_history)
    config = config.with_overrides(
        "train",
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        precision=precision,
        devices=devices,
        strategy=strategy,
        chunk_len=None if chunk_len is None else _chunk_len(chunk_len),
        checkpoint_criterion=checkpoint_criterion,
    )
    config = _runtime_overrides(config, cache=cache, cache_dir=cache_dir)
    config = config.with_overrides("split", scaler=scaler, purge_seconds=_duration(purge or None, "--purge"))
    config = _feature_overrides(config, feature_set, with_symbols)
    # refuse first: before the journal is read and the samples built
    check_training(
        config, out, resume=resume, overwrite=overwrite, accelerator=accelerator, kind=model_kind, n_seeds=n_seeds
    )
    journal_run = prepare_journal(config, db=db, symbol=symbol, trades=trades, sheet=sheet, skip_bad_rows=skip_bad_rows)
    if journal_run.moved_to_boundary:
        err_console.print(
            f"warning: {journal_run.moved_to_boundary} start times inside a minute moved up to the next minute boundary"
        )
    for message in journal_run.warnings:
        err_console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)
    _print_split(journal_run.prepared)
    if n_seeds > 1:
        seeds_run = train_seeds(
            journal_run.prepared,
            config,
            out,
            n_seeds=n_seeds,
            overwrite=overwrite,
            accelerator=accelerator,
            progress=progress,
            sources=journal_run.sources,
            kind=model_kind,
        )
        if seeds_run.is_global_zero:
            _print_seeds(seeds_run)
        return
    run = train_run(
        journal_run.prepared,
        config,
        out,
        resume=resume,
        overwrite=overwrite,
        accelerator=accelerator,
        progress=progress,
        sources=journal_run.sources,
        kind=model_kind,
    )
    if run.is_global_zero:
        unit = "epoch" if run.kind == "lstm" else "boosting round"
        trained = f"{run.epochs_run} {unit}{'' if run.epochs_run == 1 else 's'}"
        console.print(
            f"best validation loss ({run.criterion}) {run.best_val_loss:.4f} after {trained}; model: {out / 'model'}"
        )


def _print_seeds(seeds_run: Any) -> None:
    """Each seed's validation and test figures, their mean ± std, and the seed kept as the run's model."""
    from lstm_trading.runs.train import TEST_METRICS

    chosen = seeds_run.chosen
    criterion = chosen.run.criterion
    unit = "epochs" if chosen.run.kind == "lstm" else "rounds"
    header = ("seed", f"best {criterion}", unit, *TEST_METRICS)
    rows = [
        (
            f"{r.seed}{' (kept)' if r is chosen else ''}",
            f"{r.run.best_val_loss:.4f}",
            r.run.epochs_run,
            *(f"{r.test[m]:.4f}" if r.test else "-" for m in TEST_METRICS),
        )
        for r in seeds_run.seeds
    ]
    spread = seeds_run.summary
    means = (f"{spread[m]['mean']:.4f} ± {spread[m]['std']:.4f}" if spread else "-" for m in TEST_METRICS)
    rows.append(("mean ± std", "", "", *means))
    _print_table(f"{len(seeds_run.seeds)} seeds, test split ({seeds_run.test_samples} samples)", header, rows)
    folder = seeds_run.run_dir
    console.print(
        f"kept seed {chosen.seed} (best validation {criterion} {chosen.run.best_val_loss:.4f}); "
        f"model: {folder / 'model'}; per seed: {folder / 'seeds.json'}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@app.command("predict")
def predict_command(
    run: Path = typer.Argument(..., help="Run folder (or its model/ folder)."),
    db_given: Path | None = typer.Option(
        None, "--db", help="Candle database (default: the one the run was trained on)."
    ),
    symbol_given: str | None = typer.Option(None, "--symbol", help="Symbol in the store (default: the run's)."),
    at: str | None = typer.Option(None, "--at", help="Moment (Unix s/ms or ISO, UTC); default after the last candle."),
    entry: float | None = typer.Option(None, "--entry", help="Entry price; default the last close."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    workers: int | None = typer.Option(
        None, "--workers", min=0, help="Inference processes, one thread each (default 0: one per core when worth it)."
    ),
    cache_dir: Path | None = CACHE_DIR_OPTION,
    cache: bool | None = CACHE_OPTION,
    min_prob: float | None = MIN_PROB_OPTION,
    min_ev: float | None = MIN_EV_OPTION,
    levels: str | None = LEVELS_OPTION,
    fee: str | None = FEE_OPTION,
    slippage: str | None = SLIPPAGE_OPTION,
) -> None:
    """Predict Buy / Sell / Invalid with stop loss and take profit prices at one moment, and the decision the
    backtest and the live loop would take there (expected value after costs, the run's settings)."""
    import json
    import os
    import sys

    from lstm_trading.core.config import Config
    from lstm_trading.core.jsonio import json_safe
    from lstm_trading.runs.predict import predict_run

    # The printed prediction is the command's whole result: with stdout closed (`>&-`) Python has no sys.stdout
    # and every print is dropped without a word, so say so before the work instead of exiting 0.
    if sys.stdout is None:
        raise LstmTradingError("stdout is closed, so the prediction would be lost; redirect it to a file instead")
    runtime = _runtime_overrides(Config(), cache=cache, cache_dir=cache_dir, workers=workers).runtime
    trading = None
    if any(value is not None for value in (min_prob, min_ev, levels, fee, slippage)):
        trading = _trading_settings(
            run,
            every=None,
            min_prob=min_prob,
            min_ev=min_ev,
            levels=levels,
            fee=fee,
            slippage=slippage,
            max_hold=None,
            risk=None,
            position_share=None,
            daily_loss_limit=None,
            funding=None,
        )
    result = predict_run(
        run, db=db_given, symbol=symbol_given, at=_moment(at, "--at"), entry=entry, runtime=runtime, trading=trading
    )
    if as_json:
        lines = [json.dumps(json_safe(result), allow_nan=False)]
    else:
        lines = [
            f"at {result['at_utc']} ({result['window_minutes']} minutes of history)",
            "P(Buy) {Buy:.3f}  P(Sell) {Sell:.3f}  P(Invalid) {Invalid:.3f}".format(**result["probabilities"])
            + f"  (most likely: {result['side']})",
            f"decision: {result['reason']}",
            f"entry {result['entry']:.2f}  stop loss {result['stop_loss_pct']:.3f} %  take profit "
            f"{result['take_profit_pct']:.3f} % ({result['levels']} levels)",
        ]
        if result["decision"] != "no trade":
            lines.append(f"stop loss {result['stop_loss']:.2f}  take profit {result['take_profit']:.2f}")
    try:  # plain echo, not rich: rich exits 1 without a word on a broken pipe
        typer.echo("\n".join(lines))
        sys.stdout.flush()
    except OSError as error:  # a reader that went away (`| head -0`), a full disk (`> /dev/full`)
        try:  # so that Python's own flush at exit does not print a second error
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
        raise LstmTradingError(f"could not write the prediction to stdout ({error.strerror or error})") from None


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for the demo's database, journal and run."),
    days: float | None = typer.Option(None, "--days", help="Days of synthetic market."),
    epochs: int | None = typer.Option(None, "--epochs"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """The main job on built-in synthetic data: market, labels, training, test metrics, latest prediction."""
    from dataclasses import replace

    from rich.table import Table

    from lstm_trading.demo import DemoSettings, run_demo
    from lstm_trading.report.tables import with_spread

    settings = DemoSettings()
    if days is not None:
        settings = replace(settings, days=days)
    if epochs is not None:
        settings = replace(settings, epochs=epochs)
    result = run_demo(out, settings=settings, progress=progress, echo=_echo_plain)
    table = Table(title="Demo: test split against baselines")
    for column in ("", "macro-F1", "accuracy", "log-loss"):
        table.add_column(column, justify="left" if not column else "right")
    rows = {"model": result.test_metrics, **result.baselines}
    for name, metrics in rows.items():
        log_loss = metrics.get("log_loss")
        table.add_row(  # stratified random: the mean ± std of its draws
            name.replace("_", " "),
            with_spread(metrics, "macro_f1"),
            with_spread(metrics, "accuracy"),
            "-" if log_loss is None else f"{log_loss:.3f}",
        )
    console.print(table)
    latest = result.latest_decision or {}
    traded = latest["decision"] in ("Buy", "Sell")
    bracket = f", stop loss {latest['stop_loss']:.2f}, take profit {latest['take_profit']:.2f}" if traded else ""
    p = latest["probabilities"]
    _echo_plain(
        f"latest moment {latest['at_utc']}: {latest['decision']} ({latest['reason']}; P Buy {p['Buy']:.2f}, "
        f"Sell {p['Sell']:.2f}, Invalid {p['Invalid']:.2f}), entry {latest['entry']:.2f}{bracket}"
    )
    _echo_plain(
        f"run folder: {result.run_dir}  (predict again: lstm-trading predict {result.run_dir} --db {out / 'demo.db'})"
    )
    if result.report is not None:
        _echo_plain(f"report: {result.report}")


# --- evaluation, backtest, report (runs/evaluate.py, runs/backtest.py, report/) ---


def _print_table(title: str, header: Any, rows: Any) -> None:
    from rich.table import Table

    table = Table(title=title)
    for i, column in enumerate(header):
        table.add_column(str(column), justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console.print(table)


@app.command("evaluate")
def evaluate_command(
    run: Path = typer.Argument(..., help="Run folder."),
    db: Path | None = typer.Option(None, "--db", help="Candle database (default: the one the run was trained on)."),
    symbol: str | None = typer.Option(None, "--symbol", help="Symbol in the store (default: the run's)."),
    trades: Path | None = typer.Option(
        None, "--trades", help="Evaluate on every trade of this journal instead of the run's test split."
    ),
    sheet: str | None = typer.Option(None, "--sheet", help="Journal sheet (default tradesmain)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the stratified-random baseline's draws."),
    against: Path | None = typer.Option(
        None,
        "--against",
        help="Another run folder (trained on the same candles and split) to evaluate on the same trades beside RUN.",
    ),
) -> None:
    """Test metrics next to baselines, SL/TP errors and calibration; writes metrics.json and figures into RUN."""
    from lstm_trading.report.tables import (
        COMPARISON_HEADER,
        comparison_rows,
        level_rows,
        metric_rows,
        no_information_lines,
        stratified_note,
    )
    from lstm_trading.runs.evaluate import evaluate_run

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        document, paths = evaluate_run(
            run, db=db, symbol=symbol, trades=trades, sheet=sheet, seed=seed, against=against
        )
    _show_warnings(caught)
    header, rows = metric_rows(document)
    _print_table(f"{document['split']}: {document['samples']} samples, model against baselines", header, rows)
    note = stratified_note(document)
    if note is not None:
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    if against is not None:
        _print_table(f"{document['split']}: {run} against {against}", COMPARISON_HEADER, comparison_rows(document))
    for line in no_information_lines(document):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    labels = ("Buy", "Sell", "Invalid")
    confusion = document["model"]["confusion"]
    _print_table("confusion matrix (rows: true, columns: predicted)", ("true", *labels), [
        (name, *row) for name, row in zip(labels, confusion, strict=True)
    ])  # fmt: skip
    header, rows = level_rows(document)
    _print_table("stop loss and take profit errors, % of entry", header, rows)
    calibration = document["calibration"]
    _print_table(
        f"reliability (ECE {calibration['ece']:.3f}; class priors {calibration['baselines']['stratified_random']:.3f})",
        ("top-class probability", "samples", "mean probability", "observed accuracy"),
        [
            (f"{r['low']:.1f}-{r['high']:.1f}", r["count"], f"{r['confidence']:.3f}", f"{r['accuracy']:.3f}")
            for r in calibration["table"]
        ],
    )
    console.print(f"wrote {', '.join(str(p) for p in paths)}", markup=False, highlight=False, soft_wrap=True)


@app.command("backtest")
def backtest_command(
    run: Path = typer.Argument(..., help="Run folder."),
    db: Path | None = typer.Option(None, "--db", help="Candle database (default: the one the run was trained on)."),
    symbol: str | None = typer.Option(None, "--symbol", help="Symbol in the store (default: the run's)."),
    start: str | None = typer.Option(None, "--from", help="First moment (default: the run's first test trade)."),
    end: str | None = typer.Option(None, "--to", help="End of the period, exclusive (default: the end of the data)."),
    every: str | None = EVERY_OPTION,
    min_prob: float | None = MIN_PROB_OPTION,
    min_ev: float | None = MIN_EV_OPTION,
    levels: str | None = LEVELS_OPTION,
    fee: str | None = FEE_OPTION,
    slippage: str | None = SLIPPAGE_OPTION,
    max_hold: str | None = MAX_HOLD_OPTION,
    risk: str | None = RISK_OPTION,
    position_share: str | None = POSITION_SHARE_OPTION,
    daily_loss_limit: str | None = DAILY_LOSS_LIMIT_OPTION,
    funding: str | None = FUNDING_OPTION,
    trades: Path | None = typer.Option(None, "--trades", help="A journal whose own trades run as a baseline."),
    random_runs: int = typer.Option(
        1000, "--random-runs", "--seeds", min=1, help="Random-entry runs: the random baseline and the p-value's null."
    ),
    trials: int = typer.Option(
        1, "--trials", min=1, help="Configurations tried to find this one (the deflated Sharpe ratio's N)."
    ),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Windows per forward pass."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Inference processes (default: one per core when worth it)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default RUN/backtest)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    sweep: bool = typer.Option(
        False,
        "--sweep",
        help="Pick --min-prob / --min-ev on the run's validation period (highest net per trade, 30 trades at "
        "least), then backtest at that threshold only.",
    ),
) -> None:
    """Trade the model's signals on 1-minute candles after costs, next to buy and hold and random entries."""
    from lstm_trading.backtest.execution import ev_note
    from lstm_trading.backtest.statistics import short_period_note
    from lstm_trading.core.timeutil import format_time as _format_utc
    from lstm_trading.report.tables import (
        EV_CALIBRATION_HEADER,
        SIGNIFICANCE_HEADER,
        SUMMARY_HEADER,
        SWEEP_HEADER,
        detail_rows,
        ev_calibration_rows,
        not_traded_rows,
        significance_rows,
        summary_rows,
        sweep_rows,
        verdict_line,
    )
    from lstm_trading.runs.backtest import backtest_run

    config = _trading_settings(
        run,
        every=every,
        min_prob=min_prob,
        min_ev=min_ev,
        levels=levels,
        fee=fee,
        slippage=slippage,
        max_hold=max_hold,
        risk=risk,
        position_share=position_share,
        daily_loss_limit=daily_loss_limit,
        funding=funding,
    )
    first = _moment(start, "--from")
    last = _moment(end, "--to")
    bar, task = _progress_bar("predicting moments", enabled=progress)

    def advance(done: float, total: int) -> None:
        bar.update(task, completed=int(done), total=total)

    with bar, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, folder = backtest_run(
            run,
            config=config,
            db=db,
            symbol=symbol,
            start=first,
            end=last,
            trades=trades,
            out_dir=out,
            random_runs=random_runs,
            trials=trials,
            batch_size=batch_size,
            workers=workers,
            progress=advance,
            sweep=sweep,
        )
    _show_warnings(caught)
    stats = result.stats
    if "sweep" in stats:
        swept = stats["sweep"]
        start_utc, end_utc = (_format_utc(t) for t in swept["validation_period"])
        _print_table(f"--sweep on the validation period {start_utc} to {end_utc}", SWEEP_HEADER, sweep_rows(stats))
        _echo_plain(swept["note"] or "chosen (*): " + ", ".join(f"{k} {v:g}" for k, v in swept["chosen"].items()))
    period = stats["period"]
    signals = stats["signals"]
    title = (
        f"backtest {period['start_utc']} to {period['end_utc']}: {stats['moments']} moments, "
        f"{signals['Buy']} Buy and {signals['Sell']} Sell signals"
    )
    _print_table(title, SUMMARY_HEADER, summary_rows(stats))
    _print_table("per trade, after costs", SIGNIFICANCE_HEADER, significance_rows(stats))
    _print_table("model", ("", ""), detail_rows(stats["model"]))
    _print_table("moments not traded", ("reason", "moments"), not_traded_rows(stats))
    _print_table("predicted EV against realised, by decile", EV_CALIBRATION_HEADER, ev_calibration_rows(stats))
    _echo_plain(ev_note(result.stats["settings"]))
    charged = stats["funding"]
    paid = f"; the model paid {charged['model_paid']:,.2f}" if charged["rate"] is not None else ""
    _echo_plain(f"funding: {charged['description']}{paid}")
    verdict = verdict_line(stats)
    if verdict is not None:
        _echo_plain(verdict)
    note = short_period_note(stats)
    if note is not None:
        _echo_plain(note)
    console.print(f"wrote {folder}", markup=False, highlight=False, soft_wrap=True)


@app.command("report")
def report_command(
    run: Path = typer.Argument(..., help="Run folder."),
    backtest_dir: Path | None = typer.Option(None, "--backtest", help="Backtest folder (default RUN/backtest)."),
) -> None:
    """Assemble RUN/report.html (self-contained, figures embedded) from what train, evaluate and backtest wrote."""
    from lstm_trading.report.document import write_report

    report = write_report(run, backtest_dir)
    for name, command in report.missing.items():
        err_console.print(f"missing {name}: run `{command}` first", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"report: {report.path} ({len(report.figures)} figures)", markup=False, highlight=False, soft_wrap=True
    )


# --- walk-forward (runs/walkforward.py) ---


def _walkforward_config(
    *,
    trades: Path | None,
    config_file: Path | None,
    out: Path,
    stages: dict[str, dict[str, Any]],
    runtime: dict[str, Any],
    trading: dict[str, Any],
    labelling: dict[str, Any],
    features: tuple[str | None, list[str] | None],
) -> Any:
    """The configuration `walkforward` and `tune` build from the same flags: the --config file, the stages'
    flags, the trading flags (read as `backtest` and `live` read them) and the labeller's (only without
    --trades)."""
    from dataclasses import replace

    from lstm_trading.core.config import load_config
    from lstm_trading.core.errors import ConfigError
    from lstm_trading.core.timeutil import parse_fraction

    flags = {"--label-every": "label_every", "--horizon": "horizon", "--k-sl": "k_sl", "--k-tp": "k_tp"}
    given = [flag for flag, key in flags.items() if labelling[key] is not None]
    if trades is not None and given:
        raise ConfigError(f"{given[0]}: labels the candles, so only without --trades (the journal is labelled)")
    config = load_config(config_file)
    for section, values in stages.items():
        config = config.with_overrides(section, **values)
    config = _feature_overrides(config, *features)
    config = _runtime_overrides(config, **runtime)
    config = replace(config, backtest=_trading_settings(out, **trading, base=config.backtest))
    fee, slippage = trading["fee"], trading["slippage"]
    return config.with_overrides(
        "labels",
        every_seconds=_duration(labelling["label_every"], "--label-every"),
        horizon_seconds=_duration(labelling["horizon"], "--horizon"),
        k_sl=labelling["k_sl"],
        k_tp=labelling["k_tp"],
        fee=None if fee is None else parse_fraction(fee, option="--fee"),
        slippage=None if slippage is None else parse_fraction(slippage, option="--slippage"),
    )


@app.command("walkforward")
def walkforward_command(
    db: Path = DB_OPTION,
    symbol: str = SYMBOL_OPTION,
    trades: Path | None = typer.Option(
        None, "--trades", help="Trade journal (.xlsx); without it the candles are labelled (first touch)."
    ),
    sheet: str = typer.Option("tradesmain", "--sheet", help="Journal sheet."),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="Warn about bad journal rows and skip them."),
    label_every: str | None = typer.Option(
        None, "--label-every", help="Without --trades: time between labelled moments (default 60m)."
    ),
    horizon: str | None = typer.Option(
        None, "--horizon", help="Without --trades: how long a labelled trade may run (default 24h; the purge)."
    ),
    k_sl: float | None = typer.Option(None, "--k-sl", help="Without --trades: stop loss distance in ATR_14h."),
    k_tp: float | None = typer.Option(None, "--k-tp", help="Without --trades: take profit distance in ATR_14h."),
    train_span: str = typer.Option(..., "--train-span", help="Training period of each fold, e.g. 60d."),
    test_span: str = typer.Option(..., "--test-span", help="Out-of-sample period of each fold, e.g. 14d."),
    step: str | None = typer.Option(None, "--step", help="Between fold starts (default: the test span; not shorter)."),
    scheme: str = typer.Option("sliding", "--scheme", help="sliding (the last --train-span) or expanding (all)."),
    val: float = typer.Option(0.15, "--val", help="Share of a fold's training trades, the latest, for validation."),
    purge: str | None = typer.Option(
        None, "--purge", help="Label horizon for the purge when the journal records none (default 24h)."
    ),
    out: Path = typer.Option(Path("wf"), "--out", help="Walk-forward folder (folds/, oos/, folds.csv, ...)."),
    config_file: Path | None = typer.Option(None, "--config", help="TOML configuration; flags override it."),
    max_len: int | None = typer.Option(None, "--max-len", help="Window length in minutes (default 129600)."),
    min_history: int | None = typer.Option(None, "--min-history", help="Shortest usable window in minutes."),
    epochs: int | None = typer.Option(None, "--epochs"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr"),
    seed: int | None = typer.Option(None, "--seed", help="Base seed; each fold's comes from it and its start."),
    scaler: str | None = typer.Option(None, "--scaler", help="standard (default) or minmax (the seed's)."),
    precision: str | None = typer.Option(None, "--precision", help="auto, 32-true, 16-mixed or bf16-mixed."),
    accelerator: str = typer.Option("auto", "--accelerator", help="auto, cpu or cuda."),
    model_kind: str = typer.Option("lstm", "--model", help="Model kind: lstm (default) or gbm."),
    baseline: str = typer.Option(
        "gbm", "--baseline", help="gbm (default): a LightGBM fold beside each fold, its own oos/gbm/; none: off."
    ),
    every: str | None = EVERY_OPTION,
    min_prob: float | None = MIN_PROB_OPTION,
    min_ev: float | None = MIN_EV_OPTION,
    levels: str | None = LEVELS_OPTION,
    fee: str | None = FEE_OPTION,
    slippage: str | None = SLIPPAGE_OPTION,
    max_hold: str | None = MAX_HOLD_OPTION,
    risk: str | None = RISK_OPTION,
    position_share: str | None = POSITION_SHARE_OPTION,
    daily_loss_limit: str | None = DAILY_LOSS_LIMIT_OPTION,
    funding: str | None = FUNDING_OPTION,
    random_runs: int = typer.Option(
        1000, "--random-runs", min=1, help="Random-entry runs: the stitched backtest's baseline and p-value's null."
    ),
    trials: int = typer.Option(1, "--trials", min=1, help="Configurations tried (the deflated Sharpe ratio's N)."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Inference processes of a fold (with --fold-workers 1; else one)."
    ),
    fold_workers: int | None = typer.Option(
        None, "--fold-workers", help="Folds trained at once, one process each (default: one per core)."
    ),
    executor: str = typer.Option("local", "--executor", help="local (processes) or ray (tasks on a Ray cluster)."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="With --executor ray: the head's HOST:PORT (default: a local Ray for the run)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Train every fold again (clears --out's folds)."),
    warm_start: bool = typer.Option(
        False,
        "--warm-start",
        help="Start each LSTM fold from the fold before's weights and scalers, at train.fine_tune_lr (folds then "
        "run one after another).",
    ),
    fold_sweep: bool = typer.Option(
        True,
        "--sweep/--no-sweep",
        help="Choose each fold's --min-prob / --min-ev on its validation period (default), or use the given ones.",
    ),
    cache_dir: Path | None = CACHE_DIR_OPTION,
    cache: bool | None = CACHE_OPTION,
    feature_set: str | None = FEATURE_SET_OPTION,
    with_symbols: list[str] | None = WITH_OPTION,
) -> None:
    """Retrain on rolling periods, decide each out-of-sample moment with its fold's model in one stitched
    backtest, and judge the edge (folds.csv, oos/, summary.json, report.html)."""
    from lstm_trading.runs.fold_processes import pool_processes, start_fold_server

    if executor == "local" and pool_processes(fold_workers, warm_start) > 1:
        start_fold_server()  # the fold processes' imports run while this one imports the rest and reads the data

    from lstm_trading.report.tables import not_traded_line, text_table
    from lstm_trading.runs.walkforward import TradeSource, WalkForwardSettings, walkforward_run

    config = _walkforward_config(
        trades=trades,
        config_file=config_file,
        out=out,
        stages={
            "targets": {"max_len": max_len, "min_history": min_history},
            "train": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "precision": precision},
            "split": {"scaler": scaler},
        },
        runtime={"cache": cache, "cache_dir": cache_dir, "workers": workers},
        trading={
            "every": every,
            "min_prob": min_prob,
            "fee": fee,
            "slippage": slippage,
            "max_hold": max_hold,
            "risk": risk,
            "position_share": position_share,
            "daily_loss_limit": daily_loss_limit,
            "funding": funding,
            "min_ev": min_ev,
            "levels": levels,
        },
        labelling={"label_every": label_every, "horizon": horizon, "k_sl": k_sl, "k_tp": k_tp},
        features=(feature_set, with_symbols),
    )
    settings = WalkForwardSettings(
        train_span=_duration(train_span, "--train-span"),
        test_span=_duration(test_span, "--test-span"),
        step=_duration(step, "--step"),
        scheme=scheme,
        val=val,
        purge_seconds=_duration(purge, "--purge"),
        model=model_kind,
        baseline=baseline,
        fold_workers=fold_workers,
        executor=executor,
        ray_address=ray_address,
        accelerator=accelerator,
        random_runs=random_runs,
        trials=trials,
        overwrite=overwrite,
        sweep=fold_sweep,
        warm_start=warm_start,
    )
    source = TradeSource(journal=trades, sheet=sheet, skip_bad_rows=skip_bad_rows)
    result = walkforward_run(config, settings, db=db, symbol=symbol, source=source, out=out, echo=_echo_plain)
    for message in result.warnings:
        err_console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)
    if result.failures:
        names = ", ".join(failure.run for failure in result.failures)
        err_console.print(
            f"error: {len(result.failures)} fold(s) failed ({names}); no summary.json written; the finished folds "
            "are kept: run the same command again to retry the failed ones",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    columns = {  # folds.csv's column: its header here
        "model": "model", "fold": "fold", "train_trades": "train", "test_trades": "test", "best_epoch": "best",
        "log_loss": "log-loss", "prior_log_loss": "prior", "macro_f1": "F1", "trades": "trades",
        "expectancy_pct": "exp. %", "return_pct": "return %",
    }  # fmt: skip

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return "-"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    rows = [[cell(row[column]) for column in columns] for row in result.rows if row["status"] == "trained"]
    _echo_plain(f"walk-forward folds ({result.trained} trained now, {result.reused} kept):")
    for line in text_table(list(columns.values()), rows):
        _echo_plain(line)
    _echo_plain(f"wrote {out / 'folds.csv'}, {out / 'oos'}, {out / 'summary.json'} and {result.report}")
    main = model_kind
    for kind, figures in sorted(result.verdicts.items(), key=lambda item: item[0] == main):
        if figures["not_traded"]:
            _echo_plain(
                f"{kind}: {figures['moments']:,} moments out of sample, not traded: "
                f"{not_traded_line(figures['not_traded'])}"
            )
    for kind, figures in result.verdicts.items():  # the main model's verdict last
        if kind != main:
            _echo_plain(f"{kind} (baseline): {figures['sentence']}")
            if figures.get("no_information"):
                _echo_plain(f"{kind} (baseline), over the folds: {figures['no_information']}")
    if result.verdicts[main].get("no_information"):
        _echo_plain(f"over the folds: {result.verdicts[main]['no_information']}")
    _echo_plain(f"verdict: {result.verdicts[main]['sentence']}")


# --- tuning (runs/tune.py) ---


def _options_of(command: Any) -> dict[str, Any]:
    """A command's typer options by parameter name: `tune` declares the walk-forward's flags with walkforward's own
    definitions, so the two commands cannot drift apart in a flag's name, default or help."""
    import inspect

    return {name: parameter.default for name, parameter in inspect.signature(command).parameters.items()}


_WF = _options_of(walkforward_command)


def _holdout(text: str) -> tuple[float, int | None]:
    """`--holdout 20%` (a share of the data's time span, also `0.2`) or a span (`7d`, `36h`)."""
    from lstm_trading.core.errors import ConfigError
    from lstm_trading.core.timeutil import parse_fraction

    if text.strip()[-1:].lower() in ("s", "m", "h", "d", "w"):
        return 0.0, _duration(text, "--holdout")
    share = parse_fraction(text, option="--holdout")
    if not 0 < share < 1:
        raise ConfigError(f"--holdout: must be a share of the data in (0 %, 100 %) or a span like 7d, got {text!r}")
    return share, None


@app.command("tune")
def tune_command(
    db: Path = DB_OPTION,
    symbol: str = SYMBOL_OPTION,
    space: Path = typer.Option(..., "--space", help="Search space (TOML): each section.key with low/high or choices."),
    trials: int = typer.Option(50, "--trials", min=1, help="Completed plus pruned trials the study runs to."),
    holdout: str = typer.Option(
        "20%", "--holdout", help="The data's end kept from every trial: a share (20%) or a span (7d)."
    ),
    storage: str | None = typer.Option(
        None, "--storage", help="Optuna storage URL (default sqlite in --out); several machines may share one."
    ),
    study: str | None = typer.Option(None, "--study", help="Study name in the storage (default: --out's name)."),
    objective: str = typer.Option(
        "oos_log_loss_skill", "--objective", help="oos_log_loss_skill (mean 1 - LL/LL_prior) or oos_expectancy."
    ),
    executor: str = typer.Option("local", "--executor", help="local (processes) or ray (Ray Tune trials)."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="With --executor ray: the head's HOST:PORT (default: a local Ray for the run)."
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Trials at once, one process each (default: one per core)."
    ),
    out: Path = typer.Option(Path("tune"), "--out", help="Tune folder (trials.csv, best.toml, holdout/, ...)."),
    trades: Path | None = _WF["trades"],
    sheet: str = _WF["sheet"],
    skip_bad_rows: bool = _WF["skip_bad_rows"],
    label_every: str | None = _WF["label_every"],
    horizon: str | None = _WF["horizon"],
    k_sl: float | None = _WF["k_sl"],
    k_tp: float | None = _WF["k_tp"],
    train_span: str = _WF["train_span"],
    test_span: str = _WF["test_span"],
    step: str | None = _WF["step"],
    scheme: str = _WF["scheme"],
    val: float = _WF["val"],
    purge: str | None = _WF["purge"],
    config_file: Path | None = _WF["config_file"],
    max_len: int | None = _WF["max_len"],
    min_history: int | None = _WF["min_history"],
    epochs: int | None = _WF["epochs"],
    batch_size: int | None = _WF["batch_size"],
    lr: float | None = _WF["lr"],
    seed: int | None = _WF["seed"],
    scaler: str | None = _WF["scaler"],
    precision: str | None = _WF["precision"],
    accelerator: str = _WF["accelerator"],
    model_kind: str = _WF["model_kind"],
    baseline: str = _WF["baseline"],
    every: str | None = EVERY_OPTION,
    min_prob: float | None = MIN_PROB_OPTION,
    min_ev: float | None = MIN_EV_OPTION,
    levels: str | None = LEVELS_OPTION,
    fee: str | None = FEE_OPTION,
    slippage: str | None = SLIPPAGE_OPTION,
    max_hold: str | None = MAX_HOLD_OPTION,
    risk: str | None = RISK_OPTION,
    position_share: str | None = POSITION_SHARE_OPTION,
    daily_loss_limit: str | None = DAILY_LOSS_LIMIT_OPTION,
    funding: str | None = FUNDING_OPTION,
    random_runs: int = _WF["random_runs"],
    warm_start: bool = _WF["warm_start"],
    fold_sweep: bool = _WF["fold_sweep"],
    cache_dir: Path | None = CACHE_DIR_OPTION,
    cache: bool | None = CACHE_OPTION,
) -> None:
    """Search the settings with Optuna on the walk-forward folds of a tuning period, then judge the best once on
    a holdout no trial saw (trials.csv, best.toml, holdout/, summary.json, report.html)."""

    from lstm_trading.runs.tune import TuneSettings, tune_run
    from lstm_trading.runs.tune_space import load_space
    from lstm_trading.runs.walkforward import TradeSource, WalkForwardSettings

    config = _walkforward_config(
        trades=trades,
        config_file=config_file,
        out=out,
        stages={
            "targets": {"max_len": max_len, "min_history": min_history},
            "train": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "precision": precision},
            "split": {"scaler": scaler},
        },
        runtime={"cache": cache, "cache_dir": cache_dir, "workers": None},
        trading={
            "every": every,
            "min_prob": min_prob,
            "fee": fee,
            "slippage": slippage,
            "max_hold": max_hold,
            "risk": risk,
            "position_share": position_share,
            "daily_loss_limit": daily_loss_limit,
            "funding": funding,
            "min_ev": min_ev,
            "levels": levels,
        },
        labelling={"label_every": label_every, "horizon": horizon, "k_sl": k_sl, "k_tp": k_tp},
        features=(None, None),
    )
    walk = WalkForwardSettings(
        train_span=_duration(train_span, "--train-span"),
        test_span=_duration(test_span, "--test-span"),
        step=_duration(step, "--step"),
        scheme=scheme,
        val=val,
        purge_seconds=_duration(purge, "--purge"),
        model=model_kind,
        baseline=baseline,
        accelerator=accelerator,
        random_runs=random_runs,
        sweep=fold_sweep,
        warm_start=warm_start,
    )
    share, span = _holdout(holdout)
    settings = TuneSettings(
        space=space,
        trials=trials,
        holdout=share,
        holdout_seconds=span,
        storage=storage,
        study=study,
        objective=objective,
        executor=executor,
        ray_address=ray_address,
        workers=workers,
    )
    searched = load_space(space, config)
    source = TradeSource(journal=trades, sheet=sheet, skip_bad_rows=skip_bad_rows)
    result = tune_run(config, settings, walk, searched, db=db, symbol=symbol, source=source, out=out, echo=_echo_plain)
    summary = result.summary
    best, held = summary["best"], summary["holdout"]
    counted = ", ".join(f"{count} {state}" for state, count in sorted(summary["trials"].items()))
    _echo_plain(f"trials: {counted}; wrote {result.folder.trials_table} and {result.folder.best}")
    _echo_plain(f"report: {result.folder.report}")
    if held.get("failures"):
        why = "; ".join(held["failures"])
        err_console.print(
            f"error: the holdout's walk-forward has no score ({why}); the study and best.toml are kept: run the "
            "same command again once that is fixed",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    psr = "-" if held["psr"] is None else format(held["psr"], ".3f")
    if held["objective"] is None:  # e.g. no trade on the holdout for oos_expectancy
        _echo_plain(f"holdout: no {objective} ({held['reason']}); PSR {psr}")
    else:
        _echo_plain(
            f"holdout: {objective} {held['objective']:+.4f} against {best['objective']:+.4f} in the search "
            f"(gap {summary['gap']:+.4f}); PSR {psr}"
        )
    _echo_plain(f"holdout verdict: {held['sentence']}")


# --- automatic trading (runs/live.py, live/) ---


def _echo_plain(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@app.command("live")
def live_command(
    run: Path = typer.Argument(..., help="Run folder."),
    db: Path | None = typer.Option(
        None, "--db", help="Candle database; the state lives there too (default: the run's, for --replay)."
    ),
    # Unset flags are None: the defaults are LiveSettings' (live/settings.py), the help only names them.
    exchange_id: str | None = typer.Option(None, "--exchange", help="Any exchange ccxt knows (default bybit)."),
    market: str | None = typer.Option(None, "--market", help="linear (USDT perpetual, the default) or spot."),
    symbol: str | None = typer.Option(None, "--symbol", help="Symbol in the store (default: the bundle's)."),
    mode: str | None = typer.Option(None, "--mode", help="paper (simulated fills, the default) or live (real orders)."),
    feed: str | None = typer.Option(
        None,
        "--feed",
        help="exchange (ingest each period, the default) or db (paper only: decide on the candles a cron line of "
        "`ingest exchange` writes to --db; no network).",
    ),
    feed_wait: str | None = typer.Option(
        None, "--feed-wait", help="--feed db: how long after a minute closes to wait for it to land (default 120s)."
    ),
    every: str | None = EVERY_OPTION,
    min_prob: float | None = MIN_PROB_OPTION,
    min_ev: float | None = MIN_EV_OPTION,
    levels: str | None = LEVELS_OPTION,
    fee: str | None = FEE_OPTION,
    slippage: str | None = SLIPPAGE_OPTION,
    max_hold: str | None = MAX_HOLD_OPTION,
    risk: str | None = RISK_OPTION,
    position_share: str | None = POSITION_SHARE_OPTION,
    daily_loss_limit: str | None = DAILY_LOSS_LIMIT_OPTION,
    funding: str | None = FUNDING_OPTION,
    qty: float | None = typer.Option(None, "--qty", min=0.0, help="Units per order instead of the sizing rule."),
    max_qty: float | None = typer.Option(None, "--max-qty", min=0.0, help="Largest order in units (cut to it)."),
    max_errors: int | None = typer.Option(
        None, "--max-errors", min=1, help="Consecutive failed periods before stopping (default 5)."
    ),
    retries: int | None = typer.Option(
        None, "--retries", min=0, help="Retries after a network error, then skip the period (default 3)."
    ),
    backoff: float | None = typer.Option(
        None, "--backoff", min=0.0, help="Seconds before the first retry; doubles (default 2)."
    ),
    max_model_age: str | None = typer.Option(
        None, "--max-model-age", help="Refuse live mode on older bundle data (default 30d)."
    ),
    confirm: bool = typer.Option(
        False, "--i-understand-live-trading", help="Required with --mode live: real orders, real money."
    ),
    account: str | None = typer.Option(None, "--account", help="State name in the database (default: the mode)."),
    replay_mode: bool = typer.Option(False, "--replay", help="Replay stored candles (no network, no waiting)."),
    start: str | None = typer.Option(None, "--from", help="--replay: first moment."),
    end: str | None = typer.Option(None, "--to", help="--replay: end, exclusive (default: the end of the data)."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="--replay: inference processes."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for live.jsonl (default RUN/live-ACCOUNT) and, with --replay, trades.csv (RUN/replay).",
    ),
    periods: int | None = typer.Option(None, "--periods", min=1, help="Stop after this many periods (default: never)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No line per decision (guards and errors still show)."),
    retrain_every: str | None = typer.Option(
        None,
        "--retrain-every",
        help="Retrain on a schedule (e.g. 7d): walk-forward's fold at each boundary, gated, swapped in; a replay's "
        "first model is trained at --from.",
    ),
    train_span: str | None = typer.Option(None, "--train-span", help="--retrain-every: training period (60d)."),
    scheme: str | None = typer.Option(None, "--scheme", help="--retrain-every: sliding (default) or expanding."),
    gate: str | None = typer.Option(None, "--gate", help="--retrain-every: on (default) or off."),
    gate_days: str | None = typer.Option(
        None, "--gate-days", help="--retrain-every: the gate's window before a boundary, kept out of training (3d)."
    ),
    gate_tolerance: float | None = typer.Option(
        None, "--gate-tolerance", help="--retrain-every: log-loss a new model may lose, nats (default 0.01)."
    ),
    sweep: bool | None = typer.Option(
        None, "--sweep/--no-sweep", help="--retrain-every: each model's min-prob / min-EV from its validation period."
    ),
    fold_workers: int | None = typer.Option(
        None, "--fold-workers", min=1, help="--retrain-every --replay: boundary models trained at once (default 1)."
    ),
    accelerator: str | None = typer.Option(None, "--accelerator", help="--retrain-every: auto, cpu or cuda."),
    warm_start: bool | None = typer.Option(
        None,
        "--warm-start/--cold-start",
        help="--retrain-every: start each new model from the one trained before, at train.fine_tune_lr "
        "(walkforward --warm-start); a replay's first model is trained from scratch.",
    ),
) -> None:
    """Trade the model automatically: paper (default) or live orders with SL/TP; --replay proves it on stored candles.

    Live trading risks real money: a model that backtested well can lose, exchanges fill triggered stops at
    market, and software fails. Start with --mode paper. API keys come from LSTM_TRADING_API_KEY and
    LSTM_TRADING_API_SECRET only.
    """
    from lstm_trading.runs.live import LiveSettings, check_sizing_flags, live_run, replay_run, sigterm_as_interrupt

    check_sizing_flags(qty, risk=risk, position_share=position_share)
    config = _trading_settings(
        run,
        every=every,
        min_prob=min_prob,
        min_ev=min_ev,
        levels=levels,
        fee=fee,
        slippage=slippage,
        max_hold=max_hold,
        risk=risk,
        position_share=position_share,
        daily_loss_limit=daily_loss_limit,
        funding=funding,
    )
    settings = LiveSettings.from_flags(
        replay=replay_mode,
        start=_moment(start, "--from"),
        end=_moment(end, "--to"),
        mode=mode,
        feed=feed,
        feed_wait_s=_duration(feed_wait, "--feed-wait"),
        exchange=exchange_id,
        market=market,
        db=db,
        symbol=symbol,
        account=account,
        quantity=qty,
        max_quantity=max_qty,
        max_errors=max_errors,
        retries=retries,
        backoff_s=backoff,
        max_model_age_s=_duration(max_model_age, "--max-model-age"),
        confirmed=confirm,
        workers=workers,
        out_dir=out,
        periods=periods,
        quiet=quiet,
        retrain_every_s=_duration(retrain_every, "--retrain-every"),
        train_span_s=_duration(train_span, "--train-span"),
        scheme=scheme,
        gate=None if gate is None else _on_off(gate, "--gate"),
        gate_span_s=_duration(gate_days, "--gate-days"),
        gate_tolerance=gate_tolerance,
        sweep=sweep,
        fold_workers=fold_workers,
        accelerator=accelerator,
        warm_start=warm_start,
    )
    if settings.replay:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = replay_run(run, settings, config=config, echo=_echo_plain)
        _show_warnings(caught)
        period = f"{format_time(result.start)} to {format_time(result.end)}"
        pnl = f"{len(result.fills)} trades, P&L {result.state['total_pnl']:+,.2f}"
        if not result.finished:  # stopped by --periods: nothing is written until the period's end
            _echo_plain(
                f"replayed {result.ran} of {result.moments} moments of {period} (stopped by --periods): {pnl} so "
                "far; run the same command to continue, trades.csv is written when the replay reaches the end"
            )
            return
        where = f"; wrote {result.trades_path}" if result.trades_path is not None else ""
        _echo_plain(f"replayed {result.moments} moments {period}: {pnl}{where}")
        return
    try:
        with sigterm_as_interrupt():
            live_run(run, settings, config=config, echo=_echo_plain)
    except KeyboardInterrupt:
        err_console.print("stopped: the state is saved; run the same command to resume")
        raise typer.Exit(130) from None


@app.command("live-status")
def live_status_command(
    db: Path = typer.Option(Path("bybit1min.db"), "--db", help="The database the live loop ran on.", readable=False),
    account: str | None = typer.Option(None, "--account", help="Account (default: the only one)."),
    last: int = typer.Option(10, "--last", min=1, help="Decisions to show."),
) -> None:
    """The live loop's position, today's and total P&L, and its last decisions."""
    from lstm_trading.runs.live import live_status, status_lines

    for line in status_lines(live_status(db, account, last=last)):
        _echo_plain(line)


def main() -> None:
    """Console-script entry point."""
    app()
