"""`train.checkpoint_criterion`: the best checkpoint, early stopping and the plateau schedule follow one metric,
the run records which, and the loss figure shows the classification and regression parts apart."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

from conftest import tiny_config
from lstm_trading.cli import app
from lstm_trading.core.config import Config, TrainConfig, dump_config
from lstm_trading.core.errors import ConfigError
from lstm_trading.data.journal import write_journal
from lstm_trading.models.lstm.training import LSTMTrainingModule, load_checkpoint, selection_callbacks
from lstm_trading.report.figures import chosen_epoch, loss_figure

# A validation history where the two criteria disagree, as in the real run that motivated the setting: the
# classification log-loss is best at epoch 1 (from 0) and then worsens, while the SL/TP regression keeps
# pulling the combined loss down, to its minimum at the last epoch.
CLASS_LOSS = [0.90, 0.80, 0.85, 0.95, 1.00, 1.05]
REG_LOSS = [1.10, 1.00, 0.75, 0.45, 0.20, 0.00]
COMBINED = [c + r for c, r in zip(CLASS_LOSS, REG_LOSS, strict=True)]  # 2.0, 1.8, 1.6, 1.4, 1.2, 1.05


class ScriptedValidation(LSTMTrainingModule):
    """The real optimiser and schedule (`configure_optimizers`, warm-up, plateau), with validation metrics
    logged from the script above instead of measured: Lightning's own callbacks then choose from them."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return torch.stack([p.pow(2).sum() for p in self.parameters()]).sum() * 1e-3

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        epoch = self.current_epoch
        self.log("val_class_loss", CLASS_LOSS[epoch], on_epoch=True, batch_size=1)
        self.log("val_reg_loss", REG_LOSS[epoch], on_epoch=True, batch_size=1)
        self.log("val_loss", COMBINED[epoch], on_epoch=True, batch_size=1)


def _drive(criterion: str, folder: Path) -> tuple[dict[str, Any], L.Trainer, float]:
    train = TrainConfig(
        epochs=len(CLASS_LOSS),
        lr=1e-2,
        warmup_epochs=0,
        plateau_patience=0,
        early_stop_patience=3,
        checkpoint_criterion=criterion,
    )
    module = ScriptedValidation(
        model={"input_size": 2, "hidden_size": 2, "num_layers": 1, "output_size": 3},
        train=train.__dict__.copy(),
        class_weights=[1.0, 1.0, 1.0],
    )
    best, stop = selection_callbacks(train, folder / "checkpoints")
    data = DataLoader(TensorDataset(torch.zeros(1, 1)), batch_size=1)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=train.epochs,
        callbacks=[best, stop],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(folder),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's notes on a one-batch loader without workers
        trainer.fit(module, train_dataloaders=data, val_dataloaders=data)
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    return load_checkpoint(best.best_model_path), trainer, lr


@pytest.mark.parametrize(
    ("criterion", "best_epoch", "epochs_run", "rate_halved"),
    [
        ("val_class_loss", 1, 5, True),  # stops 3 epochs after its best; the plateau halved the rate meanwhile
        ("val_loss", 5, 6, False),  # always improving: runs every epoch at the full rate
    ],
)
def test_the_best_checkpoint_early_stopping_and_the_plateau_follow_the_criterion(
    criterion: str, best_epoch: int, epochs_run: int, rate_halved: bool, tmp_path: Path
) -> None:
    checkpoint, trainer, lr = _drive(criterion, tmp_path)
    assert checkpoint["epoch"] == best_epoch
    assert trainer.current_epoch == epochs_run
    assert trainer.lr_scheduler_configs[0].monitor == criterion
    assert (lr < 1e-2) == rate_halved
    # and the function the loss figure marks the chosen epoch with agrees with Lightning's choice
    history = pd.DataFrame(
        {"epoch": range(len(CLASS_LOSS)), "val_class_loss": CLASS_LOSS, "val_loss": COMBINED, "val_reg_loss": REG_LOSS}
    )
    assert chosen_epoch(history.iloc[:epochs_run], criterion) == best_epoch


def test_an_unknown_criterion_is_refused_naming_the_key_or_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^train\.checkpoint_criterion: must be one of val_class_loss, val_loss$"):
        TrainConfig(checkpoint_criterion="val_acc")
    assert TrainConfig().checkpoint_criterion == "val_class_loss"
    with pytest.raises(ConfigError, match=r"^--checkpoint-criterion: must be one of val_class_loss, val_loss"):
        Config().with_overrides("train", checkpoint_criterion="val_los")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--out", str(out), "--checkpoint-criterion", "loss"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "--checkpoint-criterion: must be one of val_class_loss, val_loss (train.checkpoint_criterion = 'loss')" in (
        result.stderr
    )
    assert not out.exists()


