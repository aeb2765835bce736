"""Frozen, typed configuration: one dataclass per stage, defaults equal to the seed's values, TOML in and out.

Unknown keys, wrong types and out-of-range values are `ConfigError`s that name the key (with a "did you mean").
"""

from __future__ import annotations

import difflib
import math
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from lstm_trading.core.errors import ConfigError

_T = TypeVar("_T")

MAX_WINDOW_MINUTES = 129_600  # 90 days of minutes: the seed's MAX_SEQUENCE_LENGTH
# Upper bounds on values that pass a sign check but fail later with a traceback (an allocation, TA-Lib, numpy):
TALIB_MAX_PERIOD = 100_000  # TA-Lib refuses a longer time period
MAX_HISTORY_MINUTES = 10 * 525_960  # ten years of minutes: the longest window or warm-up a store can feed
MAX_SEED = 2**32 - 1  # numpy and Lightning seed with 32 bits
# validation metrics that can choose the checkpoint: the classification log-loss, or the combined loss (the seed's)
CHECKPOINT_CRITERIA = ("val_class_loss", "val_loss")
LEVELS = ("model", "atr")  # where SL and TP come from when trading (DESIGN.md "Decision")
CLASS_WEIGHTINGS = ("inverse", "none")  # how the classification loss weights the classes (DESIGN.md "Probabilities")
FEATURE_SETS = ("seed", "levels")  # what each minute's features are (DESIGN.md "Features"; features/compute.py)


def round_trip(fee: float, slippage: float) -> float:
    """Fees and slippage of entering and leaving, as a fraction of the entry price: what a trade must earn to
    break even (the labeller, the decision rule and the backtest's figures all use this one definition)."""
    return 2 * (fee + slippage)


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


@dataclass(frozen=True)
class FeatureConfig:
    """Indicator windows in minutes (rows) and the warm-up that recursive indicators need (DESIGN.md)."""

    sma: int = 600
    ema: int = 600
    rsi: int = 840
    macd_fast: int = 720
    macd_slow: int = 1560
    macd_signal: int = 540
    bollinger: int = 1200
    bollinger_sigma: float = 2.0
    atr: int = 840
    warmup_minutes: int = 8_000
    pct_clip: float = 10_000.0
    max_gap_minutes: int = 60  # a longer gap splits the history into segments (DESIGN.md, "Gaps")
    # seed: the original 13 changes; levels: the same indicators as scale-free levels against price. Bundles
    # written before the setting existed load as seed.
    feature_set: str = "seed"
    volume_window: int = 1_440  # rows of the levels set's volume z-score
    with_symbols: tuple[str, ...] = ()  # other symbols of the same store whose features join each minute's

    def __post_init__(self) -> None:
        for name in ("sma", "ema", "rsi", "macd_fast", "macd_slow", "macd_signal", "bollinger", "atr"):
            _check(getattr(self, name) >= 2, f"features.{name}", "must be at least 2 minutes")
            _check(
                getattr(self, name) <= TALIB_MAX_PERIOD,
                f"features.{name}",
                f"must be at most {TALIB_MAX_PERIOD:,} minutes (TA-Lib's longest period)",
            )
        _check(self.macd_fast < self.macd_slow, "features.macd_fast", "must be shorter than macd_slow")
        _check(self.warmup_minutes >= 0, "features.warmup_minutes", "must not be negative")
        _check(
            self.warmup_minutes <= MAX_HISTORY_MINUTES,
            "features.warmup_minutes",
            f"must be at most {MAX_HISTORY_MINUTES:,} minutes (ten years)",
        )
        _check(self.bollinger_sigma > 0, "features.bollinger_sigma", "must be positive")
        _check(self.pct_clip > 0, "features.pct_clip", "must be positive")
        _check(
            0 <= self.max_gap_minutes <= MAX_HISTORY_MINUTES,
            "features.max_gap_minutes",
            f"must be in 0..{MAX_HISTORY_MINUTES:,} minutes",
        )
        _check(self.feature_set in FEATURE_SETS, "features.feature_set", f"must be one of {', '.join(FEATURE_SETS)}")
        _check(
            2 <= self.volume_window <= TALIB_MAX_PERIOD,
            "features.volume_window",
            f"must be in 2..{TALIB_MAX_PERIOD:,} minutes",
        )
        for symbol in self.with_symbols:
            _check(
                isinstance(symbol, str) and symbol.strip() == symbol and symbol != "" and "." not in symbol,
                "features.with_symbols",
                f"{symbol!r} is not a symbol name as the store holds them (e.g. BTCUSDT)",
            )
        repeated = sorted({s for s in self.with_symbols if self.with_symbols.count(s) > 1})
        _check(not repeated, "features.with_symbols", f"{', '.join(repeated)} is listed twice")


