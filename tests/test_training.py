"""Training on Lightning: the loss, the schedule, the run folder, and resuming like an uninterrupted run."""

from __future__ import annotations

import shutil
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_config
from lstm_trading.core.errors import ConfigError, DataError
from lstm_trading.models.lstm.batches import Batch, BucketBatchSampler, padding_share
from lstm_trading.models.lstm.model import ModelOutput
from lstm_trading.models.lstm.training import LSTMTrainingModule, ResumePoint, trading_loss
from lstm_trading.runs.train import prepare, train_run
from lstm_trading.samples.targets import class_weights


def test_class_weights_are_inverse_frequency_with_mean_one() -> None:
    labels = np.array([0] * 10 + [1] * 30 + [2] * 60)
    weights = class_weights(labels)
    assert weights[0] / weights[1] == pytest.approx(3) and weights[1] / weights[2] == pytest.approx(2)
    assert weights[labels].mean() == pytest.approx(1.0)


def _batch(labels: list[int], sl: list[float], tp: list[float]) -> Batch:
    n = len(labels)
    label = torch.tensor(labels)
    return Batch(
        features=torch.zeros(n, 1, 13),
        lengths=torch.ones(n, dtype=torch.int64),
        label=label,
        sl=torch.tensor(sl),
        tp=torch.tensor(tp),
        is_trade=label != 2,
        index=torch.arange(n),
    )


def test_regression_loss_counts_buy_and_sell_only() -> None:
    logits = torch.zeros(3, 3)
    batch = _batch([0, 1, 2], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0])
    exact = ModelOutput(logits, torch.tensor([0.5, 0.5, 123.0]), torch.tensor([0.5, 0.5, -55.0]))
    parts = trading_loss(exact, batch, torch.ones(3), nominal_batch=3)
    assert parts.regression.item() == 0.0  # the Invalid sample's wild SL/TP costs nothing
    assert parts.classification.item() == pytest.approx(np.log(3))
    off = ModelOutput(logits, torch.tensor([1.5, 0.5, 0.0]), torch.tensor([0.5, 0.5, 0.0]))
    parts = trading_loss(off, batch, torch.ones(3), nominal_batch=3, class_weight=0.0, reg_weight=2.0)
    assert parts.total.item() == pytest.approx(2.0 * 0.5 / 3)  # SmoothL1(1.0) = 0.5, over the nominal batch


