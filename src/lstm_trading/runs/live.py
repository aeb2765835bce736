"""`live` and `live-status`: a replay on stored candles, the paper or live loop against an exchange, the status.

Every setting of the loop and its default is in `LiveSettings` (live/settings.py); the decision and fill settings
are the run's `BacktestConfig` with the flags `live` shares with `backtest`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from lstm_trading.backtest.execution import Costs
from lstm_trading.backtest.funding import FundingSchedule
from lstm_trading.core.config import BacktestConfig
from lstm_trading.core.errors import ConfigError, DataError
from lstm_trading.data.exchange import CcxtSource
from lstm_trading.live import brokers
from lstm_trading.live.feeds import Clock, SystemClock
from lstm_trading.live.loop import LogWrite, LoopSettings, ReplayResult, check_bundle, replay, run_live, status
from lstm_trading.live.retraining import MODEL_KEY, ModelInUse, ModelSchedule, Retrainer, RetrainSettings, Trainer
from lstm_trading.live.settings import LiveSettings
from lstm_trading.live.signals import ModelSignals
from lstm_trading.live.state import LiveState
from lstm_trading.runs.candles import latest_candles, symbol_funding
from lstm_trading.runs.retraining import RETRAIN_DIR, FoldTrainer, RetrainSource, retrain_source, retrained_period

# The live command takes its clock from here, so tests can run days of periods without waiting.
clock_factory: Callable[[], Clock] = SystemClock
# ... and its retraining's trainer: a process per training (tests train inline, in step with the simulated clock)
trainer_factory: Callable[[RetrainSource, RetrainSettings], Trainer] = FoldTrainer


# --- what the commands call ---


def check_sizing_flags(quantity: float | None, *, risk: str | None, position_share: str | None) -> None:
    """Refuse `--qty` beside `--risk` or `--position-share` (as typed): it sets every order's size, so the
    other would be ignored. Checked before the run folder is read."""
    for flag, value in (("--risk", risk), ("--position-share", position_share)):
        if quantity is not None and value is not None:
            raise ConfigError(
                f"give --qty or {flag}, not both: --qty {quantity:g} sets every order's size, so {flag} {value} "
                "would be ignored"
            )


def loop_settings(
    settings: LiveSettings,
    symbol: str,
    config: BacktestConfig,
    funding: FundingSchedule | None = None,
    inputs: tuple[str, ...] = (),
) -> LoopSettings:
    """What the loop trades, with the account and symbol resolved; `funding` the symbol's (None: spot); `inputs`
    the other symbols the model reads."""
    return LoopSettings(
        account=settings.account_name,
        symbol=symbol,
        config=config,
        max_quantity=settings.max_quantity,
        quantity=settings.quantity,
        max_errors=settings.max_errors,
        funding=funding,
        inputs=inputs,
        # the model's age is checked at every period in paper and live mode; a replay trades as backtests do
        max_model_age_s=None if settings.replay else settings.max_model_age_s,
    )


def replay_run(
    run_dir: Path,
    settings: LiveSettings,
    *,
    config: BacktestConfig,
    fresh: bool = True,
    batch_size: int = 64,
    echo: Callable[[str], None] | None = None,
) -> ReplayResult:
    """`live --replay`: the candles and period exactly as `backtest_run` reads them; default folder RUN/replay.

    `fresh` forgets the account's earlier state first; without it a stopped replay resumes where it stopped.
    """
    from lstm_trading.models.bundle import load_bundle
    from lstm_trading.runs.candles import period_candles, run_sources

    start = settings.start
    if not settings.replay or start is None:  # LiveSettings refuses a replay without --from
        raise ValueError("replay_run takes LiveSettings(replay=True, start=...)")
    bundle = load_bundle(run_dir)
    db_path, symbol = run_sources(bundle, settings.db, settings.symbol)
    retraining = settings.retraining
    retrained = None
    if retraining is None:
        end, candles = period_candles(bundle, db_path, symbol, start, settings.end)
    else:  # the first model is trained at --from, not RUN's (whose data may reach past it)
        from lstm_trading.runs.candles import period_end

        candles = None
        end = period_end(db_path, symbol, start, settings.end)
        source = retrain_source(run_dir, bundle, db=db_path, symbol=symbol, backtest=config)
        folder = settings.folder(run_dir) / RETRAIN_DIR
        retrained = retrained_period(source, retraining, start=start, end=end, folder=folder, echo=echo)
        end = retrained.end
    funding = symbol_funding(db_path, symbol, config.funding, start=start, end=end)  # as `backtest_run` reads it
    return replay(
        bundle,
        candles,
        db=db_path,
        start=start,
        end=end,
        settings=loop_settings(settings, symbol, config, funding.schedule),
        out_dir=settings.folder(run_dir),
        fresh=fresh,
        max_periods=settings.periods,
        batch_size=batch_size,
        workers=settings.workers,
        echo=echo,
        quiet=settings.quiet,
        retrained=retrained,
    )


def live_run(
    run_dir: Path,
    settings: LiveSettings,
    *,
    config: BacktestConfig,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """`live` in paper or live mode: the checks that must pass before anything trades, then the loop on the
    clock; returns the account's status when it stops (after `settings.periods`). With `--feed db` nothing
    touches the network: no exchange is made, the candles are the ones cron's `ingest exchange` writes."""
    from lstm_trading.models.bundle import load_bundle

    db = settings.db
    if settings.replay or db is None:  # LiveSettings refuses a loop without --db
        raise ValueError("live_run takes LiveSettings for the paper or live loop, with db")
    if settings.feed == "db" and settings.feed_wait_s + 60 >= config.every_seconds:
        raise ConfigError(
            f"--feed-wait {settings.feed_wait_s}s: a period's minute and its entry's are waited for up to this long, "
            f"which must end before the next period (--every {config.every_seconds // 60} min)"
        )
    clock = clock or clock_factory()
    bundle = load_bundle(run_dir)
    symbol = settings.symbol or bundle.training.data.symbol or "ETHUSDT"
    retraining = settings.retraining
    source = None
    if retraining is not None:  # refused before anything trades: a run without label settings cannot retrain
        source = retrain_source(run_dir, bundle, db=db, symbol=symbol, backtest=config)
        retraining.check_horizon(source.config.labels.horizon_seconds)
        retraining.check_kind(source.kind)
    model, bundle = _model_in_use(run_dir, bundle, db, settings.account_name, echo)
    for problem in check_bundle(bundle, symbol, clock.now(), settings.max_model_age_s, live=settings.live):
        if echo is not None:
            echo(f"warning: {problem}")
    credentials = brokers.credentials_from_env(environ) if settings.live else None
    inputs = bundle.feature_config.with_symbols
    for held in (symbol, *inputs):
        _check_candles(db, held, bundle.history_minutes)
    # the store's record of the symbol, else the market the loop's feed is about to record it under
    funding = symbol_funding(db, symbol, config.funding, market=settings.market)
    if echo is not None:
        echo(f"funding: {funding.description}")
    market = _connect(settings, symbol, credentials, Costs(config.fee, config.slippage), clock, echo)
    signals = ModelSignals(
        bundle,
        partial(latest_candles, db, symbol, history_minutes=bundle.history_minutes, with_symbols=inputs),
        symbol,
        levels=config.levels,
    )
    signals.path = model.path
    schedule = None
    if retraining is not None and source is not None:
        folder = settings.folder(run_dir) / RETRAIN_DIR
        trainer = trainer_factory(source, retraining)
        now = clock.now

        def schedule(state: LiveState, write: LogWrite) -> ModelSchedule:
            return Retrainer(retraining, trainer, state, write, folder, now)

    return run_live(
        db=db,
        settings=loop_settings(settings, symbol, config, funding.schedule, inputs),
        mode=settings.mode,
        source=market.source,
        broker=market.broker,
        signals=signals,
        clock=clock,
        retry=market.retry,
        out_dir=settings.folder(run_dir),
        max_periods=settings.periods,
        initial_equity=market.initial_equity,
        echo=echo,
        quiet=settings.quiet,
        model=model,
        retrain=schedule,
        feed=settings.feed,
        feed_wait_s=settings.feed_wait_s,
    )