@dataclass(frozen=True)
class TargetConfig:
    """How journal rows become samples: window length, ATR multiples for SL/TP, shortest usable window."""

    max_len: int = MAX_WINDOW_MINUTES
    min_history: int = 1
    k_sl: float = 2.0
    k_tp: float = 3.0

    def __post_init__(self) -> None:
        _check(self.max_len >= 1, "targets.max_len", "must be at least 1 minute")
        _check(
            self.max_len <= MAX_HISTORY_MINUTES,
            "targets.max_len",
            f"must be at most {MAX_HISTORY_MINUTES:,} minutes (ten years)",
        )
        _check(1 <= self.min_history <= self.max_len, "targets.min_history", "must be in 1..max_len")
        _check(self.k_sl > 0, "targets.k_sl", "must be positive")
        _check(self.k_tp > 0, "targets.k_tp", "must be positive")


@dataclass(frozen=True)
class SplitConfig:
    """Time-ordered split by trade count, with a purge of outcome horizons that cross a split boundary."""

    train: float = 0.70
    val: float = 0.15
    test: float = 0.15
    purge_seconds: int = 86_400
    scaler: str = "standard"

    def __post_init__(self) -> None:
        for name in ("train", "val", "test"):
            _check(0 <= getattr(self, name) <= 1, f"split.{name}", "must be a fraction in [0, 1]")
        _check(self.train > 0, "split.train", "must be positive")
        _check(abs(self.train + self.val + self.test - 1) < 1e-6, "split", "train + val + test must be 1")
        _check(self.purge_seconds >= 0, "split.purge_seconds", "must not be negative")
        _check(self.scaler in ("standard", "minmax"), "split.scaler", "must be 'standard' or 'minmax'")


@dataclass(frozen=True)
class LabelConfig:
    """The first-touch labeller: sampling step, outcome horizon, ATR multiples and round-trip costs."""

    every_seconds: int = 3_600
    horizon_seconds: int = 86_400
    k_sl: float = 2.0
    k_tp: float = 3.0
    fee: float = 0.00055
    slippage: float = 0.0001

    def __post_init__(self) -> None:
        _check(self.every_seconds >= 60, "labels.every_seconds", "must be at least one minute")
        _check(self.every_seconds % 60 == 0, "labels.every_seconds", "must be whole minutes")
        _check(self.horizon_seconds >= 60, "labels.horizon_seconds", "must be at least one minute")
        _check(self.k_sl > 0, "labels.k_sl", "must be positive (a multiple of ATR)")
        _check(self.k_tp > 0, "labels.k_tp", "must be positive (a multiple of ATR)")
        _check(0 <= self.fee < 0.1, "labels.fee", "must be a fraction in [0, 0.1)")
        _check(0 <= self.slippage < 0.1, "labels.slippage", "must be a fraction in [0, 0.1)")


