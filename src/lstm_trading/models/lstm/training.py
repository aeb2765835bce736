"""Training on Lightning: the loss, the LightningModule, the DataModule and the Trainer set-up.

The loss is normalised by the nominal batch size (not by the sum of class weights, nor by the number of trades
in the batch), so N processes with batch b average to exactly the gradient of one process with batch N*b:
DDP then reproduces a single-process run.
"""

from __future__ import annotations

import csv
import logging
import math
import pickle
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from lstm_trading.core.atomic import atomic_path, write_with
from lstm_trading.core.config import ModelConfig, TrainConfig
from lstm_trading.core.errors import ConfigError, DataError, ModelFileError
from lstm_trading.core.run_folder import RunFolder
from lstm_trading.features.compute import FEATURE_NAMES
from lstm_trading.models.lstm.batches import Batch, BucketBatchSampler, SampleWindows
from lstm_trading.models.lstm.model import LSTMModel, ModelOutput
from lstm_trading.models.lstm.trainer_settings import on_cuda, parse_devices, resolve_precision
from lstm_trading.samples.scalers import TargetScaler
from lstm_trading.samples.targets import Samples, class_weights


class _DropAdverts(logging.Filter):
    """Lightning prints a cloud-logging advert on every fit; users of a CLI should not have to read it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdverts())
# Lightning 2.6 calls a torch pytree API that torch 2.13 deprecates, once per fit; nothing for users to change.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


@dataclass(frozen=True)
class LossParts:
    total: torch.Tensor
    classification: torch.Tensor
    regression: torch.Tensor


def trading_loss(
    output: ModelOutput,
    batch: Batch,
    weights: torch.Tensor,
    *,
    nominal_batch: int,
    class_weight: float = 1.0,
    reg_weight: float = 1.0,
) -> LossParts:
    """`class_weight * weighted CE + reg_weight * (SmoothL1(sl) + SmoothL1(tp))`, the regression on trades only."""
    ce = F.cross_entropy(output.logits.float(), batch.label, weight=weights, reduction="sum") / nominal_batch
    trade = batch.is_trade
    sl = F.smooth_l1_loss(output.sl.float()[trade], batch.sl[trade], reduction="sum")
    tp = F.smooth_l1_loss(output.tp.float()[trade], batch.tp[trade], reduction="sum")
    regression = (sl + tp) / nominal_batch
    return LossParts(class_weight * ce + reg_weight * regression, ce, regression)


def _first_non_finite(batch: Batch, names: tuple[str, ...] = FEATURE_NAMES) -> str:
    """Where a batch first holds a NaN or infinity, for the error message (else: the optimiser diverged);
    `names`: the feature columns' (the feature set's, with the other symbols')."""
    bad = ~torch.isfinite(batch.features)
    if not bad.any():
        return "the features are finite: the optimiser diverged; lower --lr (or train.gradient_clip in --config)"
    sample, step, column = (int(v) for v in torch.nonzero(bad)[0])
    name = f"{names[column]}, " if batch.features.shape[2] == len(names) else ""
    return (
        f"first non-finite feature: {name}column {column} at step {step} of sample {int(batch.index[sample])} "
        "of the split; check the candles for extreme values"
    )


