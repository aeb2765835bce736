"""ccxt pages -> candle store: incremental, resumable, gap-aware downloads of 1-minute candles.

Why it is built this way:

- **One seam.** The exchange is reached only through `OhlcvSource` (ccxt-shaped rows `[ms, o, h, l, c, v]`), so
  tests drive the whole download with a fake exchange, and `source_factory` is the one place the CLI builds it.
- **Only what is missing.** The store says which minutes of the range it lacks; only those are requested, page
  by page (the exchange's maximum page size), each request bounded by `since` and `until` so an exchange that
  answers "the latest candles" to a bare `since` (Bybit does) cannot skip minutes.
- **Every page is its own transaction.** Ctrl-C, a network error or a killed process keeps each finished page;
  the next run asks the store again and resumes where the last one stopped.
- **Gaps end.** A request that brings nothing back still moves the cursor past its window, so minutes the
  exchange really lacks (maintenance) stay gaps and a run always finishes.
- **Closed candles only.** A candle opened at `s` is stored once `s + 60 <= now`; the still-forming minute never
  is, because nothing would ever correct it.
"""

from __future__ import annotations

import difflib
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import ccxt
import numpy as np
import pandas as pd

from lstm_trading.core.errors import ConfigError, DataError
from lstm_trading.core.timeutil import MINUTE, format_time
from lstm_trading.data.candles import CANDLE_COLUMNS, Gap
from lstm_trading.data.store import CandleStore

MARKETS = ("linear", "spot")
DEFAULT_PAGE_LIMIT = 1000  # Bybit's, Binance spot's; used where ccxt does not know an exchange's maximum
DEFAULT_RETRIES = 5  # backoff 1, 2, 4, 8, 16 s: half a minute of outage, then stop
DEFAULT_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
# Local clocks drift from the exchange's; a candle stored while the exchange still forms it would never be
# corrected (the next run continues after it), so a candle counts as closed only this long after its close.
CLOCK_MARGIN_MS = 3000
_MS = 1000
_MINUTE_MS = MINUTE * _MS
_LARGEST_VALUE = float(np.finfo(np.float32).max)  # the store refuses what float32 features cannot hold
# ccxt's NetworkError covers RequestTimeout, ExchangeNotAvailable (and OnMaintenance), DDoSProtection and
# RateLimitExceeded: all worth another try after a pause.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (ccxt.NetworkError,)
# Kinds of bad rows, in the order a row is classified (the first that applies).
BAD_ROW_KINDS = (
    "malformed",
    "non-minute timestamp",
    "duplicate",
    "out-of-order",
    "in the future",
    "NaN",
    "invalid OHLC",
)


class OhlcvSource(Protocol):
    """The seam between the download loop and an exchange: ccxt's `fetch_ohlcv`, narrowed to 1-minute candles."""

    exchange_id: str
    market: str
    page_limit: int

    def resolve_symbol(self, name: str) -> str:
        """The exchange's symbol for a store name (`ETHUSDT` -> `ETH/USDT:USDT`); ConfigError with close matches."""
        ...

    def fetch_ohlcv(self, symbol: str, since_ms: int, limit: int, until_ms: int) -> list[list[Any]]:
        """Up to `limit` 1-minute candles opened in `[since_ms, until_ms]`: `[ms, open, high, low, close, volume]`."""
        ...

    def milliseconds(self) -> int:
        """Now, in Unix milliseconds: candles closed before it are final."""
        ...


def _close_matches(name: str, choices: Iterable[str]) -> str:
    matches = difflib.get_close_matches(name, sorted(set(choices)), n=5, cutoff=0.6)
    return f"did you mean {', '.join(matches)}?" if matches else "no close matches"


def _market_kind_matches(market: Mapping[str, Any], kind: str) -> bool:
    if kind == "spot":
        return bool(market.get("spot"))
    return bool(market.get("swap")) and bool(market.get("linear"))