def test_loss_of_a_split_batch_averages_to_the_whole_batch() -> None:
    """Why the loss divides by the nominal batch: two halves (two DDP processes) average to the whole."""
    torch.manual_seed(0)
    n = 8
    output = ModelOutput(torch.randn(n, 3), torch.randn(n), torch.randn(n))
    batch = _batch([0, 0, 1, 2, 2, 2, 1, 0], list(np.linspace(0, 1, n)), list(np.linspace(1, 0, n)))
    weights = torch.tensor([1.3, 0.7, 1.1])
    whole = trading_loss(output, batch, weights, nominal_batch=n).total
    halves = []
    for part in (slice(0, 4), slice(4, 8)):
        sub_out = ModelOutput(output.logits[part], output.sl[part], output.tp[part])
        sub = Batch(**{k: getattr(batch, k)[part] for k in batch.__dataclass_fields__})
        halves.append(trading_loss(sub_out, sub, weights, nominal_batch=n // 2).total)
    assert ((halves[0] + halves[1]) / 2).item() == pytest.approx(whole.item(), rel=1e-6)


def test_bucket_sampler_pads_little_and_is_seeded_by_epoch() -> None:
    rng = np.random.default_rng(0)
    lengths = np.where(rng.random(1000) < 0.9, 1440, rng.integers(100, 1440, 1000))
    sampler = BucketBatchSampler(lengths, 32, shuffle=True, seed=1)
    batches = [np.asarray(b) for b in sampler]
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert padding_share(lengths, batches) < 0.10
    first = [list(b) for b in sampler]
    sampler.set_epoch(1)
    assert [list(b) for b in sampler] != first
    sampler.set_epoch(0)
    assert [list(b) for b in sampler] == first
    ranks = [list(BucketBatchSampler(lengths, 16, shuffle=True, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    for both, one, two in zip(first, ranks[0], ranks[1], strict=True):
        assert sorted(both) == sorted(one + two)


def test_warm_up_then_plateau_owns_the_rate() -> None:
    module = LSTMTrainingModule(
        model={"input_size": 13, "hidden_size": 4, "num_layers": 1, "output_size": 3},
        train={"warmup_epochs": 5, "lr": 1e-3},
        class_weights=[1.0, 1.0, 1.0],
    )
    assert [module._warmup_factor(e) for e in range(7)] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0]


def test_non_finite_loss_stops_training_with_the_batch_named() -> None:
    module = LSTMTrainingModule(
        model={"input_size": 13, "hidden_size": 4, "num_layers": 1, "output_size": 3},
        train={},
        class_weights=[1.0, 1.0, 1.0],
    )
    batch = _batch([0, 1], [0.1, 0.2], [0.3, 0.4])
    batch.features[1, 0, 3] = float("nan")
    with pytest.raises(
        DataError, match="non-finite training loss in epoch 0, batch 7 .* column 3 at step 0 of sample 1"
    ):
        module.training_step(batch, 7)


def test_run_folder_holds_config_logs_checkpoints_and_bundle(tiny_run: Path) -> None:
    config = tomllib.loads((tiny_run / "config.toml").read_text())
    assert config["targets"]["max_len"] == 60 and config["train"]["epochs"] == 3
    metrics = pd.read_csv(tiny_run / "logs" / "metrics.csv")
    assert {"train_loss_epoch", "val_loss", "val_acc"} <= set(metrics.columns)
    assert metrics["val_loss"].notna().sum() == 3
    assert (tiny_run / "checkpoints" / "best.ckpt").exists() and (tiny_run / "checkpoints" / "last.ckpt").exists()
    assert (tiny_run / "model" / "weights.safetensors").exists()
    best = torch.load(tiny_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["callbacks"]  # the checkpoint chosen by validation loss, not the last epoch by default


def test_an_existing_run_is_not_overwritten_by_accident(tiny_run: Path, tiny_candles, tiny_trades) -> None:  # type: ignore[no-untyped-def]
    config = tiny_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(tiny_candles, tiny_trades, config, symbol="ETHUSDT")
    with pytest.raises(ConfigError, match="already holds a run .* use --resume to continue it, --overwrite"):
        train_run(prepared, config, tiny_run, accelerator="cpu", progress=False)


def test_resume_reaches_the_weights_of_an_uninterrupted_run(
    tiny_run: Path,
    tiny_candles,  # type: ignore[no-untyped-def]
    tiny_trades,
    tmp_path: Path,
) -> None:
    config = tiny_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(tiny_candles, tiny_trades, config, symbol="ETHUSDT")
        short = config.with_overrides("train", epochs=2)
        run_dir = tmp_path / "interrupted"
        train_run(prepared, short, run_dir, accelerator="cpu", progress=False)
        train_run(prepared, config, run_dir, resume=True, accelerator="cpu", progress=False)
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    straight = torch.load(tiny_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["epoch"] == straight["epoch"] == 2
    for name, tensor in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], tensor, rtol=1e-6, atol=1e-7)


def test_resume_without_a_checkpoint_says_so(tiny_candles, tiny_trades, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tiny_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(tiny_candles, tiny_trades, config, symbol="ETHUSDT")
    with pytest.raises(DataError, match="--resume: no checkpoint to resume from"):
        train_run(prepared, config, tmp_path / "fresh", resume=True, accelerator="cpu", progress=False)
    shutil.rmtree(tmp_path / "fresh", ignore_errors=True)


def test_resumed_run_keeps_the_metrics_of_its_first_epochs(tiny_candles, tiny_trades, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Regression: Lightning's CSV logger deleted logs/metrics.csv on --resume, losing the first epochs' rows.

    The run is interrupted after epoch 1, resumed to epoch 2, then set back to its epoch-1 checkpoint (as if
    killed inside epoch 2 after its rows were written) and resumed again: each epoch is logged exactly once.
    """
    config = tiny_config()
    run_dir = tmp_path / "interrupted"
    last = run_dir / "checkpoints" / "last.ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(tiny_candles, tiny_trades, config, symbol="ETHUSDT")
        train_run(prepared, config.with_overrides("train", epochs=2), run_dir, accelerator="cpu", progress=False)
        after_epoch_1 = last.read_bytes()
        train_run(prepared, config, run_dir, resume=True, accelerator="cpu", progress=False)
        first_resume = pd.read_csv(run_dir / "logs" / "metrics.csv")
        last.write_bytes(after_epoch_1)
        train_run(prepared, config, run_dir, resume=True, accelerator="cpu", progress=False)
    metrics = pd.read_csv(run_dir / "logs" / "metrics.csv")
    for frame in (first_resume, metrics):
        epochs = frame.dropna(subset=["val_loss"])["epoch"].astype(int).tolist()
        assert epochs == [0, 1, 2]
        assert frame.dropna(subset=["train_loss_epoch"])["epoch"].astype(int).tolist() == [0, 1, 2]
    assert metrics["step"].is_monotonic_increasing
    assert len(metrics) == len(first_resume)  # the retrained epoch's rows replaced, not added


def test_resume_drops_a_metrics_line_torn_by_a_kill() -> None:
    point = ResumePoint(epoch=1, step=34)
    assert point.keeps({"epoch": "1", "step": "33", "val_loss": "0.9"})
    assert point.keeps({"epoch": "", "step": "17", "lr-Adam": "0.003"})
    assert not point.keeps({"epoch": "", "step": "34", "lr-Adam": "0.003"})  # the start of epoch 2, retrained
    assert not point.keeps({"epoch": "2", "step": "40", "val_loss": "0.9"})
    assert not point.keeps({"epoch": "1", "step": None, "val_loss": None})  # the line ends after its first field
    assert not point.keeps({"epoch": "", "step": "3x", "lr-Adam": ""})


def test_logged_losses_are_per_sample_means_when_the_last_batch_is_short() -> None:
    """The optimised loss divides by the nominal batch (DDP); the logged one must not, or a short last batch
    drags the epoch's train_loss and val_loss (which picks the best checkpoint) below the true mean."""
    torch.manual_seed(0)
    module = LSTMTrainingModule(
        model={"input_size": 13, "hidden_size": 4, "num_layers": 1, "output_size": 3},
        train={"batch_size": 8},
        class_weights=[1.3, 0.7, 1.1],
    )
    n = 11  # a batch of 8, then one of 3
    labels = [0, 1, 2, 2, 1, 0, 0, 2, 1, 2, 0]
    whole = _batch(labels, list(np.linspace(0.1, 0.9, n)), list(np.linspace(0.9, 0.1, n)))
    whole.features.normal_()
    logged: list[tuple[str, float, int]] = []
    module.log = lambda name, value, **kw: logged.append((name, float(value), kw["batch_size"]))  # type: ignore[method-assign,assignment]
    with torch.no_grad():
        for index, part in enumerate((slice(0, 8), slice(8, n))):
            sub = Batch(**{k: getattr(whole, k)[part] for k in whole.__dataclass_fields__})
            module.validation_step(sub, index)
            module.training_step(sub, index)
        expected = trading_loss(module(whole.features, whole.lengths), whole, module.weights, nominal_batch=n).total
    for name in ("val_loss", "train_loss"):
        values = [(value, size) for logged_name, value, size in logged if logged_name == name]
        epoch_mean = sum(value * size for value, size in values) / sum(size for _, size in values)  # as Lightning
        assert epoch_mean == pytest.approx(expected.item(), rel=1e-5), name