class LSTMTrainingModule(L.LightningModule):
    """The model, its loss, AdamW with a linear warm-up and ReduceLROnPlateau on `train.checkpoint_criterion`."""

    def __init__(self, model: dict[str, int], train: dict[str, Any], class_weights: list[float]) -> None:
        super().__init__()
        self.save_hyperparameters()  # plain numbers only: checkpoints load with weights_only=True
        self.train_config = TrainConfig(**train)
        self.model = LSTMModel.from_config(ModelConfig(**model), chunk_len=self.train_config.chunk_len)
        self.register_buffer("weights", torch.tensor(class_weights, dtype=torch.float32))
        self.feature_names: tuple[str, ...] = FEATURE_NAMES  # for error messages; `fit` sets the run's
        self.weights: torch.Tensor

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> ModelOutput:
        return self.model(features, lengths)

    def _loss(self, batch: Batch) -> LossParts:
        output = self.model(batch.features, batch.lengths)
        cfg = self.train_config
        return trading_loss(
            output,
            batch,
            self.weights,
            nominal_batch=cfg.batch_size,
            class_weight=cfg.class_weight,
            reg_weight=cfg.reg_weight,
        )

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        parts = self._loss(batch)
        # An infinite input saturates the LSTM's gates: the loss stays finite while the gradient is NaN, and the
        # next batch would blame the optimiser. So the inputs are checked too (one CPU-GPU sync point, as before).
        loss_finite = torch.isfinite(parts.total)
        if not bool(loss_finite & torch.isfinite(batch.features).all()):
            what = "training loss" if not bool(loss_finite) else "input (the loss is still finite)"
            raise DataError(
                f"non-finite {what} in epoch {self.current_epoch}, batch {batch_idx} "
                f"(classification {parts.classification.item()}, regression {parts.regression.item()}); "
                f"{_first_non_finite(batch, self.feature_names)}"
            )
        size, logged = len(batch), self._per_sample(parts.total, len(batch))
        self.log("train_loss", logged, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        # the two parts apart, per epoch: the loss figure sets each beside its validation curve
        for name, part in (("train_class_loss", parts.classification), ("train_reg_loss", parts.regression)):
            self.log(name, self._per_sample(part, size), on_step=False, on_epoch=True, batch_size=size)
        return parts.total

    def _per_sample(self, loss: torch.Tensor, size: int) -> torch.Tensor:
        """The loss per sample of a batch of `size`, for logging: the optimised loss divides by the nominal batch,
        which would make a short last batch look better, and bias the epoch's mean (and val_loss) low."""
        return loss.detach() * (self.train_config.batch_size / size)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        parts = self._loss(batch)
        output = self.model(batch.features, batch.lengths)
        accuracy = (output.logits.argmax(dim=1) == batch.label).float().mean()
        size = len(batch)
        val_loss, class_loss = self._per_sample(parts.total, size), self._per_sample(parts.classification, size)
        # val_loss = class_weight * val_class_loss + reg_weight * val_reg_loss; train.checkpoint_criterion names
        # which of the first two chooses the checkpoint
        self.log("val_loss", val_loss, prog_bar=True, on_epoch=True, batch_size=size, sync_dist=True)
        self.log("val_class_loss", class_loss, prog_bar=True, on_epoch=True, batch_size=size, sync_dist=True)
        reg_loss = self._per_sample(parts.regression, size)
        self.log("val_reg_loss", reg_loss, on_epoch=True, batch_size=size, sync_dist=True)
        self.log("val_acc", accuracy, prog_bar=True, on_epoch=True, batch_size=size, sync_dist=True)

    def _warmup_factor(self, epoch: int) -> float:
        warmup = self.train_config.warmup_epochs
        return 1.0 if warmup == 0 or epoch >= warmup else (epoch + 1) / warmup

    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        if epoch <= self.train_config.warmup_epochs:  # after warm-up the plateau scheduler owns the rate
            for group in self.trainer.optimizers[0].param_groups:
                group["lr"] = self.train_config.lr * self._warmup_factor(epoch)

    def configure_optimizers(self) -> Any:
        cfg = self.train_config
        optimizer = torch.optim.AdamW(self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": plateau, "monitor": cfg.checkpoint_criterion, "interval": "epoch"},
        }

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if self.current_epoch + 1 >= self.train_config.warmup_epochs:
            scheduler.step(metric)


class WindowDataModule(L.LightningDataModule):
    """Train and validation windows over one scaled matrix; each process takes its share of every batch."""

    def __init__(
        self,
        scaled: np.ndarray,
        train: Samples,
        val: Samples,
        target_scaler: TargetScaler,
        *,
        batch_size: int,
        seed: int,
    ) -> None:
        super().__init__()
        self.train_windows = SampleWindows(scaled, train, target_scaler)
        self.val_windows = SampleWindows(scaled, val, target_scaler)
        self.batch_size = batch_size
        self.seed = seed

    def _loader(self, windows: SampleWindows, *, shuffle: bool) -> DataLoader[int]:
        rank = self.trainer.global_rank if self.trainer else 0
        world = self.trainer.world_size if self.trainer else 1
        sampler = BucketBatchSampler(
            windows.samples.length, self.batch_size, shuffle=shuffle, seed=self.seed, rank=rank, world_size=world
        )
        return DataLoader(windows, batch_sampler=sampler, collate_fn=windows.collate, num_workers=0)

    def train_dataloader(self) -> DataLoader[int]:
        return self._loader(self.train_windows, shuffle=True)

    def val_dataloader(self) -> DataLoader[int]:
        return self._loader(self.val_windows, shuffle=False)


def load_checkpoint(path: Path | str, map_location: Any = "cpu") -> dict[str, Any]:
    """A training checkpoint read with `weights_only=True`: tensors and plain values only, so a checkpoint from
    someone else cannot run code. Every problem is a `ModelFileError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such checkpoint")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are not for users
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise ModelFileError(
            f"{path}: refused: loading it would unpickle Python objects beyond tensors and numbers, which can run "
            "code; use checkpoints written by lstm-trading train"
        ) from None
    except Exception as error:  # torch reports truncated and foreign files with many exception types
        detail = (str(error).strip().splitlines() or [""])[0][:120]
        raise ModelFileError(
            f"{path}: not a readable training checkpoint ({type(error).__name__}: {detail}); it is truncated or not "
            "from lstm-trading: start the run again with --overwrite"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ModelFileError(f"{path}: not a training checkpoint of lstm-trading (no state_dict)")
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, made crash-safe and code-free.

    Lightning writes a checkpoint into the system temp folder and then moves it: a copy, not a rename, when that
    folder is on another filesystem (a tmpfs /tmp), and never flushed to disk. Here it is written beside its
    target, flushed and renamed, so a crash leaves the old checkpoint or the new one. Reading goes through
    `load_checkpoint` (`weights_only=True` whatever the caller asks).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        with atomic_path(path) as temporary:
            torch.save(checkpoint, temporary)

    def load_checkpoint(
        self, path: Any, map_location: Callable[..., Any] | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint(path, map_location if map_location is not None else "cpu")


@contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[None]:
    """Flush denormal floats to zero while training on CPU, then restore the default.

    Vanishing LSTM gradients turn denormal and the CPU backward runs about 10x slower on them. The setting is
    process-wide, so it is switched off again afterwards rather than left to surprise other code.
    """
    if not enabled:
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


class EpochBar(RichProgressBar):
    """Lightning's bar counts epochs from 0 ("Epoch 4/4" for a 5-epoch run); this one counts as users do."""

    def _get_train_description(self, current_epoch: int) -> str:
        described = f"Epoch {current_epoch + 1}/{self.trainer.max_epochs}"
        return f"{described:{len(self.validation_description)}}"


EPOCH_METRICS = (
    ("train_loss_epoch", "train_loss"),
    ("val_loss", "val_loss"),
    ("val_class_loss", "val_class_loss"),
    ("val_reg_loss", "val_reg_loss"),
)


class EpochLines(Callback):
    """One plain line per epoch on stderr, for a log file or CI where a progress bar shows nothing until the
    end: losses, validation accuracy, time so far and an estimate of the time left."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.first_epoch = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.monotonic()
        self.first_epoch = trainer.current_epoch  # a resumed run starts later

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs or 0
        parts = [f"{label} {float(metrics[key]):.4f}" for key, label in EPOCH_METRICS if key in metrics]
        if "val_acc" in metrics:
            parts.append(f"val_acc {float(metrics['val_acc']):.3f}")
        elapsed = time.monotonic() - self.started
        done = epoch - self.first_epoch
        left = elapsed / done * (total - epoch) if done else 0.0
        line = f"epoch {epoch}/{total}: {', '.join(parts)}; {elapsed:.0f} s, about {left:.0f} s left"
        print(line, file=self.stream or sys.stderr, flush=True)


class EpochHook(Callback):
    """Calls `on_epoch(epoch, epochs)` (epoch from 1, the run's most) after each training epoch: how a
    walk-forward shows the epoch of the fold it trains in another process."""

    def __init__(self, on_epoch: Callable[[int, int], None]) -> None:
        self.on_epoch = on_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.on_epoch(trainer.current_epoch + 1, trainer.max_epochs or 0)


def progress_callbacks(progress: bool, interactive: bool | None = None) -> tuple[list[Callback], bool]:
    """The bar in a terminal, a line per epoch elsewhere; and whether Lightning's progress bar is on."""
    if not progress:
        return [], False
    interactive = sys.stderr.isatty() if interactive is None else interactive
    return ([EpochBar()], True) if interactive else ([EpochLines()], False)


def warmup_note(train_config: TrainConfig) -> str | None:
    """Said before training when the learning-rate warm-up takes the whole run (the default 5 of `--epochs 5`)."""
    if train_config.warmup_epochs < train_config.epochs:
        return None
    return (
        f"note: train.warmup_epochs = {train_config.warmup_epochs} covers all {train_config.epochs} epochs, so the "
        f"learning rate never reaches lr = {train_config.lr:g}; set a smaller warmup_epochs in --config"
    )


@dataclass(frozen=True)
class FitResult:
    """The best model by `criterion`, where its checkpoint lies, and its `criterion` value there
    (`best_val_loss`: the classification log-loss with the default `val_class_loss`, else the combined loss)."""

    model: LSTMModel
    best_checkpoint: Path
    best_val_loss: float
    epochs_run: int
    is_global_zero: bool
    criterion: str = "val_class_loss"


def selection_callbacks(train_config: TrainConfig, checkpoints: Path) -> tuple[ModelCheckpoint, EarlyStopping]:
    """The best checkpoint and early stopping, both on `train.checkpoint_criterion` (the plateau schedule
    follows it too, in `configure_optimizers`): one criterion for everything that reads validation loss."""
    criterion = train_config.checkpoint_criterion
    best = ModelCheckpoint(
        dirpath=checkpoints, filename="best", monitor=criterion, mode="min", save_top_k=1, save_last=True
    )
    stop = EarlyStopping(monitor=criterion, mode="min", patience=train_config.early_stop_patience)
    return best, stop


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run picks up: the last finished epoch, the logging step after it, and the criterion its
    best checkpoint was chosen by (None when the checkpoint records no ModelCheckpoint state)."""

    epoch: int
    step: int
    criterion: str | None = None

    @classmethod
    def of(cls, checkpoint: dict[str, Any]) -> ResumePoint:
        loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
        return cls(
            epoch=int(checkpoint["epoch"]),
            step=int(loop.get("_batches_that_stepped", checkpoint["global_step"])),
            criterion=_recorded_criterion(checkpoint),
        )

    def check_criterion(self, criterion: str, path: Path) -> None:
        """A resumed run keeps the criterion it chose its best checkpoint by: a new one would compare the next
        epochs' values with a best score of the other metric (and restart early stopping's patience)."""
        if self.criterion is not None and self.criterion != criterion:
            raise ConfigError(
                f"--resume {path}: the run chose its best checkpoint by {self.criterion}, not {criterion}; resume "
                f"with --checkpoint-criterion {self.criterion}, or train anew with --overwrite"
            )

    def keeps(self, row: dict[str | None, str | None]) -> bool:
        """Whether a metrics.csv row belongs to an epoch the checkpoint finished (later ones are trained again).

        The learning-rate monitor's rows carry no epoch: the one written at the start of epoch e+1 has the step
        at which epoch e ended, so it goes with the epochs after the checkpoint. A line torn by a kill in the
        middle of a write (missing or unreadable fields) is dropped."""
        if None in row or None in row.values():
            return False
        try:
            if row.get("epoch"):
                return int(float(row["epoch"] or "")) <= self.epoch
            return int(float(row["step"] or "")) < self.step
        except (KeyError, ValueError):
            return False


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, for a resumed run: keeps metrics.csv's rows of the finished epochs and appends.

    Lightning's own writer deletes metrics.csv when its folder holds one, so a resumed run lost its first
    epochs' log. The kept rows are written beside the file and renamed, so a crash leaves the old log or the
    trimmed one."""

    def __init__(self, log_dir: str, resumed: ResumePoint) -> None:
        self._resumed = resumed
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as file:
            reader = csv.DictReader(file)
            rows = [row for row in reader if self._resumed.keeps(row)]
            header = list(reader.fieldnames or [])

        def write(temporary: Path) -> None:
            with open(temporary, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=header)
                writer.writeheader()
                writer.writerows(rows)

        write_with(path, write)
        # New rows are appended under this header (Lightning's writer rewrites the file when a new key appears).
        self.metrics_keys = header


class _ResumingCSVLogger(CSVLogger):
    def __init__(self, run_dir: Path, resumed: ResumePoint) -> None:
        super().__init__(str(run_dir), name="", version="logs")
        self._resumed = resumed

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if not isinstance(self._experiment, _AppendingWriter):
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(self.log_dir, self._resumed)
        return self._experiment


def make_loggers(run_dir: Path, resumed: ResumePoint | None = None) -> list[Logger]:
    """metrics.csv in run_dir/logs (continued, not restarted, when `resumed`), and TensorBoard when installed."""
    csv_logger = (
        CSVLogger(str(run_dir), name="", version="logs") if resumed is None else _ResumingCSVLogger(run_dir, resumed)
    )
    loggers: list[Logger] = [csv_logger]
    try:
        import tensorboard  # noqa: F401  (only when installed)
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(str(run_dir), name="", version="tensorboard"))
    except ImportError:
        pass
    return loggers