def _model_in_use(
    run_dir: Path, bundle: Any, db: Path, account: str, echo: Callable[[str], None] | None
) -> tuple[ModelInUse, Any]:
    """The model the account's state names (a retrained one swapped in before the last stop), else RUN's."""
    from lstm_trading.core.errors import ModelFileError
    from lstm_trading.live.state import accounts
    from lstm_trading.models.bundle import load_bundle

    home = str(run_dir.resolve())
    own = ModelInUse(name=run_dir.name, path=home, data_end=bundle.training.data.last_timestamp, run=home)
    if not db.exists() or account not in accounts(db):  # read without creating the state's tables
        return own, bundle
    with LiveState(db, account) as state:
        named = state.meta(MODEL_KEY)
    if named is None:
        return own, bundle
    model = ModelInUse.from_record(named)
    if model.path == own.path:
        return own, bundle
    if model.run != home:  # started with another RUN: its own model, not one retrained from the one before
        if echo is not None:
            echo(f"the account's state names the model {model.name} of another run ({model.run}); trading {home}")
        return own, bundle
    try:
        chosen = load_bundle(model.path)
    except ModelFileError as error:
        raise ModelFileError(
            f"the state of account {account!r} in {db} names the model {model.name} ({model.path}), which does not "
            f"load: {error}; restore it, or start another --account"
        ) from None
    if echo is not None:
        echo(f"model in use: {model.name}, as the account's state names it (retrained; RUN's own is {run_dir.name})")
    return model, chosen


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (systemd, docker stop) ends the loop as Ctrl-C does: the open transaction rolls back and the
    state stays as last committed. The previous handler is put back on the way out."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- the live loop's parts ---


