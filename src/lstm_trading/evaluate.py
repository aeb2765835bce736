"""Out-of-sample metrics next to simple baselines: a model is worth what it adds over them.

Baselines: the majority class, always Invalid, and labels drawn at random with the training class frequencies
(seeded); the last one's probabilities are the class priors, so its log-loss is the class-prior entropy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, precision_recall_fscore_support

from lstm_trading.samples import CLASS_NAMES, INVALID

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
    edges = np.linspace(0, 1, bins + 1)
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
