"""Inference throughput: `run_windows` (length-bucketed, time-chunked, one-thread worker processes) against a
bare nn.LSTM forward in one process with torch's default thread count, on the same windows, in the same run.

For each window length, `--windows` windows ending an hour apart are cut from one feature matrix. The bare
baseline pads them into batches of `--batch` and runs `nn.LSTM` under `torch.inference_mode` (what the seed
did, minus its 90-day copies per trade); ours calls `models.lstm.inference.run_windows` with `--workers` (default: one
per core). Prints sample-steps per second (best of `--repeats`) and our/bare ratio, and checks that both give
the same hidden states. Target (issue 6): ours >= 1.8x bare. The header shows the caches a core counts on and
the chunk they give (`inference_sample_steps`); `--sample-steps 2048 8192 ...` adds a row per chunk size (B x C
per chunk) next to the default's. `LSTM_TRADING_L2_BYTES` / `LSTM_TRADING_L3_BYTES` (`core.machine`) imitate a
machine with other caches.

`--ceiling` also times what one-thread processes can do at best on this machine: the bare `nn.LSTM` in the
default chunks, on prepared tensors, one process per worker pinned to a core, side by side. `ceiling / bare`
is then the most any worker scheme reaches here (where torch's own threads scale well, as on AMD Zen 2, it is
below the 1.8x target), and `ours / ceiling` what our batching, chunk cutting and result passing cost.

    PYTHONPATH=src .venv/bin/python benchmarks/inference.py [--lengths 8640 32768 129600] [--windows 64]
        [--batch 32] [--workers N] [--device cpu|cuda] [--sample-steps 2048 4096 8192 16384] [--ceiling]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from typing import Any

import numpy as np
import torch

from _common import best_of, load_average
from lstm_trading.core.machine import cpu_caches, pin_to_core
from lstm_trading.models.lstm.batches import pad_windows
from lstm_trading.models.lstm.inference import cpu_count, inference_sample_steps, run_windows
from lstm_trading.models.lstm.model import LSTMModel, auto_chunk_len


def bare_forward(lstm: torch.nn.LSTM, scaled: np.ndarray, ends: np.ndarray, lengths: np.ndarray, batch: int) -> None:
    device = next(lstm.parameters()).device
    with torch.inference_mode():
        for first in range(0, len(ends), batch):
            x = torch.from_numpy(pad_windows(scaled, ends[first : first + batch], lengths[first : first + batch]))
            output, _ = lstm(x.to(device))
            output[:, -1].sum().item()  # a sync point on CUDA, so the time includes the work


def _chunked_alone(lstm: torch.nn.LSTM, batches: list[torch.Tensor], chunk: int, core: int, queue: Any) -> None:
    """One ceiling process: one thread, pinned, the bare LSTM over its prepared batches in chunks; its seconds."""
    torch.set_num_threads(1)
    pin_to_core(0, core)
    started = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            h = torch.zeros(1, x.shape[0], lstm.hidden_size)
            c = torch.zeros_like(h)
            for first in range(0, x.shape[1], chunk):
                _, (h, c) = lstm(x[:, first : first + chunk], (h, c))
    queue.put(time.perf_counter() - started)


def ceiling(
    lstm: torch.nn.LSTM, scaled: np.ndarray, ends: np.ndarray, lengths: np.ndarray, args: argparse.Namespace
) -> float:
    """Seconds for `workers` pinned one-thread processes to run the bare LSTM over the windows, side by side (the
    slowest one's time): the batches are padded beforehand, so only the kernel and the caches count."""
    workers = args.workers or cpu_count()
    batches = [
        torch.from_numpy(pad_windows(scaled, ends[first : first + args.batch], lengths[first : first + args.batch]))
        for first in range(0, len(ends), args.batch)
    ]
    chunk = auto_chunk_len(args.batch, torch.device("cpu"), sample_steps=inference_sample_steps())
    context = mp.get_context("fork")
    queue = context.Queue()
    processes = [
        context.Process(target=_chunked_alone, args=(lstm, batches[worker::workers], chunk, worker, queue))
        for worker in range(min(workers, len(batches)))
    ]
    for process in processes:
        process.start()
    seconds = max(queue.get() for _ in processes)
    for process in processes:
        process.join()
    return seconds


def measure(model: LSTMModel, length: int, args: argparse.Namespace, rng: np.random.Generator) -> list[str]:
    """One row for the default chunks, then one per `--sample-steps`; bare once, ours per chunk size."""
    rows = length + 60 * args.windows
    scaled = rng.standard_normal((rows, 13), dtype=np.float32)
    ends = rows - 60 * np.arange(args.windows, dtype=np.int64)[::-1]  # a window every hour, the last at the end
    lengths = np.full(len(ends), length, dtype=np.int64)
    work = float(lengths.sum())
    bare_forward(model.lstm, scaled, ends[:1], lengths[:1], args.batch)  # warm-up
    bare, _ = best_of(args.repeats, lambda: bare_forward(model.lstm, scaled, ends, lengths, args.batch))
    with torch.inference_mode():  # the same model on one window, plainly: equal outputs
        x = torch.from_numpy(pad_windows(scaled, ends[-1:], lengths[-1:])).to(args.device)
        alone = torch.softmax(model(x, torch.from_numpy(lengths[-1:])).logits, dim=1).cpu().numpy()
    lines = []
    device = torch.device(args.device)
    for sample_steps in [None, *args.sample_steps]:
        chunk = None if sample_steps is None else auto_chunk_len(args.batch, device, sample_steps=sample_steps)

        def ours_run(chunk: int | None = chunk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            return run_windows(
                model, scaled, ends, lengths, batch_size=args.batch, workers=args.workers, chunk_len=chunk
            )

        ours, result = best_of(args.repeats, ours_run)
        probabilities = result[0]
        diff = float(np.abs(probabilities[-1] - alone[0]).max())
        name = "default" if sample_steps is None else f"{sample_steps:,}"
        lines.append(
            f"{length:>7} {name:>8} {work / bare:>13,.0f} {work / ours:>13,.0f} {bare / ours:>6.2f} {diff:>10.1e}"
        )
        if sample_steps is None and args.ceiling:
            bound, _ = best_of(args.repeats, lambda: ceiling(model.lstm, scaled, ends, lengths, args))
            lines.append(
                f"{length:>7} {'ceiling':>8} {'':>13} {work / bound:>13,.0f} {bare / bound:>6.2f}   "
                f"(ours / ceiling {bound / ours:.2f}; the bare LSTM in the default chunks, one pinned "
                "one-thread process per worker)"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[8640, 32768, 129600])
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--sample-steps", type=int, nargs="*", default=[], help="also time these B x C per chunk (a sweep)"
    )
    parser.add_argument(
        "--ceiling", action="store_true", help="also time the bare LSTM in pinned one-thread processes (CPU, Linux)"
    )
    args = parser.parse_args()
    if args.ceiling and (args.device != "cpu" or "fork" not in mp.get_all_start_methods()):
        parser.error("--ceiling times forked CPU processes: it needs --device cpu on Linux")
    load = load_average()
    default = auto_chunk_len(args.batch, torch.device(args.device), sample_steps=inference_sample_steps())
    print(
        f"device {args.device}, torch {torch.__version__}, default threads {torch.get_num_threads()}, "
        f"cores {cpu_count()}, workers {args.workers or 'auto'}, {args.windows} windows, batch {args.batch}, "
        f"best of {args.repeats}, load {load:.2f}"
    )
    print(
        f"{cpu_caches().describe()}: default chunks {inference_sample_steps():,} sample-steps "
        f"({default} steps at batch {args.batch}{' on CPU' if args.device == 'cpu' else ''})"
    )
    header = f"{'length':>7} {'chunk':>8} {'bare steps/s':>13} {'ours steps/s':>13} {'ratio':>6} {'max |diff|':>10}"
    print(header, flush=True)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = LSTMModel().eval().to(args.device)
    for length in args.lengths:
        for line in measure(model, length, args, rng):
            print(line, flush=True)


if __name__ == "__main__":
    main()
