"""Training-step throughput and peak memory: our LSTMTrainingModule step against a bare nn.LSTM.

Both run the same tensors the same way (padded against padded, packed against packed) in this process's
children, one child per measurement so each peak memory is its own. Prints sample-steps per second, peak
resident memory above the child's memory before the step, and our/bare ratios. Target: ours >= 0.9 of bare.

    .venv/bin/python benchmarks/train_step.py [--lengths 1440 8640 43200] [--batch 32] [--repeats 3]
        [--device cpu] [--precision fp32|fp16|bf16]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import torch

from lstm_trading.batches import Batch
from lstm_trading.training import LSTMTrainingModule


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


_AUTOCAST = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def _measure(
    kind: str, path: str, length: int, batch: int, repeats: int, device: str, precision: str, queue: mp.Queue
) -> None:
    torch.manual_seed(0)
    if device == "cpu":
        torch.set_flush_denormal(True)
    features = torch.randn(batch, length, 13, device=device)
    lengths = torch.full((batch,), length, dtype=torch.int64)
    labels = torch.randint(0, 3, (batch,), device=device)
    if kind == "bare":
        lstm = torch.nn.LSTM(13, 80, batch_first=True).to(device)

        def step() -> None:
            if path == "packed":
                packed = torch.nn.utils.rnn.pack_padded_sequence(features, lengths, batch_first=True)
                _, (h_n, _) = lstm(packed)
                h_n[-1].sum().backward()
            else:
                output, _ = lstm(features)
                output[:, -1].sum().backward()
    else:
        module = LSTMTrainingModule(
            model={"input_size": 13, "hidden_size": 80, "num_layers": 1, "output_size": 3},
            train={"batch_size": batch},
            class_weights=[1.0, 1.0, 1.0],
        ).to(device)
        module.model.path = path
        data = Batch(
            features=features,
            lengths=lengths,
            label=labels,
            sl=torch.rand(batch, device=device),
            tp=torch.rand(batch, device=device),
            is_trade=labels != 2,
            index=torch.arange(batch),
        )

        def step() -> None:
            module._loss(data).total.backward()

    def synced() -> None:
        dtype = _AUTOCAST[precision]
        with torch.autocast(device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None):
            step()
        if device == "cuda":
            torch.cuda.synchronize()

    before = _rss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    synced()  # warm-up (oneDNN / cuDNN pick their kernels)
    started = time.perf_counter()
    for _ in range(repeats):
        synced()
    seconds = (time.perf_counter() - started) / repeats
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    queue.put((batch * length / seconds, peak))


def measure(
    kind: str, path: str, length: int, batch: int, repeats: int, device: str, precision: str
) -> tuple[float, float]:
    context = mp.get_context("spawn")
    queue: mp.Queue = context.Queue()
    child = context.Process(target=_measure, args=(kind, path, length, batch, repeats, device, precision, queue))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"{kind} {path} {length}: child failed with exit code {child.exitcode}")
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1440, 8640, 43200])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paths", nargs="+", default=["padded", "packed"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=sorted(_AUTOCAST), default="fp32", help="autocast dtype")
    args = parser.parse_args()
    print(
        f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"batch {args.batch}, precision {args.precision}"
    )
    header = ("length", "path", "bare steps/s", "ours steps/s", "ratio", "bare MB", "ours MB")
    widths = (7, 7, 13, 13, 6, 9, 9)
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for length in args.lengths:
        for path in args.paths:
            common = (path, length, args.batch, args.repeats, args.device, args.precision)
            bare_rate, bare_mb = measure("bare", *common)
            ours_rate, ours_mb = measure("ours", *common)
            print(
                f"{length:>7} {path:>7} {bare_rate:>13,.0f} {ours_rate:>13,.0f} {ours_rate / bare_rate:>6.2f} "
                f"{bare_mb:>9,.0f} {ours_mb:>9,.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
