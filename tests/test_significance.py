"""Significance: the random-entry null has size and power, the bootstrap interval covers, the DSR matches the
published example, and the verdict follows DESIGN.md "Statistics"."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from arch.bootstrap import IIDBootstrap
from scipy import stats as scipy_stats
from scipy.signal import lfilter

from lstm_trading.backtest.execution import LONG, SHORT, CandleArrays
from lstm_trading.backtest.significance import (
    EDGE,
    NO_EVIDENCE,
    TIMING_WITHOUT_PROFIT,
    TOO_FEW_TRADES,
    block_length,
    deflated_sharpe,
    draw_random_entries,
    entry_rate,
    expectancy,
    expected_maximum_sharpe,
    moments,
    probabilistic_sharpe,
    random_entry_p_value,
    significance,
    verdict,
)
from lstm_trading.backtest.simulation import decision_moments, moment_exits, random_entries, return_pct, simulate
from lstm_trading.backtest.statistics import daily_returns
from lstm_trading.core.config import BacktestConfig

START = 1_704_067_200  # 2024-01-01 00:00 UTC
CONFIG = BacktestConfig(max_hold_seconds=2 * 3600)


def random_walk(minutes: int, seed: int, volatility: float = 5e-4) -> CandleArrays:
    """1-minute candles of a driftless random walk: no entry rule can time it."""
    rng = np.random.default_rng(seed)
    close = 2000 * np.exp(np.cumsum(rng.normal(0, volatility, minutes)))
    open_ = np.r_[2000.0, close[:-1]]
    wick = np.abs(rng.normal(0, volatility / 2, (2, minutes)))
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    return CandleArrays(START + 60 * np.arange(minutes, dtype=np.int64), open_, high, low, close)


def levels(at: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """SL and TP distances in %, all take profits above the default round-trip costs (0.13 %)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.3, 0.6, len(at)), rng.uniform(0.3, 0.9, len(at))


def p_value_of(market: CandleArrays, at: np.ndarray, direction: np.ndarray, runs: int, seed: int) -> float:
    sl, tp = levels(at, seed)
    model = simulate(market, at, direction, sl, tp, CONFIG)
    exits = moment_exits(market, at, sl, tp, CONFIG)
    null = random_entries(exits, model.fills, runs=runs, seed=seed).draws
    assert null.short == 0 and set(null.trades.tolist()) == {len(model.fills)}
    return random_entry_p_value(float(np.mean([return_pct(f) for f in model.fills])), null.mean_return)


# --- the random-entry null ---


def test_hindsight_trades_get_a_small_p_value() -> None:
    """Power: a trader who knows which side reaches its take profit first is told apart from random entries."""
    market = random_walk(2 * 1440, seed=1)
    at = decision_moments(int(market.timestamp[0]), int(market.timestamp[-1]) + 60, 900)
    sl, tp = levels(at, seed=1)
    exits = moment_exits(market, at, sl, tp, CONFIG)
    reasons = np.array([[fill.reason for fill in pair] for pair in exits.fills])
    direction = np.where(reasons[:, 0] == "take_profit", LONG, np.where(reasons[:, 1] == "take_profit", SHORT, 0))
    hindsight = simulate(market, at, direction, sl, tp, CONFIG)
    assert len(hindsight.fills) >= 30 and {f.reason for f in hindsight.fills} == {"take_profit"}
    null = random_entries(exits, hindsight.fills, runs=199, seed=0).draws
    returns = [return_pct(f) for f in hindsight.fills]
    p = random_entry_p_value(float(np.mean(returns)), null.mean_return)
    assert p == pytest.approx(1 / 200) and p < 0.01
    found = expectancy(np.array(returns), seed=0)
    assert verdict(found.trades, found.low, p) == EDGE


def test_random_trades_get_uniform_p_values() -> None:
    """Size: trades at random moments on random sides (the backtest's own position loop) are rejected at the
    5 % level about 5 % of the time, and their p-values look uniform."""
    p_values = []
    for seed in range(200):
        market = random_walk(2 * 1440, seed=1000 + seed)
        at = decision_moments(int(market.timestamp[0]), int(market.timestamp[-1]) + 60, 900)
        rng = np.random.default_rng([seed, 1])  # not `levels`' stream: signals must not know the levels either
        direction = np.where(rng.random(len(at)) < 0.25, rng.choice([LONG, SHORT], len(at)), 0)
        p_values.append(p_value_of(market, at, direction, runs=199, seed=seed))
    p_values = np.array(p_values)
    rejected = float(np.mean(p_values < 0.05))
    assert 0.02 <= rejected <= 0.09, rejected
    assert scipy_stats.kstest(p_values, "uniform").pvalue > 0.01


