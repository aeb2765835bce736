"""A seeded synthetic market of 1-minute ETHUSDT-like candles, for the demo and for tests.

Why it is built this way: the demo must show that the model learns, so the market needs structure that the
13 features (10-26 h trend and volatility indicators) can reveal, and the rest must look like the real thing so
that the pipeline meets realistic inputs. The parts, each compared with Bybit 2025 and Binance 2021 ETHUSDT
1-minute candles:

- **Regimes.** A Markov chain of ranging, up-trending and down-trending spells lasting hours to a couple of
  days. A trend drifts 5-9 % per day and is calm minute to minute; a range is choppy and its price reverts
  (Ornstein-Uhlenbeck, half-life 3 h) to the level it began at. This is what the labels can be learnt from:
  with the first-touch labeller's stops 2 ATR_14h away (~0.15 %), barriers are touched within ~15-20
  minutes, so only a drift that is large against the minute noise moves the odds of Buy against Sell.
  Trend directions lean back towards the starting price, so years of candles stay in a plausible range.
- **Volatility clustering.** Log-volatility is a sum of three autoregressive components (half-lives of an
  hour, half a day and three days), the long-memory pattern GARCH fits on real returns.
- **Fat tails.** Minute shocks are Student-t with 4 degrees of freedom (clipped at 20 sigma).
- **Microstructure.** A little mean-reverting noise (half-life 5 minutes), so that hourly returns vary less
  than 60 minutes of noise would say, as in real candles (variance ratio ~0.85).
- **Intraday cycle.** Volume and volatility follow the UTC hour-of-day profile of real ETHUSDT (quiet around
  04:00, busiest after the US open around 14:00), and are lower on weekends; volume rises with volatility.
- **Candles.** Each open is the previous close; wicks scale with the current volatility (mean wick ~0.4 of
  the mean body, as measured); prices sit on a 0.01 tick; timestamps form a contiguous 1-minute grid.

Measured on 60-day markets (seeds 0-7): hourly volatility ~0.6 %, daily ~5 %, median ATR_14h ~0.07 % of
price. Trends make daily moves larger than a random walk with the same minute noise would (variance ratio
~2.9 at one day, real ETHUSDT ~1): that is the structure the demo's model is meant to find.

Everything is vectorised numpy (and pandas' exponential filter for the autoregressions): five years of
minutes take about two seconds. Each draw has its own child of the seed, so a shorter market is a prefix of
a longer one with the same seed.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import pandas as pd

from lstm_trading.core.errors import ConfigError
from lstm_trading.core.timeutil import MINUTE

MINUTES_PER_DAY = 1440

# Regimes: 0 ranging, 1 up-trend, 2 down-trend.
RANGING, UP, DOWN = 0, 1, 2
RANGE_MEAN_HOURS = 12.0
TREND_MEAN_HOURS = 24.0
SPELL_MIN_HOURS = 3.0
SPELL_MAX_HOURS = 60.0
TREND_REVERSAL_PROBABILITY = 0.35  # a trend ends in the opposite trend, else in a range
TREND_DRIFT_PER_DAY = (0.05, 0.09)  # log drift of a trend, drawn uniformly per spell
ANCHOR_PULL = 3.0  # how strongly the summed trend drift leans the next trend's direction back

# Volatility: minute log-return scale, and log-volatility components (weight, half-life in minutes).
SIGMA_MINUTE = 0.001
VOL_COMPONENTS = ((0.35, 60.0), (0.30, 720.0), (0.25, 4320.0))
RANGE_VOL_FACTOR = 1.3
TREND_VOL_FACTOR = 0.35  # trends grind: much calmer minute to minute than choppy ranges
STUDENT_DF = 4.0
MAX_SHOCK = 20.0  # in minute sigmas: a flash crash, not a wipe-out
RANGE_HALF_LIFE = 180.0  # minutes: within a range, price reverts to the level where the range began
TRANSIENT = (1.0, 5.0)  # (standard deviation in minute sigmas, half-life in minutes) of mean-reverting noise
WICK_SCALE = 0.35  # mean wick beyond the body, in units of the minute's volatility

# Volume: ETH per minute, its dependence on volatility and surprise, and its own noise.
BASE_VOLUME = 600.0
VOLUME_VOL_ELASTICITY = 1.0
VOLUME_SHOCK_WEIGHT = 0.3
VOLUME_NOISE = (0.35, 10.0)  # (standard deviation, half-life in minutes) of log-volume noise
TREND_VOLUME_FACTOR = 1.15
WEEKEND_VOLUME_FACTOR = 0.7

# Mean volume by UTC hour relative to the day's mean, from Bybit 2025 and Binance 2021 ETHUSDT candles
# (averaged and smoothed); volatility follows its square root, as the real abs-returns do.
HOURLY_VOLUME_PROFILE = np.array(
    [1.20, 0.88, 0.76, 0.72, 0.62, 0.66, 0.70, 0.82, 0.90, 0.90, 0.86, 0.92,
     1.06, 1.36, 1.62, 1.46, 1.32, 1.12, 0.98, 0.98, 1.16, 0.96, 1.06, 0.92]
)  # fmt: skip

TICK = 0.01


def synthetic_candles(
    days: float = 28.0, *, seed: int = 0, start: int = 1_704_067_200, start_price: float = 3000.0
) -> pd.DataFrame:
    """A candle frame of `days` days of 1-minute candles starting at `start` (UTC seconds, default 2024-01-01).

    Deterministic per `seed`; a shorter market is a prefix of a longer one with the same seed and start.

    Parameters
    ----------
    days : float
        Length of the market; rounded down to whole minutes.
    seed : int
        Seed of every random draw.
    start : int
        Open time of the first candle, UTC seconds on a minute boundary.
    start_price : float
        Open of the first candle.
    """
    if not (isinstance(days, Real) and math.isfinite(days) and days > 0):
        raise ConfigError(f"synthetic market: days must be a positive number, got {days!r}")
    if not isinstance(start, Integral) or start % MINUTE != 0:
        raise ConfigError(f"synthetic market: start must be UTC seconds on a minute boundary, got {start!r}")
    if not (isinstance(start_price, Real) and math.isfinite(start_price) and start_price > 0):
        raise ConfigError(f"synthetic market: start_price must be a positive number, got {start_price!r}")
    n = int(days * MINUTES_PER_DAY)
    if n < 1:
        raise ConfigError(f"synthetic market: days={days!r} is shorter than one minute")

    # One generator per draw, each drawing exactly n values: a shorter market is a prefix of a longer one.
    children = np.random.SeedSequence(seed).spawn(9)
    regime_rng, shock_rng, transient_rng, wick_up_rng, wick_down_rng, volume_rng, *vol_rngs = (
        np.random.default_rng(child) for child in children
    )
    timestamps = int(start) + MINUTE * np.arange(n, dtype=np.int64)
    regime, drift = _regimes(n, regime_rng)
    trending = regime != RANGING
    season = _season(timestamps)  # relative activity by hour of day and weekday, mean ~1

    log_vol = sum(
        weight * _unit_ar1(n, half_life, rng) for (weight, half_life), rng in zip(VOL_COMPONENTS, vol_rngs, strict=True)
    ) - 0.5 * sum(weight**2 for weight, _ in VOL_COMPONENTS)  # so that exp(log_vol) has mean 1
    sigma = (
        SIGMA_MINUTE * np.exp(log_vol) * np.sqrt(season) * np.where(trending, TREND_VOL_FACTOR, RANGE_VOL_FACTOR)
    )  # (n,) standard deviation of each minute's log-return

    shocks = shock_rng.standard_t(STUDENT_DF, n) / math.sqrt(STUDENT_DF / (STUDENT_DF - 2.0))
    shocks = np.clip(shocks, -MAX_SHOCK, MAX_SHOCK)
    steps = sigma * shocks
    steps = np.where(trending, steps, _range_steps(steps, regime))
    log_close = math.log(start_price) + np.cumsum(drift + steps)
    log_close += TRANSIENT[0] * sigma * _unit_ar1(n, TRANSIENT[1], transient_rng)
    close = np.exp(log_close)
    open_ = np.empty(n)
    open_[0] = start_price
    open_[1:] = close[:-1]  # each candle opens at the previous close
    high = np.maximum(open_, close) * np.exp(sigma * WICK_SCALE * wick_up_rng.exponential(1.0, n))
    low = np.minimum(open_, close) * np.exp(-sigma * WICK_SCALE * wick_down_rng.exponential(1.0, n))

    log_volume = (
        math.log(BASE_VOLUME)
        + np.log(season)
        + VOLUME_VOL_ELASTICITY * log_vol
        + VOLUME_SHOCK_WEIGHT * np.log1p(np.abs(shocks))  # a big move draws volume, within reason
        + VOLUME_NOISE[0] * _unit_ar1(n, VOLUME_NOISE[1], volume_rng)
        + np.where(trending, math.log(TREND_VOLUME_FACTOR), 0.0)
    )
    volume = np.maximum(np.round(np.exp(log_volume), 3), 0.001)

    # Rounding to the tick is monotonic, so low <= open, close <= high survives it.
    open_, high, low, close = (np.maximum(np.round(p / TICK) * TICK, TICK) for p in (open_, high, low, close))
    return pd.DataFrame(
        {"timestamp": timestamps, "open": open_, "high": high, "low": low, "close": close, "volume": volume}
    )


def _regimes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-minute regime (0 ranging, 1 up, 2 down) and log drift, from a Markov chain of spells.

    Spells are drawn in order until they cover `n` minutes (a few per day, so a Python loop is cheap), and
    each spell draws the same number of values, so the chain for fewer minutes is a prefix of a longer one.
    """
    states: list[int] = []
    lengths: list[int] = []
    drifts: list[float] = []
    state = RANGING
    level = 0.0  # summed trend drift so far (log price), which the next trend's direction leans against
    covered = 0
    while covered < n:
        u_direction, u_reversal, u_length, u_drift = rng.random(4)
        if state == RANGING:
            p_up = 1.0 / (1.0 + math.exp(ANCHOR_PULL * level))
            state = UP if u_direction < p_up else DOWN
        elif u_reversal < TREND_REVERSAL_PROBABILITY:
            state = DOWN if state == UP else UP
        else:
            state = RANGING
        mean_hours = RANGE_MEAN_HOURS if state == RANGING else TREND_MEAN_HOURS
        # Gamma(2) spell lengths: rarely very short, with a tail out to a couple of days.
        hours = -0.5 * mean_hours * math.log(max(u_length * rng.random(), 1e-300))
        length = round(60 * min(max(hours, SPELL_MIN_HOURS), SPELL_MAX_HOURS))
        low, high = TREND_DRIFT_PER_DAY
        per_day = low + (high - low) * u_drift
        drift = {RANGING: 0.0, UP: per_day, DOWN: -per_day}[state] / MINUTES_PER_DAY
        states.append(state)
        lengths.append(length)
        drifts.append(drift)
        level += drift * length
        covered += length
    regime = np.repeat(np.array(states, dtype=np.int8), lengths)[:n]
    drift_per_minute = np.repeat(np.array(drifts), lengths)[:n]
    return regime, drift_per_minute


