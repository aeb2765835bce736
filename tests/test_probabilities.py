"""Prior-corrected probabilities (DESIGN.md "Probabilities"): training weights the classes by inverse frequency,
which tilts the softmax towards rare classes; every probability shown or used undoes that tilt."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config
from lstm_trading.core.errors import ConfigError
from lstm_trading.models.bundle import load_bundle
from lstm_trading.predict import predict_windows
from lstm_trading.runs.train import prepare, train_run
from lstm_trading.samples.targets import class_weights, class_weights_from_counts, prior_corrected


def test_the_correction_recovers_the_label_probabilities_from_the_tilted_ones() -> None:
    p = np.array([[0.2, 0.1, 0.7], [0.05, 0.5, 0.45]])
    w = np.array([2.5, 3.0, 0.4])
    q = p * w / (p * w).sum(axis=1, keepdims=True)  # what a weighted loss drives the softmax to
    np.testing.assert_allclose(prior_corrected(q, w), p, rtol=1e-12)
    np.testing.assert_allclose(prior_corrected(q, np.ones(3)), q, rtol=1e-12)  # weighting none: unchanged
    np.testing.assert_allclose(prior_corrected(q, None), q)


def test_a_model_that_outputs_one_third_each_under_inverse_weights_says_the_class_prior() -> None:
    labels = np.array([0] * 20 + [1] * 30 + [2] * 150)
    prior = np.bincount(labels) / len(labels)
    corrected = prior_corrected(np.full((1, 3), 1 / 3), class_weights(labels))
    np.testing.assert_allclose(corrected[0], prior, rtol=1e-12)


def test_weights_from_counts_equal_weights_from_labels() -> None:
    labels = np.array([0] * 7 + [1] * 3 + [2] * 11)
    np.testing.assert_allclose(class_weights_from_counts(np.bincount(labels)), class_weights(labels), rtol=1e-12)
    np.testing.assert_array_equal(class_weights(labels, "none"), np.ones(3))


def test_an_unknown_class_weighting_is_refused() -> None:
    with pytest.raises(ConfigError, match="train.class_weighting"):
        tiny_config().with_overrides("train", class_weighting="sqrt")


def _independent_labels(candles: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A journal every 5 minutes after the warm-up with labels drawn independently of the market: 20 % Buy,
    20 % Sell, 60 % Invalid (enough samples that a model which learns nothing is told from one that guesses)."""
    rng = np.random.default_rng(seed)
    starts = candles["timestamp"].to_numpy()[2_100::5]
    label = rng.choice(3, size=len(starts), p=[0.2, 0.2, 0.6])
    price = candles.set_index("timestamp")["open"].reindex(starts).to_numpy()
    return pd.DataFrame(
        {
            "start_time": starts,
            "entry_price": np.where(label == 2, -1.0, price),
            "side": np.array(["Buy", "Sell", "Invalid"])[label],
            "label": label.astype("int64"),
            "row": np.arange(2, len(starts) + 2),
        }
    )


@pytest.mark.parametrize("kind", ["gbm", "lstm"])
def test_on_labels_independent_of_the_inputs_the_corrected_log_loss_is_the_priors(
    kind: str, tiny_candles, tmp_path, one_torch_thread
) -> None:  # type: ignore[no-untyped-def]
    trades = _independent_labels(tiny_candles, seed=5)
    # a model that can learn nothing: the LSTM trained gently (on 845 noise labels a harder push overfits by
    # a few hundredths of a nat on some draws), the gbm as always (early stopping on validation log-loss)
    config = tiny_config().with_overrides("train", epochs=3, batch_size=64, lr=3e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(tiny_candles, trades, config, symbol="ETHUSDT")
        train_run(prepared, config, tmp_path / kind, accelerator="cpu", progress=False, kind=kind)
    bundle = load_bundle(tmp_path / kind)
    split = prepared.split
    prior = np.bincount(split.train.label, minlength=3) / len(split.train)
    test = split.test
    proba = predict_windows(bundle, prepared.scaled, test.end, test.length, workers=1).proba
    raw = bundle.model.predict_windows(prepared.scaled, test.end, test.length, workers=1).proba

    def log_loss(p: np.ndarray) -> float:
        return float(-np.log(np.clip(p[np.arange(len(test)), test.label], 1e-7, 1)).mean())

    prior_loss = log_loss(np.broadcast_to(prior, (len(test), 3)))
    assert abs(log_loss(proba) - prior_loss) < 0.01
    assert log_loss(raw) > prior_loss + 0.05  # uncorrected, the tilt towards rare classes costs
    np.testing.assert_allclose(bundle.class_weights, class_weights(split.train.label), rtol=1e-9)
