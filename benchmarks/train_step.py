"""Training-step throughput and peak memory: our LSTMTrainingModule step, plain and chunked, against a bare nn.LSTM.

Every measurement runs in a child process of its own, so each peak memory is its own: sample-steps per second
(best of `--repeats` steps after one warm-up step, and best of `--rounds` children that alternate the variants:
robust to bursts of other load on a shared machine) and the peak
resident memory above the child's memory just before the step (the batch is already allocated then; on CUDA,
the peak allocated GPU memory above it). Ratios are against the bare nn.LSTM on the same kernel (padded or
packed), or against our own plain step where the bare one does not fit in memory.

Targets (issue 6): chunked / plain >= 0.75 at 16,384 steps; chunked peak <= 2,048 MB at 129,600 steps (batch 32).
`--chunk-lens auto` is `train.chunk_len = "auto"`, the default (shown with the length it picks, from the caches a
core counts on, printed in the header: `training_sample_steps`); `--sample-steps 1024 4096 ...` adds chunks of
B x C sample-steps (a sweep). `LSTM_TRADING_L2_BYTES` / `LSTM_TRADING_L3_BYTES` (`core.machine`) imitate a
machine with other caches.

    PYTHONPATH=src .venv/bin/python benchmarks/train_step.py [--lengths 8640 16384 32768 129600] [--batch 32]
        [--chunk-lens auto 4096] [--sample-steps 2048 4096 8192] [--repeats 3] [--device cpu]
        [--precision fp32|fp16|bf16] [--paths padded]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import torch

from _common import chunk_setting, load_average, run_in_child
from lstm_trading.core.machine import cpu_caches
from lstm_trading.models.lstm.batches import Batch
from lstm_trading.models.lstm.model import auto_chunk_len, training_sample_steps
from lstm_trading.models.lstm.training import LSTMTrainingModule

BYTES_PER_SAMPLE_STEP = 5_200  # activations a plain forward and backward keeps (measured, fp32, hidden 80)
_AUTOCAST = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def available_mb() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def _measure(
    kind: str,
    path: str,
    chunk: int | str,
    length: int,
    batch: int,
    repeats: int,
    device: str,
    precision: str,
    threads: int,
    queue: mp.Queue,
) -> None:
    if threads:
        torch.set_num_threads(threads)
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
            train={"batch_size": batch, "chunk_len": chunk},
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

    def timed() -> float:
        dtype = _AUTOCAST[precision]
        started = time.perf_counter()
        with torch.autocast(device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    before = _rss_mb()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before_gpu = torch.cuda.memory_allocated()
    timed()  # warm-up: oneDNN / cuDNN pick their kernels
    seconds = min(timed() for _ in range(repeats))
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - before_gpu) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    queue.put((batch * length / seconds, peak))


def measure(
    kind: str,
    path: str,
    chunk: int | str,
    length: int,
    batch: int,
    repeats: int,
    device: str,
    precision: str,
    threads: int,
) -> tuple[float, float]:
    """(sample-steps per second, peak MB above the memory before the step) of one configuration, in a child."""
    args = (kind, path, chunk, length, batch, repeats, device, precision, threads)
    return run_in_child(_measure, args, f"{kind} {path} chunk {chunk} at {length}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[8640, 16384, 32768, 129600])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per child (after a warm-up step)")
    parser.add_argument("--rounds", type=int, default=2, help="children per variant, alternating; the best counts")
    parser.add_argument(
        "--chunk-lens", type=chunk_setting, nargs="+", default=["auto"], help="train.chunk_len values: auto or steps"
    )
    parser.add_argument(
        "--sample-steps", type=int, nargs="*", default=[], help="also time chunks of these B x C (a sweep)"
    )
    parser.add_argument("--paths", nargs="+", default=["padded"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads in each child (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=sorted(_AUTOCAST), default="fp32", help="autocast dtype")
    parser.add_argument(
        "--plain-limit-mb",
        type=float,
        default=None,
        help="skip plain steps estimated above this (default: 70%% of free)",
    )
    args = parser.parse_args()
    limit = args.plain_limit_mb
    if limit is None:
        free = available_mb() if args.device == "cpu" else torch.cuda.mem_get_info()[0] / 2**20
        limit = 0.7 * free
    load = load_average()
    print(
        f"device {args.device}, torch {torch.__version__}, threads {args.threads or torch.get_num_threads()}, "
        f"batch {args.batch}, "
        f"precision {args.precision}, best of {args.repeats} steps x {args.rounds} rounds, load {load:.2f}; "
        f"plain steps above {limit:,.0f} MB skipped"
    )
    auto = auto_chunk_len(args.batch, torch.device(args.device))
    print(
        f"{cpu_caches().describe()}: auto chunks {training_sample_steps():,} sample-steps on CPU; "
        f"{auto} steps at batch {args.batch} on {args.device}"
    )
    header = ("length", "path", "variant", "steps/s", "/bare", "/plain", "peak MB")
    widths = (7, 7, 11, 11, 6, 6, 9)
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)), flush=True)
    for length in args.lengths:
        fits = BYTES_PER_SAMPLE_STEP * args.batch * length / 2**20 < limit
        for path in args.paths:
            common = (length, args.batch, args.repeats, args.device, args.precision, args.threads)
            variants = [("bare plain", "bare", 0), ("ours plain", "ours", 0)] if fits else []
            for chunk in args.chunk_lens:
                steps = auto_chunk_len(args.batch, torch.device(args.device)) if chunk == "auto" else chunk
                if 0 < steps < length:
                    variants.append((f"ours {chunk}" if chunk != "auto" else f"auto {steps}", "ours", chunk))
            for sample_steps in args.sample_steps:
                steps = auto_chunk_len(args.batch, torch.device("cpu"), sample_steps=sample_steps)
                if 0 < steps < length:
                    variants.append((f"BxC {sample_steps}", "ours", steps))
            rows: dict[str, tuple[float, float]] = {}
            for _ in range(args.rounds):  # rounds alternate the variants, so a burst of other load hits all alike
                for name, kind, chunk in variants:
                    rate, peak = measure(kind, path, chunk, *common)
                    best_rate, _ = rows.get(name, (0.0, 0.0))
                    rows[name] = (max(rate, best_rate), peak)
            for name, (rate, peak) in rows.items():
                ratios = [
                    f"{rate / rows[reference][0]:.2f}" if reference in rows and reference != name else "-"
                    for reference in ("bare plain", "ours plain")
                ]
                print(
                    f"{length:>7} {path:>7} {name:>11} {rate:>11,.0f} {ratios[0]:>6} {ratios[1]:>6} {peak:>9,.0f}",
                    flush=True,
                )
            if not fits:
                print(f"{length:>7} {path:>7} {'plain':>11}  does not fit (about "
                      f"{BYTES_PER_SAMPLE_STEP * args.batch * length / 2**30:.1f} GB of activations)")  # fmt: skip


if __name__ == "__main__":
    main()