def _range_steps(steps: np.ndarray, regime: np.ndarray) -> np.ndarray:
    """Log-returns of a mean-reverting (Ornstein-Uhlenbeck) path driven by the same shocks, restarted at 0 at
    the start of every spell, so that inside a range the price oscillates around the level it began at.

    With z_t = phi * z_{t-1} + x_t over the whole series (`ou`), the path started at 0 at minute s is
    z_t - phi^(t-s+1) * z_{s-1}; its steps are the OU steps plus the decay of that start value.
    """
    phi = 0.5 ** (1.0 / RANGE_HALF_LIFE)
    scaled = steps.copy()
    scaled[0] *= 1.0 - phi  # the filter starts at its first input; make that ou_0 = x_0
    ou = pd.Series(scaled).ewm(alpha=1.0 - phi, adjust=False).mean().to_numpy() / (1.0 - phi)
    ou_steps = np.diff(ou, prepend=0.0)
    n = len(steps)
    starts = np.flatnonzero(np.diff(regime, prepend=-1) != 0)  # first minute of each spell
    spell_start = starts[np.searchsorted(starts, np.arange(n), side="right") - 1]
    age = np.arange(n) - spell_start  # minutes since the spell began
    start_value = ou[spell_start] - ou_steps[spell_start]  # ou_{s-1}, where the spell's path is 0
    return ou_steps + (1.0 - phi) * phi**age * start_value


