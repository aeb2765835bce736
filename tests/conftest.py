"""Shared fixtures: paths to the real candles in ../shared/data and small seeded data sets."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BYBIT_1M = SHARED_DATA / "bybit_ethusdt_1m_2025-05-29_2025-06-29.csv"
BINANCE_1M_GAP = SHARED_DATA / "binance_ethusdt_1m_2021-08-09_2021-09-13.csv"
BYBIT_5M = SHARED_DATA / "bybit_ethusdt_5m_2025-04-03_2025-07-02.csv"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"real candle file missing: {path} (tests read ../shared/data beside the checkout)")
    return path


@pytest.fixture(scope="session")
def bybit_csv() -> Path:
    return _require(BYBIT_1M)


@pytest.fixture(scope="session")
def binance_gap_csv() -> Path:
    return _require(BINANCE_1M_GAP)


@pytest.fixture(scope="session")
def bybit_5m_csv() -> Path:
    return _require(BYBIT_5M)