def _store_names(market: Mapping[str, Any]) -> set[str]:
    """The names a market may go by in the store: the exchange's id (`ETHUSDT`) and base + quote."""
    names = {str(market.get("id", "")).upper()}
    if market.get("base") and market.get("quote"):
        names.add(f"{market['base']}{market['quote']}".upper())
    names.discard("")
    return names


def unified_symbol(markets: Iterable[Mapping[str, Any]], name: str, market: str, exchange_id: str) -> str:
    """Map a store name to ccxt's unified symbol among an exchange's markets of one kind.

    `ETHUSDT` is `ETH/USDT:USDT` among Bybit's linear perpetuals and `ETH/USDT` among its spot markets. The
    exchange's own id wins over base + quote; among several, the one settled in its quote currency (USDT-margined).
    """
    wanted = name.upper()
    of_kind = [m for m in markets if _market_kind_matches(m, market)]
    candidates = [m for m in of_kind if wanted in _store_names(m)]
    if not candidates:
        names = [n for m in of_kind for n in _store_names(m)]
        raise ConfigError(
            f"unknown symbol {name!r} among {exchange_id}'s {len(of_kind)} {market} markets: "
            f"{_close_matches(wanted, names)} (--symbol takes the store name, e.g. ETHUSDT)"
        )

    def preference(m: Mapping[str, Any]) -> tuple[bool, bool, bool, str]:
        return (
            str(m.get("id", "")).upper() != wanted,
            market == "linear" and m.get("settle") != m.get("quote"),
            m.get("active") is False,
            str(m["symbol"]),
        )

    return str(min(candidates, key=preference)["symbol"])


class CcxtSource:
    """A ccxt exchange as an `OhlcvSource` for one kind of market (linear perpetual or spot)."""

    def __init__(self, exchange: Any, market: str, *, page_limit: int | None = None) -> None:
        self.exchange = exchange
        self.exchange_id = str(exchange.id)
        self.market = market
        known = exchange_page_limit(exchange, market)
        if page_limit is not None and known is not None and page_limit > known:
            # The exchange would cut such a page short, from either end: minutes would be skipped.
            raise ConfigError(
                f"--page-limit {page_limit} is above {self.exchange_id}'s maximum of {known} candles per request; "
                f"use at most {known}"
            )
        self.page_limit = page_limit or known or DEFAULT_PAGE_LIMIT

    def resolve_symbol(self, name: str) -> str:
        # Loads the markets once per run (network); a test may `set_markets` a fixture first.
        markets = self.exchange.load_markets()
        return unified_symbol(markets.values(), name, self.market, self.exchange_id)

    def fetch_ohlcv(self, symbol: str, since_ms: int, limit: int, until_ms: int) -> list[list[Any]]:
        return list(self.exchange.fetch_ohlcv(symbol, "1m", since_ms, limit, {"until": until_ms}))

    def fetch_funding_rates(self, symbol: str, since_ms: int, limit: int, until_ms: int) -> list[dict[str, Any]]:
        return list(self.exchange.fetch_funding_rate_history(symbol, since_ms, limit, {"until": until_ms}))

    def milliseconds(self) -> int:
        return int(self.exchange.milliseconds()) - CLOCK_MARGIN_MS


def exchange_page_limit(exchange: Any, market: str) -> int | None:
    """The most candles one `fetch_ohlcv` may return on this exchange and market, from ccxt's `features`."""
    market_type, sub_type = ("spot", None) if market == "spot" else ("swap", "linear")
    try:
        limit = exchange.featureValueByType(market_type, sub_type, "fetchOHLCV", "limit")
    except Exception:  # older ccxt or an exchange without `features`: unknown
        limit = None
    return int(limit) if isinstance(limit, int | float) and limit > 0 else None


