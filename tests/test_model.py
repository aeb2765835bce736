"""LSTMModel: a padded or packed batch gives each sample's own output; weights round-trip; it can learn."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

from lstm_trading.core.timeutil import to_unix_seconds
from lstm_trading.models.lstm.model import CLAMP, LSTMModel, ModelOutput

LENGTHS = [7, 1, 12, 4]


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(LENGTHS), max(LENGTHS), 13, generator=generator)
    for row, length in enumerate(LENGTHS):
        features[row, length:] = 99.0  # padding that must never reach a sample's output
    return features, torch.tensor(LENGTHS)


@pytest.mark.parametrize("path", ["packed", "padded"])
def test_padded_batch_equals_each_sample_alone(path: str) -> None:
    torch.manual_seed(0)
    model = LSTMModel(path=path).eval()
    features, lengths = _batch()
    together = model(features, lengths)
    for row, length in enumerate(LENGTHS):
        alone = model(features[row : row + 1, :length], torch.tensor([length]))
        for part_together, part_alone in zip(together, alone, strict=True):
            torch.testing.assert_close(part_together[row], part_alone[0], rtol=1e-5, atol=1e-6)


def test_packed_and_padded_paths_agree() -> None:
    torch.manual_seed(1)
    packed = LSTMModel(path="packed").eval()
    padded = LSTMModel(path="padded").eval()
    padded.load_state_dict(packed.state_dict())
    features, lengths = _batch(3)
    for a, b in zip(packed(features, lengths), padded(features, lengths), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_sample_does_not_see_its_batch_neighbours() -> None:
    torch.manual_seed(2)
    model = LSTMModel().eval()
    features, lengths = _batch(4)
    before = model(features, lengths)
    changed = features.clone()
    changed[1:] = torch.randn_like(changed[1:]) * 5
    after = model(changed, lengths)
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a[0], b[0])


def test_output_is_named_and_shaped_and_clamped() -> None:
    model = LSTMModel(hidden_size=8).eval()
    with torch.no_grad():
        model.fc_sl.bias.fill_(1e3)
        model.fc_tp.bias.fill_(-1e3)
    output = model(*_batch())
    assert isinstance(output, ModelOutput)
    assert output.logits.shape == (4, 3) and output.sl.shape == (4,) and output.tp.shape == (4,)
    assert torch.all(output.sl == CLAMP) and torch.all(output.tp == -CLAMP)


def test_sizes_come_from_the_configuration() -> None:
    model = LSTMModel(input_size=5, hidden_size=16, num_layers=2)
    assert model.lstm.hidden_size == 16 and model.lstm.num_layers == 2 and model.lstm.input_size == 5
    assert model.fc_class.out_features == 3


def test_state_dict_round_trips() -> None:
    torch.manual_seed(5)
    model = LSTMModel().eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = LSTMModel().eval()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    features, lengths = _batch()
    for a, b in zip(model(features, lengths), restored(features, lengths), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fits_64_real_windows(bybit_csv) -> None:  # type: ignore[no-untyped-def]
    """Capacity: 64 windows of 360 minutes cut from real candles, standardised, fitted well below ln 3."""
    from lstm_trading.features.compute import compute_features
    from lstm_trading.models.lstm.training import flush_denormals
    from lstm_trading.samples.scalers import FeatureScaler

    raw = pd.read_csv(bybit_csv)
    raw["timestamp"] = to_unix_seconds(raw["timestamp"])
    features = compute_features(raw)
    values = features.iloc[:, :13].to_numpy(dtype=np.float32)
    rng = np.random.default_rng(0)
    ends = rng.choice(np.arange(360, len(values)), size=64, replace=False)
    windows = np.stack([values[e - 360 : e] for e in ends])
    scaler = FeatureScaler.fit(values[: ends.max()], "standard")
    x = torch.from_numpy(scaler.transform(windows.reshape(-1, 13)).reshape(64, 360, 13))
    y = torch.from_numpy(rng.integers(0, 3, size=64))
    lengths = torch.full((64,), 360)
    torch.manual_seed(0)
    model = LSTMModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with flush_denormals():
        for _ in range(60):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x, lengths).logits, y)
            loss.backward()
            optimizer.step()
    assert loss.item() < 0.6, f"training loss {loss.item():.3f}: the model cannot fit 64 windows (ln 3 = 1.10)"