def _labels(figure: Any) -> dict[str, list[str]]:
    return {axes.get_title(): [line.get_label() for line in axes.get_lines()] for axes in figure.axes}


def test_the_loss_figure_shows_both_parts_and_marks_the_chosen_epoch() -> None:
    history = pd.DataFrame(
        {
            "epoch": range(6),
            "train_loss_epoch": np.linspace(2.2, 1.0, 6),
            "train_class_loss": np.linspace(1.0, 0.6, 6),
            "train_reg_loss": np.linspace(1.2, 0.4, 6),
            "val_class_loss": CLASS_LOSS,
            "val_reg_loss": REG_LOSS,
            "val_loss": COMBINED,
        }
    )
    for criterion, marked in (("val_class_loss", 2), ("val_loss", 6)):  # epochs as drawn, from 1
        figure = loss_figure(history, criterion)
        assert figure is not None
        labels = _labels(figure)
        chosen = f"chosen: epoch {marked} ({criterion})"
        assert labels["classification log-loss"] == ["training", "validation", chosen]
        assert labels["SL/TP regression (SmoothL1)"] == ["training", "validation", chosen]
        assert labels["combined loss"] == ["training", "validation", chosen]
        for axes in figure.axes:
            assert list(axes.get_lines()[-1].get_xdata()) == [marked, marked]
    # a log from before the parts were logged: the panels it has data for, nothing marked without a criterion
    old = history[["epoch", "train_loss_epoch", "val_loss", "val_class_loss"]]
    assert _labels(loss_figure(old)) == {
        "classification log-loss": ["validation"],
        "combined loss": ["training", "validation"],
    }


@pytest.fixture(scope="module")
def val_loss_run(tiny_db: Path, tiny_trades: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained by the command with `--checkpoint-criterion val_loss` (the seed's criterion)."""
    folder = tmp_path_factory.mktemp("criterion")
    journal = folder / "val.xlsx"
    write_journal(journal, tiny_trades[["start_time", "entry_price", "side"]], {"horizon_seconds": 6 * 3600})
    config = folder / "tiny.toml"
    config.write_text(dump_config(tiny_config().with_overrides("train", epochs=2)))
    out = folder / "run"
    args = ["train", "--db", str(tiny_db), "--trades", str(journal), "--config", str(config), "--out", str(out)]
    result = CliRunner().invoke(
        app, [*args, "--no-progress", "--accelerator", "cpu", "--checkpoint-criterion", "val_loss"]
    )
    assert result.exit_code == 0, result.output
    assert "best validation loss (val_loss)" in result.stdout
    return out


def test_train_checkpoint_criterion_is_recorded_and_chooses_the_saved_epoch(val_loss_run: Path) -> None:
    assert 'checkpoint_criterion = "val_loss"' in (val_loss_run / "config.toml").read_text()
    validation = json.loads((val_loss_run / "model" / "bundle.json").read_text())["validation"]
    assert validation["criterion"] == "val_loss"
    logged = pd.read_csv(val_loss_run / "logs" / "metrics.csv")
    epochs = logged.dropna(subset=["val_loss"]).groupby("epoch").last()
    assert validation["best_val_loss"] == pytest.approx(epochs["val_loss"].min(), rel=1e-6)
    assert load_checkpoint(val_loss_run / "checkpoints" / "best.ckpt")["epoch"] == chosen_epoch(logged, "val_loss")
    # the two parts are logged apart, and add up to the combined loss (class_weight = reg_weight = 1 here)
    np.testing.assert_allclose(epochs["val_class_loss"] + epochs["val_reg_loss"], epochs["val_loss"], rtol=1e-5)
    assert logged["train_class_loss"].notna().sum() == logged["train_reg_loss"].notna().sum() == len(epochs)
    assert (val_loss_run / "loss_curves.png").stat().st_size > 0


def test_resume_with_another_criterion_is_refused(val_loss_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["train", "--out", str(val_loss_run), "--resume", "--checkpoint-criterion", "val_class_loss"]
    )
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "the run chose its best checkpoint by val_loss, not val_class_loss" in result.stderr
    assert "resume with --checkpoint-criterion val_loss" in result.stderr
