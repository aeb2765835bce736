"""Batched, parallel inference: every worker count gives the same predictions as one process and as the model."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from lstm_trading.core.errors import LstmTradingError
from lstm_trading.models.lstm.batches import pad_windows, window_chunks
from lstm_trading.models.lstm.inference import choose_workers, plan_batches, run_windows, share_batches
from lstm_trading.models.lstm.model import LSTMModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def windows() -> tuple[LSTMModel, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    scaled = rng.standard_normal((400, 13)).astype(np.float32)
    lengths = rng.integers(1, 120, size=23)
    ends = rng.integers(lengths, 401)
    torch.manual_seed(0)
    return LSTMModel(hidden_size=16).eval(), scaled, ends, lengths


def test_workers_give_the_same_predictions_as_one_process(windows) -> None:  # type: ignore[no-untyped-def]
    model, scaled, ends, lengths = windows
    one = run_windows(model, scaled, ends, lengths, batch_size=4, workers=1)
    three = run_windows(model, scaled, ends, lengths, batch_size=4, workers=3, chunk_len=50)
    for a, b in zip(one, three, strict=True):
        np.testing.assert_array_equal(b, a)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="the platform has no CPU affinity to set")
def test_each_worker_is_kept_on_a_core_of_its_own(windows, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """One-thread workers pinned one to a core ran faster side by side than moved around by the scheduler; the
    cores are those this process may use, and the predictions do not change."""
    model, scaled, ends, lengths = windows
    usable = sorted(os.sched_getaffinity(0))
    real = os.sched_setaffinity
    pinned: list[tuple[int, set[int]]] = []

    def record(pid: int, cores: set[int]) -> None:
        pinned.append((pid, set(cores)))
        real(pid, cores)

    monkeypatch.setattr(os, "sched_setaffinity", record)
    both = run_windows(model, scaled, ends, lengths, batch_size=4, workers=2)
    assert len(pinned) == 2 and len({pid for pid, _ in pinned}) == 2
    assert [cores for _, cores in pinned] == [{usable[0]}, {usable[1 % len(usable)]}]
    for a, b in zip(run_windows(model, scaled, ends, lengths, batch_size=4, workers=1), both, strict=True):
        np.testing.assert_array_equal(b, a)


def test_predictions_equal_the_model_on_each_window(windows) -> None:  # type: ignore[no-untyped-def]
    model, scaled, ends, lengths = windows
    probabilities, sl, tp = run_windows(model, scaled, ends, lengths, batch_size=5, workers=2, chunk_len=7)
    with torch.no_grad():
        for row in (0, 7, 22):
            alone = model(torch.from_numpy(pad_windows(scaled, ends[row : row + 1], lengths[row : row + 1])),
                          torch.tensor([int(lengths[row])]))  # fmt: skip
            np.testing.assert_allclose(probabilities[row], torch.softmax(alone.logits, 1)[0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose([sl[row], tp[row]], [alone.sl[0], alone.tp[0]], rtol=1e-5, atol=1e-6)


def test_progress_counts_every_window(windows) -> None:  # type: ignore[no-untyped-def]
    model, scaled, ends, lengths = windows
    seen: list[float] = []
    run_windows(model, scaled, ends, lengths, batch_size=6, workers=2, progress=lambda done, n: seen.append(done))
    assert seen == sorted(seen) and seen[-1] == len(ends) and len(seen) == 4


def test_no_windows_give_empty_outputs(windows) -> None:  # type: ignore[no-untyped-def]
    model, scaled, _, _ = windows
    probabilities, sl, tp = run_windows(model, scaled, np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert probabilities.shape == (0, 3) and sl.shape == tp.shape == (0,)


def test_a_failing_worker_is_an_error_not_a_hang(windows) -> None:  # type: ignore[no-untyped-def]
    model, scaled, ends, lengths = windows
    with pytest.raises(LstmTradingError, match="an inference worker failed"):
        run_windows(model, scaled[:100], ends, lengths, batch_size=4, workers=2)


def test_window_chunks_laid_end_to_end_are_the_padded_batch() -> None:
    values = np.arange(60, dtype=np.float32).reshape(20, 3)
    ends, lengths = np.array([20, 9, 5]), np.array([7, 9, 1])
    padded = pad_windows(values, ends, lengths)
    joined = np.concatenate(list(window_chunks(values, ends, lengths, 3)), axis=1)
    assert joined.shape == padded.shape
    for row, length in enumerate(lengths):
        np.testing.assert_array_equal(joined[row, :length], padded[row, :length])


def test_batches_do_not_depend_on_the_worker_count_and_shares_balance_work() -> None:
    lengths = np.array([5, 100, 7, 90, 6, 95, 8, 99])
    batches = plan_batches(lengths, 2)
    assert [sorted(lengths[b].tolist()) for b in batches] == [[5, 6], [7, 8], [90, 95], [99, 100]]
    shares = share_batches(batches, lengths, 2)
    assert sorted(n for share in shares for n in share) == [0, 1, 2, 3]
    assert shares == [[3, 0], [2, 1]]  # padded sample-steps 200 + 12 against 190 + 16


def test_workers_are_used_only_when_the_work_is_worth_them() -> None:
    cpu = torch.device("cpu")
    assert choose_workers(None, np.full(10, 100), 5, cpu) == 1
    assert choose_workers(4, np.full(10, 100), 3, cpu) == 3
    assert choose_workers(4, np.full(10, 100), 3, torch.device("cuda")) == 1
