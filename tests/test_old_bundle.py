"""A bundle written by an earlier lstm-trading (before the package layout) still loads and predicts as it did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lstm_trading.data.synthetic import synthetic_candles
from lstm_trading.models.bundle import load_bundle
from lstm_trading.predict import predict_moments
from lstm_trading.samples.targets import class_weights_from_counts, prior_corrected

OLD_BUNDLE = Path(__file__).resolve().parent / "data" / "bundle_v1"


def test_a_bundle_from_before_the_layout_predicts_what_it_predicted_then() -> None:
    """Within 1e-5: CI machines with and without AVX-512 differ in the last bits of an LSTM step."""
    stored = json.loads((OLD_BUNDLE / "predictions.json").read_text())
    candles = synthetic_candles(stored["candles"]["days"], seed=stored["candles"]["seed"])
    expected = stored["predictions"]
    bundle = load_bundle(OLD_BUNDLE)
    got = predict_moments(bundle, candles, at=[row["at"] for row in expected])
    assert list(got["window_minutes"]) == [row["window_minutes"] for row in expected]
    # It stored the raw softmax; probabilities are now corrected for the class weights, which an old bundle
    # recomputes from its class counts (inverse frequency, the only weighting it knew).
    counts = json.loads((OLD_BUNDLE / "bundle.json").read_text())["training"]["class_counts"]
    weights = class_weights_from_counts(np.array([counts[name] for name in ("Buy", "Sell", "Invalid")]))
    raw = np.array([[row["p_buy"], row["p_sell"], row["p_invalid"]] for row in expected])
    corrected = prior_corrected(raw, weights)
    np.testing.assert_allclose(got[["p_buy", "p_sell", "p_invalid"]].to_numpy(), corrected, rtol=0, atol=1e-5)
    assert list(got["side"]) == [("Buy", "Sell", "Invalid")[k] for k in corrected.argmax(axis=1)]
    for column in ("stop_loss_pct", "take_profit_pct", "entry"):
        np.testing.assert_allclose(got[column], [row[column] for row in expected], rtol=0, atol=1e-5, err_msg=column)
    assert bundle.kind == "lstm"  # written before bundles recorded a kind
