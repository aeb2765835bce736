"""Is a backtest's result more than luck? Pure functions on arrays (DESIGN.md "Statistics").

- **Expectancy**: the mean net return per trade in % of entry notional (after fees and slippage), which does not
  depend on sizing. Trade returns are serially dependent (volatility regimes, trends), so its 95 % interval comes
  from a stationary bootstrap (Politis & Romano 1994) over the time-ordered returns, with the block length of
  Politis & White (2004, corrected by Patton, Politis & White 2009): `arch.bootstrap`. An i.i.d. bootstrap
  would be too narrow (`tests/test_significance.py` measures both).
- **Random-entry null**: R runs, each with exactly the strategy's number of Buy and Sell trades, entered at
  decision moments drawn uniformly among those at which the run is flat (and whose take profit exceeds the
  round-trip costs), with the levels and maximum holding time the strategy's trades have. Holding times follow
  from the exits and are reported, not forced. A run is a trader without skill that, whenever flat, enters at
  each such moment with the strategy's own probability, conditioned on the strategy's counts: drawn exactly,
  however crowded the period, over exits computed once per (moment, side) (`draw_random_entries`).
  `p = (1 + #{runs with mean return per trade >= the strategy's}) / (1 + R)`, one-sided: the chance that
  timing and side chosen at random do as well.
- **Sharpe ratios** on daily equity returns (UTC days, flat days included), not annualised; the probabilistic
  Sharpe ratio `PSR(SR*) = Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2))` with raw kurtosis
  `g4` (Bailey & López de Prado 2012), and the deflated Sharpe ratio, the PSR against the expected maximum
  Sharpe ratio of N trials whose Sharpe ratios have variance V (Bailey & López de Prado 2014).
- **Verdict**: "edge" when the interval lies above 0 and p < 0.05; "timing without profit" when p < 0.05
  only; "too few trades to judge" under 30 trades; otherwise "no evidence of an edge".
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy import stats as scipy_stats

LEVEL = 0.95  # of the expectancy's interval
BOOTSTRAP_REPS = 2_000
ALPHA = 0.05  # the p-value below which timing counts as better than random
MIN_TRADES = 30  # fewer trades give a verdict of "too few trades to judge"
MIN_TRADES_FOR_BLOCKS = 10  # the block-length estimator needs autocorrelations at several lags
EULER_GAMMA = 0.5772156649015329
TIE_TOLERANCE = 1e-9  # in % per trade: a run that repeats the strategy's trades counts as doing as well

EDGE = "edge"
TIMING_WITHOUT_PROFIT = "timing without profit"
TOO_FEW_TRADES = "too few trades to judge"
NO_EVIDENCE = "no evidence of an edge"

BUY, SELL = 0, 1  # columns of the (moment, side) exit arrays
MIN_RATE, MAX_RATE = 1e-6, 0.999  # entry probability per flat moment: 0 and 1 have no logarithm


# --- expectancy and its interval ---


@dataclass(frozen=True)
class Expectancy:
    """Mean net return per trade (% of entry notional) and its bootstrap interval (NaN where undefined)."""

    mean: float
    low: float
    high: float
    block_length: float  # mean block of the stationary bootstrap, in trades (1: no dependence found)
    trades: int


def block_length(returns: np.ndarray) -> float:
    """The Politis-White block length for a stationary bootstrap of the mean, at least 1 trade.

    Under `MIN_TRADES_FOR_BLOCKS` returns, or for constant ones, there is nothing to estimate it from: 1 (the
    i.i.d. bootstrap).
    """
    returns = np.asarray(returns, dtype=np.float64)
    if len(returns) < MIN_TRADES_FOR_BLOCKS or np.ptp(returns) == 0:
        return 1.0
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # near-constant series: 0 / 0 autocorrelations
        from arch.bootstrap import optimal_block_length  # here: arch costs 2 s to import, fold processes need none

        value = float(optimal_block_length(returns)["stationary"].iloc[0])
    return value if math.isfinite(value) and value >= 1 else 1.0


def bootstrap_means(returns: np.ndarray, block: float, *, seed: int, reps: int = BOOTSTRAP_REPS) -> np.ndarray:
    """`reps` means of stationary-bootstrap resamples of the time-ordered `returns` (mean block `block`)."""
    # The stationary bootstrap's blocks have geometric lengths with mean `block`, a real number; arch types
    # the argument as int (shared with the fixed-block bootstraps) but takes its reciprocal as a probability.
    from arch.bootstrap import StationaryBootstrap  # here: arch costs 2 s to import, fold processes need none

    bootstrap = StationaryBootstrap(block, np.asarray(returns, dtype=np.float64), seed=seed)  # type: ignore[arg-type]
    return np.asarray(bootstrap.apply(np.mean, reps=reps), dtype=np.float64)[:, 0]


def expectancy(returns: np.ndarray, *, seed: int = 0, level: float = LEVEL, reps: int = BOOTSTRAP_REPS) -> Expectancy:
    """The mean of the time-ordered net trade returns with a percentile interval from a stationary bootstrap."""
    returns = np.asarray(returns, dtype=np.float64)
    trades = len(returns)
    if trades == 0:
        return Expectancy(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(returns.mean())
    if trades < 2:
        return Expectancy(mean, math.nan, math.nan, math.nan, trades)
    block = block_length(returns)
    means = bootstrap_means(returns, block, seed=seed, reps=reps)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Expectancy(mean, float(low), float(high), block, trades)


# --- the random-entry null ---


@dataclass(frozen=True)
class RandomEntries:
    """Random-entry runs. Run r's trades are rows `picks[r]` of the candidate arrays (in time order) on sides
    `sides[r]` (`BUY` or `SELL`, the columns of the exit arrays)."""

    picks: list[np.ndarray]
    sides: list[np.ndarray]
    mean_return: np.ndarray  # (R,) mean net return per trade in %; NaN for a run without trades
    trades: np.ndarray  # (R,) trades made: the strategy's count unless they do not fit (`short`)
    minutes_held: np.ndarray  # (R,) mean holding time in minutes
    wanted: int  # the strategy's trade count
    rate: float  # the entry probability per flat candidate moment the runs were drawn with

    @property
    def runs(self) -> int:
        return len(self.picks)

    @property
    def short(self) -> int:
        """Runs that could not place all their trades: no placement of them all fits in the period."""
        return int(np.count_nonzero(self.trades < self.wanted))


class _Weights(NamedTuple):
    """What a row of the weighted counts needs (see `_sample_runs`)."""

    successor: np.ndarray  # (M, 2) the first candidate row flat again after a Buy / a Sell entered at each row
    log_entry: np.ndarray  # (2,) log(q * share of the side)
    decay: np.ndarray  # (M + 1,) i log(1 - q)


def _entering(previous: np.ndarray, weights: _Weights, rows: np.ndarray | slice) -> np.ndarray:
    """log weight of entering at each of `rows` on each side, k trades left, in row-k units: (len(rows), 2)."""
    following = weights.successor[rows]
    return previous[following] - weights.decay[following] + weights.decay[:-1][rows, None] + weights.log_entry[None, :]


def _next_row(previous: np.ndarray, weights: _Weights) -> np.ndarray:
    """Row k from row k - 1, both as `log A_k[i] + i log(1 - q)`: a reverse cumulative log-sum of entering."""
    entering = np.logaddexp.reduce(_entering(previous, weights, slice(None)), axis=1)
    return np.concatenate([np.logaddexp.accumulate(entering[::-1])[::-1], [-np.inf]])


def _sample_runs(
    weights: _Weights, trades: int, uniforms: np.ndarray, rows: dict[int, np.ndarray], every: int
) -> tuple[np.ndarray, np.ndarray]:
    """(runs, trades) picks and sides, one run per row of `uniforms` (runs, trades, 2); `rows` holds the
    checkpoints (every `every`-th row), the others are recomputed."""
    runs = uniforms.shape[0]
    picks = np.zeros((runs, trades), dtype=np.int64)
    sides = np.zeros((runs, trades), dtype=np.int8)
    position = np.zeros(runs, dtype=np.int64)
    for block in reversed(range(0, trades, every)):  # trades left, k, in blocks from the top
        held = {block: rows[block]}
        for k in range(block + 1, min(block + every, trades) + 1):
            held[k] = rows[k] if k in rows else _next_row(held[k - 1], weights)
        for k in range(min(block + every, trades), block, -1):
            j, counts = trades - k, held[k]  # counts are non-increasing in i
            # the entry: the first row i where the weight from i + 1 on falls below (1 - u) of that from p on
            threshold = counts[position] + np.log1p(-uniforms[:, j, 0])
            entry = np.searchsorted(-counts, -threshold, side="right") - 1
            entering = _entering(held[k - 1], weights, entry)  # (runs, 2)
            buy_share = np.exp(entering[:, BUY] - np.logaddexp(entering[:, BUY], entering[:, SELL]))
            side = np.where(uniforms[:, j, 1] < buy_share, BUY, SELL)
            picks[:, j], sides[:, j] = entry, side
            position = weights.successor[entry, side]
    return picks, sides


def entry_rate(starts: np.ndarray, entries: np.ndarray, exits: np.ndarray) -> float:
    """The share of candidate moments at which a strategy was flat that it entered at: its trades (entered at
    `entries`, flat again at `exits`) over the candidates outside its positions, within (0, 1)."""
    starts = np.asarray(starts, dtype=np.int64)
    entries, exits = np.asarray(entries, dtype=np.int64), np.asarray(exits, dtype=np.int64)
    if not len(entries) or not len(starts):
        return MIN_RATE
    inside = np.searchsorted(entries, starts, side="right") - 1  # the last trade entered at or before each
    holding = (inside >= 0) & (starts > entries[np.maximum(inside, 0)]) & (starts < exits[np.maximum(inside, 0)])
    flat = int(np.count_nonzero(~holding))
    return min(max(len(entries) / max(flat, 1), MIN_RATE), MAX_RATE)


def draw_random_entries(
    starts: np.ndarray,
    ends: np.ndarray,
    returns: np.ndarray,
    *,
    buys: int,
    sells: int,
    runs: int,
    rate: float,
    seed: int = 0,
    max_bytes: int = 128 * 2**20,
) -> RandomEntries:
    """`runs` random-entry runs of exactly `buys` Buy and `sells` Sell trades over precomputed exits.

    A run is a trader without skill: whenever flat, it enters at each candidate moment with the same
    probability `rate` (the strategy's own, `entry_rate`) on a side drawn at random, conditioned on making
    exactly the strategy's Buy and Sell trades, however crowded the period. So each entry is uniform among the
    moments at which the run is flat, and holding times follow from the exits. (Conditioning a rate near 0
    instead would favour short trades, of which more fit into the period.)

    The draw is exact: `A_k[i]`, the total weight `q^k (1 - q)^(flat candidates not entered)` of the ways to
    place k trades from candidate row i on (a trade at i on side c leaves the run flat from the first row
    starting at or after its exit), gives trade j (k left, flat from row p) its entry i >= p and side c with
    probability `(1 - q)^(i - p) q s_c A_{k-1}[next(i, c)] / A_k[p]`; sides are drawn with shares `s_c` equal
    to the strategy's and runs without exactly its Buy count are drawn again. Weights are logarithms (they
    reach C(M, K)), and rows are recomputed from checkpoints where all of them would take over `max_bytes`.

    Parameters
    ----------
    starts : (M,) int64
        The candidate entry moments (UTC seconds), strictly increasing: decision moments with a candle to enter
        at and a take profit above the round-trip costs.
    ends : (M, 2) int64
        When a Buy (column 0) and a Sell (column 1) entered at each moment is flat again (its exit candle's close).
    returns : (M, 2) float
        Their net returns in % of entry notional.
    seed : int
        Seeds one generator whose batches of draws do not depend on `runs`: the first runs are the same
        whatever `runs` is.

    Where not all the trades fit (the strategy traded at moments that are not candidates), runs make as many
    as fit, with the strategy's share of Buys (`short`); where runs with the Buy count are too rare to find,
    fewer than `runs` come back.
    """
    starts = np.asarray(starts, dtype=np.int64)
    candidates = len(starts)
    ends = np.asarray(ends, dtype=np.int64).reshape(candidates, 2)
    returns = np.asarray(returns, dtype=np.float64).reshape(candidates, 2)
    if candidates > 1 and np.any(np.diff(starts) <= 0):
        raise ValueError("candidate moments must be strictly increasing")
    if np.any(ends <= starts[:, None]):
        raise ValueError("every exit must come after its entry")
    if not 0 < rate < 1:
        raise ValueError(f"the entry rate must lie in (0, 1), got {rate}")
    rate = min(max(rate, MIN_RATE), MAX_RATE)
    wanted = buys + sells
    picks_found: list[np.ndarray] = []
    sides_found: list[np.ndarray] = []
    if wanted and candidates:
        with np.errstate(divide="ignore"):  # a side the strategy never took: log 0
            shares = np.log(np.array([buys, sells], dtype=np.float64) / wanted)
        weights = _Weights(
            successor=np.searchsorted(starts, ends.ravel(), side="left").reshape(candidates, 2),
            log_entry=math.log(rate) + shares,
            decay=np.arange(candidates + 1) * math.log1p(-rate),
        )
        every = wanted if (wanted + 1) * (candidates + 1) * 8 <= max_bytes else max(1, math.isqrt(wanted))
        row = np.full(candidates + 1, candidates * math.log1p(-rate))  # no trade left: every candidate missed
        rows, fits = {0: row}, 0
        for k in range(1, wanted + 1):
            row = _next_row(row, weights)
            if row[0] == -np.inf:
                break
            fits = k
            if k % every == 0 or every == wanted:
                rows[k] = row
        target = buys if fits == wanted else round(fits * buys / wanted)
        rng = np.random.default_rng(seed)
        batch = max(64, min(4096, 2**22 // max(fits, 1)))
        budget = runs * (20 + 3 * math.isqrt(fits))  # runs drawn at most: about sqrt(2 pi K s (1 - s)) per kept one
        drawn = 0
        while fits and len(picks_found) < runs and drawn < budget:
            picks, sides = _sample_runs(weights, fits, rng.random((batch, fits, 2)), rows, every)
            drawn += batch
            kept = np.flatnonzero(np.count_nonzero(sides == BUY, axis=1) == target)[: runs - len(picks_found)]
            picks_found.extend(picks[kept])
            sides_found.extend(sides[kept].astype(np.int64))
    else:
        picks_found = [np.zeros(0, dtype=np.int64)] * runs
        sides_found = [np.zeros(0, dtype=np.int64)] * runs
    found = len(picks_found)
    counts = np.array([len(p) for p in picks_found], dtype=np.int64)
    means, held = np.full(found, math.nan), np.full(found, math.nan)
    for run, (picks, sides) in enumerate(zip(picks_found, sides_found, strict=True)):
        if len(picks):
            means[run] = float(returns[picks, sides].mean())
            held[run] = float((ends[picks, sides] - starts[picks]).mean() / 60)
    return RandomEntries(picks_found, sides_found, means, counts, held, wanted, rate)


def random_entry_p_value(observed: float, null_means: np.ndarray) -> float:
    """`(1 + #{runs with mean return per trade >= observed}) / (1 + R)` over the runs that made trades; NaN
    where there is no observed mean or no such run."""
    null_means = np.asarray(null_means, dtype=np.float64)
    null_means = null_means[np.isfinite(null_means)]
    if not math.isfinite(observed) or not len(null_means):
        return math.nan
    as_good = int(np.count_nonzero(null_means >= observed - TIE_TOLERANCE))
    return (1 + as_good) / (1 + len(null_means))


# --- Sharpe, PSR, DSR ---


def sharpe_ratio(returns: np.ndarray) -> float:
    """Mean over standard deviation (ddof 1) of the returns as they are (daily: not annualised); NaN if undefined."""
    returns = np.asarray(returns, dtype=np.float64)
    if len(returns) < 2:
        return math.nan
    std = float(returns.std(ddof=1))
    return float(returns.mean()) / std if std > 0 else math.nan


def moments(returns: np.ndarray) -> tuple[float, float]:
    """Skewness and raw (non-excess: 3 for a normal) kurtosis, as PSR takes them; NaN if undefined."""
    returns = np.asarray(returns, dtype=np.float64)
    if len(returns) < 2 or np.ptp(returns) == 0:
        return math.nan, math.nan
    skewness = float(scipy_stats.skew(returns, bias=True))
    kurtosis = float(scipy_stats.kurtosis(returns, fisher=False, bias=True))
    return skewness, kurtosis


def probabilistic_sharpe(sharpe: float, benchmark: float, observations: int, skewness: float, kurtosis: float) -> float:
    """`PSR(SR*) = Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2))`, with raw kurtosis `g4`:
    the probability that the true Sharpe ratio exceeds `benchmark`, given `observations` returns."""
    values = (sharpe, benchmark, skewness, kurtosis)
    if observations < 2 or not all(math.isfinite(v) for v in values):
        return math.nan
    spread = 1 - skewness * sharpe + (kurtosis - 1) / 4 * sharpe**2
    if spread <= 0:
        return math.nan
    return float(scipy_stats.norm.cdf((sharpe - benchmark) * math.sqrt(observations - 1) / math.sqrt(spread)))


def expected_maximum_sharpe(trials: int, variance: float) -> float:
    """The expected maximum of `trials` Sharpe ratios with mean 0 and variance `variance` (the false strategy
    theorem): `sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e)))`; 0 for one trial."""
    if trials <= 1:
        return 0.0
    if not math.isfinite(variance) or variance < 0:
        return math.nan
    norm = scipy_stats.norm
    tail = (1 - EULER_GAMMA) * norm.ppf(1 - 1 / trials) + EULER_GAMMA * norm.ppf(1 - 1 / (trials * math.e))
    return float(math.sqrt(variance) * tail)


def deflated_sharpe(
    sharpe: float, trials: int, variance: float, observations: int, skewness: float, kurtosis: float
) -> float:
    """The PSR against the expected maximum Sharpe ratio of `trials` trials (variance `variance`)."""
    return probabilistic_sharpe(sharpe, expected_maximum_sharpe(trials, variance), observations, skewness, kurtosis)


# --- the verdict and the stats.json block ---


def verdict(trades: int, low: float, p_value: float) -> str:
    """DESIGN.md "Statistics": too few trades first, then the p-value, then the interval."""
    if trades < MIN_TRADES:
        return TOO_FEW_TRADES
    if math.isfinite(p_value) and p_value < ALPHA:
        return EDGE if math.isfinite(low) and low > 0 else TIMING_WITHOUT_PROFIT
    return NO_EVIDENCE


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def significance(
    trade_returns: np.ndarray,
    daily: np.ndarray,
    *,
    null: RandomEntries | None = None,
    trials: int = 1,
    sharpe_variance: float = math.nan,
    seed: int = 0,
) -> dict[str, Any]:
    """The significance block of stats.json for one strategy: expectancy and interval, p against `null` (its
    random-entry runs, or None), daily Sharpe with PSR (against 0) and DSR (`trials`, `sharpe_variance`), and
    the verdict."""
    found = expectancy(trade_returns, seed=seed)
    p = random_entry_p_value(found.mean, null.mean_return) if null is not None else math.nan
    sharpe = sharpe_ratio(daily)
    skewness, kurtosis = moments(daily)
    days = len(daily)
    benchmark = expected_maximum_sharpe(trials, sharpe_variance)
    return {
        "trades": found.trades,
        "expectancy_pct": _finite(found.mean),
        "interval_pct": [found.low, found.high] if math.isfinite(found.low) else None,
        "interval_level": LEVEL,
        "block_length": _finite(found.block_length),
        "p_random_entries": _finite(p),
        "random_runs": None if null is None else null.runs,
        "sharpe_daily": _finite(sharpe),
        "days": days,
        "skewness": _finite(skewness),
        "kurtosis": _finite(kurtosis),
        "psr": _finite(probabilistic_sharpe(sharpe, 0.0, days, skewness, kurtosis)),
        "trials": trials,
        "sharpe_variance": _finite(sharpe_variance),
        "expected_max_sharpe": _finite(benchmark),
        "dsr": _finite(probabilistic_sharpe(sharpe, benchmark, days, skewness, kurtosis)),
        "verdict": verdict(found.trades, found.low, p),
    }


def null_summary(null: RandomEntries, candidates: int) -> dict[str, Any]:
    """What the random-entry runs did: trades per run, mean return per trade (mean and central 95 %), holding
    time (a result of the exits, not forced)."""
    made = null.mean_return[np.isfinite(null.mean_return)]
    held = null.minutes_held[np.isfinite(null.minutes_held)]
    return {
        "runs": null.runs,
        "candidates": candidates,
        "trades_wanted": null.wanted,
        "entry_rate": null.rate,
        "trades_per_run": {
            "mean": float(null.trades.mean()) if null.runs else None,
            "min": int(null.trades.min()) if null.runs else None,
            "max": int(null.trades.max()) if null.runs else None,
        },
        "short_runs": null.short,
        "expectancy_pct": {
            "mean": float(made.mean()) if len(made) else None,
            "p2_5": float(np.quantile(made, 0.025)) if len(made) else None,
            "p97_5": float(np.quantile(made, 0.975)) if len(made) else None,
        },
        "average_minutes_held": float(held.mean()) if len(held) else None,
    }
