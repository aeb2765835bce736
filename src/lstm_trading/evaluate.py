"""Out-of-sample metrics next to simple baselines: a model is worth what it adds over them.

Baselines: the majority class, always Invalid, and labels drawn at random with the training class frequencies
(seeded); the last one's probabilities are the class priors, so its log-loss is the class-prior entropy.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, precision_recall_fscore_support

from lstm_trading.atomic import write_text_atomic
from lstm_trading.config import TargetConfig
from lstm_trading.errors import DataError
from lstm_trading.predict import MIN_DISTANCE_PCT, forward_windows
from lstm_trading.samples import BUY, CLASS_NAMES, INVALID, SELL, FeatureMatrix, Samples, build_samples
from lstm_trading.timeutil import format_time

if TYPE_CHECKING:
    from lstm_trading.bundle import Bundle

LABELS = list(range(len(CLASS_NAMES)))


def class_priors(train_labels: np.ndarray) -> np.ndarray:
    counts = np.bincount(train_labels, minlength=len(CLASS_NAMES)).astype(np.float64)
    return counts / counts.sum()


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None = None) -> dict[str, Any]:
    """Accuracy, per-class precision / recall / F1, macro-F1, the confusion matrix, and log-loss if `proba`."""
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=LABELS, zero_division=0)
    metrics: dict[str, Any] = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=LABELS, average="macro", zero_division=0)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(CLASS_NAMES)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=LABELS).tolist(),
    }
    if proba is not None:
        clipped = np.clip(proba, 1e-7, 1.0)  # a confident miss costs ln(1e7), not infinity
        metrics["log_loss"] = float(log_loss(y_true, clipped / clipped.sum(axis=1, keepdims=True), labels=LABELS))
    return metrics


def baseline_metrics(y_true: np.ndarray, train_labels: np.ndarray, *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """The same metrics for the majority class, always Invalid, and stratified random labels."""
    priors = class_priors(train_labels)
    n = len(y_true)
    majority = int(np.argmax(priors))
    rng = np.random.default_rng(seed)
    drawn = rng.choice(len(CLASS_NAMES), size=n, p=priors)
    prior_proba = np.broadcast_to(priors, (n, len(CLASS_NAMES)))
    return {
        "majority": classification_metrics(y_true, np.full(n, majority)),
        "always_invalid": classification_metrics(y_true, np.full(n, INVALID)),
        "stratified_random": classification_metrics(y_true, drawn, prior_proba),
    }


def level_errors(true_pct: np.ndarray, predicted_pct: np.ndarray) -> dict[str, float]:
    """Mean and median absolute error of SL or TP distances, in percent of the entry price."""
    error = np.abs(np.asarray(predicted_pct) - np.asarray(true_pct))
    error = error[np.isfinite(error)]
    if len(error) == 0:
        return {"mean_abs": float("nan"), "median_abs": float("nan"), "count": 0}
    return {"mean_abs": float(error.mean()), "median_abs": float(np.median(error)), "count": int(len(error))}


def reliability_table(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> tuple[list[dict[str, float]], float]:
    """Top-class confidence bins against observed accuracy, and the expected calibration error."""
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.arange(bins + 1) / bins  # exact tenths: linspace puts 0.6 at 0.6000000000000001
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    table: list[dict[str, float]] = []
    ece = 0.0
    for b in range(bins):
        inside = which == b
        if not inside.any():
            continue
        mean_confidence, accuracy = float(confidence[inside].mean()), float(correct[inside].mean())
        table.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": int(inside.sum()),
                "confidence": mean_confidence,
                "accuracy": accuracy,
            }
        )
        ece += inside.mean() * abs(mean_confidence - accuracy)
    return table, float(ece)


# --- evaluating a run on its test split (or another journal) ---

FIGURE_CONFUSION = "confusion_matrix.png"
FIGURE_CALIBRATION = "calibration.png"
METRICS_FILE = "metrics.json"


def labels_from_counts(counts: dict[str, int]) -> np.ndarray:
    """Training labels rebuilt from the class counts a bundle records (all the baselines need)."""
    return np.repeat(np.arange(len(CLASS_NAMES)), [int(counts.get(name, 0)) for name in CLASS_NAMES])


def select_test_trades(trades: pd.DataFrame, test_start_times: Sequence[int]) -> pd.DataFrame:
    """The journal's trades whose start time is one of the run's recorded test start times."""
    if not len(test_start_times):
        raise DataError("the run records no test start times (its test split was empty); evaluate on --trades FILE")
    kept = trades[trades["start_time"].isin(np.asarray(test_start_times, dtype=np.int64))]
    if kept.empty:
        raise DataError(
            "none of the journal's trades starts at one of the run's test start times: the journal is not the one "
            "the run was trained on; give the right one with --trades (or evaluate all of another journal's trades)"
        )
    return kept


def _side_levels(samples: Samples, sl_pct: np.ndarray, tp_pct: np.ndarray) -> dict[str, dict[str, Any]]:
    """SL and TP errors (percent of entry) for the true Buy trades, the true Sell trades and both."""
    result: dict[str, dict[str, Any]] = {}
    for name, chosen in (("Buy", samples.label == BUY), ("Sell", samples.label == SELL), ("all", samples.is_trade)):
        result[name] = {
            "stop_loss": level_errors(samples.stop_loss_pct[chosen], sl_pct[chosen]),
            "take_profit": level_errors(samples.take_profit_pct[chosen], tp_pct[chosen]),
        }
    return result


def evaluation_document(
    samples: Samples,
    proba: np.ndarray,
    stop_loss_pct: np.ndarray,
    take_profit_pct: np.ndarray,
    *,
    train_labels: np.ndarray,
    rule_pct: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
    split: str = "test",
) -> dict[str, Any]:
    """The metrics.json document: the model's figures, each baseline's, levels and calibration.

    `rule_pct` are the `k * ATR` distances for the samples whose journal gives its own SL/TP (NaN elsewhere): the
    plain rule the targets otherwise come from, as a baseline for the predicted levels.
    """
    y = samples.label
    metrics = classification_metrics(y, proba.argmax(axis=1), proba)
    metrics["stop_loss_error_pct"] = level_errors(
        samples.stop_loss_pct[samples.is_trade], stop_loss_pct[samples.is_trade]
    )
    metrics["take_profit_error_pct"] = level_errors(
        samples.take_profit_pct[samples.is_trade], take_profit_pct[samples.is_trade]
    )
    metrics["levels"] = _side_levels(samples, stop_loss_pct, take_profit_pct)
    baselines = baseline_metrics(y, train_labels, seed=seed)
    table, ece = reliability_table(y, proba)
    priors = class_priors(train_labels)
    _, prior_ece = reliability_table(y, np.broadcast_to(priors, proba.shape))
    document: dict[str, Any] = {
        "split": split,
        "samples": len(samples),
        "model": metrics,
        "baselines": baselines,
        "calibration": {"table": table, "ece": ece, "baselines": {"stratified_random": prior_ece}},
        "atr_rule": None,
    }
    if rule_pct is not None:
        own = np.isfinite(rule_pct[0]) & samples.is_trade
        if own.any():
            rule = samples.subset(own)
            document["atr_rule"] = {
                "samples": int(own.sum()),
                "levels": _side_levels(rule, rule_pct[0][own], rule_pct[1][own]),
                "model_levels": _side_levels(rule, stop_loss_pct[own], take_profit_pct[own]),
            }
    return document


def rule_distances(
    matrix: FeatureMatrix, samples: Samples, trades: pd.DataFrame, config: TargetConfig
) -> tuple[np.ndarray, np.ndarray] | None:
    """`k * ATR` distances (% of entry) for the samples whose journal row has its own SL/TP; None if none has."""
    if "stop_loss" not in trades or "take_profit" not in trades:
        return None
    levels = trades.set_index("row")[["stop_loss", "take_profit"]]
    own = np.isfinite(levels.reindex(samples.journal_row).to_numpy(dtype=np.float64)).all(axis=1)
    if not own.any():
        return None
    atr = matrix.atr[samples.end - 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        sl = np.where(own, 100.0 * config.k_sl * atr / samples.entry_price, np.nan)
        tp = np.where(own, 100.0 * config.k_tp * atr / samples.entry_price, np.nan)
    return sl, tp


def evaluate_bundle(
    bundle: Bundle,
    candles: pd.DataFrame,
    trades: pd.DataFrame,
    *,
    split: str = "test",
    seed: int = 0,
    batch_size: int = 64,
    workers: int | None = None,
) -> dict[str, Any]:
    """Rebuild the samples of `trades` from `candles`, predict them in batches, and measure.

    `candles` must hold the history before the first trade (window plus warm-up, `bundle.history_minutes`).
    """
    from lstm_trading.backtest import scaled_features

    features = scaled_features(bundle, candles)
    samples, _ = build_samples(features.matrix, trades, bundle.target_config)
    proba, sl, tp = forward_windows(
        bundle.model, features.scaled, samples.end, samples.length, batch_size=batch_size, workers=workers
    )
    sl_pct, tp_pct = bundle.target_scaler.inverse(sl, tp)
    sl_pct, tp_pct = np.maximum(sl_pct, MIN_DISTANCE_PCT), np.maximum(tp_pct, MIN_DISTANCE_PCT)
    counts = (bundle.meta.get("training") or {}).get("class_counts")
    if not counts:
        raise DataError(f"{bundle.path}: the bundle records no training class counts; the baselines need them")
    return evaluation_document(
        samples,
        proba,
        sl_pct,
        tp_pct,
        train_labels=labels_from_counts(counts),
        rule_pct=rule_distances(features.matrix, samples, trades, bundle.target_config),
        seed=seed,
        split=split,
    )


def json_safe(value: Any) -> Any:
    """A copy with NaN and infinities as None (JSON `null`): strict JSON that every reader accepts."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_evaluation(run_dir: Path, document: dict[str, Any]) -> list[Path]:
    """metrics.json and the confusion-matrix and calibration figures, into the run folder."""
    from lstm_trading.report import plot_calibration, plot_confusion

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / METRICS_FILE
    write_text_atomic(path, json.dumps(json_safe(document), indent=2, allow_nan=False) + "\n")
    confusion = plot_confusion(np.asarray(document["model"]["confusion"]), run_dir / FIGURE_CONFUSION)
    calibration = plot_calibration(
        document["calibration"]["table"], document["calibration"]["ece"], run_dir / FIGURE_CALIBRATION
    )
    return [path, confusion, calibration]


