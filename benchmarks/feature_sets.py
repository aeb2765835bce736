"""Feature sets and other symbols, measured: test log-loss of the prior-corrected probabilities against the prior's.

Issue 14 asks that `levels` be compared with `seed`, and `--with` on a correlated pair, by measurement. Each
data set is labelled once (first-touch, the demo's settings: every 30 minutes, 24-hour horizon, 2 / 3 ATR) and
split once (70 / 15 / 15 by time, purged); each condition trains the demo's small configuration (360-minute
windows, 12 epochs, hidden 80) with `--seeds` seeds, and the gbm baseline once (it is deterministic), on the
same samples. The bar is the class prior's test log-loss (the training class frequencies given to every test
moment): a model below it carries information about the label, one above it does not.

Data: `demo` (the demo's synthetic market), `bybit` and `binance` (the shared real months, ../shared/data or
the gzip copies in tests/data), and `pair`: the demo market as ETHUSDT with a second symbol beside it, either
one that *leads* it by `--lag` minutes (the same synthetic path, `lag` minutes earlier, at 20 times the price:
its last minutes are ETH's next ones, so `--with` must help) or an *independent* market (another seed: `--with`
must not help). The pair's rows without `--with` are the demo's `levels` rows (same candles, labels, samples).

    PYTHONPATH=src .venv/bin/python benchmarks/feature_sets.py [--data demo bybit binance pair] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import gzip
import io
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lstm_trading.core.config import Config
from lstm_trading.core.timeutil import to_unix_seconds
from lstm_trading.data.synthetic import synthetic_candles
from lstm_trading.demo import DemoSettings
from lstm_trading.evaluate.metrics import class_priors, classification_metrics, prior_log_loss
from lstm_trading.features.compute import compute_features
from lstm_trading.features.symbols import join_symbols
from lstm_trading.models.bundle import load_bundle
from lstm_trading.predict import predict_windows
from lstm_trading.runs.train import Prepared, prepare, train_run
from lstm_trading.samples.labels import label_first_touch

ROOT = Path(__file__).resolve().parents[1]
REAL = {
    "bybit": "bybit_ethusdt_1m_2025-05-29_2025-06-29.csv",
    "binance": "binance_ethusdt_1m_2021-08-09_2021-09-13.csv",
}


def real_candles(name: str) -> pd.DataFrame:
    """A shared real month: ../shared/data when the checkout has it, else the vendored gzip copy."""
    shared = ROOT.parent / "shared" / "data" / REAL[name]
    text = (
        shared.read_bytes()
        if shared.exists()
        else gzip.decompress((ROOT / "tests" / "data" / f"{REAL[name]}.gz").read_bytes())
    )
    frame = pd.read_csv(io.BytesIO(text))
    frame["timestamp"] = to_unix_seconds(frame["timestamp"])
    return frame.iloc[:-1].astype({"timestamp": np.int64}).reset_index(drop=True)  # the last row may be forming


def leader_of(days: float, seed: int, lag: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The demo market and a symbol that leads it by `lag` minutes: the same path `lag` minutes earlier (a
    shorter synthetic market is a prefix of a longer one), at 20 times the price, on the same minutes."""
    minutes = int(days * 1440)
    longer = synthetic_candles((minutes + lag + 1) / 1440, seed=seed)
    eth = longer.iloc[:minutes].reset_index(drop=True)
    ahead = longer.iloc[lag : minutes + lag].reset_index(drop=True)
    ahead[["open", "high", "low", "close"]] *= 20.0
    ahead["timestamp"] = eth["timestamp"].to_numpy()
    return eth, ahead


@dataclass(frozen=True)
class Condition:
    data: str
    feature_set: str
    with_symbol: str  # "" (none), "leader" or "independent"


def labelled(candles: pd.DataFrame, config: Config) -> pd.DataFrame:
    labels = label_first_touch(candles, compute_features(candles, config.features), config.labels)
    return labels.trades.assign(label=labels.trades["side"].map({"Buy": 0, "Sell": 1, "Invalid": 2}))


def prepared(candles: pd.DataFrame, trades: pd.DataFrame, config: Config) -> Prepared:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trades inside the warm-up are skipped: expected here
        return prepare(candles, trades, config, symbol="ETHUSDT", horizon_seconds=config.labels.horizon_seconds)


