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
backward keeps about 5 KB per sample-step: 21 GB for a batch of 32 full windows, about 0.7 GB per 4,096-step
chunk), for the price of one more forward pass over all chunks but the last. The gradients are exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.checkpoint import checkpoint

from lstm_trading.config import ModelConfig

CLAMP = 10.0  # the seed's bound on the SL / TP heads


class ModelOutput(NamedTuple):
    """Raw outputs: `logits` (B, 3), `sl` and `tp` (B,) in the SL/TP scaler's units, clamped to [-10, 10]."""

    logits: torch.Tensor
    sl: torch.Tensor
    tp: torch.Tensor


class LSTMModel(nn.Module):
    """LSTM(input_size -> hidden_size, num_layers, batch_first) with heads `fc_class`, `fc_sl`, `fc_tp`.

    `path` picks the kernel for unchunked batches (`auto`: packed on CUDA, padded elsewhere); `chunk_len > 0`
    runs batches longer than that in chunks (the padded kernel, checkpointed under autograd). Neither changes
    the weights or the outputs, so neither is part of `ModelConfig` or of a saved bundle.
    """

    def __init__(
        self,
        input_size: int = 13,
        hidden_size: int = 80,
        num_layers: int = 1,
        output_size: int = 3,
        *,
        path: str = "auto",
        chunk_len: int = 0,
    ) -> None:
        super().__init__()
        if path not in ("auto", "packed", "padded"):
            raise ValueError(f"path must be auto, packed or padded, got {path!r}")
        if chunk_len < 0:
            raise ValueError(f"chunk_len must be 0 (off) or positive, got {chunk_len}")
        self.config = ModelConfig(input_size, hidden_size, num_layers, output_size)
        self.path = path
        self.chunk_len = chunk_len
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True, dropout=0.0)
        self.fc_class = nn.Linear(hidden_size, output_size)
        self.fc_sl = nn.Linear(hidden_size, 1)
        self.fc_tp = nn.Linear(hidden_size, 1)

    @classmethod
    def from_config(cls, config: ModelConfig, *, path: str = "auto", chunk_len: int = 0) -> LSTMModel:
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

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Hidden state of the last layer at each sample's own last step: (B, H)."""
        # features: (B, T, F) right-padded; lengths: (B,) int64, 1 <= length <= T
        if 0 < self.chunk_len < features.shape[1]:
            return self.encode_chunks(features.split(self.chunk_len, dim=1), lengths)
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
        taken at its own last step, whichever chunk it falls in. Under autograd every chunk but the last is
        checkpointed (the last one's activations are the first the backward pass needs, so recomputing them
        would gain nothing).
        """
        iterator = iter(chunks)
        chunk = next(iterator, None)
        if chunk is None:
            raise ValueError("encode_chunks needs at least one chunk")
        device = chunk.device
        last = lengths.to(device) - 1  # (B,) index of each sample's last step
        batch, layers, size = chunk.shape[0], self.lstm.num_layers, self.lstm.hidden_size
        h = torch.zeros(layers, batch, size, device=device, dtype=chunk.dtype)
        c = torch.zeros_like(h)
        hidden = torch.zeros(batch, size, device=device, dtype=chunk.dtype)
        remember = torch.is_grad_enabled()
        offset = 0
        while chunk is not None:
            following = next(iterator, None)
            width = chunk.shape[1]
            local = (last - offset).clamp(0, width - 1)  # (B,) clamped: rows that end elsewhere are discarded
            if remember and following is not None:
                picked, h, c = checkpoint(
                    self._chunk, chunk, h, c, local, use_reentrant=False, preserve_rng_state=False
                )
            else:
                picked, h, c = self._chunk(chunk, h, c, local)
            ends_here = ((last >= offset) & (last < offset + width)).unsqueeze(1)  # (B, 1)
            hidden = torch.where(ends_here, picked.to(hidden.dtype), hidden)
            offset += width
            chunk = following
        return hidden

    def _chunk(
        self, chunk: torch.Tensor, h: torch.Tensor, c: torch.Tensor, local: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One chunk from state (h, c): the output at step `local` of each row, and the state after the chunk."""
        output, (h_n, c_n) = self.lstm(chunk, (h.to(chunk.dtype), c.to(chunk.dtype)))  # output: (B, C, H)
        index = local.view(-1, 1, 1).expand(-1, 1, output.shape[-1])
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