# --- tables for the command line ---


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def metric_rows(document: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Header and rows: each classification figure for the model and, beside it, for each baseline."""
    names = ["model", *document["baselines"]]
    columns = [document["model"], *document["baselines"].values()]
    header = ("metric", *(n.replace("_", " ") for n in names))
    rows: list[tuple[str, ...]] = [
        ("accuracy", *(_cell(c["accuracy"]) for c in columns)),
        ("macro-F1", *(_cell(c["macro_f1"]) for c in columns)),
        ("log-loss", *(_cell(c.get("log_loss")) for c in columns)),
    ]
    for name in CLASS_NAMES:
        for key, label in (("precision", "P"), ("recall", "R"), ("f1", "F1")):
            rows.append((f"{name} {label}", *(_cell(c["per_class"][name][key]) for c in columns)))
    ece = document["calibration"]
    rows.append(("ECE", _cell(ece["ece"]), "-", "-", _cell(ece["baselines"]["stratified_random"])))
    return header, rows


def level_rows(document: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Header and rows: SL / TP errors in % of entry (mean abs, median abs) by side, model and `k * ATR` rule."""
    header: tuple[str, ...] = (
        "levels (% of entry)",
        "side",
        "trades",
        "SL mean abs",
        "SL median abs",
        "TP mean abs",
        "TP median abs",
    )
    sources = [("model", document["model"]["levels"])]
    rule = document.get("atr_rule")
    if rule:
        if rule["samples"] != document["model"]["levels"]["all"]["stop_loss"]["count"]:
            sources.append(("model, rows with own SL/TP", rule["model_levels"]))
        sources.append(("k * ATR rule, rows with own SL/TP", rule["levels"]))
    rows: list[tuple[str, ...]] = []
    for name, levels in sources:
        for side in ("Buy", "Sell", "all"):
            sl, tp = levels[side]["stop_loss"], levels[side]["take_profit"]
            rows.append(
                (
                    name,
                    side,
                    str(sl["count"]),
                    _cell(sl["mean_abs"], 4),
                    _cell(sl["median_abs"], 4),
                    _cell(tp["mean_abs"], 4),
                    _cell(tp["median_abs"], 4),
                )
            )
    return header, rows


# --- the run folder, its recorded sources, and the candles they name ---


def run_sources(bundle: Bundle, db: Path | None, symbol: str | None) -> tuple[Path, str]:
    """The database and symbol to read: the ones given, else the ones the run recorded at training."""
    sources = (bundle.meta.get("training") or {}).get("sources") or {}
    chosen_db = db if db is not None else sources.get("db")
    if chosen_db is None:
        raise DataError(f"{bundle.path}: the run records no candle database; give one with --db")
    return Path(chosen_db), symbol or sources.get("symbol") or "ETHUSDT"


def load_history(db: Path, symbol: str, first: int, end: int, history_minutes: int) -> pd.DataFrame:
    """Candles with open time in `[first - history, end)`: every window from `first` on, with its warm-up."""
    from lstm_trading.data.store import CandleStore
    from lstm_trading.timeutil import MINUTE, format_time

    if not db.exists():
        raise DataError(f"{db}: no such candle database; give the right one with --db")
    with CandleStore(db) as store:
        candles = store.read(symbol, start=first - history_minutes * MINUTE, end=end)
        if candles.empty:
            held = store.time_range(symbol)
            where = f"it holds {format_time(held[0])} to {format_time(held[1])}" if held else f"it has no {symbol}"
            raise DataError(
                f"{db}: no {symbol} candles from {format_time(first - history_minutes * MINUTE)} to "
                f"{format_time(end)} ({where})"
            )
    return candles


def evaluate_run(
    run_dir: Path,
    *,
    db: Path | None = None,
    symbol: str | None = None,
    trades: Path | None = None,
    sheet: str | None = None,
    seed: int = 0,
) -> tuple[dict[str, Any], list[Path]]:
    """Evaluate a run on its test split (the recorded journal's trades at the recorded test start times), or on
    every trade of another journal (`trades`); write metrics.json and the figures into the run folder."""
    from lstm_trading.bundle import load_bundle
    from lstm_trading.data.journal import JOURNAL_SHEET, read_journal

    bundle = load_bundle(run_dir)
    training = bundle.meta.get("training") or {}
    sources = training.get("sources") or {}
    if trades is None:
        if not sources.get("journal"):
            raise DataError(f"{run_dir}: the run records no journal; give the trades to evaluate with --trades FILE")
        journal = read_journal(sources["journal"], sheet=sheet or sources.get("sheet") or JOURNAL_SHEET)
        chosen = select_test_trades(journal.trades, training.get("test_start_times") or [])
        split = "test"
    else:
        journal = read_journal(trades, sheet=sheet or JOURNAL_SHEET)
        chosen, split = journal.trades, f"journal {trades.name}"
        period: list[int] = training.get("train_period") or []
        # the period holds candle open times: the last training trade is one minute after the last candle
        seen = int((chosen["start_time"] <= period[1] + 60).sum()) if period else 0
        if seen:
            warnings.warn(
                f"{seen:,} of the {len(chosen):,} trades in {trades} fall in the run's training period "
                f"({format_time(period[0])} to {format_time(period[1])}); the model was fitted on them, "
                "so these metrics flatter it",
                stacklevel=2,
            )
    db_path, symbol = run_sources(bundle, db, symbol)
    times = chosen["start_time"].to_numpy(dtype=np.int64)
    candles = load_history(db_path, symbol, int(times.min()), int(times.max()), bundle.history_minutes)
    document = evaluate_bundle(bundle, candles, chosen, split=split, seed=seed)
    document["sources"] = {"db": str(db_path), "symbol": symbol, "journal": str(journal.path)}
    return document, write_evaluation(run_dir, document)