def _check_candles(db: Path, symbol: str, history_minutes: int) -> None:
    """The loop keeps a database current; filling an empty one is `ingest exchange`'s work."""
    from lstm_trading.data.store import CandleStore

    if not db.exists():
        raise DataError(
            f"{db}: no such candle database; fill it first with `lstm-trading ingest exchange --db {db} --since ...` "
            f"(the model needs {history_minutes:,} minutes of history)"
        )
    with CandleStore(db) as store:
        held = store.time_range(symbol)
    if held is None:
        raise DataError(
            f"{db}: no {symbol} candles; fill it first with `lstm-trading ingest exchange --db {db} --symbol "
            f"{symbol} --since ...` (the model needs {history_minutes:,} minutes of history)"
        )


@dataclass(frozen=True)
class _Market:
    """The exchange the loop talks to: candles through `source`, orders through `broker`, both with `retry`."""

    source: CcxtSource | None  # None: --feed db, no exchange at all
    retry: brokers.Retry
    broker: brokers.Broker
    initial_equity: float | None  # live: the exchange's balance; paper: None, the run's setting


def _connect(
    settings: LiveSettings,
    symbol: str,
    credentials: brokers.Credentials | None,
    costs: Costs,
    clock: Clock,
    echo: Callable[[str], None] | None,
) -> _Market:
    """The exchange with its markets loaded, and the broker: paper fills, or orders on the exchange. Paper mode
    on `--feed db` makes no exchange and loads no markets: it runs without a network."""
    retry = brokers.Retry(settings.retries, settings.backoff_s, clock.sleep, log=echo)  # lines name the error type
    if settings.feed == "db" and not settings.live:  # LiveSettings refuses --feed db with --mode live
        return _Market(None, retry, brokers.PaperBroker(), None)
    exchange = brokers.exchange_factory(settings.exchange, settings.market, credentials)
    source = CcxtSource(exchange, settings.market)
    unified = retry("loading the markets", lambda: source.resolve_symbol(symbol))
    if not settings.live:
        return _Market(source, retry, brokers.PaperBroker(), None)
    broker = brokers.CcxtBroker(exchange, unified, costs, retry)
    return _Market(source, retry, broker, broker.balance())


# --- live-status ---


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


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:+,.2f}"


def _price(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _model_lines(summary: dict[str, Any]) -> list[str]:
    """The model in use (when it was trained, on what data) and the retraining: the next one and the last gate."""
    from lstm_trading.core.timeutil import format_time

    def when(value: Any) -> str:
        return "-" if value is None else format_time(int(value))

    lines = []
    model = summary.get("model")
    if model is not None:
        trained = "RUN's own" if model.get("trained_at") is None else f"trained {when(model['trained_at'])}"
        lines.append(f"model: {model['name']} ({trained}, on data to {when(model.get('data_end'))})")
    record, upcoming = summary.get("retraining"), summary.get("next_retraining")
    if record is None and upcoming is None:
        return lines
    text = f"retraining: next at {when(upcoming)}"
    if record is not None and record.get("k", -1) >= 0:
        gate = record.get("gate") or {}
        scores = ""
        if gate.get("new_log_loss") is not None:
            current = gate.get("current_log_loss")
            scores = f", log-loss {gate['new_log_loss']:.4f}" + ("" if current is None else f" vs {current:.4f}")
        text += (
            f"; last for {when(record['boundary'])} ({record.get('name')}): {record['status']}{scores}"
            f" ({record.get('reason') or gate.get('reason') or '-'})"
        )
    lines.append(text)
    return lines


def status_lines(summary: dict[str, Any]) -> list[str]:
    """`live-status`'s text: the account, its position, and the last decisions as a plain table (rich squeezed
    these nine columns into 80 when piped, cutting the time to "2025-…")."""
    from lstm_trading.report.tables import text_table

    equity = "-" if summary["equity"] is None else f"{summary['equity']:,.2f}"
    lines = [
        f"account {summary['account']} ({summary['mode']}, {summary['symbol']}): equity {equity}, "
        f"P&L today {_money(summary['today_pnl'])}, total {_money(summary['total_pnl'])} over {summary['trades']} "
        "trades"
    ]
    position = summary["position"]
    if position is None:
        lines.append("position: none")
    else:
        lines.append(
            f"position: {position['side']} {position['quantity']:g} at {position['entry']:.2f} since "
            f"{position['opened_utc']}, SL {position['stop_loss']:.2f}, TP {position['take_profit']:.2f}, "
            f"closes by {position['close_by_utc']}"
        )
    lines.extend(_model_lines(summary))
    lines.append(f"last {len(summary['decisions'])} decisions")
    header = ("time", "P(Buy)", "P(Sell)", "P(Invalid)", "signal", "SL", "TP", "action", "reason")
    rows = [
        (
            d["at_utc"],
            f"{d['p_buy']:.3f}",
            f"{d['p_sell']:.3f}",
            f"{d['p_invalid']:.3f}",
            d["signal"],
            _price(d["stop_loss"]),
            _price(d["take_profit"]),
            d["action"],
            d["reason"],
        )
        for d in summary["decisions"]
    ]
    return lines + text_table(header, rows)