@dataclass(frozen=True)
class ModelConfig:
    """`LSTMModel` sizes (the seed's)."""

    input_size: int = 13
    hidden_size: int = 80
    num_layers: int = 1
    output_size: int = 3

    def __post_init__(self) -> None:
        _check(self.input_size >= 1, "model.input_size", "must be positive")
        _check(self.hidden_size >= 1, "model.hidden_size", "must be positive")
        _check(self.num_layers >= 1, "model.num_layers", "must be positive")
        # 4 * H * (I + H + 2) weights per layer: beyond these the allocation, not the model, is what fails
        _check(self.input_size <= 4_096, "model.input_size", "must be at most 4,096 features")
        _check(self.hidden_size <= 8_192, "model.hidden_size", "must be at most 8,192 (2 GB of weights per layer)")
        _check(self.num_layers <= 16, "model.num_layers", "must be at most 16")
        _check(self.output_size == 3, "model.output_size", "must be 3 (Buy, Sell, Invalid)")


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule and loop settings (the seed's values where it has them)."""

    epochs: int = 40
    batch_size: int = 32
    lr: float = 5e-4
    fine_tune_lr: float = 5e-5  # a warm-started fold's learning rate (walkforward --warm-start): a tenth of lr
    weight_decay: float = 1e-5
    warmup_epochs: int = 5
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    early_stop_patience: int = 20
    accumulate_grad_batches: int = 4
    gradient_clip: float = 0.5
    class_weight: float = 1.0
    reg_weight: float = 1.0
    # what picks the best checkpoint, stops early and drives the plateau schedule (DESIGN.md "Training schedule")
    checkpoint_criterion: str = "val_class_loss"
    class_weighting: str = "inverse"  # inverse class frequency in the classification loss, or none
    precision: str = "auto"
    seed: int = 42
    devices: str = "auto"
    strategy: str = "auto"
    chunk_len: int | str = "auto"  # LSTM steps per checkpointed chunk; 0: plain; auto: benchmarks/README.md

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "train.epochs", "must be at least 1")
        _check(
            0 <= self.seed <= MAX_SEED,
            "train.seed",
            f"must be in 0..{MAX_SEED} (numpy and Lightning seed with 32 bits)",
        )
        _check(
            self.devices == "auto" or (self.devices.isdigit() and int(self.devices) > 0),
            "train.devices",
            f"expected 'auto' or a positive number of devices, got {self.devices!r}",
        )
        _check(self.batch_size >= 1, "train.batch_size", "must be at least 1")
        _check(self.batch_size <= 65_536, "train.batch_size", "must be at most 65,536 windows")
        _check(self.epochs <= 100_000, "train.epochs", "must be at most 100,000")
        _check(self.lr > 0, "train.lr", "must be positive")
        _check(self.lr <= 1, "train.lr", "must be at most 1 (AdamW steps by about lr per update)")
        _check(0 < self.fine_tune_lr <= 1, "train.fine_tune_lr", "must be in (0, 1]")
        _check(self.weight_decay >= 0, "train.weight_decay", "must not be negative")
        _check(self.warmup_epochs >= 0, "train.warmup_epochs", "must not be negative")
        _check(0 < self.plateau_factor < 1, "train.plateau_factor", "must be in (0, 1)")
        _check(self.plateau_patience >= 0, "train.plateau_patience", "must not be negative")
        _check(self.early_stop_patience >= 1, "train.early_stop_patience", "must be at least 1")
        _check(self.accumulate_grad_batches >= 1, "train.accumulate_grad_batches", "must be at least 1")
        _check(self.gradient_clip > 0, "train.gradient_clip", "must be positive")
        _check(self.class_weight >= 0 and self.reg_weight >= 0, "train.class_weight", "must not be negative")
        _check(
            self.class_weighting in CLASS_WEIGHTINGS,
            "train.class_weighting",
            f"must be one of {', '.join(CLASS_WEIGHTINGS)}",
        )
        _check(
            self.checkpoint_criterion in CHECKPOINT_CRITERIA,
            "train.checkpoint_criterion",
            f"must be one of {', '.join(CHECKPOINT_CRITERIA)}",
        )
        _check(
            self.precision in ("auto", "32-true", "16-mixed", "bf16-mixed"),
            "train.precision",
            "must be one of auto, 32-true, 16-mixed, bf16-mixed",
        )
        _check(
            self.chunk_len == "auto" or (isinstance(self.chunk_len, int) and self.chunk_len >= 0),
            "train.chunk_len",
            "must be 'auto' or a number of steps (0 turns chunking off)",
        )


@dataclass(frozen=True)
class BacktestConfig:
    """Decision and fill settings shared by backtests, replays and the live loop."""

    every_seconds: int = 900
    min_prob: float = 0.5
    min_ev: float = 0.0  # % of entry: trade only where EV = p TP - (1 - p) SL - costs exceeds it (DESIGN.md)
    levels: str = "model"  # model: the SL/TP heads; atr: k_sl / k_tp x ATR at the decision moment
    fee: float = 0.00055
    slippage: float = 0.0001
    max_hold_seconds: int = 86_400
    position_share: float = 1.0
    risk: float = 0.0
    daily_loss_limit: float = 0.0
    initial_equity: float = 10_000.0
    # Funding per 8-hour period on perpetuals (longs pay when positive; spot symbols pay none), a fraction:
    # 0.01 %, the baseline rate of Bybit's and Binance's USDT perpetuals; stored rates replace it (`ingest funding`)
    funding: float = 0.0001

    def __post_init__(self) -> None:
        _check(self.every_seconds >= 60, "backtest.every_seconds", "must be at least one minute")
        # Decisions fall on minute boundaries (DESIGN.md "Window"): between them there is no candle to enter at,
        # and the live loop would find the minute in progress missing from its window.
        _check(self.every_seconds % 60 == 0, "backtest.every_seconds", "must be whole minutes")
        _check(0 <= self.min_prob <= 1, "backtest.min_prob", "must be a probability")
        _check(-100 < self.min_ev < 100, "backtest.min_ev", "must be in (-100, 100) percent of entry")
        _check(self.levels in LEVELS, "backtest.levels", f"must be one of {', '.join(LEVELS)}")
        _check(0 <= self.fee < 0.1, "backtest.fee", "must be a fraction in [0, 0.1)")
        _check(0 <= self.slippage < 0.1, "backtest.slippage", "must be a fraction in [0, 0.1)")
        _check(self.max_hold_seconds >= 60, "backtest.max_hold_seconds", "must be at least one minute")
        _check(0 < self.position_share <= 1, "backtest.position_share", "must be in (0, 1] (no leverage)")
        _check(0 <= self.risk < 1, "backtest.risk", "must be a fraction in [0, 1)")
        _check(0 <= self.daily_loss_limit < 1, "backtest.daily_loss_limit", "must be a fraction in [0, 1)")
        _check(self.initial_equity > 0, "backtest.initial_equity", "must be positive")
        _check(-0.1 < self.funding < 0.1, "backtest.funding", "must be a fraction per 8-hour period in (-0.1, 0.1)")


