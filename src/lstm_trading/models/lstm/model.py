"""`LSTMModel`: one LSTM over a window of feature rows, three heads (class logits, stop loss, take profit).

Each sample's representation is the hidden state at *its own* last step, never at a padded position, so a
right-padded batch gives the same outputs as each sample alone. Two equivalent paths compute it:
`packed` (`pack_padded_sequence`, `h_n`) and `padded` (the plain kernel over the padded batch, then the output
at step `length - 1`). A unidirectional LSTM never looks right, so padding after a sample's end cannot change
its outputs up to that end; on CPU the padded path runs about 2.3x faster (oneDNN has no packed kernel).

Long windows (the default is 129,600 steps) run in chunks of `chunk_len` steps (`encode_chunks`): the state
(h, c) is carried from one chunk into the next, so the result is the same recurrence, and under autograd each
chunk but the last is checkpointed: only its input state is kept, and its activations are recomputed in the
backward pass. Activation memory then grows with the chunk length instead of the window length (a forward and
backward keeps about 5 KB per sample-step: 21 GB for a batch of 32 full windows, 21 MB per 128-step chunk),
for the price of one more forward pass over all chunks but the last, run with oneDNN's fast inference kernel.
The gradients are exact (tests/test_chunked.py). On CPU short chunks are also *faster* than the plain step
(1.4x to 1.9x, benchmarks/README.md): a chunk of about 4,096 sample-steps keeps its activations in the CPU
caches, while the plain kernel streams gigabytes through memory. `chunk_len="auto"` picks that size from the
machine's caches (`training_sample_steps`, `core.machine`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from lstm_trading.core.config import ModelConfig
from lstm_trading.core.machine import chunk_sample_steps

CLAMP = 10.0  # the seed's bound on the SL / TP heads
AUTO = "auto"
CPU_CHUNK_SAMPLE_STEPS = 4_096  # training: the most B x C per CPU chunk (fastest where caches are large, B 16-64)
TRAIN_BYTES_PER_SAMPLE_STEP = 5_200  # activations a forward and backward keeps per sample-step (fp32, hidden 80)
CUDA_CHUNK_STEPS = 4_096  # a 4,096-step chunk of 32 windows keeps 0.7 GB of activations in fp32


def training_sample_steps() -> int:
    """B x C per training chunk on this CPU: what fits a core's share of the caches (`core.machine`), at most
    `CPU_CHUNK_SAMPLE_STEPS` (4,096 with 2 MB or 512 KB of L2 + 16 MB of L3 a core; 512 with 2 MB and no L3)."""
    return chunk_sample_steps(TRAIN_BYTES_PER_SAMPLE_STEP, most=CPU_CHUNK_SAMPLE_STEPS)


def auto_chunk_len(batch: int, device: torch.device, *, sample_steps: int | None = None) -> int:
    """Chunk length for `chunk_len="auto"`: about `sample_steps / batch` steps on CPU (cache-sized chunks,
    at least 32 steps; `None`: `training_sample_steps()`), `CUDA_CHUNK_STEPS` on GPUs (bounded memory; cuDNN
    runs long sequences well)."""
    if device.type == "cuda":
        return CUDA_CHUNK_STEPS
    if sample_steps is None:
        sample_steps = training_sample_steps()
    return max(32, sample_steps // max(batch, 1))


class ModelOutput(NamedTuple):
    """Raw outputs: `logits` (B, 3), `sl` and `tp` (B,) in the SL/TP scaler's units, clamped to [-10, 10]."""

    logits: torch.Tensor
    sl: torch.Tensor
    tp: torch.Tensor


def _ends_in(last: torch.Tensor, offset: int, width: int) -> torch.Tensor:
    """(B, 1) whether each sample's last step lies in the chunk of `width` steps from `offset`."""
    return ((last >= offset) & (last < offset + width)).unsqueeze(1)


