"""The one candle loader: every command reads the candles its moments' windows and their warm-up need here.

So a moment gets the same history whichever command asks (DESIGN.md, "Window" and "Warm-up"), and a rule about
which candles a window may see (such as the one for gaps) changes in this module only. Each reader answers
"these candles" or a `DataError` that says what the store holds instead.

A model that reads other symbols (`features.with_symbols`) gets them here too: each reader given `with_symbols`
joins those symbols' candles over the span it read into the frame (`features/symbols.py`), so the features of
every command see the same minutes of every symbol.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from lstm_trading.backtest.funding import FundingSchedule
from lstm_trading.core.errors import ConfigError, DataError
from lstm_trading.core.timeutil import MINUTE, format_time
from lstm_trading.data.store import CandleStore
from lstm_trading.features.symbols import join_symbols

if TYPE_CHECKING:
    from lstm_trading.models.bundle import Bundle


def _holdings(store: CandleStore, symbol: str) -> str:
    held = store.time_range(symbol)
    return f"it holds {format_time(held[0])} to {format_time(held[1])}" if held else f"it has no {symbol} candles"


def _with_symbols(
    store: CandleStore, db: Path, symbol: str, candles: pd.DataFrame, others: Sequence[str]
) -> pd.DataFrame:
    """`candles` with the other symbols' candles of the same span joined in (`features/symbols.join_symbols`);
    a symbol the store lacks, or holds nothing of in the span, is an error naming the ingest command."""
    if not others or candles.empty:
        return candles
    first, last = int(candles["timestamp"].iloc[0]), int(candles["timestamp"].iloc[-1])
    frames = {}
    for other in others:
        if other == symbol:
            raise ConfigError(f"features.with_symbols: {other} is the symbol the model trades; list other symbols only")
        frame = store.read(other, start=first, end=last + MINUTE)
        if frame.empty:
            info = store.symbol_info(symbol)
            venue = f" --exchange {info[0]} --market {info[1]}" if info is not None else ""
            held = "no" if store.time_range(other) is None else f"no {format_time(first)} to {format_time(last)}"
            raise DataError(
                f"{db}: {held} {other} candles, which the model reads beside {symbol} (features.with_symbols); "
                f"ingest them: lstm-trading ingest exchange --db {db}{venue} --symbol {other} --since "
                f"{format_time(first)[:10]}"
            )
        frames[other] = frame
    return join_symbols(candles, frames)


def candles_for_moments(
    db: Path,
    symbol: str,
    first: int,
    end: int,
    history_minutes: int,
    *,
    needed_by: str,
    with_symbols: Sequence[str] = (),
) -> pd.DataFrame:
    """Candles with open time in `[first - history, end)`: the window and warm-up of every moment from `first`
    to `end` (a window at `t` holds the candles closed by `t`, so nothing at or after `end` is read); the
    `with_symbols` joined in."""
    start = first - history_minutes * MINUTE
    with CandleStore(db) as store:
        candles = store.read(symbol, start=start, end=end)
        if candles.empty:
            raise DataError(
                f"{db}: no {symbol} candles from {format_time(start)} to {format_time(end)}, the history that "
                f"{needed_by} need ({_holdings(store, symbol)})"
            )
        return _with_symbols(store, db, symbol, candles, with_symbols)


def candles_before(
    db: Path, symbol: str, moment: int | None, history_minutes: int, *, with_symbols: Sequence[str] = ()
) -> pd.DataFrame:
    """`predict`'s read: the history of one moment (default: just after the last stored candle), the
    `with_symbols` joined in.

    A moment after the last candle's close is refused: its window would miss the minutes before it, and the
    entry would be a stale close.
    """
    with CandleStore(db) as store:
        span = store.time_range(symbol)
        if span is None:
            have = ", ".join(store.symbols()) or "none"
            raise DataError(f"{db}: no {symbol} candles (symbols held: {have}); choose them with --symbol")
        first, last, _ = span
        if moment is not None and moment > last + MINUTE:
            raise DataError(
                f"--at {format_time(moment)} is after the last {symbol} candle in {db} ({format_time(last)}, "
                f"closed at {format_time(last + MINUTE)}); ingest newer candles or give an earlier --at"
            )
        # by rows, not clock time (DESIGN.md, "Gaps"): the last `history_minutes` candles opened before the moment,
        # so a window after a gap gets its full warm-up when the store holds it
        candles = store.read_last(symbol, history_minutes, end=moment)
        if candles.empty and moment is not None:
            raise DataError(
                f"{db}: no {symbol} candles before --at {format_time(moment)}; "
                f"they run from {format_time(first)} to {format_time(last)}: give an --at within them"
            )
        return _with_symbols(store, db, symbol, candles, with_symbols)


def latest_candles(
    db: Path, symbol: str, moment: int, history_minutes: int, *, with_symbols: Sequence[str] = ()
) -> pd.DataFrame:
    """The live loop's read at a period boundary: the last `history_minutes` candles opened before `moment`,
    the `with_symbols` joined in."""
    with CandleStore(db) as store:
        candles = store.read_last(symbol, history_minutes, end=moment)
        if candles.empty:
            raise DataError(f"{db}: no {symbol} candles before {format_time(moment)} to predict from")
        return _with_symbols(store, db, symbol, candles, with_symbols)


def all_candles(db: Path, symbol: str, *, with_symbols: Sequence[str] = ()) -> pd.DataFrame:
    """Every candle of `symbol` (`features` and `label` compute from the start of the data), the
    `with_symbols` joined in."""
    with CandleStore(db) as store:
        candles = store.read(symbol)
        if candles.empty:
            have = ", ".join(store.symbols()) or "none"
            raise DataError(f"{db}: no candles for {symbol} (symbols held: {have}); choose one with --symbol")
        return _with_symbols(store, db, symbol, candles, with_symbols)


def period_end(db: Path, symbol: str, start: int, end: int | None) -> int:
    """The end of a backtest or replay period `[start, end)`: `end`, or the close of the last stored candle."""
    if end is None:
        with CandleStore(db) as store:
            held = store.time_range(symbol)
        if held is None:
            raise DataError(f"{db}: no {symbol} candles; choose the symbol with --symbol")
        end = held[1] + MINUTE
        if end <= start:  # no --to given: name the data's end, not a flag the user never typed
            raise ConfigError(
                f"--from {format_time(start)} is not before the end of the {symbol} candles in {db} "
                f"({format_time(end)}); give an earlier --from or another --db"
            )
    if end <= start:
        raise ConfigError(f"--from {format_time(start)} is not before --to {format_time(end)}; the period is empty")
    return end


def run_sources(bundle: Bundle, db: Path | None, symbol: str | None) -> tuple[Path, str]:
    """The database and symbol to read: the ones given, else the ones the run recorded at training."""
    sources = bundle.training.sources
    chosen_db = db if db is not None else sources.db
    if chosen_db is None:
        raise DataError(f"{bundle.path}: the run records no candle database; give one with --db")
    return Path(chosen_db), symbol or sources.symbol or "ETHUSDT"


def period_candles(bundle: Bundle, db_path: Path, symbol: str, start: int, end: int | None) -> tuple[int, pd.DataFrame]:
    """The end of the period [start, end) (default: the end of the stored data) and the candles a backtest or a
    replay of it reads: the period and the bundle's history before it. One reading, so both see the same."""
    end = period_end(db_path, symbol, start, end)
    return end, candles_for_moments(
        db_path,
        symbol,
        start,
        end,
        bundle.history_minutes,
        needed_by="the backtest period",
        with_symbols=bundle.feature_config.with_symbols,
    )


