"""Chunked recurrence: the same outputs and gradients as the plain LSTM, with mixed lengths in the batch."""

from __future__ import annotations

import pytest
import torch

from lstm_trading.core.errors import ConfigError
from lstm_trading.core.machine import L2_ENV, L3_ENV, cpu_caches
from lstm_trading.models.lstm.model import LSTMModel, auto_chunk_len
from lstm_trading.models.lstm.trainer_settings import cpu_runs_bf16_lstm

# Lengths that end inside a chunk, on a chunk's last step, on a chunk's first step, and in the first chunk.
LENGTHS = [23, 16, 17, 5, 9, 1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(seed: int = 0, features: int = 13) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(LENGTHS), max(LENGTHS), features, generator=generator)
    for row, length in enumerate(LENGTHS):
        x[row, length:] = 99.0  # padding that must never reach a sample's output
    return x, torch.tensor(LENGTHS)


def _pair(chunk_len: int, **sizes: int) -> tuple[LSTMModel, LSTMModel]:
    torch.manual_seed(0)
    plain = LSTMModel(path="padded", **sizes)
    chunked = LSTMModel(path="padded", chunk_len=chunk_len, **sizes)
    chunked.load_state_dict(plain.state_dict())
    return plain, chunked


def _loss(model: LSTMModel, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    output = model(x, lengths)
    weights = torch.linspace(0.5, 1.5, len(lengths))
    return (output.logits.pow(2).sum(1) * weights).sum() + output.sl.sum() - output.tp.pow(2).sum()


@pytest.mark.parametrize("chunk_len", [1, 4, 8, 16, 22])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_chunked_gradients_equal_unchunked(chunk_len: int, num_layers: int) -> None:
    plain, chunked = _pair(chunk_len, hidden_size=12, num_layers=num_layers)
    x, lengths = _batch()
    _loss(plain, x, lengths).backward()
    _loss(chunked, x, lengths).backward()
    for (name, a), b in zip(plain.named_parameters(), chunked.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None, name
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=f"gradient of {name}")


@pytest.mark.parametrize("chunk_len", [3, 8, 100])
def test_chunked_outputs_equal_each_sample_alone(chunk_len: int) -> None:
    plain, chunked = _pair(chunk_len)
    x, lengths = _batch(1)
    with torch.no_grad():
        together = chunked(x, lengths)
        for row, length in enumerate(LENGTHS):
            alone = plain(x[row : row + 1, :length], torch.tensor([length]))
            for part_together, part_alone in zip(together, alone, strict=True):
                torch.testing.assert_close(part_together[row], part_alone[0], rtol=1e-5, atol=1e-6)


def test_packed_padded_and_chunked_agree() -> None:
    torch.manual_seed(1)
    models = [LSTMModel(path="packed"), LSTMModel(path="padded"), LSTMModel(path="packed", chunk_len=5)]
    for model in models[1:]:
        model.load_state_dict(models[0].state_dict())
    x, lengths = _batch(2)
    with torch.no_grad():
        outputs = [model(x, lengths) for model in models]
    for other in outputs[1:]:
        for a, b in zip(outputs[0], other, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_a_chunk_boundary_keeps_each_samples_own_last_step() -> None:
    """A sample ending on the step before a boundary is not overwritten by the next chunk's (padded) output."""
    plain, chunked = _pair(4, hidden_size=8)
    x, lengths = _batch(3)
    x, lengths = x[[3, 0]], torch.tensor([4, 23])  # the first ends exactly at the first chunk's end
    x[0, 4:] = torch.randn(19, 13) * 10
    with torch.no_grad():
        a, b = plain(x, lengths), chunked(x, lengths)
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-5, atol=1e-6)


def test_chunked_training_under_bf16_autocast_follows_fp32() -> None:
    """bf16-mixed on CPU: the chunked step's gradients point where fp32's do; on a CPU without bf16 LSTM
    kernels (AMD without AVX-512), the probe says no and the step indeed fails in oneDNN."""
    plain, chunked = _pair(6, hidden_size=16)
    x, lengths = _batch(4)
    _loss(plain, x, lengths).backward()
    if not cpu_runs_bf16_lstm():
        with pytest.raises(RuntimeError, match="primitive descriptor"), torch.autocast("cpu", dtype=torch.bfloat16):
            _loss(chunked, x, lengths).backward()
        return
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _loss(chunked, x, lengths).backward()
    a = torch.cat([p.grad.flatten() for p in plain.parameters() if p.grad is not None])
    b = torch.cat([p.grad.flatten() for p in chunked.parameters() if p.grad is not None])
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99


def test_chunk_len_is_checked() -> None:
    for bad in (-1, "big"):
        with pytest.raises(ValueError, match="chunk_len must be 'auto', 0 \\(off\\) or a number of steps"):
            LSTMModel(chunk_len=bad)


def test_auto_chunks_are_cache_sized_on_cpu_and_long_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    plain, auto = _pair(0)
    auto.chunk_len = "auto"
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(64, 150, 13, generator=generator)  # 64 windows: 64-step chunks, the last ends at 150
    lengths = torch.randint(1, 151, (64,), generator=generator)
    monkeypatch.setenv(L2_ENV, "2M")  # the measured machines' caches (tests/test_machine.py: smaller ones)
    monkeypatch.setenv(L3_ENV, "16M")
    cpu_caches.cache_clear()
    try:
        assert [auto_chunk_len(b, cpu) for b in (1, 16, 32, 64, 512)] == [4096, 256, 128, 64, 32]
        assert auto.chunk_steps(64, cpu) == 64
    finally:
        monkeypatch.undo()
        cpu_caches.cache_clear()
    assert auto_chunk_len(32, cuda) == 4096
    with torch.no_grad():
        for a, b in zip(plain(x, lengths), auto(x, lengths), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_each_weight_gradient_is_accumulated_once_per_backward() -> None:
    """DDP all-reduces a weight when its gradient is accumulated: that must happen once, not once per chunk."""
    _, chunked = _pair(4, hidden_size=8)
    calls = {name: 0 for name, _ in chunked.named_parameters()}
    for name, parameter in chunked.named_parameters():
        parameter.register_post_accumulate_grad_hook(lambda _, name=name: calls.__setitem__(name, calls[name] + 1))
    _loss(chunked, *_batch(5)).backward()
    assert set(calls.values()) == {1}, calls


def test_training_with_chunks_follows_training_without(tiny_candles, tiny_trades, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`train.chunk_len` reaches the model: a run in 16-step chunks ends where the plain run ends; and
    `--precision bf16-mixed` trains on CPU (Lightning's autocast), chunked, close to fp32."""
    import warnings

    from conftest import tiny_config
    from lstm_trading.runs.train import prepare, train_run

    config = tiny_config().with_overrides("train", epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(tiny_candles, tiny_trades, config, symbol="ETHUSDT")
        runs = {
            (n, precision): train_run(
                prepared,
                config.with_overrides("train", chunk_len=n, precision=precision),
                tmp_path / f"{n}-{precision}",
                accelerator="cpu",
                progress=False,
            ).best_val_loss
            for n, precision in ((0, "32-true"), (16, "32-true"), (16, "bf16-mixed"))
            if precision != "bf16-mixed" or cpu_runs_bf16_lstm()
        }
        assert runs[16, "32-true"] == pytest.approx(runs[0, "32-true"], rel=1e-4)
        if cpu_runs_bf16_lstm():
            assert runs[16, "bf16-mixed"] == pytest.approx(runs[0, "32-true"], rel=0.02)
            return
        refused = tmp_path / "bf16-refused"
        with pytest.raises(ConfigError, match="^train.precision = bf16-mixed: this CPU has no bf16 LSTM kernels"):
            train_run(
                prepared,
                config.with_overrides("train", precision="bf16-mixed"),
                refused,
                accelerator="cpu",
                progress=False,
            )
        assert not refused.exists()  # refused before the run folder is made


def test_chunk_len_flag_is_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from lstm_trading.cli import app

    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "run"), "--chunk-len", "big"])
    assert result.exit_code == 2
    assert result.stderr == "error: --chunk-len: expected 'auto' or a number of steps (0: off), got 'big'\n"
