"""bf16-mixed against fp32 training on CPU: validation and test metrics, and time, on the demo and on real candles.

Trains the demo's small configuration (6-hour windows, 12 epochs, first-touch labels every 30 minutes) with
`--seeds` seeds in each precision, on the demo's synthetic market and on the real Bybit candles, and prints
each run's best validation loss, test macro-F1, accuracy and log-loss and its seconds, then per data set the
mean and spread by precision. bf16-mixed is "within noise" of fp32 when the difference of the means is within
twice the spread of fp32 across seeds. Issue 6: keep fp32 the default unless it is.

    PYTHONPATH=src .venv/bin/python benchmarks/precision.py [--seeds 0 1 2] [--epochs 12] [--data demo bybit]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lstm_trading.core.config import Config
from lstm_trading.core.timeutil import to_unix_seconds
from lstm_trading.data.synthetic import synthetic_candles
from lstm_trading.demo import DemoSettings
from lstm_trading.evaluate.metrics import classification_metrics
from lstm_trading.features.compute import compute_features
from lstm_trading.predict import predict_windows
from lstm_trading.runs.train import Prepared, prepare, train_run
from lstm_trading.samples.labels import label_first_touch

BYBIT = Path(__file__).resolve().parents[1] / "tests" / "data" / "bybit_ethusdt_1m_2025-05-29_2025-06-29.csv.gz"
PRECISIONS = ("32-true", "bf16-mixed")


def prepared_data(candles: pd.DataFrame, config: Config) -> Prepared:
    labels = label_first_touch(candles, compute_features(candles, config.features), config.labels)
    trades = labels.trades.assign(label=labels.trades["side"].map({"Buy": 0, "Sell": 1, "Invalid": 2}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trades inside the warm-up are skipped: expected here
        return prepare(candles, trades, config, symbol="ETHUSDT", horizon_seconds=config.labels.horizon_seconds)


def one_run(prepared: Prepared, config: Config) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        run = train_run(prepared, config, Path(folder) / "run", accelerator="cpu", progress=False)
        seconds = time.perf_counter() - started
        from lstm_trading.models.bundle import load_bundle

        bundle = load_bundle(Path(folder) / "run")
    test = prepared.split.test
    proba, _, _ = predict_windows(bundle, prepared.scaled, test.end, test.length, workers=1)
    metrics = classification_metrics(test.label, proba.argmax(axis=1), proba)
    return {
        "val_loss": run.best_val_loss,
        "macro_f1": metrics["macro_f1"],
        "accuracy": metrics["accuracy"],
        "log_loss": metrics.get("log_loss", float("nan")),
        "epochs": run.epochs_run,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=DemoSettings().epochs)
    parser.add_argument("--data", nargs="+", choices=["demo", "bybit"], default=["demo", "bybit"])
    args = parser.parse_args()
    settings = DemoSettings(epochs=args.epochs)
    base = settings.config()
    real = pd.read_csv(BYBIT)
    real["timestamp"] = to_unix_seconds(real["timestamp"])
    real = real.iloc[:-1]  # the last row may be a still-forming candle
    data = {"demo": synthetic_candles(settings.days, seed=settings.seed), "bybit": real}
    data = {name: data[name] for name in args.data}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {settings.max_len}-minute windows")
    columns = ("val_loss", "macro_f1", "accuracy", "log_loss", "epochs", "seconds")
    print(f"{'data':>6} {'precision':>10} {'seed':>4} " + " ".join(f"{c:>9}" for c in columns), flush=True)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for name, candles in data.items():
        prepared = prepared_data(candles, base)
        for seed in args.seeds:
            for precision in PRECISIONS:
                config = base.with_overrides("train", precision=precision, seed=seed)
                row = one_run(prepared, config)
                results.setdefault((name, precision), []).append(row)
                print(
                    f"{name:>6} {precision:>10} {seed:>4} " + " ".join(f"{row[c]:>9.4f}" for c in columns), flush=True
                )
    print("\nmean (spread across seeds); bf16 within noise: |mean bf16 - mean fp32| <= 2 x spread of fp32")
    for name in data:
        for metric in ("val_loss", "macro_f1", "accuracy", "log_loss", "seconds"):
            fp32 = np.array([r[metric] for r in results[(name, "32-true")]])
            bf16 = np.array([r[metric] for r in results[(name, "bf16-mixed")]])
            spread = float(fp32.std(ddof=1)) if len(fp32) > 1 else float("nan")
            within = abs(bf16.mean() - fp32.mean()) <= 2 * spread
            print(
                f"{name:>6} {metric:>9}: fp32 {fp32.mean():.4f} ({spread:.4f})  bf16 {bf16.mean():.4f} "
                f"({float(bf16.std(ddof=1)) if len(bf16) > 1 else float('nan'):.4f})"
                + ("" if metric == "seconds" else f"  {'within noise' if within else 'OUTSIDE noise'}"),
                flush=True,
            )


if __name__ == "__main__":
    main()
