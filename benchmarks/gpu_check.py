"""A tiny training on CUDA with mixed precision (16-mixed with gradient scaling, then bf16-mixed), end to end.

Run by benchmarks/gpu_check.sh; prints the precision, epochs, best validation loss and seconds of each run.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import torch

from lstm_trading.core.config import Config
from lstm_trading.data.synthetic import synthetic_candles
from lstm_trading.features.compute import compute_features
from lstm_trading.runs.train import prepare, train_run
from lstm_trading.samples.labels import label_first_touch


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device: this check is for GPU machines"
    print(f"device {torch.cuda.get_device_name(0)}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    config = (
        Config()
        .with_overrides("targets", max_len=1440)
        .with_overrides("labels", every_seconds=1800)
        .with_overrides("train", epochs=3, batch_size=32, accumulate_grad_batches=1, warmup_epochs=1, devices="1")
    )
    candles = synthetic_candles(20, seed=1)
    labels = label_first_touch(candles, compute_features(candles, config.features), config.labels)
    trades = labels.trades.assign(label=labels.trades["side"].map({"Buy": 0, "Sell": 1, "Invalid": 2}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(candles, trades, config, symbol="ETHUSDT")
    print(f"samples {prepared.split.sizes()}")
    for precision in ("16-mixed", "bf16-mixed", "32-true"):
        run_config = config.with_overrides("train", precision=precision)
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            run = train_run(prepared, run_config, Path(folder) / "run", accelerator="cuda", progress=False)
            seconds = time.perf_counter() - started
        print(f"{precision:>10}: {run.epochs_run} epochs, best val loss {run.best_val_loss:.4f}, {seconds:.1f} s")


if __name__ == "__main__":
    main()
