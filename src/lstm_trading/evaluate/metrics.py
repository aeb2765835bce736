"""Out-of-sample metrics next to simple baselines: a model is worth what it adds over them.

Baselines: the majority class, always Invalid, and labels drawn at random with the training class frequencies,
as their expectation (one draw can flatter or shame a model by a standard deviation): accuracy in closed form,
macro-F1 and the per-class figures as the mean and spread of many seeded draws. Its probabilities are the class
prior, whose test log-loss is the bar a model's probabilities must clear to carry any information.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, precision_recall_fscore_support

from lstm_trading.core.config import TargetConfig
from lstm_trading.core.errors import DataError
from lstm_trading.features.matrix import FeatureMatrix
from lstm_trading.predict import predict_windows, scaled_features
from lstm_trading.samples.targets import BUY, CLASS_NAMES, INVALID, SELL, Samples, build_samples

if TYPE_CHECKING:
    from lstm_trading.models.bundle import Bundle


LABELS = list(range(len(CLASS_NAMES)))


def class_priors(train_labels: np.ndarray) -> np.ndarray:
    counts = np.bincount(train_labels, minlength=len(CLASS_NAMES)).astype(np.float64)
    return counts / counts.sum()


def _log_loss(y_true: np.ndarray, proba: np.ndarray) -> float:
    clipped = np.clip(proba, 1e-7, 1.0)  # a confident miss costs ln(1e7), not infinity
    return float(log_loss(y_true, clipped / clipped.sum(axis=1, keepdims=True), labels=LABELS))


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
        metrics["log_loss"] = _log_loss(y_true, proba)
    return metrics


def prior_log_loss(y_true: np.ndarray, priors: np.ndarray) -> float:
    """The test log-loss of the class prior (the training class frequencies) given to every sample."""
    return _log_loss(y_true, np.broadcast_to(np.asarray(priors, dtype=np.float64), (len(y_true), len(CLASS_NAMES))))


def no_information(log_loss: float | None, prior_log_loss: float | None) -> str | None:
    """The line to show when a model's log-loss is above the class prior's, else None.

    Above the prior, the probabilities say less about the label than the training class frequencies do, whatever
    the accuracy or the ECE (a model that always says the prior is perfectly calibrated). Digits are added until
    the two figures differ on screen.
    """
    if log_loss is None or prior_log_loss is None or not np.isfinite([log_loss, prior_log_loss]).all():
        return None
    if log_loss <= prior_log_loss:
        return None
    digits = 3
    while digits < 6 and f"{log_loss:.{digits}f}" == f"{prior_log_loss:.{digits}f}":
        digits += 1
    return f"no information: log-loss {log_loss:.{digits}f} is above the class prior's {prior_log_loss:.{digits}f}"


STRATIFIED_DRAWS = 2_000
_DRAW_CELLS = 4_000_000  # draws x samples per chunk: about 32 MB of int64 at a time


def stratified_random(
    y_true: np.ndarray, priors: np.ndarray, *, draws: int = STRATIFIED_DRAWS, seed: int = 0
) -> dict[str, Any]:
    """Labels drawn independently with the class `priors`, as their expectation on `y_true`.

    Accuracy in closed form: `sum_k prior_k * freq_k` (freq the test labels' frequencies), its spread
    `sqrt(sum_i p_i (1 - p_i)) / n` with `p_i` the prior of sample i's label. Macro-F1 and per-class precision,
    recall and F1 are ratios with no closed-form mean: mean and standard deviation over `draws` seeded draws,
    all at once from their confusion matrices. The confusion matrix is the expected one, `count_k * prior_j`;
    the log-loss is the prior's (the baseline's probabilities are the priors).
    """
    y = np.asarray(y_true, dtype=np.int64)
    priors = np.asarray(priors, dtype=np.float64)
    k, n = len(CLASS_NAMES), len(y)
    chance = priors[y]  # (n,) probability that sample i's draw is right
    cumulative = np.cumsum(priors)
    cumulative[-1] = np.inf  # rounding never leaves a uniform number above the last class
    rng = np.random.default_rng(seed)
    confusions = np.empty((draws, k, k), dtype=np.int64)
    chunk = max(1, _DRAW_CELLS // max(n, 1))
    for start in range(0, draws, chunk):
        d = min(chunk, draws - start)
        drawn = np.searchsorted(cumulative, rng.random((d, n)), side="right")  # (d, n) classes by inverse CDF
        cells = (np.arange(d)[:, None] * k + y[None, :]) * k + drawn  # (d, n) flat index of (draw, true, drawn)
        confusions[start : start + d] = np.bincount(cells.ravel(), minlength=d * k * k).reshape(d, k, k)
    hit = np.diagonal(confusions, axis1=1, axis2=2).astype(np.float64)  # (D, K)
    predicted, actual = confusions.sum(axis=1), confusions.sum(axis=2)  # (D, K) each
    with np.errstate(invalid="ignore", divide="ignore"):  # zero_division=0, as sklearn's figures for the model
        precision = np.where(predicted > 0, hit / predicted, 0.0)
        recall = np.where(actual > 0, hit / actual, 0.0)
        f1 = np.where(predicted + actual > 0, 2 * hit / (predicted + actual), 0.0)
    macro = f1.mean(axis=1)
    support = np.bincount(y, minlength=k)
    return {
        "accuracy": float(chance.mean()) if n else float("nan"),
        "accuracy_std": float(np.sqrt((chance * (1 - chance)).sum()) / n) if n else float("nan"),
        "macro_f1": float(macro.mean()),
        "macro_f1_std": float(macro.std()),
        "per_class": {
            name: {
                "precision": float(precision[:, i].mean()),
                "recall": float(recall[:, i].mean()),
                "f1": float(f1[:, i].mean()),
                "f1_std": float(f1[:, i].std()),
                "support": int(support[i]),
            }
            for i, name in enumerate(CLASS_NAMES)
        },
        "confusion": (support[:, None] * priors[None, :]).tolist(),
        "log_loss": prior_log_loss(y, priors) if n else float("nan"),
        "draws": int(draws),
        "seed": int(seed),
    }


def baseline_metrics(y_true: np.ndarray, train_labels: np.ndarray, *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """The same metrics for the majority class, always Invalid, and stratified random labels (expected)."""
    priors = class_priors(train_labels)
    n = len(y_true)
    majority = int(np.argmax(priors))
    return {
        "majority": classification_metrics(y_true, np.full(n, majority)),
        "always_invalid": classification_metrics(y_true, np.full(n, INVALID)),
        "stratified_random": stratified_random(y_true, priors, seed=seed),
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


def labels_from_counts(counts: dict[str, int]) -> np.ndarray:
    """Training labels rebuilt from the class counts a bundle records (all the baselines need)."""
    return np.repeat(np.arange(len(CLASS_NAMES)), [int(counts.get(name, 0)) for name in CLASS_NAMES])


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
    prior_loss = baselines["stratified_random"]["log_loss"]
    metrics["log_loss_vs_prior"] = metrics["log_loss"] - prior_loss  # below 0: the probabilities carry information
    document: dict[str, Any] = {
        "split": split,
        "samples": len(samples),
        "model": metrics,
        "baselines": baselines,
        "class_prior": {
            "probabilities": {name: float(p) for name, p in zip(CLASS_NAMES, priors, strict=True)},
            "log_loss": prior_loss,
        },
        "no_information": no_information(metrics["log_loss"], prior_loss),
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
    features = scaled_features(bundle, candles)
    samples, _ = build_samples(features.matrix, trades, bundle.target_config)
    proba, sl_pct, tp_pct = predict_windows(
        bundle, features.scaled, samples.end, samples.length, batch_size=batch_size, workers=workers
    )
    counts = bundle.training.class_counts
    if not counts:
        raise DataError(f"{bundle.path}: the bundle records no training class counts; the baselines need them")
    document = evaluation_document(
        samples,
        proba,
        sl_pct,
        tp_pct,
        train_labels=labels_from_counts(counts),
        rule_pct=rule_distances(features.matrix, samples, trades, bundle.target_config),
        seed=seed,
        split=split,
    )
    document["kind"] = bundle.kind
    return document