@dataclass(frozen=True)
class RuntimeConfig:
    """How work is spread over cores and cached; none of it changes a result."""

    workers: int = 0  # inference processes with one thread each; 0: one per CPU core
    batch_size: int = 64  # windows per inference forward pass
    cache: bool = True  # keep feature matrices on disk (see cache.py)
    cache_dir: str = ""  # "": DB.features beside the candle database

    def __post_init__(self) -> None:
        _check(self.workers >= 0, "runtime.workers", "must not be negative (0: one per CPU core)")
        _check(self.batch_size >= 1, "runtime.batch_size", "must be at least 1")


@dataclass(frozen=True)
class Config:
    """Every stage's settings; `load_config` reads it from TOML with one table per stage."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    backtest: BacktestConfig = field(default_factory=BacktestConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def with_overrides(self, section: str, **values: Any) -> Config:
        """A copy with some keys of one stage replaced; `None` values are left as they are (unset CLI flags)."""
        chosen = {key: value for key, value in values.items() if value is not None}
        if not chosen:
            return self
        stage = getattr(self, section)
        try:
            return replace(self, **{section: _build(type(stage), {**asdict(stage), **chosen}, section)})
        except ConfigError as error:
            # a value out of range names the flag the user typed (`every_seconds` comes from `--every`)
            for key, value in chosen.items():
                prefix = f"{section}.{key}: "
                if str(error).startswith(prefix):
                    flag = "--" + key.removesuffix("_seconds").replace("_", "-")
                    message = str(error).removeprefix(prefix)
                    raise ConfigError(f"{flag}: {message} ({section}.{key} = {value!r})") from None
            raise

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: asdict(getattr(self, f.name)) for f in fields(self)}


def _did_you_mean(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(options))}"


def _finite(value: Any) -> bool:
    """TOML and flags both accept inf and nan: no setting means anything with them."""
    return not isinstance(value, float) or math.isfinite(value)


def _type_ok(value: Any, annotation: Any) -> bool:
    if typing.get_origin(annotation) is tuple:  # tuple[str, ...]: a TOML array (a list) or a tuple
        (item, *_) = typing.get_args(annotation)
        return isinstance(value, list | tuple) and all(_type_ok(v, item) for v in value)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    return isinstance(value, annotation)


def _build(cls: type[_T], values: dict[str, Any], section: str) -> _T:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown key '{section}.{key}'{_did_you_mean(key, names)}")
        if not _type_ok(value, hints[key]):
            expected = (
                "list" if typing.get_origin(hints[key]) is tuple else getattr(hints[key], "__name__", str(hints[key]))
            )
            raise ConfigError(f"{section}.{key}: expected {expected}, got {type(value).__name__} {value!r}")
        if not _finite(value):
            raise ConfigError(f"{section}.{key}: must be a finite number, got {value!r}")
    return cls(**{k: _coerced(v, hints[k]) for k, v in values.items()})


def _coerced(value: Any, annotation: Any) -> Any:
    """An int where a float belongs as that float; a TOML array where a tuple belongs as a tuple (frozen)."""
    if annotation is float:
        return float(value)
    if typing.get_origin(annotation) is tuple:
        return tuple(value)
    return value


def config_from_dict(data: dict[str, Any]) -> Config:
    sections = {f.name: f for f in fields(Config)}
    built: dict[str, Any] = {}
    hints = typing.get_type_hints(Config)
    for name, values in data.items():
        if name not in sections:
            raise ConfigError(f"unknown section '[{name}]'{_did_you_mean(name, list(sections))}")
        if not isinstance(values, dict):
            raise ConfigError(f"'{name}' must be a table ([{name}]), got {type(values).__name__}")
        built[name] = _build(hints[name], values, name)
    return Config(**built)


def load_config(path: Path | str | None) -> Config:
    """Read a TOML configuration; a missing path means all defaults."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read configuration: {error.strerror or error}") from None
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark, as editors on Windows write it, is accepted
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start}); save it as UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    try:
        return config_from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def dump_config(config: Config) -> str:
    """The resolved configuration as TOML (written into every run folder)."""
    lines: list[str] = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)