@dataclass(frozen=True)
class SymbolFunding:
    """The funding a symbol's positions pay, as the store records the symbol: `schedule` None for spot (or a
    symbol of no recorded market, or `--funding 0`), else the constant and the stored rates; `description` is
    the backtest's printed line."""

    schedule: FundingSchedule | None
    description: str
    missing: tuple[int, ...] = ()  # funding times of the period inside the stored range without a stored rate


def symbol_funding(
    db: Path, symbol: str, rate: float, *, start: int | None = None, end: int | None = None, market: str | None = None
) -> SymbolFunding:
    """Whether `symbol` pays funding and at which rates: only symbols the store records as perpetuals (`linear`;
    `market` stands in where the store records none, as the live loop's `--market` does), at the stored rates
    where `ingest funding` stored them and `rate` elsewhere. Funding times of `(start, end]` inside the stored
    range with no stored rate are charged `rate` and warned about once."""
    with CandleStore(db) as store:
        info = store.symbol_info(symbol)
        kind = info[1] if info is not None else market
        if kind is None:
            return SymbolFunding(None, f"none ({symbol}'s market is not recorded: taken as spot)")
        if kind != "linear":
            return SymbolFunding(None, f"none ({kind})")
        if rate == 0:
            return SymbolFunding(None, "none (--funding 0)")
        stored = store.read_funding(symbol)
    schedule = FundingSchedule(rate, dict(zip(stored["timestamp"].tolist(), stored["rate"].tolist(), strict=True)))
    missing: tuple[int, ...] = ()
    if start is not None and end is not None:
        missing = tuple(schedule.missing(start, end))
    if missing:
        warnings.warn(
            f"{db}: {len(missing):,} funding times of {symbol} from {format_time(missing[0])} to "
            f"{format_time(missing[-1])} have no stored rate inside the stored ones; charged the constant "
            f"{100 * rate:.4f} % (`lstm-trading ingest funding --db {db} --symbol {symbol} --since "
            f"{format_time(missing[0])[:10]}` fetches them)",
            stacklevel=2,
        )
    return SymbolFunding(schedule, schedule.describe(), missing)
