"""The trainer's settings, checked and resolved without importing Lightning (3 to 5 s): a walk-forward's or a
tune's driver checks them before anything is written while its folds train in other processes, and importing
Lightning there only held up the start of the fold processes or Ray.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from lstm_trading.core.config import TrainConfig
from lstm_trading.core.errors import ConfigError


@functools.cache
def cpu_runs_bf16_lstm() -> bool:
    """Whether this CPU runs an LSTM under bf16 autocast, forward and backward.

    oneDNN has bf16 LSTM kernels only on CPUs with AVX-512 bf16 or AMX; elsewhere (AMD without AVX-512, older
    Intel) it fails with "could not create a primitive descriptor". torch has no public flag for this, so a
    one-step LSTM, plain and packed as the model runs it, is tried once per process.
    """
    lstm = nn.LSTM(2, 2, batch_first=True)
    try:
        for packed in (False, True):
            x = torch.zeros(1, 1, 2, requires_grad=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                steps = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([1]), batch_first=True) if packed else x
                _, (h, _) = lstm(steps)
            h.float().sum().backward()
    except RuntimeError:
        return False
    return True


ACCELERATORS = ("auto", "cpu", "cuda", "gpu")


def on_cuda(accelerator: str) -> bool:
    """Whether Lightning will train on CUDA: asked for by name (`cuda` or `gpu`), or `auto` with a CUDA device."""
    return accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available())


def check_trainer(train_config: TrainConfig, accelerator: str) -> None:
    """What Lightning would refuse only after the run folder was cleared for `--overwrite`: the accelerator, a
    CUDA device that is not there, the strategy's name, more GPUs than the machine has, and the precision."""
    if accelerator not in ACCELERATORS:
        raise ConfigError(f"--accelerator: must be one of {', '.join(ACCELERATORS)}, got {accelerator!r}")
    if accelerator in ("cuda", "gpu") and not torch.cuda.is_available():
        raise ConfigError(f"--accelerator {accelerator}: this machine has no CUDA device; use cpu or auto")
    strategy = train_config.strategy
    if strategy != "auto":
        from lightning.pytorch.strategies import StrategyRegistry  # only a named strategy needs Lightning's list

        if strategy not in StrategyRegistry.available_strategies():
            known = ", ".join(s for s in sorted(StrategyRegistry.available_strategies()) if "_find_unused" not in s)
            raise ConfigError(f"train.strategy: unknown Lightning strategy {strategy!r} (known: auto, {known})")
    devices = parse_devices(train_config.devices)
    if on_cuda(accelerator) and isinstance(devices, int) and devices > torch.cuda.device_count():
        raise ConfigError(
            f"train.devices: {devices} GPUs asked for, this machine has {torch.cuda.device_count()}; give fewer"
        )
    resolve_precision(train_config.precision, accelerator)


def resolve_precision(precision: str, accelerator: str) -> str:
    """`auto`: bf16-mixed on CUDA cards that have it, else 16-mixed with gradient scaling; fp32 on CPU.

    `bf16-mixed` on a CPU without bf16 LSTM kernels is refused here, before a run folder is touched, rather
    than as oneDNN's traceback in the first training step.
    """
    cuda = on_cuda(accelerator)
    if precision == "auto":
        if cuda:
            return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        return "32-true"
    if precision == "bf16-mixed" and not cuda and not cpu_runs_bf16_lstm():
        raise ConfigError(
            "train.precision = bf16-mixed: this CPU has no bf16 LSTM kernels (oneDNN needs AVX-512 bf16 or AMX); "
            "use --precision 32-true, which is as fast on CPU (benchmarks/README.md)"
        )
    return precision


def parse_devices(devices: str) -> int | str:
    """`train.devices` as Lightning takes it (TrainConfig has checked it is 'auto' or a positive count)."""
    return "auto" if devices == "auto" else int(devices)
