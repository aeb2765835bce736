"""live: split from lstm_trading.live."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lstm_trading.backtest.execution import (
    Costs,
)
from lstm_trading.core.config import BacktestConfig
from lstm_trading.core.errors import ConfigError, DataError
from lstm_trading.live.brokers import Broker
from lstm_trading.live.feeds import Clock, SystemClock
from lstm_trading.live.loop import (
    DEFAULT_MAX_ERRORS,
    DEFAULT_MAX_MODEL_AGE_S,
    LoopSettings,
    ReplayResult,
    check_bundle,
    replay,
    run_live,
    status,
)
from lstm_trading.live.state import LiveState

# The live command takes its clock from here, so tests can run days of periods without waiting.
clock_factory: Callable[[], Clock] = SystemClock


# --- what the commands call ---


def replay_run(
    run_dir: Path,
    *,
    config: BacktestConfig,
    db: Path | None = None,
    symbol: str | None = None,
    start: int | None,
    end: int | None = None,
    out_dir: Path | None = None,
    account: str = "replay",
    fresh: bool = True,
    max_periods: int | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    echo: Callable[[str], None] | None = None,
    quiet: bool = False,
) -> ReplayResult:
    """`live --replay`: the candles and period exactly as `backtest_run` reads them; default folder RUN/replay."""
    from lstm_trading.models.bundle import load_bundle
    from lstm_trading.runs.backtest import period_candles
    from lstm_trading.runs.evaluate import run_sources

    if start is None:
        raise ConfigError("--replay needs --from (the first moment to replay); --to defaults to the end of the data")
    bundle = load_bundle(run_dir)
    db_path, symbol = run_sources(bundle, db, symbol)
    end, candles = period_candles(bundle, db_path, symbol, start, end)
    settings = LoopSettings(account=account, symbol=symbol, config=config)
    return replay(
        bundle,
        candles,
        db=db_path,
        start=start,
        end=end,
        settings=settings,
        out_dir=out_dir if out_dir is not None else run_dir / "replay",
        fresh=fresh,
        max_periods=max_periods,
        batch_size=batch_size,
        workers=workers,
        echo=echo,
        quiet=quiet,
    )


MODES = ("paper", "live")


def live_run(
    run_dir: Path,
    *,
    config: BacktestConfig,
    db: Path,
    mode: str = "paper",
    exchange_id: str = "bybit",
    market: str = "linear",
    symbol: str | None = None,
    account: str | None = None,
    confirmed: bool = False,
    max_model_age_s: int = DEFAULT_MAX_MODEL_AGE_S,
    quantity: float | None = None,
    max_quantity: float | None = None,
    max_errors: int = DEFAULT_MAX_ERRORS,
    retries: int = 3,
    backoff_s: float = 2.0,
    out_dir: Path | None = None,
    clock: Clock | None = None,
    max_periods: int | None = None,
    environ: dict[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """`live` in paper or live mode: the checks that must pass before anything trades, then the loop."""
    from lstm_trading.data.exchange import CcxtSource
    from lstm_trading.live import brokers
    from lstm_trading.models.bundle import load_bundle

    if mode not in MODES:
        raise ConfigError(f"--mode: unknown mode {mode!r}; use paper (simulated fills, the default) or live")
    for flag, value in (("--qty", quantity), ("--max-qty", max_quantity)):
        if value is not None and not value > 0:
            raise ConfigError(f"{flag} {value:g}: must be above 0 (units of the base currency, e.g. 0.5 ETH)")
    live = mode == "live"
    if live and not confirmed:
        raise ConfigError(
            "live mode places real orders with real money; add --i-understand-live-trading to confirm "
            "(try --mode paper first)"
        )
    if live and market != "linear":
        raise ConfigError(
            f"live mode trades linear perpetuals only (stop loss and take profit held on the exchange's position); "
            f"--market {market} can run with --mode paper"
        )
    clock = clock or clock_factory()
    bundle = load_bundle(run_dir)
    trained_on = ((bundle.meta.get("training") or {}).get("data") or {}).get("symbol")
    symbol = symbol or trained_on or "ETHUSDT"
    for problem in check_bundle(bundle, symbol, clock.now(), max_model_age_s, live=live):
        if echo is not None:
            echo(f"warning: {problem}")
    credentials = brokers.credentials_from_env(environ) if live else None
    if not db.exists():
        raise DataError(
            f"{db}: no such candle database; fill it first with `lstm-trading ingest exchange --db {db} --since ...` "
            f"(the model needs {bundle.history_minutes:,} minutes of history)"
        )
    from lstm_trading.data.store import CandleStore

    with CandleStore(db) as store:
        if store.time_range(symbol) is None:
            raise DataError(
                f"{db}: no {symbol} candles; fill it first with `lstm-trading ingest exchange --db {db} --symbol "
                f"{symbol} --since ...` (the model needs {bundle.history_minutes:,} minutes of history)"
            )
    retry = brokers.Retry(retries, backoff_s, clock.sleep, log=echo)  # its lines name the error type only
    exchange = brokers.exchange_factory(exchange_id, market, credentials)
    source = CcxtSource(exchange, market)
    unified = retry("loading the markets", lambda: source.resolve_symbol(symbol))
    costs = Costs(config.fee, config.slippage)
    broker: Broker
    initial_equity = None
    if live:
        ccxt_broker = brokers.CcxtBroker(exchange, unified, costs, retry)
        initial_equity = ccxt_broker.balance()
        broker = ccxt_broker
    else:
        broker = brokers.PaperBroker()
    settings = LoopSettings(
        account=account or mode,
        symbol=symbol,
        config=config,
        max_quantity=max_quantity,
        quantity=quantity,
        max_errors=max_errors,
    )
    return run_live(
        bundle,
        db=db,
        settings=settings,
        mode=mode,
        exchange=exchange,
        source=source,
        broker=broker,
        clock=clock,
        retry=retry,
        out_dir=out_dir,
        max_periods=max_periods,
        initial_equity=initial_equity,
        echo=echo,
        quiet=quiet,
    )


def live_status(db: Path, account: str | None = None, *, last: int = 10, now: float | None = None) -> dict[str, Any]:
    """`live-status`: one account's summary (the only one, or the one named)."""
    from lstm_trading.live.state import accounts

    if not db.exists():
        raise DataError(f"{db}: no such database; give the candle database the live loop ran on with --db")
    held = accounts(db)
    if not held:
        raise DataError(f"{db}: no live state; start `lstm-trading live RUN --db {db}` first")
    if account is None:
        if len(held) > 1:
            raise ConfigError(f"{db} holds the accounts {', '.join(held)}; choose one with --account")
        account = held[0]
    elif account not in held:
        raise ConfigError(f"{db}: no account {account!r}; it holds {', '.join(held)}")
    with LiveState(db, account) as state:
        return status(state, now=now, last=last)
