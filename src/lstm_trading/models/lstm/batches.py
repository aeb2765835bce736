"""Batches cut on demand from the scaled feature matrix, and a length-bucketed, seeded batch sampler.

Windows stay index ranges until a batch is built: only the batch itself is copied (right-padded).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lstm_trading.samples.scalers import TargetScaler
from lstm_trading.samples.targets import Samples


@dataclass(frozen=True)
class Batch:
    """A right-padded batch: `features` (B, T, F), `lengths` (B,), targets (B,) and which samples are trades."""

    features: torch.Tensor
    lengths: torch.Tensor
    label: torch.Tensor
    sl: torch.Tensor
    tp: torch.Tensor
    is_trade: torch.Tensor
    index: torch.Tensor  # positions in the Samples the batch was cut from (for error messages)

    def to(self, device: torch.device | str) -> Batch:
        """Lightning moves any object with `.to` onto the training device."""
        return Batch(
            features=self.features.to(device, non_blocking=True),
            lengths=self.lengths,  # stays on the CPU: pack_padded_sequence wants it there
            label=self.label.to(device),
            sl=self.sl.to(device),
            tp=self.tp.to(device),
            is_trade=self.is_trade.to(device),
            index=self.index,
        )

    def __len__(self) -> int:
        return int(self.lengths.shape[0])


def pad_windows(values: np.ndarray, ends: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Copy windows `[end - length, end)` of `values` (N, F) into one right-padded (B, T, F) array."""
    width = int(lengths.max()) if len(lengths) else 0
    out = np.zeros((len(ends), width, values.shape[1]), dtype=np.float32)
    for row, (end, length) in enumerate(zip(ends, lengths, strict=True)):
        out[row, :length] = values[end - length : end]
    return out


def window_chunks(values: np.ndarray, ends: np.ndarray, lengths: np.ndarray, chunk_len: int) -> Iterator[np.ndarray]:
    """`pad_windows(values, ends, lengths)` cut along time into (B, C, F) pieces, each copied only when asked for.

    Laid end to end the pieces are the right-padded batch (padding repeats each window's last row instead of
    zeros: it lies after the sample's own last step, so it never reaches an output). A 90-day batch of 64
    windows is 431 MB padded; a 4,096-step piece of it is 14 MB.
    """
    ends = np.asarray(ends, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    width = int(lengths.max()) if len(lengths) else 0
    first, last = (ends - lengths)[:, None], (ends - 1)[:, None]  # (B, 1) rows of each window
    for offset in range(0, width, chunk_len):
        steps = np.arange(offset, min(offset + chunk_len, width))  # (C,)
        yield values[np.minimum(first + steps, last)]  # (B, C, F)


class SampleWindows(Dataset[int]):
    """Samples over a scaled feature matrix; items are positions, `collate` builds the batch."""

    def __init__(self, scaled: np.ndarray, samples: Samples, target_scaler: TargetScaler) -> None:
        self.scaled = scaled
        self.samples = samples
        sl, tp = target_scaler.transform(samples.stop_loss_pct, samples.take_profit_pct)
        self.sl = np.nan_to_num(sl, nan=0.0).astype(np.float32)  # Invalid trades have no SL: masked in the loss
        self.tp = np.nan_to_num(tp, nan=0.0).astype(np.float32)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, position: int) -> int:
        return position

    def collate(self, positions: Sequence[int]) -> Batch:
        index = np.asarray(positions, dtype=np.int64)
        ends, lengths = self.samples.end[index], self.samples.length[index]
        features = pad_windows(self.scaled, ends, lengths)
        label = self.samples.label[index]
        return Batch(
            features=torch.from_numpy(features),
            lengths=torch.from_numpy(lengths.astype(np.int64)),
            label=torch.from_numpy(label.astype(np.int64)),
            sl=torch.from_numpy(self.sl[index]),
            tp=torch.from_numpy(self.tp[index]),
            is_trade=torch.from_numpy(label != 2),
            index=torch.from_numpy(index),
        )


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar window lengths (little padding), shuffled by a generator seeded with (seed, epoch).

    Global batches hold `batch_size * world_size` samples; rank `r` takes every `world_size`-th of them, so a
    run on N processes with batch b sees exactly the batches of one process with batch N*b. Seeding by epoch
    makes a resumed run repeat an uninterrupted one.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])
        tie_break = rng.random(n) if self.shuffle else np.arange(n)
        order = np.lexsort((tie_break, self.lengths))
        size = self.batch_size * self.world_size
        batches = [order[i : i + size] for i in range(0, n, size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            mine = batch[self.rank :: self.world_size]
            if len(mine):
                yield mine.tolist()

    def __len__(self) -> int:
        return len(self.global_batches())


def padding_share(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Padded sample-steps as a share of all sample-steps in the given batches."""
    total = sum(int(lengths[b].max()) * len(b) for b in batches if len(b))
    real = sum(int(lengths[b].sum()) for b in batches)
    return 0.0 if total == 0 else 1.0 - real / total
