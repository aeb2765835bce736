"""The `live` command's settings: one frozen dataclass, and the only place their defaults are written.

The CLI hands over the flags given (`LiveSettings.from_flags`: a flag not given keeps the default here); the
decision and fill settings are not here but in the run's `BacktestConfig`, which `live` shares with `backtest`.
Out-of-range values and flags of the other mode are `ConfigError`s that name the flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lstm_trading.core.errors import ConfigError
from lstm_trading.core.run_folder import RunFolder
from lstm_trading.core.timeutil import DAY
from lstm_trading.live.feeds import FEEDS
from lstm_trading.live.retraining import GATE_TOLERANCE, RetrainSettings

MODES = ("paper", "live")
EXCHANGE_FEED_FLAGS = {  # what only the exchange feed uses: --feed db reads the database, never the network
    "exchange": "--exchange",
    "retries": "--retries",
    "backoff_s": "--backoff",
}
RETRAIN_FLAGS = {  # what only --retrain-every uses
    "train_span_s": "--train-span",
    "scheme": "--scheme",
    "gate": "--gate",
    "gate_span_s": "--gate-days",
    "gate_tolerance": "--gate-tolerance",
    "sweep": "--sweep/--no-sweep",
    "fold_workers": "--fold-workers",
    "accelerator": "--accelerator",
    "warm_start": "--warm-start",
}


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


@dataclass(frozen=True)
class LiveSettings:
    """What the live loop trades, its guards and retries, and where it writes.

    With `replay` the loop runs over stored candles from `start` to `end` with paper fills and the backtest's
    sizing; without it, it trades `mode` (paper or live) on `exchange` from now until stopped.
    """

    mode: str = "paper"  # paper: simulated fills; live: real orders
    exchange: str = "bybit"  # any exchange ccxt knows
    market: str = "linear"  # linear (USDT perpetual) or spot
    db: Path | None = None  # candle database, the state's too (needed but for a replay, which reads the run's)
    symbol: str | None = None  # None: the one the bundle was trained on
    account: str | None = None  # the state's name in the database; None: the mode, or "replay"
    quantity: float | None = None  # units per order instead of the sizing rule
    max_quantity: float | None = None  # largest order in units; a larger one is cut to it
    max_errors: int = 5  # consecutive failed periods before the loop stops
    retries: int = 3  # retries after a network error, then the period is skipped
    backoff_s: float = 2.0  # seconds before the first retry; doubles with each
    max_model_age_s: int = 30 * DAY  # live mode refuses a bundle whose training data ends longer ago
    confirmed: bool = False  # --i-understand-live-trading: required with mode live
    replay: bool = False
    start: int | None = None  # replay: first moment (required)
    end: int | None = None  # replay: end, exclusive; None: the end of the data
    workers: int | None = None  # replay: inference processes
    out_dir: Path | None = None  # live.jsonl (and a replay's trades.csv); None: see `folder`
    periods: int | None = None  # stop after this many periods; None: never (a replay: at its end)
    quiet: bool = False  # no line per decision on the console (guards and errors still show)
    feed: str = "exchange"  # exchange: ingest each period; db: read what `ingest exchange` writes from cron
    feed_wait_s: int = 120  # --feed db: how long after a minute closes the loop waits for it to land
    # retraining (live/retraining.py): None, RUN's model only; the others apply with it
    retrain_every_s: int | None = None  # --retrain-every
    train_span_s: int = 60 * DAY  # --train-span
    scheme: str = "sliding"  # --scheme
    gate: bool = True  # --gate on / off
    gate_span_s: int = 3 * DAY  # --gate-days
    gate_tolerance: float = GATE_TOLERANCE  # --gate-tolerance, nats of prior-corrected log-loss
    sweep: bool = True  # --sweep / --no-sweep: each model's thresholds chosen on its validation period
    fold_workers: int | None = None  # --fold-workers: a replay's boundary models trained at once (None: one)
    accelerator: str = "auto"  # --accelerator: where retraining trains
    warm_start: bool = False  # --warm-start: each new model starts from the one trained before (train.fine_tune_lr)

    def __post_init__(self) -> None:
        _check(self.max_errors >= 1, f"--max-errors {self.max_errors}", "must be at least 1")
        _check(self.retries >= 0, f"--retries {self.retries}", "must not be negative")
        _check(self.backoff_s >= 0, f"--backoff {self.backoff_s:g}", "must not be negative")
        _check(self.max_model_age_s > 0, f"--max-model-age {self.max_model_age_s}s", "must be positive")
        _check(self.periods is None or self.periods >= 1, f"--periods {self.periods}", "must be at least 1")
        _check(self.workers is None or self.workers >= 1, f"--workers {self.workers}", "must be at least 1")
        _check(self.feed_wait_s > 0, f"--feed-wait {self.feed_wait_s}s", "must be positive")
        if self.feed not in FEEDS:
            raise ConfigError(
                f"--feed: unknown feed {self.feed!r}; use exchange (ingest each period, the default) or db (read "
                "the candles `ingest exchange` writes from cron)"
            )
        if self.replay:
            self._check_replay()
        else:
            self._check_loop()
        self.retraining  # noqa: B018  (its own checks, naming the flags)

    def _check_replay(self) -> None:
        if self.feed == "db":
            raise ConfigError(
                "--feed db is for --mode paper, not --replay: a replay already reads the stored candles (no network)"
            )
        if self.quantity is not None:
            raise ConfigError(
                "--qty is for the live and paper loops: a replay sizes orders as the backtest does (--risk or "
                "--position-share), so that its trades equal the backtest's"
            )
        if self.start is None:
            raise ConfigError(
                "--replay needs --from (the first moment to replay); --to defaults to the end of the data"
            )

    def _check_loop(self) -> None:
        if self.start is not None or self.end is not None:
            flag = "--from" if self.start is not None else "--to"
            raise ConfigError(f"{flag} is for --replay: the live and paper loops start now and run until stopped")
        if self.db is None:
            raise ConfigError("live needs --db: the candle database it keeps current and stores its state in")
        if self.mode not in MODES:
            raise ConfigError(f"--mode: unknown mode {self.mode!r}; use paper (simulated fills, the default) or live")
        for flag, value in (("--qty", self.quantity), ("--max-qty", self.max_quantity)):
            if value is not None and not value > 0:
                raise ConfigError(f"{flag} {value:g}: must be above 0 (units of the base currency, e.g. 0.5 ETH)")
        if self.live and self.feed == "db":
            raise ConfigError(
                "--feed db is for --mode paper, not --mode live: real orders need the exchange (its prices, "
                "position and fills); drop --feed db"
            )
        if self.live and not self.confirmed:
            raise ConfigError(
                "live mode places real orders with real money; add --i-understand-live-trading to confirm "
                "(try --mode paper first)"
            )
        if self.live and self.market != "linear":
            raise ConfigError(
                "live mode trades linear perpetuals only (stop loss and take profit held on the exchange's position); "
                f"--market {self.market} can run with --mode paper"
            )

    @classmethod
    def from_flags(cls, **flags: Any) -> LiveSettings:
        """The settings the flags given choose; a flag not given arrives as None and keeps the default here."""
        if flags.get("retrain_every_s") is None:
            given = [flag for name, flag in RETRAIN_FLAGS.items() if flags.get(name) is not None]
            if given:
                raise ConfigError(f"{given[0]} is for --retrain-every: without it the loop trades RUN's model as is")
        if flags.get("feed") == "db":
            given = [flag for name, flag in EXCHANGE_FEED_FLAGS.items() if flags.get(name) is not None]
            if given:
                raise ConfigError(
                    f"{given[0]} is for the exchange feed: --feed db reads the database and never the network"
                )
        elif flags.get("feed_wait_s") is not None:
            raise ConfigError("--feed-wait is for --feed db: the exchange feed fetches each period's minutes itself")
        return cls(**{name: value for name, value in flags.items() if value is not None})

    @property
    def retraining(self) -> RetrainSettings | None:
        """The retraining schedule and gate (`--retrain-every`), None without it."""
        if self.retrain_every_s is None:
            return None
        return RetrainSettings(
            every_s=self.retrain_every_s,
            train_span_s=self.train_span_s,
            gate=self.gate,
            gate_span_s=self.gate_span_s,
            gate_tolerance=self.gate_tolerance,
            sweep=self.sweep,
            scheme=self.scheme,
            fold_workers=self.fold_workers or 1,
            accelerator=self.accelerator,
            warm_start=self.warm_start,
        )

    @property
    def live(self) -> bool:
        """Real orders with real money."""
        return self.mode == "live" and not self.replay

    @property
    def account_name(self) -> str:
        """The state's name in the database: `account`, else the mode (`replay` for a replay)."""
        return self.account or ("replay" if self.replay else self.mode)

    def folder(self, run_dir: Path) -> Path:
        """Where the log (and a replay's trades) go: `out_dir`, else RUN/replay or RUN/live-ACCOUNT."""
        if self.out_dir is not None:
            return self.out_dir
        folder = RunFolder(run_dir)
        return folder.replay if self.replay else folder.live(self.account_name)