class _Checkpointed(torch.autograd.Function):
    """Chunks of the recurrence whose activations are recomputed in the backward pass (exact BPTT).

    Forward runs without autograd (oneDNN's inference kernel, about 2.5x faster on CPU than its training
    forward) and keeps only the state at each chunk boundary. Backward walks the chunks in reverse: it reruns
    one chunk from its saved state under autograd, and `torch.autograd.grad` gives the gradients of its state
    and of the LSTM weights, which are summed and returned. Unlike `torch.utils.checkpoint`'s reentrant mode it
    never calls `backward` inside `backward`, so each weight's gradient is accumulated once (DDP requires it),
    and unlike its non-reentrant mode the first pass needs no activations at all.
    """

    @staticmethod
    def forward(
        ctx: Any,
        model: LSTMModel,
        chunks: list[torch.Tensor],
        last: torch.Tensor,
        h: torch.Tensor,
        c: torch.Tensor,
        *weights: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device = chunks[0].device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.model, ctx.chunks, ctx.last = model, chunks, last
        ctx.states = [(h, c)]
        hidden = torch.zeros(h.shape[1], h.shape[2], device=h.device, dtype=h.dtype)
        offset = 0
        for chunk in chunks:
            picked, h, c = model._chunk(chunk, h, c, last - offset)
            hidden = torch.where(_ends_in(last, offset, chunk.shape[1]), picked.to(hidden.dtype), hidden)
            offset += chunk.shape[1]
            ctx.states.append((h, c))
        return hidden, h, c

    @staticmethod
    def backward(
        ctx: Any, grad_hidden: torch.Tensor | None, grad_h: torch.Tensor | None, grad_c: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        model, chunks, last = ctx.model, ctx.chunks, ctx.last
        weights = tuple(model.lstm.parameters())
        totals: list[torch.Tensor | None] = [None] * len(weights)
        device, autocast, dtype = ctx.autocast
        offsets = [0]
        for chunk in chunks:
            offsets.append(offsets[-1] + chunk.shape[1])
        for k in reversed(range(len(chunks))):
            h0, c0 = (state.detach().requires_grad_() for state in ctx.states[k])
            with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=autocast):
                picked, h1, c1 = model._chunk(chunks[k], h0, c0, last - offsets[k])
            outputs, grads = [], []
            for output, grad in ((h1, grad_h), (c1, grad_c)):
                if grad is not None:
                    outputs.append(output)
                    grads.append(grad)
            if grad_hidden is not None:
                outputs.append(picked)
                grads.append((grad_hidden * _ends_in(last, offsets[k], chunks[k].shape[1])).to(picked.dtype))
            if not outputs:  # nothing downstream depends on this part of the recurrence
                return (None, None, None, None, None, *totals)
            found = torch.autograd.grad(outputs, (h0, c0, *weights), grads, allow_unused=True)
            grad_h, grad_c = found[0], found[1]
            for i, grad in enumerate(found[2:]):
                total = totals[i]
                if grad is not None:
                    totals[i] = grad if total is None else total + grad
        ctx.states = ctx.chunks = None  # free the saved states once used
        return (None, None, None, grad_h, grad_c, *totals)


class LSTMModel(nn.Module):
    """LSTM(input_size -> hidden_size, num_layers, batch_first) with heads `fc_class`, `fc_sl`, `fc_tp`.

    `path` picks the kernel for unchunked batches (`auto`: packed on CUDA, padded elsewhere); `chunk_len > 0`
    runs batches longer than that in chunks (the padded kernel, checkpointed under autograd), `"auto"` picks
    the length per batch (`auto_chunk_len`), 0 never chunks. Neither changes the weights or the outputs, so
    neither is part of `ModelConfig` or of a saved bundle.
    """

    def __init__(
        self,
        input_size: int = 13,
        hidden_size: int = 80,
        num_layers: int = 1,
        output_size: int = 3,
        *,
        path: str = "auto",
        chunk_len: int | str = 0,
    ) -> None:
        super().__init__()
        if path not in ("auto", "packed", "padded"):
            raise ValueError(f"path must be auto, packed or padded, got {path!r}")
        if chunk_len != AUTO and not (isinstance(chunk_len, int) and chunk_len >= 0):
            raise ValueError(f"chunk_len must be 'auto', 0 (off) or a number of steps, got {chunk_len!r}")
        self.config = ModelConfig(input_size, hidden_size, num_layers, output_size)
        self.path = path
        self.chunk_len = chunk_len
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True, dropout=0.0)
        self.fc_class = nn.Linear(hidden_size, output_size)
        self.fc_sl = nn.Linear(hidden_size, 1)
        self.fc_tp = nn.Linear(hidden_size, 1)

    @classmethod
    def from_config(cls, config: ModelConfig, *, path: str = "auto", chunk_len: int | str = 0) -> LSTMModel:
        return cls(
            config.input_size,
            config.hidden_size,
            config.num_layers,
            config.output_size,
            path=path,
            chunk_len=chunk_len,
        )

    def _use_packed(self, device: torch.device) -> bool:
        return self.path == "packed" or (self.path == "auto" and device.type == "cuda")

    def chunk_steps(self, batch: int, device: torch.device) -> int:
        """The chunk length a batch of `batch` windows runs with (0: unchunked)."""
        return auto_chunk_len(batch, device) if self.chunk_len == AUTO else int(self.chunk_len)

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Hidden state of the last layer at each sample's own last step: (B, H)."""
        # features: (B, T, F) right-padded; lengths: (B,) int64, 1 <= length <= T
        chunk = self.chunk_steps(features.shape[0], features.device)
        if 0 < chunk < features.shape[1]:
            return self.encode_chunks(features.split(chunk, dim=1), lengths)
        if self._use_packed(features.device):
            packed = pack_padded_sequence(features, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (h_n, _) = self.lstm(packed)  # h_n: (layers, B, H), in the input order
            return h_n[-1]
        output, _ = self.lstm(features)  # (B, T, H)
        last = (lengths.to(features.device) - 1).view(-1, 1, 1).expand(-1, 1, output.shape[-1])
        return output.gather(1, last).squeeze(1)  # (B, H)

    def encode_chunks(self, chunks: Iterable[torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        """`encode` over a right-padded batch given as consecutive time chunks, in memory bounded by a chunk.

        `chunks` are (B, C_k, F) pieces that, laid end to end along time, form the batch (so callers can cut
        them lazily from a larger array). (h, c) is carried across chunk boundaries; a sample's hidden state is
        taken at its own last step, whichever chunk it falls in. Under autograd, every chunk but the last runs
        in `_Checkpointed` (forward without keeping activations, recomputed chunk by chunk in the backward
        pass); the last one runs under plain autograd, since its activations are the first the backward needs.
        """
        iterator = iter(chunks)
        first = next(iterator, None)
        if first is None:
            raise ValueError("encode_chunks needs at least one chunk")
        device, dtype = first.device, first.dtype
        last = lengths.to(device) - 1  # (B,) index of each sample's last step
        batch, layers, size = first.shape[0], self.lstm.num_layers, self.lstm.hidden_size
        h = torch.zeros(layers, batch, size, device=device, dtype=dtype)
        c = torch.zeros_like(h)
        hidden = torch.zeros(batch, size, device=device, dtype=dtype)
        offset = 0
        if torch.is_grad_enabled():
            pieces = [first, *iterator]
            if len(pieces) > 1 and not any(piece.requires_grad for piece in pieces):
                head = pieces[:-1]
                hidden, h, c = _Checkpointed.apply(self, head, last, h, c, *self.lstm.parameters())
                offset = sum(piece.shape[1] for piece in head)
                pieces = pieces[-1:]
            iterator = iter(pieces)
        else:
            iterator = itertools.chain([first], iterator)
        for chunk in iterator:
            picked, h, c = self._chunk(chunk, h, c, last - offset)
            hidden = torch.where(_ends_in(last, offset, chunk.shape[1]), picked.to(hidden.dtype), hidden)
            offset += chunk.shape[1]
        return hidden

    def _chunk(
        self, chunk: torch.Tensor, h: torch.Tensor, c: torch.Tensor, local: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One chunk from state (h, c): the output at step `local` of each row (clamped into the chunk: rows
        that end elsewhere are discarded by the caller), and the state after the chunk."""
        output, (h_n, c_n) = self.lstm(chunk, (h.to(chunk.dtype), c.to(chunk.dtype)))  # output: (B, C, H)
        index = local.clamp(0, chunk.shape[1] - 1).view(-1, 1, 1).expand(-1, 1, output.shape[-1])
        return output.gather(1, index).squeeze(1), h_n, c_n  # (B, H), (layers, B, H) twice

    def heads(self, hidden: torch.Tensor) -> ModelOutput:
        # hidden: (B, H)
        logits = self.fc_class(hidden)  # (B, 3)
        sl = torch.clamp(self.fc_sl(hidden), -CLAMP, CLAMP).squeeze(-1)  # (B,)
        tp = torch.clamp(self.fc_tp(hidden), -CLAMP, CLAMP).squeeze(-1)  # (B,)
        return ModelOutput(logits, sl, tp)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        """features (B, T, F) right-padded, lengths (B,) -> logits (B, 3), sl (B,), tp (B,)."""
        return self.heads(self.encode(features, lengths))
