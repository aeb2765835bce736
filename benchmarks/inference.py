"""Inference throughput: `run_windows` (length-bucketed, time-chunked, one-thread worker processes) against a
bare nn.LSTM forward in one process with torch's default thread count, on the same windows, in the same run.

For each window length, `--windows` windows ending an hour apart are cut from one feature matrix. The bare
baseline pads them into batches of `--batch` and runs `nn.LSTM` under `torch.inference_mode` (what the seed
did, minus its 90-day copies per trade); ours calls `models.lstm.inference.run_windows` with `--workers` (default: one
per core). Prints sample-steps per second (best of `--repeats`) and our/bare ratio, and checks that both give
the same hidden states. Target (issue 6): ours >= 1.8x bare.

    PYTHONPATH=src .venv/bin/python benchmarks/inference.py [--lengths 8640 32768 129600] [--windows 64]
        [--batch 32] [--workers N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from _common import best_of, load_average
from lstm_trading.models.lstm.batches import pad_windows
from lstm_trading.models.lstm.inference import cpu_count, run_windows
from lstm_trading.models.lstm.model import LSTMModel


def bare_forward(lstm: torch.nn.LSTM, scaled: np.ndarray, ends: np.ndarray, lengths: np.ndarray, batch: int) -> None:
    device = next(lstm.parameters()).device
    with torch.inference_mode():
        for first in range(0, len(ends), batch):
            x = torch.from_numpy(pad_windows(scaled, ends[first : first + batch], lengths[first : first + batch]))
            output, _ = lstm(x.to(device))
            output[:, -1].sum().item()  # a sync point on CUDA, so the time includes the work


def measure(model: LSTMModel, length: int, args: argparse.Namespace, rng: np.random.Generator) -> str:
    rows = length + 60 * args.windows
    scaled = rng.standard_normal((rows, 13), dtype=np.float32)
    ends = rows - 60 * np.arange(args.windows, dtype=np.int64)[::-1]  # a window every hour, the last at the end
    lengths = np.full(len(ends), length, dtype=np.int64)
    work = float(lengths.sum())
    bare_forward(model.lstm, scaled, ends[:1], lengths[:1], args.batch)  # warm-up
    bare, _ = best_of(args.repeats, lambda: bare_forward(model.lstm, scaled, ends, lengths, args.batch))
    ours, result = best_of(
        args.repeats,
        lambda: run_windows(model, scaled, ends, lengths, batch_size=args.batch, workers=args.workers),
    )
    probabilities = result[0]  # type: ignore[index]
    with torch.inference_mode():  # the same model on one window, plainly: equal outputs
        x = torch.from_numpy(pad_windows(scaled, ends[-1:], lengths[-1:])).to(args.device)
        alone = torch.softmax(model(x, torch.from_numpy(lengths[-1:])).logits, dim=1).cpu().numpy()
    diff = float(np.abs(probabilities[-1] - alone[0]).max())
    return f"{length:>7} {work / bare:>13,.0f} {work / ours:>13,.0f} {bare / ours:>6.2f} {diff:>10.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[8640, 32768, 129600])
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    load = load_average()
    print(
        f"device {args.device}, torch {torch.__version__}, default threads {torch.get_num_threads()}, "
        f"cores {cpu_count()}, workers {args.workers or 'auto'}, {args.windows} windows, batch {args.batch}, "
        f"best of {args.repeats}, load {load:.2f}"
    )
    print(f"{'length':>7} {'bare steps/s':>13} {'ours steps/s':>13} {'ratio':>6} {'max |diff|':>10}", flush=True)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = LSTMModel().eval().to(args.device)
    for length in args.lengths:
        print(measure(model, length, args, rng), flush=True)


if __name__ == "__main__":
    main()
