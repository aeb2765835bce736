"""Fitting the gradient-boosting baseline: a LightGBM classifier for the label, two regressors for SL and TP.

The same samples, split and scalers as the LSTM's: inputs summarise each sample's own window of the scaled
feature matrix (`features.py`). The classifier weights classes by inverse training frequency, as the LSTM's
loss does, on the validation split too, so its log-loss weighs classes as the LSTM's `val_class_loss` does
(LightGBM divides the weighted sum by the sum of the weights, the LSTM by the number of samples). The
regressors learn the targets in the target scaler's units from the Buy and Sell samples only (an Invalid trade
has no stop loss). Each booster stops early on its validation metric (log-loss, l2) and keeps its best round.
So the classifier is always chosen by its validation classification log-loss, the LSTM's default
`train.checkpoint_criterion = val_class_loss`; `val_loss` (the LSTM's combined loss) has no gbm counterpart,
since the three boosters are fitted apart, and a gbm run records `val_class_loss` as its criterion whatever
the setting (`GbmFitResult.criterion`).
One thread, row-wise histograms and `deterministic`: a seed gives the same trees on any number of cores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np

from lstm_trading.core.errors import DataError
from lstm_trading.models.gbm.features import RETURN_ROWS, CloseColumn, summary_names, window_summary
from lstm_trading.models.gbm.predictor import N_CLASSES, GbmPredictor
from lstm_trading.samples.scalers import FeatureScaler, TargetScaler
from lstm_trading.samples.targets import Samples, class_weights


@dataclass(frozen=True)
class GbmSettings:
    """LightGBM's settings for all three boosters: small trees and a slow rate, as suits a few thousand trades."""

    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 20
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    max_rounds: int = 2_000
    early_stopping_rounds: int = 50

    def params(self, seed: int) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2,
            "seed": seed,  # LightGBM derives its bagging, feature and data seeds from it
            "num_threads": 1,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }


@dataclass(frozen=True)
class BoosterFit:
    """One booster cut at its best round, with its validation score there and its per-round log."""

    booster: lgb.Booster
    best_round: int
    rounds_run: int
    metric: str
    best_val: float
    history: dict[str, list[float]] = field(default_factory=dict)  # "train" and "val": the metric per round


@dataclass(frozen=True)
class GbmFitResult:
    predictor: GbmPredictor
    fits: dict[str, BoosterFit]  # classifier, stop_loss, take_profit

    @property
    def best_val_loss(self) -> float:
        """The classifier's class-weighted validation log-loss at its best round."""
        return self.fits["classifier"].best_val

    @property
    def criterion(self) -> str:
        """What chose the classifier's round, named as the LSTM's criterion setting names it."""
        return "val_class_loss"

    @property
    def rounds(self) -> int:
        return self.fits["classifier"].best_round


def _boost(
    params: dict[str, Any],
    settings: GbmSettings,
    inputs: tuple[np.ndarray, np.ndarray],
    targets: tuple[np.ndarray, np.ndarray],
    weights: tuple[np.ndarray | None, np.ndarray | None],
    names: list[str],
) -> BoosterFit:
    train_set = lgb.Dataset(inputs[0], targets[0], weight=weights[0], feature_name=names, free_raw_data=False)
    val_set = train_set.create_valid(inputs[1], targets[1], weight=weights[1])
    evaluations: dict[str, Any] = {}
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=settings.max_rounds,
        valid_sets=[train_set, val_set],
        valid_names=["train", "val"],
        callbacks=[
            lgb.early_stopping(settings.early_stopping_rounds, first_metric_only=True, verbose=False),
            lgb.record_evaluation(evaluations),
        ],
    )
    metric = str(params["metric"])
    history = {name: [float(v) for v in evaluations[name][metric]] for name in ("train", "val")}
    best = booster.best_iteration if booster.best_iteration > 0 else len(history["val"])
    # Rebuilt from its text cut at the best round: the booster in memory is the one its file loads as.
    kept = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    return BoosterFit(kept, best, len(history["val"]), metric, history["val"][best - 1], history)


def fit_gbm(
    scaled: np.ndarray,
    train: Samples,
    val: Samples,
    feature_names: tuple[str, ...] | list[str],
    feature_scaler: FeatureScaler,
    target_scaler: TargetScaler,
    *,
    seed: int,
    settings: GbmSettings = GbmSettings(),
    workers: int | None = None,
    class_weighting: str = "inverse",
) -> GbmFitResult:
    """Fit the three boosters on the training samples, stopping each early on the validation split."""
    if len(val) == 0:
        raise DataError("the validation split is empty: early stopping of the gbm model needs it")
    if not val.is_trade.any():
        raise DataError(
            "the validation split has no Buy or Sell trade: early stopping of the SL/TP regressors needs some"
        )
    close = CloseColumn.of(feature_names, feature_scaler.offset, feature_scaler.scale)
    names = summary_names(feature_names, RETURN_ROWS)
    x_train = window_summary(scaled, train.end, train.length, close, workers=workers)  # (n_train, 5 F + 3)
    x_val = window_summary(scaled, val.end, val.length, close, workers=workers)
    params = settings.params(seed)
    weights = class_weights(train.label, class_weighting)
    classifier = _boost(
        {**params, "objective": "multiclass", "num_class": N_CLASSES, "metric": "multi_logloss"},
        settings,
        (x_train, x_val),
        (train.label, val.label),
        (weights[train.label], weights[val.label]),
        names,
    )
    sl_train, tp_train = target_scaler.transform(train.stop_loss_pct, train.take_profit_pct)
    sl_val, tp_val = target_scaler.transform(val.stop_loss_pct, val.take_profit_pct)
    trade_train, trade_val = train.is_trade, val.is_trade
    regressors = {
        role: _boost(
            {**params, "objective": "regression", "metric": "l2"},
            settings,
            (x_train[trade_train], x_val[trade_val]),
            (target_train[trade_train], target_val[trade_val]),
            (None, None),
            names,
        )
        for role, target_train, target_val in (("stop_loss", sl_train, sl_val), ("take_profit", tp_train, tp_val))
    }
    predictor = GbmPredictor(
        classifier=classifier.booster,
        stop_loss=regressors["stop_loss"].booster,
        take_profit=regressors["take_profit"].booster,
        close=close,
        return_rows=RETURN_ROWS,
    )
    return GbmFitResult(predictor, {"classifier": classifier, **regressors})
