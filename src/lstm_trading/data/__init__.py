"""Storage and input formats: SQLite candles, CSV, the exchange, the Excel journal, a synthetic market."""
