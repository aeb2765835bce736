"""lstm-trading: an LSTM that decides Buy / Sell / no trade on 1-minute candles, with SL and TP."""

__version__ = "0.1.0"
