"""Batched, parallel inference over many windows of one feature matrix (backtests, evaluation, prediction).

Windows are sorted by length and cut into batches (little padding); each batch runs through the LSTM in time
chunks cut straight from the feature matrix (`batches.window_chunks`), so neither a padded 90-day batch nor its
(B, T, H) output ever exists. On CPU the batches are shared among worker processes with one torch thread
each: oneDNN's LSTM forward runs faster on one thread than on two, and two one-thread processes together do
about twice the work of one process with torch's default threads. Batches are the same whatever the number of
workers, and a window's output depends only on its own rows, so every worker count gives the same predictions.
Each worker is kept on a core of its own (`core.machine.pin_to_core`): moved around by the scheduler, two workers
on 2 cores did 5 to 10 % less work without AVX-512.

Workers are forked on Linux (they share the matrix and the model with the parent, nothing is copied) and
spawned elsewhere (the matrix and the model are pickled to them).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from lstm_trading.core.errors import LstmTradingError
from lstm_trading.core.machine import chunk_sample_steps, pin_to_core, usable_cores
from lstm_trading.models.base import Progress
from lstm_trading.models.lstm.batches import window_chunks
from lstm_trading.models.lstm.model import auto_chunk_len

if TYPE_CHECKING:
    from lstm_trading.models.lstm.model import LSTMModel


INFERENCE_SAMPLE_STEPS = 8_192  # the most B x C per chunk: fastest on one CPU thread where caches are large (1.6 M
# steps/s, 1.4x a whole-window forward: a chunk's gates and outputs stay in the caches); on CUDA: CUDA_CHUNK_STEPS
INFERENCE_BYTES_PER_SAMPLE_STEP = 1_650  # a forward's input row (13 floats), gates (4 x 80) and output (80), fp32
MIN_STEPS_PER_WORKER = 200_000  # sample-steps (0.2 s of forward) a forked worker must have to pay for itself


def cpu_count() -> int:
    """CPU cores this process may run on (the affinity mask where the platform has one): one worker each."""
    return usable_cores()


def inference_sample_steps() -> int:
    """B x C per inference chunk on this CPU: what fits a core's share of the caches (`core.machine`), at most
    `INFERENCE_SAMPLE_STEPS` (8,192 with 2 MB or 512 KB of L2 + 16 MB of L3 a core; 1,024 with 2 MB and no L3)."""
    return chunk_sample_steps(INFERENCE_BYTES_PER_SAMPLE_STEP, most=INFERENCE_SAMPLE_STEPS)


def plan_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Positions of the windows in batches of `batch_size`, by length (the same for any number of workers)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def share_batches(batches: list[np.ndarray], lengths: np.ndarray, workers: int) -> list[list[int]]:
    """Batch numbers for each worker, balanced by padded sample-steps (longest batch first, to the least loaded)."""
    cost = [int(lengths[b].max()) * len(b) for b in batches]
    load = [0] * workers
    shares: list[list[int]] = [[] for _ in range(workers)]
    for number in sorted(range(len(batches)), key=lambda i: -cost[i]):
        least = load.index(min(load))
        shares[least].append(number)
        load[least] += cost[number]
    return [share for share in shares if share]


def choose_workers(workers: int | None, lengths: np.ndarray, batches: int, device: torch.device) -> int:
    """`None`: one per core, but no more than the work is worth; never more than there are batches; 1 off-CPU."""
    if device.type != "cpu" or batches <= 1:
        return 1
    if workers is None:
        worth = int(np.asarray(lengths, dtype=np.int64).sum()) // MIN_STEPS_PER_WORKER
        workers = max(1, min(cpu_count(), worth))
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return min(workers, batches)


def _forward_batch(
    model: LSTMModel, scaled: np.ndarray, ends: np.ndarray, lengths: np.ndarray, chunk_len: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    device = next(model.parameters()).device
    if chunk_len is None:
        chunk_len = auto_chunk_len(len(ends), device, sample_steps=inference_sample_steps())
    chunks = (torch.from_numpy(np.asarray(c)).to(device) for c in window_chunks(scaled, ends, lengths, chunk_len))
    output = model.heads(model.encode_chunks(chunks, torch.from_numpy(lengths.astype(np.int64))))
    probabilities = torch.softmax(output.logits.float(), dim=1).cpu().numpy()
    return probabilities, output.sl.float().cpu().numpy(), output.tp.float().cpu().numpy()


def _serve(
    model: LSTMModel,
    scaled: np.ndarray,
    ends: np.ndarray,
    lengths: np.ndarray,
    batches: list[tuple[int, np.ndarray]],
    chunk_len: int | None,
    connection: Connection,
) -> None:
    """A worker: its share of the batches on one thread, each result sent as soon as it is ready."""
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for number, chosen in batches:
                connection.send((number, *_forward_batch(model, scaled, ends[chosen], lengths[chosen], chunk_len)))
        connection.send(None)
    except BaseException as error:  # noqa: BLE001  (reported to the parent, which raises it there)
        connection.send(f"{type(error).__name__}: {error}")
    finally:
        connection.close()


def _context() -> Any:
    # fork shares the matrix and the model without copying; it is safe on Linux only (macOS frameworks are not).
    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


@torch.inference_mode()
def run_windows(
    model: LSTMModel,
    scaled: np.ndarray,
    ends: np.ndarray,
    lengths: np.ndarray,
    *,
    batch_size: int = 64,
    workers: int | None = None,
    chunk_len: int | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Softmax probabilities (n, 3) and raw SL/TP head outputs (n,) for windows `[end - length, end)` of `scaled`.

    `workers`: processes with one thread each (`None`: one per core when the work is worth it; 1: this process,
    torch's default threads). `chunk_len`: steps per time chunk (`None`: `inference_sample_steps()` per chunk
    on CPU, at most 8,192, `model.CUDA_CHUNK_STEPS` on CUDA). `progress(done, total)` is called after every batch.
    """
    if batch_size < 1 or (chunk_len is not None and chunk_len < 1):
        raise ValueError(f"batch_size and chunk_len must be positive, got {batch_size} and {chunk_len}")
    ends = np.asarray(ends, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(ends)
    probabilities = np.zeros((n, model.config.output_size), dtype=np.float64)
    sl, tp = np.zeros(n), np.zeros(n)
    if n == 0:
        return probabilities, sl, tp
    model.eval()
    batches = plan_batches(lengths, batch_size)
    count = choose_workers(workers, lengths, len(batches), next(model.parameters()).device)
    done = 0

    def store(number: int, p: np.ndarray, s: np.ndarray, t: np.ndarray) -> None:
        nonlocal done
        chosen = batches[number]
        probabilities[chosen], sl[chosen], tp[chosen] = p, s, t
        done += len(chosen)
        if progress is not None:
            progress(done, n)

    if count == 1:
        for number, chosen in enumerate(batches):
            store(number, *_forward_batch(model, scaled, ends[chosen], lengths[chosen], chunk_len))
        return probabilities, sl, tp
    context = _context()
    readers: dict[Connection, Any] = {}
    try:
        for worker, share in enumerate(share_batches(batches, lengths, count)):
            reader, writer = context.Pipe(duplex=False)
            work = [(number, batches[number]) for number in share]
            process = context.Process(
                target=_serve, args=(model, scaled, ends, lengths, work, chunk_len, writer), daemon=True
            )
            process.start()
            pin_to_core(process.pid, worker)  # a core each: faster than left to move between cores
            writer.close()  # the child holds the other end: EOF here means it is gone
            readers[reader] = process
        while readers:
            for ready in wait(list(readers)):
                reader = cast(Connection, ready)
                try:
                    message = reader.recv()
                except EOFError:
                    process = readers.pop(reader)
                    process.join()
                    reader.close()
                    raise LstmTradingError(
                        f"an inference worker stopped (exit code {process.exitcode}) before finishing its windows; "
                        "if memory ran out, use fewer --workers or a smaller --batch-size"
                    ) from None
                if message is None:
                    readers.pop(reader).join()
                    reader.close()
                elif isinstance(message, str):
                    raise LstmTradingError(f"an inference worker failed: {message}")
                else:
                    store(*message)
    finally:
        for reader, process in readers.items():
            process.terminate()
            process.join()
            reader.close()
    return probabilities, sl, tp
