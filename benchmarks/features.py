"""Five years of minutes: SQLite load, features, sample windows and labels, next to the original way.

Prints, for 2.6 million synthetic 1-minute candles, the time of each step done our way and the original way
(pandas `read_sql_query`; pandas rolling means; a pandas boolean mask per trade copying its window) in the same
run, with their ratio. Targets (issue 2): SQLite load < 5 s, `compute_features` < 1 s, sample building at least
1,000x faster than the per-trade mask.

    .venv/bin/python benchmarks/features.py [--minutes 2600000] [--trades 10000] [--mask-trades 200]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import best_of
from lstm_trading.core.config import MAX_WINDOW_MINUTES, FeatureConfig, LabelConfig
from lstm_trading.data.store import CandleStore
from lstm_trading.data.synthetic import synthetic_candles
from lstm_trading.features.compute import FEATURE_NAMES, compute_features
from lstm_trading.features.matrix import FeatureMatrix
from lstm_trading.samples.labels import label_first_touch
from lstm_trading.samples.windows import window_bounds

SYMBOL = "ETHUSDT"


def original_features(candles: pd.DataFrame, config: FeatureConfig) -> pd.DataFrame:
    """The original script's way: pandas rolling means (and `ewm`) for the indicators, `pct_change` after."""
    frame = candles.set_index("timestamp")
    close = frame["close"]
    delta = close.diff()
    gain = delta.clip(lower=0).rolling(config.rsi).mean()
    loss = (-delta.clip(upper=0)).rolling(config.rsi).mean()
    macd = close.ewm(span=config.macd_fast).mean() - close.ewm(span=config.macd_slow).mean()
    middle = close.rolling(config.bollinger).mean()
    spread = config.bollinger_sigma * close.rolling(config.bollinger).std()
    previous = close.shift()
    true_range = pd.concat(
        [frame["high"] - frame["low"], (frame["high"] - previous).abs(), (frame["low"] - previous).abs()], axis=1
    ).max(axis=1)
    levels = pd.DataFrame(
        {
            "SMA_10h": close.rolling(config.sma).mean(),
            "EMA_10h": close.ewm(span=config.ema).mean(),
            "MACD": macd,
            "MACD_Signal": macd.ewm(span=config.macd_signal).mean(),
            "BB_Upper": middle + spread,
            "BB_Lower": middle - spread,
            "ATR_14h": true_range.rolling(config.atr).mean(),
        }
    )
    out = (
        pd.concat([frame[["open", "high", "low", "close", "volume"]], levels], axis=1)
        .pct_change(fill_method=None)
        .mul(100.0)
    )
    out = out.replace([np.inf, -np.inf], np.nan).fillna(0.0).clip(-config.pct_clip, config.pct_clip)
    out.columns = [f"{name}_pct" for name in out.columns]
    out["RSI_14h"] = 100.0 - 100.0 / (1.0 + gain / loss)
    return out.iloc[config.warmup_minutes :]


def mask_windows(features: pd.DataFrame, moments: np.ndarray, max_len: int) -> list[np.ndarray]:
    """The original way: one boolean mask over every row per trade, and a copy of its window."""
    frame = features.reset_index()
    names = list(FEATURE_NAMES)
    windows = []
    for t in moments:
        mask = (frame["timestamp"] >= t - max_len * 60) & (frame["timestamp"] + 60 <= t)
        windows.append(frame.loc[mask, names].to_numpy(dtype=np.float32))
    return windows


def write_database(path: Path, candles: pd.DataFrame) -> None:
    with CandleStore(path, create=True) as store:
        store.upsert(SYMBOL, candles, source="synthetic")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=2_600_000, help="synthetic 1-minute candles (5 years)")
    parser.add_argument("--trades", type=int, default=10_000, help="samples to build")
    parser.add_argument("--mask-trades", type=int, default=200, help="trades timed the original way, then scaled")
    args = parser.parse_args()

    rows: list[tuple[str, float, float | None, str]] = []
    began = time.perf_counter()
    candles = synthetic_candles(days=args.minutes / 1_440, seed=0)
    print(f"{len(candles):,} synthetic minutes generated in {time.perf_counter() - began:.1f} s")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        began = time.perf_counter()
        write_database(path, candles)
        print(f"written to SQLite in {time.perf_counter() - began:.1f} s ({path.stat().st_size / 2**20:,.0f} MiB)")

        def load() -> pd.DataFrame:
            with CandleStore(path) as store:
                return store.read(SYMBOL)

        def load_original() -> pd.DataFrame:
            with sqlite3.connect(path) as connection:
                return pd.read_sql_query(f"SELECT * FROM candles WHERE symbol = '{SYMBOL}'", connection)

        load_s, loaded = best_of(2, load)
        original_load_s, _ = best_of(1, load_original)
        assert loaded["timestamp"].equals(candles["timestamp"])
        rows.append(("SQLite load", load_s, original_load_s, "< 5 s"))

    config = FeatureConfig()
    features_s, features = best_of(3, lambda: compute_features(loaded, config))
    original_s, _ = best_of(1, lambda: original_features(loaded, config))
    rows.append(("compute_features", features_s, original_s, "< 1 s"))

    # Trades on minute boundaries (some inside a minute) from the first full 90-day window on.
    rng = np.random.default_rng(1)
    stamps = features.index.to_numpy()
    first = stamps[0] + MAX_WINDOW_MINUTES * 60
    moments = np.sort(rng.integers(first, stamps[-1], args.trades))

    matrix_s, matrix = best_of(3, lambda: FeatureMatrix.from_frame(features))

    def build() -> list[np.ndarray]:
        start, end = window_bounds(matrix.timestamps, moments, MAX_WINDOW_MINUTES)
        return [matrix.values[a:b] for a, b in zip(start.tolist(), end.tolist(), strict=True)]  # views, no copy

    build_s, windows = best_of(5, build)
    sample = moments[: args.mask_trades]
    mask_s, masked = best_of(1, lambda: mask_windows(features, sample, MAX_WINDOW_MINUTES))
    for window, copied in zip(windows[: len(masked)], masked, strict=True):
        assert np.shares_memory(window, matrix.values) and np.array_equal(window, copied)
    rows.append((f"{args.trades:,} sample windows", build_s, mask_s * args.trades / len(sample), ">= 1000x"))

    label_config = LabelConfig(every_seconds=3_600)
    label_s, result = best_of(1, lambda: label_first_touch(loaded, features, label_config))

    print()
    print(f"{'step':<26}{'ours':>12}{'original':>14}{'ratio':>10}   target")
    for name, ours, original, target in rows:
        ratio = f"{original / ours:,.0f}x" if original is not None else ""
        print(f"{name:<26}{ours:>11.4f}s{original or 0:>13.2f}s{ratio:>10}   {target}")
    print()
    print(f"feature matrix (N, 13) float32, built once:  {matrix_s:.3f} s  ({matrix.values.nbytes / 2**20:,.0f} MiB)")
    print(f"per sample: {build_s / args.trades * 1e6:.2f} us ours, {mask_s / len(sample) * 1e3:.1f} ms with a mask")
    print(
        f"labeller, every 60 min over {len(loaded) / 525_600:.1f} years: {label_s:.2f} s for {len(result.trades):,} "
        f"moments ({result.counts})"
    )


if __name__ == "__main__":
    main()