def fit(
    scaled: np.ndarray,
    train: Samples,
    val: Samples,
    target_scaler: TargetScaler,
    model_config: ModelConfig,
    train_config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    accelerator: str = "auto",
    progress: bool = True,
    initial_model: LSTMModel | None = None,
    feature_names: tuple[str, ...] = FEATURE_NAMES,
    on_epoch: Callable[[int, int], None] | None = None,
) -> FitResult:
    """Train with Lightning; the best checkpoint, early stopping and the learning-rate plateau follow
    `train_config.checkpoint_criterion`. `initial_model`: start from its weights (a warm-started walk-forward
    fold, from the fold before) at `train_config.fine_tune_lr` instead of a fresh initialisation at `lr`.
    `on_epoch(epoch, epochs)`: called after each epoch (`EpochHook`)."""
    if initial_model is not None:
        train_config = replace(train_config, lr=train_config.fine_tune_lr)
    if len(val) == 0:
        raise DataError("the validation split is empty: early stopping and the learning-rate schedule need it")
    L.seed_everything(train_config.seed, workers=True, verbose=False)
    shown, bar = progress_callbacks(progress)
    if on_epoch is not None:
        shown.append(EpochHook(on_epoch))
    note = warmup_note(train_config)
    if progress and note:
        print(note, file=sys.stderr, flush=True)
    # Without a progress bar, stay quiet too: no "GPU available" lines (warnings still show).
    logging.getLogger("lightning.pytorch").setLevel(logging.INFO if progress else logging.WARNING)
    on_cpu = not on_cuda(accelerator)
    if not on_cpu:
        torch.backends.cudnn.enabled = True
    checkpoints = RunFolder(run_dir).checkpoints
    best, stop = selection_callbacks(train_config, checkpoints)
    module = LSTMTrainingModule(
        model={
            "input_size": model_config.input_size,
            "hidden_size": model_config.hidden_size,
            "num_layers": model_config.num_layers,
            "output_size": model_config.output_size,
        },
        train=train_config.__dict__.copy(),
        class_weights=[float(w) for w in class_weights(train.label, train_config.class_weighting)],
    )
    module.feature_names = tuple(feature_names)
    if initial_model is not None:
        mine, theirs = module.model.state_dict(), initial_model.state_dict()
        shapes = {k: tuple(v.shape) for k, v in mine.items()} != {k: tuple(v.shape) for k, v in theirs.items()}
        if shapes:
            raise DataError("the warm start's model has other sizes than this configuration's model")
        module.model.load_state_dict(theirs)
    data = WindowDataModule(
        scaled, train, val, target_scaler, batch_size=train_config.batch_size, seed=train_config.seed
    )
    last = RunFolder(run_dir).last_checkpoint
    resumed = None
    if resume and not last.exists():
        best_path = last.with_name("best.ckpt")
        if best_path.exists():  # last.ckpt's write failed (a full disk) after best.ckpt's succeeded
            raise DataError(
                f"--resume: {last} is missing but {best_path.name} exists beside it: the run stopped between writing "
                f"the two (killed, or the disk was full). Copy {best_path.name} to {last.name} to resume from the "
                "best epoch, or start again with --overwrite"
            )
        raise DataError(
            f"--resume: no checkpoint to resume from at {last} (the run stopped before its first epoch ended); "
            "start it again with --overwrite instead of --resume"
        )
    if resume:
        checkpoint = load_checkpoint(last)
        _model_state(checkpoint, last, module.model)  # a clear error before Lightning's own
        resumed = ResumePoint.of(checkpoint)
        resumed.check_criterion(train_config.checkpoint_criterion, last)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=parse_devices(train_config.devices),
        strategy=train_config.strategy,
        precision=resolve_precision(train_config.precision, accelerator),  # type: ignore[arg-type]
        max_epochs=train_config.epochs,
        accumulate_grad_batches=train_config.accumulate_grad_batches,
        gradient_clip_val=train_config.gradient_clip,
        callbacks=[best, stop, LearningRateMonitor(logging_interval="epoch"), *shown],
        plugins=[AtomicCheckpointIO()],
        logger=make_loggers(run_dir, resumed),
        enable_progress_bar=bar,
        enable_model_summary=False,
        use_distributed_sampler=False,  # BucketBatchSampler shares batches across processes itself
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        deterministic=False,
        default_root_dir=str(run_dir),
    )
    with flush_denormals(on_cpu):
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None, weights_only=True)
    # Lightning restores the best path from the checkpoint; in a run folder moved since, look beside `last`.
    best_path = checkpoints / Path(best.best_model_path).name if best.best_model_path else last
    best_path = best_path if best_path.exists() else last
    checkpoint = load_checkpoint(best_path)
    model = LSTMModel.from_config(model_config)
    model.load_state_dict(_model_state(checkpoint, best_path, model))
    criterion = train_config.checkpoint_criterion
    score = best.best_model_score if best.best_model_score is not None else _recorded_score(checkpoint, criterion)
    return FitResult(
        model=model.eval(),
        best_checkpoint=best_path,
        best_val_loss=float(score) if score is not None else math.nan,
        epochs_run=trainer.current_epoch,
        is_global_zero=trainer.is_global_zero,
        criterion=criterion,
    )