def one_run(data: Prepared, config: Config, kind: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        run = train_run(data, config, Path(folder) / "run", accelerator="cpu", progress=False, kind=kind)
        seconds = time.perf_counter() - started
        bundle = load_bundle(Path(folder) / "run")
    test = data.split.test
    proba = predict_windows(bundle, data.scaled, test.end, test.length, workers=1).proba  # prior-corrected
    metrics = classification_metrics(test.label, proba.argmax(axis=1), proba)
    prior = prior_log_loss(test.label, class_priors(data.split.train.label))
    return {
        "log_loss": float(metrics["log_loss"]),
        "prior": prior,
        "gain": prior - float(metrics["log_loss"]),
        "accuracy": float(metrics["accuracy"]),
        "val_loss": float(run.best_val_loss),
        "seconds": seconds,
    }


def conditions(names: list[str]) -> list[Condition]:
    chosen = []
    for name in names:
        if name == "pair":
            chosen += [Condition("pair", "levels", "leader"), Condition("pair", "levels", "independent")]
        else:
            chosen += [Condition(name, "seed", ""), Condition(name, "levels", "")]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", nargs="+", choices=["demo", "bybit", "binance", "pair"], default=["demo", "bybit", "binance", "pair"]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=DemoSettings().epochs)
    parser.add_argument("--lag", type=int, default=5, help="Minutes by which the leading symbol leads.")
    parser.add_argument("--models", nargs="+", choices=["lstm", "gbm"], default=["lstm", "gbm"])
    args = parser.parse_args()
    settings = DemoSettings(epochs=args.epochs)
    base = settings.config()
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, {settings.max_len}-minute windows, "
        f"{args.epochs} epochs, lead {args.lag} minutes"
    )
    header = (
        "data",
        "features",
        "with",
        "model",
        "seed",
        "log_loss",
        "prior",
        "gain",
        "accuracy",
        "val_loss",
        "seconds",
    )
    print(" ".join(f"{h:>11}" for h in header), flush=True)
    results: dict[tuple[Condition, str], list[dict[str, float]]] = {}
    markets: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for condition in conditions(args.data):
        config = base.with_overrides("features", feature_set=condition.feature_set)
        if condition.data not in markets:
            if condition.data in ("demo", "pair"):
                eth, leader = leader_of(settings.days, settings.seed, args.lag)
                markets[condition.data] = (eth, labelled(eth, base))
                markets["leader"] = (leader, pd.DataFrame())
            else:
                candles = real_candles(condition.data)
                markets[condition.data] = (candles, labelled(candles, base))
        candles, trades = markets[condition.data]
        if condition.with_symbol:
            other = (
                markets["leader"][0]
                if condition.with_symbol == "leader"
                else synthetic_candles(settings.days, seed=settings.seed + 1_000, start_price=60_000.0)
            )
            assert (other["timestamp"].to_numpy() == candles["timestamp"].to_numpy()).all()
            candles = join_symbols(candles, {"BTCUSDT": other})
            config = config.with_overrides("features", with_symbols=("BTCUSDT",))
        data = prepared(candles, trades, config)
        for kind in args.models:
            for seed in args.seeds if kind == "lstm" else args.seeds[:1]:
                row = one_run(data, config.with_overrides("train", seed=seed), kind)
                results.setdefault((condition, kind), []).append(row)
                cells = (condition.data, condition.feature_set, condition.with_symbol or "-", kind, str(seed))
                print(
                    " ".join(f"{c:>11}" for c in cells) + " " + " ".join(f"{row[h]:>11.4f}" for h in header[5:]),
                    flush=True,
                )
    print("\nmean over seeds (sample std); gain = prior's log-loss - model's (> 0: information about the label)")
    print(
        f"{'data':>8} {'features':>8} {'with':>11} {'model':>5} {'runs':>4} {'log-loss':>17} {'prior':>7} {'gain':>17}"
    )
    for (condition, kind), rows in results.items():
        loss = np.array([r["log_loss"] for r in rows])
        gain = np.array([r["gain"] for r in rows])
        name = f"{condition.data:>8} {condition.feature_set:>8} {condition.with_symbol or '-':>11} {kind:>5}"
        figures = f"{loss.mean():>8.4f} ({_spread(loss):>6}) {rows[0]['prior']:>7.4f} {gain.mean():>+8.4f}"
        print(f"{name} {len(rows):>4} {figures} ({_spread(gain):>6})", flush=True)


def _spread(values: np.ndarray) -> str:
    return f"{values.std(ddof=1):.4f}" if len(values) > 1 else "-"


if __name__ == "__main__":
    main()
