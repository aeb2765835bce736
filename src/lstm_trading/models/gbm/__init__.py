"""The gradient-boosting baseline (LightGBM): window summaries in, the same outputs as the LSTM's heads out."""
