"""Cold against cached feature loading: `compute_features` (TA-Lib) against a hit in the feature cache.

For each window length, the history a train or backtest run loads is the window, the indicator warm-up and
`--days` of decision moments. Prints, for that many synthetic candles: the cold time (features computed and
turned into the matrix, as `prepare` did before the cache), the first cached call (a miss: computed and
written), a hit (fingerprint, checksums, memory-mapped load), a hit followed by the scaling pass that reads
every row (what `prepare` does next), and cold / hit.

    PYTHONPATH=src .venv/bin/python benchmarks/feature_cache.py [--lengths 8640 32768 129600] [--days 365]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import best_of, load_average
from lstm_trading.core.config import FeatureConfig
from lstm_trading.data.synthetic import synthetic_candles
from lstm_trading.features.cache import FeatureCache
from lstm_trading.features.compute import compute_features, rows_dropped
from lstm_trading.features.matrix import FeatureMatrix
from lstm_trading.samples.scalers import FeatureScaler


def measure(length: int, days: float, repeats: int, config: FeatureConfig) -> str:
    minutes = length + rows_dropped(config) + int(days * 1440)
    candles = synthetic_candles(minutes / 1440, seed=1)
    with tempfile.TemporaryDirectory() as folder:
        cache = FeatureCache(Path(folder))
        cold, _ = best_of(repeats, lambda: FeatureMatrix.from_frame(compute_features(candles, config)))
        started = time.perf_counter()
        first = cache.features(candles, config, symbol="ETHUSDT")
        miss = time.perf_counter() - started
        assert first.status == "miss"
        scaler = FeatureScaler.fit(np.asarray(first.matrix.values[:100_000]), "standard")

        def hit() -> np.ndarray:
            found = cache.features(candles, config, symbol="ETHUSDT")
            assert found.status == "hit"
            return found.matrix.values

        hit_time, _ = best_of(repeats, hit)
        hit_scaled, _ = best_of(repeats, lambda: scaler.transform(hit()))
    times = " ".join(f"{t:>9.3f}" for t in (cold, miss, hit_time, hit_scaled))
    return f"{length:>9} {len(candles):>9,} {times} {cold / hit_time:>9.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[8640, 32768, 129600])
    parser.add_argument("--days", type=float, default=365.0, help="days of decision moments after the first window")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load = load_average()
    print(f"best of {args.repeats}, load {load:.2f}; times in seconds")
    header = ("length", "candles", "cold", "miss", "hit", "hit+scale", "cold/hit")
    print(" ".join(f"{h:>9}" for h in header), flush=True)
    for length in args.lengths:
        print(measure(length, args.days, args.repeats, FeatureConfig()), flush=True)


if __name__ == "__main__":
    main()