def _unit_ar1(n: int, half_life: float, rng: np.random.Generator) -> np.ndarray:
    """A stationary AR(1) series with unit variance and the given half-life in minutes.

    pandas' exponential filter computes y_t = phi * y_{t-1} + (1 - phi) * x_t in C, which is AR(1) up to scale.
    """
    phi = 0.5 ** (1.0 / half_life)
    noise = rng.standard_normal(n)
    stationary = math.sqrt((1.0 - phi) / (1.0 + phi))  # standard deviation of the filtered series
    noise[0] *= stationary  # start in the stationary distribution instead of far out
    filtered = pd.Series(noise).ewm(alpha=1.0 - phi, adjust=False).mean().to_numpy()
    return filtered / stationary


def _season(timestamps: np.ndarray) -> np.ndarray:
    """Relative activity per minute: the hour-of-day profile (interpolated across the hour) times weekdays."""
    minute_of_day = (timestamps // MINUTE) % MINUTES_PER_DAY
    hours = minute_of_day / 60.0
    profile = np.append(HOURLY_VOLUME_PROFILE, HOURLY_VOLUME_PROFILE[0])
    # Hour h's mean sits at h:30; interpolate between those centres (wrapping midnight).
    position = (hours - 0.5) % 24.0
    lower = np.floor(position).astype(np.int64)
    fraction = position - lower
    daily = profile[lower] * (1.0 - fraction) + profile[lower + 1] * fraction
    weekday = ((timestamps // 86_400) + 3) % 7  # 1970-01-01 was a Thursday; 5, 6 = Saturday, Sunday
    weekend = np.where(weekday >= 5, WEEKEND_VOLUME_FACTOR, 1.0)
    return daily * weekend