def ccxt_options(exchange_id: str, market: str) -> dict[str, Any]:
    """Constructor settings: rate limiting on, the market kind as default type, only that kind's markets loaded."""
    if market not in MARKETS:
        raise ConfigError(f"--market: unknown market {market!r}; use linear (USDT perpetual) or spot")
    options: dict[str, Any] = (
        {"defaultType": "spot"} if market == "spot" else {"defaultType": "swap", "defaultSubType": "linear"}
    )
    if exchange_id == "bybit":
        # Bybit otherwise loads spot, linear, inverse and option markets: several requests on every cron run.
        options["fetchMarkets"] = {"types": [market]}
    return {"enableRateLimit": True, "options": options}


def make_ccxt_source(exchange_id: str, market: str = "linear", *, page_limit: int | None = None) -> CcxtSource:
    """Build the real ccxt exchange (no network until the first request)."""
    exchange_id = exchange_id.strip().lower()
    if exchange_id not in ccxt.exchanges:
        raise ConfigError(
            f"--exchange: unknown exchange {exchange_id!r}: {_close_matches(exchange_id, ccxt.exchanges)} "
            "(ccxt.exchanges lists all)"
        )
    settings = ccxt_options(exchange_id, market)
    exchange = getattr(ccxt, exchange_id)(settings)
    return CcxtSource(exchange, market, page_limit=page_limit)


# The CLI builds its source through this name, so tests can put a fake exchange in its place.
source_factory: Callable[..., OhlcvSource] = make_ccxt_source


@dataclass(frozen=True)
class CleanPage:
    """One page after validation: the candles to store, the bad rows dropped, how far the page reached."""

    candles: pd.DataFrame
    dropped: Counter[str]
    reached: int | None  # open time of the last well-formed row inside the window, for the cursor