def _model_state(checkpoint: dict[str, Any], path: Path, model: LSTMModel) -> dict[str, torch.Tensor]:
    """The model's tensors from a checkpoint, checked against the model's names and shapes."""
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    expected = model.state_dict()
    if set(state) != set(expected):
        raise ModelFileError(f"{path}: its tensors {sorted(state)} are not the model's {sorted(expected)}")
    for name, tensor in expected.items():
        if not isinstance(state[name], torch.Tensor) or state[name].shape != tensor.shape:
            found = tuple(state[name].shape) if isinstance(state[name], torch.Tensor) else type(state[name]).__name__
            raise ModelFileError(
                f"{path}: tensor '{name}' has shape {found}, the model needs {tuple(tensor.shape)}; "
                "was the run trained with other model sizes? Resume with the run's config.toml"
            )
    return state


def _checkpoint_states(checkpoint: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key, value in (checkpoint.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(value, dict):
            yield value


def _recorded_score(checkpoint: dict[str, Any], criterion: str) -> float | None:
    """The best `criterion` value a checkpoint's ModelCheckpoint state records (a resumed, finished run)."""
    for state in _checkpoint_states(checkpoint):
        score = state.get("best_model_score")
        if score is not None and state.get("monitor", criterion) == criterion:
            return float(score)
    return None


def _recorded_criterion(checkpoint: dict[str, Any]) -> str | None:
    """The metric a checkpoint's ModelCheckpoint monitored (runs before `checkpoint_criterion`: val_loss)."""
    for state in _checkpoint_states(checkpoint):
        if isinstance(state.get("monitor"), str):
            return str(state["monitor"])
    return None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
