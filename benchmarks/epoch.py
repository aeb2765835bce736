"""Mixed-length training epoch: our bucketed batches through LSTMTrainingModule against a bare padded nn.LSTM
at the same number of sample-steps, on the window lengths a first-touch journal over real candles gives.

The journal (hourly moments, 24-hour horizon) over the Binance file (35 days with a 270-minute gap) gives
windows shorter than the 90-day maximum, each as long as the data before its moment: every batch mixes lengths.
Prints the padding share of `BucketBatchSampler`'s batches, then one epoch (forward and backward of every
batch; collating the windows from the feature matrix included for ours) for: the bare nn.LSTM on unpadded
batches of the same sizes and total sample-steps, ours plain, and ours in chunks. Throughput counts real
sample-steps only (padding is overhead). Each runs in its own child process (its own peak memory).
Targets (issue 6): padding <= 10 %; ours >= 0.9 of bare.

    PYTHONPATH=src .venv/bin/python benchmarks/epoch.py [--scale 1.0] [--batch 32] [--chunk-lens auto 4096]
        [--paths padded packed] [--device cpu|cuda] [--candles tests/data/binance_...csv.gz]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from _common import chunk_setting, load_average, run_in_child
from lstm_trading.core.config import LabelConfig, TargetConfig
from lstm_trading.core.timeutil import to_unix_seconds
from lstm_trading.features.compute import compute_features
from lstm_trading.features.matrix import FeatureMatrix
from lstm_trading.models.lstm.batches import BucketBatchSampler, SampleWindows, padding_share
from lstm_trading.models.lstm.model import auto_chunk_len
from lstm_trading.models.lstm.training import LSTMTrainingModule
from lstm_trading.samples.labels import label_first_touch
from lstm_trading.samples.scalers import FeatureScaler, TargetScaler
from lstm_trading.samples.targets import Samples, build_samples

DEFAULT_CANDLES = (
    Path(__file__).resolve().parents[1] / "tests" / "data" / "binance_ethusdt_1m_2021-08-09_2021-09-13.csv.gz"
)


def journal_windows(candles_path: Path, scale: float) -> tuple[np.ndarray, Samples]:
    """The scaled feature matrix and the samples of a first-touch journal over the candles (lengths scaled)."""
    candles = pd.read_csv(candles_path)
    candles["timestamp"] = to_unix_seconds(candles["timestamp"])
    features = compute_features(candles)
    labels = label_first_touch(candles, features, LabelConfig())
    trades = labels.trades.assign(label=labels.trades["side"].map({"Buy": 0, "Sell": 1, "Invalid": 2}))
    matrix = FeatureMatrix.from_frame(features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # moments with too little history are skipped: expected here
        samples, _ = build_samples(matrix, trades, TargetConfig())
    lengths = np.maximum(1, np.ceil(samples.length * scale)).astype(np.int64)
    scaled = FeatureScaler.fit(matrix.values, "standard").transform(matrix.values)
    return scaled, replace(samples, length=lengths)


def _run(
    kind: str, path: str, chunk: int | str, candles_path: Path, scale: float, batch: int, device: str, queue: mp.Queue
) -> None:
    torch.manual_seed(0)
    if device == "cpu":
        torch.set_flush_denormal(True)
    scaled, samples = journal_windows(candles_path, scale)
    batches = BucketBatchSampler(samples.length, batch, shuffle=True, seed=0).global_batches()

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    steps = 0
    seconds = 0.0
    if kind == "bare":
        lstm = torch.nn.LSTM(13, 80, batch_first=True).to(device)
        for chosen in batches:
            width = round(float(samples.length[chosen].mean()))  # same sample-steps, no padding
            x = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(scaled[:width], (len(chosen), width, 13))))
            x = x.to(device)
            sync()
            started = time.perf_counter()
            output, _ = lstm(x)
            output[:, -1].sum().backward()
            sync()
            seconds += time.perf_counter() - started
            steps += len(chosen) * width
    else:
        windows = SampleWindows(scaled, samples, TargetScaler.fit(samples))
        module = LSTMTrainingModule(
            model={"input_size": 13, "hidden_size": 80, "num_layers": 1, "output_size": 3},
            train={"batch_size": batch, "chunk_len": chunk},
            class_weights=[1.0, 1.0, 1.0],
        ).to(device)
        module.model.path = path
        for chosen in batches:
            sync()
            started = time.perf_counter()
            module._loss(windows.collate(chosen.tolist()).to(device)).total.backward()
            sync()
            seconds += time.perf_counter() - started
            steps += int(samples.length[chosen].sum())
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    queue.put((steps / seconds, seconds, peak))


def run(
    kind: str, path: str, chunk: int | str, candles_path: Path, scale: float, batch: int, device: str
) -> tuple[float, float, float]:
    args = (kind, path, chunk, candles_path, scale, batch, device)
    return run_in_child(_run, args, f"{kind} {path} chunk {chunk}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=Path, default=DEFAULT_CANDLES)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every window length (shorter runs)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--chunk-lens", type=chunk_setting, nargs="+", default=["auto"], help="train.chunk_len values: auto or steps"
    )
    parser.add_argument("--paths", nargs="+", default=["padded"], help="our unchunked kernels: padded, packed")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    _, samples = journal_windows(args.candles, args.scale)
    lengths = samples.length
    batches = BucketBatchSampler(lengths, args.batch, shuffle=True, seed=0).global_batches()
    load = load_average()
    print(
        f"{args.candles.name}: {len(lengths)} windows of {lengths.min():,} to {lengths.max():,} steps "
        f"(mean {lengths.mean():,.0f}, scale {args.scale:g}), {len(batches)} batches of {args.batch}; "
        f"padding {padding_share(lengths, batches):.1%} of sample-steps; {args.device}, "
        f"threads {torch.get_num_threads()}, load {load:.2f}"
    )
    print(f"{'variant':>12} {'steps/s':>10} {'/bare':>6} {'epoch s':>8} {'peak MB':>8}", flush=True)
    rows = [("bare padded", "bare", "padded", 0)]
    rows += [(f"ours {path}", "ours", path, 0) for path in args.paths]
    for chunk in args.chunk_lens:
        steps = auto_chunk_len(args.batch, torch.device(args.device)) if chunk == "auto" else chunk
        rows.append((f"ours {chunk}" if chunk != "auto" else f"auto {steps}", "ours", "padded", chunk))
    bare_rate = 0.0
    for name, kind, path, chunk in rows:
        rate, seconds, peak = run(kind, path, chunk, args.candles, args.scale, args.batch, args.device)
        bare_rate = bare_rate or rate
        print(f"{name:>12} {rate:>10,.0f} {rate / bare_rate:>6.2f} {seconds:>8.1f} {peak:>8,.0f}", flush=True)


if __name__ == "__main__":
    main()