def _as_float_matrix(rows: Sequence[Sequence[Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Rows -> (n, 6) float array with NaN for missing values, and a mask of rows that were not 6 numbers."""
    values = np.full((len(rows), 6), np.nan)
    malformed = np.zeros(len(rows), dtype=bool)
    for i, row in enumerate(rows):
        try:
            if len(row) < 6:
                raise ValueError
            values[i] = [np.nan if v is None else float(v) for v in row[:6]]
        except (TypeError, ValueError):
            malformed[i] = True
    malformed |= ~np.isfinite(values[:, 0])
    return values, malformed


def clean_page(rows: Sequence[Sequence[Any]], *, start: int, end: int, now_ms: int) -> CleanPage:
    """Validate one page of ccxt rows and keep the good candles opened in `[start, end)` (UTC seconds).

    Each bad row is counted once, under the first kind that applies (`BAD_ROW_KINDS`); a row in the future opens
    after the minute that follows the one forming at `now_ms` (a minute of tolerance for clock skew). Rows
    outside the window that are not bad (the candle before `since` that some exchanges add, the still-forming
    minute) are ignored silently.
    """
    values, malformed = _as_float_matrix(rows)
    kind = np.full(len(rows), "", dtype=object)
    kind[malformed] = "malformed"
    stamps_ms = np.where(malformed, 0, values[:, 0]).astype(np.int64)
    off_grid = ~malformed & (stamps_ms % _MINUTE_MS != 0)
    kind[(kind == "") & off_grid] = "non-minute timestamp"
    # Order and duplicates are judged against every earlier row on the minute grid, good or not.
    seen: set[int] = set()
    latest: int | None = None
    for i in np.flatnonzero(~malformed & ~off_grid):
        stamp = int(stamps_ms[i])
        if stamp in seen:
            kind[i] = "duplicate"
        elif latest is not None and stamp < latest:
            kind[i] = "out-of-order"
        seen.add(stamp)
        latest = stamp if latest is None else max(latest, stamp)
    # Later than the minute after the forming one: beyond any clock skew between us and the exchange.
    forming_ms = (now_ms // _MINUTE_MS) * _MINUTE_MS
    kind[(kind == "") & (stamps_ms > forming_ms + _MINUTE_MS)] = "in the future"
    prices = values[:, 1:5]
    kind[(kind == "") & ~np.isfinite(values[:, 1:]).all(axis=1)] = "NaN"
    with np.errstate(invalid="ignore"):
        open_, high, low, close, volume = (values[:, j] for j in range(1, 6))
        bad_ohlc = (
            (prices <= 0).any(axis=1)
            | (high < np.maximum(open_, close))
            | (low > np.minimum(open_, close))
            | (volume < 0)
            | (np.abs(values[:, 1:]) > _LARGEST_VALUE).any(axis=1)
        )
    kind[(kind == "") & bad_ohlc] = "invalid OHLC"

    stamps = stamps_ms // _MS
    in_window = (stamps >= start) & (stamps < end)
    good = (kind == "") & in_window
    gridded = in_window & ~malformed & ~off_grid
    reached = int(stamps[gridded].max()) if gridded.any() else None
    candles = pd.DataFrame({"timestamp": stamps[good].astype(np.int64)})
    for j, column in enumerate(CANDLE_COLUMNS[1:], start=1):
        candles[column] = values[good, j].astype(np.float64)
    candles = candles.sort_values("timestamp", kind="stable").reset_index(drop=True)
    dropped = Counter({k: int(n) for k, n in Counter(kind[kind != ""].tolist()).items()})
    return CleanPage(candles=candles, dropped=dropped, reached=reached)


def describe_dropped(dropped: Mapping[str, int]) -> str:
    """`3 bad rows (2 duplicate, 1 NaN)` in the order of `BAD_ROW_KINDS`."""
    parts = ", ".join(f"{dropped[k]} {k}" for k in BAD_ROW_KINDS if dropped.get(k))
    return f"{_plural(sum(dropped.values()), 'bad row')} ({parts})"


def missing_intervals(held: np.ndarray, start: int, end: int) -> list[tuple[int, int]]:
    """The half-open intervals `[a, b)` of minute open times in `[start, end)` that `held` lacks.

    `held` is sorted, unique and on the minute grid (the store guarantees it); `start` and `end` are minutes.
    """
    held = np.asarray(held, dtype=np.int64)
    held = held[(held >= start) & (held < end)]
    firsts = np.concatenate([[start], held + MINUTE])
    lasts = np.concatenate([held, [end]])
    keep = lasts > firsts
    return [(int(a), int(b)) for a, b in zip(firsts[keep], lasts[keep], strict=True)]


def _ceil_minute(seconds: int) -> int:
    return -(-seconds // MINUTE) * MINUTE


@dataclass(frozen=True)
class IngestResult:
    """What one run did and what the store holds afterwards."""

    symbol: str
    exchange_symbol: str
    missing_minutes: int  # minutes the store lacked in the range before the run
    pages: int
    added: int
    already_present: int
    conflicts: int
    dropped: dict[str, int] = field(default_factory=dict)
    held: tuple[int, int, int] | None = None  # first, last open time, count
    gaps: list[Gap] = field(default_factory=list)


ProgressCallback = Callable[[int, int], None]  # (missing minutes covered so far, missing minutes in all)


@dataclass
class _Retrier:
    """Retries transient exchange errors with exponential backoff; turns the rest into one clear error."""

    source: OhlcvSource | FundingSource
    retries: int
    backoff_s: float
    sleep: Callable[[float], None]

    def __call__(self, what: str, call: Callable[[], Any], stored_note: str) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return call()
            except TRANSIENT_ERRORS as error:
                if attempt == self.retries:
                    raise DataError(
                        f"{self.source.exchange_id}: {what} failed {_times(self.retries + 1)} (last: "
                        f"{type(error).__name__}: {_short(error)}); {stored_note}; run the command again to resume"
                    ) from error
                self.sleep(min(self.backoff_s * 2**attempt, MAX_BACKOFF_S))
            except ccxt.BadSymbol as error:
                raise ConfigError(f"{self.source.exchange_id}: {what}: {_short(error)}") from error
            except ccxt.BaseError as error:
                raise DataError(
                    f"{self.source.exchange_id}: {what} refused with {type(error).__name__}: {_short(error)}; "
                    f"{stored_note}"
                ) from error
        raise AssertionError("unreachable")


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _short(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plan(
    store: CandleStore, symbol: str, *, since: int | None, until: int | None, now_ms: int
) -> list[tuple[int, int]]:
    """The intervals to download: after the last stored minute, or every missing minute of `[since, until)`."""
    if since is not None and until is not None and until <= since:
        raise ConfigError(f"--until {format_time(until)} is not after --since {format_time(since)}")
    closed_end = (now_ms // _MINUTE_MS) * MINUTE  # open time of the still-forming minute
    end = closed_end if until is None else min(_ceil_minute(until), closed_end)
    if since is None:
        held = store.time_range(symbol)
        if held is None:
            raise ConfigError(
                f"the store holds no {symbol} candles yet: give --since (e.g. --since 2024-01-01) for the first "
                "download; later runs continue from the last stored minute"
            )
        start = held[1] + MINUTE
        return [(start, end)] if start < end else []
    start = _ceil_minute(since)
    if start >= end:
        return []
    held_stamps = store.read(symbol, start, end)["timestamp"].to_numpy()
    return missing_intervals(held_stamps, start, end)


@dataclass
class _Download:
    """One run's state from page to page: what to ask for, where it goes, and the running totals.

    The totals live here rather than in locals of `ingest` so each step of a page is a small method, and an error
    in the middle of a run can still say how much is already stored.
    """

    store: CandleStore
    source: OhlcvSource
    symbol: str
    exchange_symbol: str
    retry: _Retrier
    now_ms: int
    total: int  # missing minutes in all
    progress: ProgressCallback | None
    pages: int = 0
    added: int = 0
    already_present: int = 0
    conflicts: int = 0
    covered: int = 0  # missing minutes the cursor has moved past
    dropped: Counter[str] = field(default_factory=Counter)

    def fetch(self, cursor: int, window_end: int) -> CleanPage:
        """One request for the minutes `[cursor, window_end)`, retried, and its rows validated.

        Bounded by `until` as well as `since`, so an exchange that answers "the latest candles" cannot skip minutes.
        """
        limit = (window_end - cursor) // MINUTE
        stored_note = (
            f"the {_plural(self.pages, 'earlier page')} ({_plural(self.added, 'row')} added) "
            f"{'is' if self.pages == 1 else 'are'} stored"
        )
        rows = self.retry(
            f"fetching {self.symbol} ({self.exchange_symbol}) candles from {format_time(cursor)}",
            partial(self.source.fetch_ohlcv, self.exchange_symbol, cursor * _MS, limit, window_end * _MS - 1),
            stored_note,
        )
        return clean_page(rows, start=cursor, end=window_end, now_ms=self.now_ms)

    def keep(self, page: CleanPage, cursor: int) -> None:
        """Store a page's good candles (its own transaction) and warn about its bad rows and conflicts.

        Called by `ingest` itself: `stacklevel=3` (here, `ingest`, its caller) makes each warning name the code
        that called `ingest`, as the warnings did when this was inline.
        """
        source, symbol = self.source, self.symbol
        if page.dropped:
            warnings.warn(
                f"{source.exchange_id} {symbol} page from {format_time(cursor)}: dropped "
                f"{describe_dropped(page.dropped)}; they are not stored",
                stacklevel=3,
            )
            self.dropped.update(page.dropped)
        if len(page.candles):
            result = self.store.upsert(symbol, page.candles, source=f"{source.exchange_id}:{self.exchange_symbol}")
            self.added += result.added
            self.already_present += result.already_present
            if result.conflicts:
                self.conflicts += result.conflicts
                warnings.warn(
                    f"{source.exchange_id} {symbol}: {result.conflicts} candles from "
                    f"{format_time(result.first_conflict or cursor)} differ from the stored ones; "
                    "kept the stored values",
                    stacklevel=3,
                )

    def advance(self, page: CleanPage, cursor: int, window_end: int) -> int:
        """Count the finished page, report progress, and return where the next request starts.

        A page that brought nothing (a gap on the exchange) moves the cursor past its window, so a run always
        ends; otherwise it continues after the last row (a short page: the exchange's own cap).
        """
        self.pages += 1
        advance_to = window_end if page.reached is None else page.reached + MINUTE
        self.covered += (advance_to - cursor) // MINUTE
        if self.progress:
            self.progress(self.covered, self.total)
        return advance_to

    def result(self) -> IngestResult:
        """The run's totals with what the store holds now, after the last page."""
        return IngestResult(
            symbol=self.symbol,
            exchange_symbol=self.exchange_symbol,
            missing_minutes=self.total,
            pages=self.pages,
            added=self.added,
            already_present=self.already_present,
            conflicts=self.conflicts,
            dropped=dict(self.dropped),
            held=self.store.time_range(self.symbol),
            gaps=self.store.gaps(self.symbol),
        )


def _nothing_to_do(store: CandleStore, source: OhlcvSource, symbol: str) -> IngestResult:
    """The result of a run with nothing missing: no request at all (cron runs often).

    A symbol already held is still registered, so a run against another market is refused even then.
    """
    held = store.time_range(symbol)
    if held is not None:
        store.register_symbol(symbol, source.exchange_id, source.market)  # refuses another market
    return IngestResult(
        symbol=symbol,
        exchange_symbol="",
        missing_minutes=0,
        pages=0,
        added=0,
        already_present=0,
        conflicts=0,
        held=held,
    )


def _begin_download(
    store: CandleStore,
    source: OhlcvSource,
    symbol: str,
    intervals: Sequence[tuple[int, int]],
    *,
    retry: _Retrier,
    now_ms: int,
    progress: ProgressCallback | None,
) -> _Download:
    """Resolve the exchange's symbol and register the store's, before the first page, then report 0 covered.

    Registering first means a store of one market never receives a page of another.
    """
    exchange_symbol: str = retry(
        f"loading the markets for {symbol}", lambda: source.resolve_symbol(symbol), "nothing was downloaded"
    )
    store.register_symbol(symbol, source.exchange_id, source.market)  # before the first page: refuses a mix
    total = sum((b - a) // MINUTE for a, b in intervals)
    if progress:
        progress(0, total)
    return _Download(
        store=store,
        source=source,
        symbol=symbol,
        exchange_symbol=exchange_symbol,
        retry=retry,
        now_ms=now_ms,
        total=total,
        progress=progress,
    )


def ingest(
    store: CandleStore,
    source: OhlcvSource,
    symbol: str,
    *,
    since: int | None = None,
    until: int | None = None,
    retries: int = DEFAULT_RETRIES,
    backoff_s: float = DEFAULT_BACKOFF_S,
    sleep: Callable[[float], None] = time.sleep,
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Download the 1-minute candles `store` lacks for `symbol` from `source`, one transaction per page.

    Parameters
    ----------
    since, until
        UTC seconds. Without `since` the download continues after the last stored minute; with it, every
        missing minute of `[since, until)` is fetched (gaps included) and minutes already held are skipped.
        `until` defaults to now; the still-forming minute is never stored.
    retries, backoff_s, sleep
        Transient errors (network, rate limit, exchange unavailable) are retried `retries` times, waiting
        `backoff_s * 2**attempt` seconds (at most a minute) between tries; then a `DataError`. Pages finished
        before stay stored.
    progress
        Called with (missing minutes covered, missing minutes in all) before the first page and after each.
    """
    now_ms = source.milliseconds()
    intervals = plan(store, symbol, since=since, until=until, now_ms=now_ms)
    if not intervals:
        return _nothing_to_do(store, source, symbol)
    retry = _Retrier(source, retries, backoff_s, sleep)
    run = _begin_download(store, source, symbol, intervals, retry=retry, now_ms=now_ms, progress=progress)
    for first, last_end in intervals:
        cursor = first
        while cursor < last_end:
            # One request: up to a page of minutes from the cursor, within this missing interval.
            window_end = min(cursor + source.page_limit * MINUTE, last_end)
            page = run.fetch(cursor, window_end)
            run.keep(page, cursor)  # warns on behalf of ingest's caller: call it from here only
            cursor = run.advance(page, cursor, window_end)
    return run.result()


# --- funding rates (perpetuals) ---

# Rates asked for per request, and the window each request covers: half as many 8-hour periods as rows allowed,
# so a full page can only mean a denser schedule (4 h or 1 h funding) cut by the exchange, and is asked again
# over half the window. 100 is within every exchange's maximum we know (OKX 100, Bybit 200, Binance 1,000).
FUNDING_PAGE_LIMIT = 100
FUNDING_PERIOD_S = 8 * 3600


class FundingSource(Protocol):
    """The seam between the funding download and an exchange: ccxt's `fetch_funding_rate_history`."""

    exchange_id: str
    market: str

    def resolve_symbol(self, name: str) -> str:
        """The exchange's symbol for a store name (`ETHUSDT` -> `ETH/USDT:USDT`)."""
        ...

    def fetch_funding_rates(self, symbol: str, since_ms: int, limit: int, until_ms: int) -> list[dict[str, Any]]:
        """Up to `limit` settled funding rates with timestamps in `[since_ms, until_ms]`, as ccxt's funding rate
        history structures (`timestamp` in ms, `fundingRate` as a fraction)."""
        ...

    def milliseconds(self) -> int:
        """Now, in Unix milliseconds."""
        ...


@dataclass(frozen=True)
class FundingIngestResult:
    """What one funding download did and what the store holds afterwards."""

    symbol: str
    exchange_symbol: str
    pages: int
    added: int
    already_present: int
    conflicts: int
    dropped: int  # rows without a timestamp or a finite rate
    held: tuple[int, int, int] | None  # first, last funding time, count
    market: tuple[str, str] | None  # the (exchange, market) the store records for the symbol, None if none


def clean_funding_page(rows: Sequence[Any], *, start: int, end: int) -> tuple[pd.DataFrame, int]:
    """The rates of one page with funding time in `[start, end)` (UTC seconds, rounded from ms) and the count of
    bad rows (no timestamp, or a rate that is not a finite number); rows outside the window are ignored."""
    stamps: dict[int, float] = {}
    bad = 0
    for row in rows:
        try:
            stamp = (int(row["timestamp"]) + 500) // _MS  # exchanges stamp a few ms after the hour at times
            rate = float(row["fundingRate"])
        except (KeyError, TypeError, ValueError):
            bad += 1
            continue
        if not np.isfinite(rate):
            bad += 1
        elif start <= stamp < end:
            stamps[stamp] = rate
    ordered = sorted(stamps)
    frame = pd.DataFrame(
        {"timestamp": np.asarray(ordered, np.int64), "rate": np.asarray([stamps[t] for t in ordered], np.float64)}
    )
    return frame, bad


def _check_funding_symbol(store: CandleStore, source: FundingSource, symbol: str) -> tuple[str, str] | None:
    """Funding belongs to perpetuals: a symbol the store records as spot, or as another exchange's, is refused."""
    if source.market != "linear":
        raise ConfigError(f"funding rates exist for perpetuals only, not {source.market} markets")
    info = store.symbol_info(symbol)
    if info is None:
        return None
    exchange_id, market = info
    if market != "linear":
        raise ConfigError(
            f"{store.path}: {symbol} holds {exchange_id} {market} candles, which pay no funding; download the "
            "perpetual's candles and funding under another --symbol or --db"
        )
    if exchange_id != source.exchange_id:
        raise ConfigError(
            f"{store.path}: {symbol} holds {exchange_id} candles; give --exchange {exchange_id}, so its funding "
            "rates come from the same exchange"
        )
    return info


def ingest_funding(
    store: CandleStore,
    source: FundingSource,
    symbol: str,
    *,
    since: int | None = None,
    until: int | None = None,
    retries: int = DEFAULT_RETRIES,
    backoff_s: float = DEFAULT_BACKOFF_S,
    sleep: Callable[[float], None] = time.sleep,
) -> FundingIngestResult:
    """Download `symbol`'s historical funding rates into the store's `funding` table, one transaction per page.

    Without `since` the download continues after the last stored funding time (a first run needs `since`);
    with it, `[since, until)` is asked again in full (a year is about 20 requests) and rates already held are
    left alone, so a rerun changes nothing. Retries and errors as in `ingest`; finished pages stay stored.
    """
    market = _check_funding_symbol(store, source, symbol)
    now = source.milliseconds() // _MS
    end = now if until is None else min(int(until), now)
    held = store.funding_range(symbol)
    if since is None:
        if held is None:
            raise ConfigError(
                f"the store holds no {symbol} funding rates yet: give --since (e.g. --since 2024-01-01) for the "
                "first download; later runs continue after the last stored rate"
            )
        start = held[1] + 1
    else:
        start = int(since)
        if until is not None and until <= since:
            raise ConfigError(f"--until {format_time(until)} is not after --since {format_time(since)}")
    retry = _Retrier(source, retries, backoff_s, sleep)
    pages = added = present = conflicts = dropped = 0
    exchange_symbol = ""
    if start < end:
        exchange_symbol = retry(
            f"loading the markets for {symbol}", lambda: source.resolve_symbol(symbol), "nothing was downloaded"
        )
    window = (FUNDING_PAGE_LIMIT // 2) * FUNDING_PERIOD_S
    cursor = start
    while cursor < end:
        window_end = min(cursor + window, end)
        stored_note = f"{_plural(pages, 'earlier page')} ({_plural(added, 'rate')} added) stored"
        rows = retry(
            f"fetching {symbol} ({exchange_symbol}) funding rates from {format_time(cursor)}",
            partial(
                source.fetch_funding_rates, exchange_symbol, cursor * _MS, FUNDING_PAGE_LIMIT, window_end * _MS - 1
            ),
            stored_note,
        )
        pages += 1
        if len(rows) >= FUNDING_PAGE_LIMIT and window_end - cursor > FUNDING_PERIOD_S:
            window = max(window // 2, FUNDING_PERIOD_S)  # maybe cut short by the exchange: ask for less
            continue
        page, bad = clean_funding_page(rows, start=cursor, end=window_end)
        if bad:
            dropped += bad
            warnings.warn(
                f"{source.exchange_id} {symbol} funding page from {format_time(cursor)}: dropped "
                f"{_plural(bad, 'bad row')} (no timestamp or no finite rate); they are not stored",
                stacklevel=2,
            )
        if len(page):
            result = store.upsert_funding(symbol, page, source=f"{source.exchange_id}:{exchange_symbol} funding")
            added += result.added
            present += result.already_present
            if result.conflicts:
                conflicts += result.conflicts
                warnings.warn(
                    f"{source.exchange_id} {symbol}: {result.conflicts} funding rates from "
                    f"{format_time(result.first_conflict or cursor)} differ from the stored ones; "
                    "kept the stored values",
                    stacklevel=2,
                )
        cursor = window_end
    return FundingIngestResult(
        symbol=symbol,
        exchange_symbol=exchange_symbol,
        pages=pages,
        added=added,
        already_present=present,
        conflicts=conflicts,
        dropped=dropped,
        held=store.funding_range(symbol),
        market=market,
    )


# `ingest funding` builds its source (the exchange's perpetuals) through this name, so tests can replace it.
funding_source_factory: Callable[[str], FundingSource] = partial(make_ccxt_source, market="linear")