def test_each_run_makes_exactly_the_trades_asked_for_one_at_a_time_even_when_crowded() -> None:
    # regression: placing trades one by one at random flat moments jams before the count is reached when the
    # strategy is in the market most of the time (as the greedy position loop is with frequent signals)
    candidates = 120
    starts = 60 * np.arange(candidates, dtype=np.int64)
    rng = np.random.default_rng(3)
    lasting = rng.integers(1, 5, (candidates, 2))  # a trade keeps the run busy for 1 to 4 moments
    ends = starts[:, None] + 60 * lasting
    returns = rng.normal(size=(candidates, 2))
    # the most trades that fit: greedy by earliest exit
    most, flat_from = 0, 0
    for i in np.argsort(ends.min(axis=1), kind="stable"):
        if starts[i] >= flat_from:
            most, flat_from = most + 1, int(ends[i].min())
    wanted = most - 2
    draws = draw_random_entries(starts, ends, returns, buys=wanted // 2, sells=wanted - wanted // 2, runs=60, rate=0.9)
    assert draws.short == 0
    for picks, sides in zip(draws.picks, draws.sides, strict=True):
        assert len(picks) == wanted and int(np.count_nonzero(sides == 0)) == wanted // 2
        assert np.all(starts[picks[1:]] >= ends[picks[:-1], sides[:-1]])  # flat before each entry
    again = draw_random_entries(starts, ends, returns, buys=wanted // 2, sells=wanted - wanted // 2, runs=3, rate=0.9)
    for run in range(3):
        assert again.picks[run].tolist() == draws.picks[run].tolist()  # run r does not depend on the run count
    assert draws.mean_return[0] == pytest.approx(returns[draws.picks[0], draws.sides[0]].mean())


def test_placements_are_drawn_with_the_weights_of_a_trader_entering_at_a_constant_rate() -> None:
    """Exactness on a case small enough to list: each placement of two trades has probability proportional
    to `q^2 (1 - q)^(flat candidates not entered)`."""
    candidates, rate = 7, 0.3
    starts = 60 * np.arange(candidates, dtype=np.int64)
    successor = np.minimum(np.arange(candidates) + np.array([2, 1, 3, 1, 2, 2, 1]), candidates)
    ends = np.repeat((60 * successor)[:, None], 2, axis=1).astype(np.int64)
    ends[-1] = starts[-1] + 60
    weights = {}
    for a, b in itertools.combinations(range(candidates), 2):
        if b >= successor[a]:
            covered = (successor[a] - a - 1) + (min(successor[b], candidates) - b - 1)
            weights[(a, b)] = (1 - rate) ** (candidates - covered - 2)
    total = sum(weights.values())
    runs = 20_000
    draws = draw_random_entries(starts, ends, np.zeros((candidates, 2)), buys=2, sells=0, runs=runs, rate=rate)
    seen: dict[tuple[int, int], int] = {}
    for picks in draws.picks:
        key = (int(picks[0]), int(picks[1]))
        seen[key] = seen.get(key, 0) + 1
    assert set(seen) <= set(weights)
    for placement, weight in weights.items():
        share = weight / total
        assert seen.get(placement, 0) / runs == pytest.approx(share, abs=4 * math.sqrt(share / runs) + 1e-3)


def test_rows_recomputed_from_checkpoints_give_the_same_runs() -> None:
    # a long period with many trades keeps only every sqrt(K)-th row of counts and recomputes the others
    rng = np.random.default_rng(4)
    starts = 60 * np.arange(80, dtype=np.int64)
    ends = starts[:, None] + 60 * rng.integers(1, 4, (80, 2))
    returns = rng.normal(size=(80, 2))
    kept = draw_random_entries(starts, ends, returns, buys=9, sells=7, runs=20, rate=0.3, seed=4)
    recomputed = draw_random_entries(starts, ends, returns, buys=9, sells=7, runs=20, rate=0.3, seed=4, max_bytes=1)
    for a, b, c, d in zip(kept.picks, recomputed.picks, kept.sides, recomputed.sides, strict=True):
        assert a.tolist() == b.tolist() and c.tolist() == d.tolist()


def test_entry_rate_counts_the_moments_at_which_the_strategy_was_flat() -> None:
    starts = 60 * np.arange(10, dtype=np.int64)
    # entered at 0 (busy until 180) and at 300 (busy until 360): flat at 0, 180, 240, 300, 360, ..., 540
    assert entry_rate(starts, np.array([0, 300]), np.array([180, 360])) == pytest.approx(2 / 8)


def test_p_value_counts_runs_at_least_as_good_and_itself() -> None:
    assert random_entry_p_value(1.0, np.array([0.5, 1.0, 2.0])) == pytest.approx(3 / 4)
    assert random_entry_p_value(3.0, np.array([0.5, 1.0, 2.0, np.nan])) == pytest.approx(1 / 4)
    assert math.isnan(random_entry_p_value(1.0, np.array([np.nan])))


def test_stored_significance_for_a_fixed_seed() -> None:
    """Computed once by this code (arch 8.0's generator draws the bootstrap); a change here changes every report."""
    market = random_walk(3 * 1440, seed=21)
    at = decision_moments(int(market.timestamp[0]), int(market.timestamp[-1]) + 60, 900)
    rng = np.random.default_rng([21, 1])
    direction = np.where(rng.random(len(at)) < 0.3, rng.choice([LONG, SHORT], len(at)), 0)
    sl, tp = levels(at, 21)
    model = simulate(market, at, direction, sl, tp, CONFIG)
    null = random_entries(moment_exits(market, at, sl, tp, CONFIG), model.fills, runs=200, seed=0).draws
    daily = daily_returns(market.timestamp, model.equity, CONFIG.initial_equity)
    found = significance(np.array([return_pct(f) for f in model.fills]), daily, null=null, seed=0)
    expected = {
        "trades": 37,
        "expectancy_pct": -0.1365189922988883,
        "block_length": 13.0,  # Politis-White, capped at n / 3 for so few trades
        "p_random_entries": 0.6766169154228856,
        "sharpe_daily": -1.3528364654233533,
        "days": 3,
        "psr": 0.00675383942210206,
        "dsr": 0.00675383942210206,  # one trial: the PSR against 0
        "verdict": NO_EVIDENCE,
    }
    for key, value in expected.items():
        assert found[key] == (value if isinstance(value, str) else pytest.approx(value, rel=1e-9)), key
    assert found["interval_pct"] == pytest.approx([-0.19985819602571367, -0.07286516073051102], rel=1e-9)
    assert null.rate == pytest.approx(0.27205882352941174) and null.minutes_held.mean() == pytest.approx(69.8737837)


# --- the expectancy's interval ---


def test_stationary_bootstrap_interval_covers_the_mean_of_dependent_returns() -> None:
    """400 AR(1) series (phi 0.3, n 300): the stationary bootstrap's 95 % interval covers the true mean in
    90-98 % of them; the i.i.d. bootstrap, blind to the dependence, in fewer."""
    rng = np.random.default_rng(7)
    mean, phi, n, series = 0.1, 0.3, 300, 400
    covered_stationary = covered_iid = 0
    for k in range(series):
        noise = rng.normal(size=n + 200)
        x = mean + lfilter([1.0], [1.0, -phi], noise)[200:]  # 200 steps of burn-in: stationary from the start
        found = expectancy(x, seed=k, reps=1000)
        covered_stationary += found.low <= mean <= found.high
        iid = IIDBootstrap(x, seed=k).apply(np.mean, reps=1000)[:, 0]
        low, high = np.quantile(iid, [0.025, 0.975])
        covered_iid += low <= mean <= high
    stationary, iid_share = covered_stationary / series, covered_iid / series
    assert 0.90 <= stationary <= 0.98, stationary
    assert iid_share < stationary - 0.03, (iid_share, stationary)


def test_expectancy_without_enough_trades() -> None:
    none = expectancy(np.array([]))
    assert none.trades == 0 and math.isnan(none.mean)
    one = expectancy(np.array([0.4]))
    assert one.mean == 0.4 and math.isnan(one.low) and math.isnan(one.high)
    flat = expectancy(np.full(40, 0.25))
    assert flat.low == flat.high == pytest.approx(0.25) and flat.block_length == 1.0
    assert block_length(np.arange(5.0)) == 1.0  # too short to estimate autocorrelations


# --- Sharpe, PSR, DSR ---


def test_deflated_sharpe_ratio_of_the_published_example() -> None:
    """Bailey & López de Prado (2014): 100 trials with Sharpe variance 0.5 / 250, 1,250 daily returns with
    skewness -3 and kurtosis 10, an observed Sharpe ratio of 2.5 / sqrt(250)."""
    variance = 0.5 / 250
    assert expected_maximum_sharpe(100, variance) == pytest.approx(0.1132, abs=5e-4)
    dsr = deflated_sharpe(2.5 / math.sqrt(250), 100, variance, 1250, -3.0, 10.0)
    assert dsr == pytest.approx(0.9004, abs=5e-4)
    assert expected_maximum_sharpe(1, variance) == 0.0  # one trial: the PSR against 0
    assert probabilistic_sharpe(0.0, 0.0, 1250, 0.0, 3.0) == pytest.approx(0.5)


def test_kurtosis_is_raw() -> None:
    skewness, kurtosis = moments(np.random.default_rng(0).normal(size=100_000))
    assert skewness == pytest.approx(0.0, abs=0.03) and kurtosis == pytest.approx(3.0, abs=0.05)


# --- the verdict ---


@pytest.mark.parametrize(
    ("trades", "low", "p", "expected"),
    [
        (100, 0.01, 0.01, EDGE),
        (100, -0.01, 0.01, TIMING_WITHOUT_PROFIT),
        (100, 0.01, 0.20, NO_EVIDENCE),  # profitable, but random entries do as well: the market's drift
        (100, -0.01, 0.50, NO_EVIDENCE),
        (100, 0.01, 0.05, NO_EVIDENCE),  # p < 0.05 strictly
        (29, 0.5, 0.001, TOO_FEW_TRADES),
        (30, 0.5, 0.001, EDGE),
        (100, math.nan, math.nan, NO_EVIDENCE),
    ],
)
def test_verdict_rules(trades: int, low: float, p: float, expected: str) -> None:
    assert verdict(trades, low, p) == expected
