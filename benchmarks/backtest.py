"""Backtest prediction: one batched pass over many windows, next to one window at a time, in the same run.

The issue's case: 30 days at a decision every 15 minutes (2,880 moments) with the default 129,600-minute
windows, a randomly initialised default-size model (hidden 80) on synthetic candles. Prints the time of the
features, the windows per second of the backtest's batched pass (`backtest.predict_signals`: length-bucketed
batches, time-chunked, shared among one-thread worker processes) and of one window per call (what a loop that
predicts each moment as it comes does: `predict.predict_windows` with one window), their ratio, and the peak
memory. The CPU may be shared with other work: the load average before and after is printed with the figures.

    .venv/bin/python benchmarks/backtest.py [--days 30] [--every 15m] [--max-len 129600]
                                           [--sample 0] [--alone 2] [--batch-size 64] [--workers N]

`--sample N` times the batched pass on the first N moments only and extrapolates (0: all of them).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

from lstm_trading.backtest.simulation import decision_moments
from lstm_trading.core.config import MAX_WINDOW_MINUTES, FeatureConfig, ModelConfig, TargetConfig
from lstm_trading.core.timeutil import parse_duration
from lstm_trading.data.synthetic import synthetic_candles
from lstm_trading.features.compute import FEATURE_NAMES, compute_features, rows_dropped
from lstm_trading.features.matrix import FeatureMatrix
from lstm_trading.models.bundle import Bundle
from lstm_trading.models.lstm.model import LSTMModel
from lstm_trading.predict import predict_signals, predict_windows, scaled_features
from lstm_trading.samples.scalers import FeatureScaler, TargetScaler
from lstm_trading.samples.windows import window_bounds

DAY_MINUTES = 1_440


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def random_bundle(candles_for_scaler: FeatureMatrix, max_len: int) -> Bundle:
    """A default-size model with random weights, scalers fitted on the benchmark's own features."""
    torch.manual_seed(0)
    config = ModelConfig()
    return Bundle(
        model=LSTMModel.from_config(config).eval(),
        model_config=config,
        feature_config=FeatureConfig(),
        target_config=TargetConfig(max_len=max_len),
        feature_names=tuple(FEATURE_NAMES),
        feature_scaler=FeatureScaler.fit(candles_for_scaler.values),
        target_scaler=TargetScaler(data_min=np.array([0.1, 0.15]), data_range=np.array([1.0, 1.5])),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=30.0, help="backtest period in days")
    parser.add_argument("--every", default="15m", help="decision interval")
    parser.add_argument("--max-len", type=int, default=MAX_WINDOW_MINUTES, help="window length in minutes")
    parser.add_argument("--sample", type=int, default=0, help="time the batched pass on this many moments (0: all)")
    parser.add_argument("--alone", type=int, default=2, help="moments predicted one window at a time")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="inference processes (default: one per core)")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {load()}")
    warmup = rows_dropped(FeatureConfig())
    total_days = args.days + (args.max_len + warmup) / DAY_MINUTES + 1
    began = time.perf_counter()
    candles = synthetic_candles(total_days, seed=1)
    print(f"synthetic candles: {len(candles):,} minutes ({total_days:.1f} days) in {time.perf_counter() - began:.1f} s")

    first = int(candles["timestamp"].iloc[-1]) + 60 - int(args.days * 86_400)
    moments = decision_moments(first, int(candles["timestamp"].iloc[-1]) + 60, parse_duration(args.every))
    bundle = random_bundle(FeatureMatrix.from_frame(compute_features(candles.head(50_000))), args.max_len)
    began = time.perf_counter()
    features = scaled_features(bundle, candles)
    feature_seconds = time.perf_counter() - began
    start, end = window_bounds(features.matrix.timestamps, moments, args.max_len)
    lengths = end - start
    print(
        f"features and scaling: {feature_seconds:.1f} s; {len(moments):,} moments every {args.every}, "
        f"windows of {int(lengths.min()):,} to {int(lengths.max()):,} minutes"
    )

    timed = moments if args.sample <= 0 else moments[: args.sample]
    began = time.perf_counter()
    last_report = [began]

    def progress(done: float, total: int) -> None:
        now = time.perf_counter()
        if now - last_report[0] > 60:
            last_report[0] = now
            print(f"  batched: {done:,.0f} of {total:,} windows after {now - began:,.0f} s", flush=True)

    signals = predict_signals(
        bundle, features, timed, batch_size=args.batch_size, workers=args.workers, progress=progress
    )
    batched_seconds = time.perf_counter() - began
    batched_rate = len(timed) / batched_seconds

    alone = moments[: args.alone]
    a_start, a_end = window_bounds(features.matrix.timestamps, alone, args.max_len)
    began = time.perf_counter()
    single = [
        predict_windows(bundle, features.scaled, a_end[i : i + 1], (a_end - a_start)[i : i + 1])
        for i in range(len(alone))
    ]
    alone_seconds = time.perf_counter() - began
    alone_rate = len(alone) / alone_seconds
    same = np.allclose(np.vstack([s[0] for s in single]), signals.proba[: len(alone)], rtol=1e-4, atol=1e-6)

    steps = float(lengths[: len(timed)].sum())
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux
    worker_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # the largest worker
    print(
        f"batched (batch {args.batch_size}, workers {args.workers or 'one per core'}): {len(timed):,} windows in "
        f"{batched_seconds:,.1f} s = "
        f"{batched_rate:,.2f} windows/s ({steps / batched_seconds:,.0f} window-steps/s)"
    )
    print(
        f"one window per call: {len(alone)} windows in {alone_seconds:,.1f} s = "
        f"{alone_rate:,.3f} windows/s; same probabilities as the batched pass: {same}"
    )
    print(f"batched / one at a time: {batched_rate / alone_rate:,.1f}x")
    all_steps = float(lengths.sum())
    print(
        f"all {len(moments):,} moments: batched {len(moments) / batched_rate / 60:,.1f} min "
        f"(measured{' on all' if args.sample <= 0 else f' on {len(timed)}, extrapolated'}), "
        f"one at a time {len(moments) / alone_rate / 3600:,.1f} h (extrapolated); "
        f"{all_steps / 1e6:,.0f} M window-steps"
    )
    print(f"peak memory {peak_gb:.2f} GB in this process, {worker_gb:.2f} GB in the largest worker; {load()}")


if __name__ == "__main__":
    main()
