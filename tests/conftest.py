"""Shared fixtures: paths to the real candles (../shared/data, or the copies in tests/data) and small seeded data."""

from __future__ import annotations

import gzip
import hashlib
import sqlite3
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VENDORED_DATA = Path(__file__).resolve().parent / "data"  # gzip copies, for a checkout without ../shared
BYBIT_1M = "bybit_ethusdt_1m_2025-05-29_2025-06-29.csv"
BINANCE_1M_GAP = "binance_ethusdt_1m_2021-08-09_2021-09-13.csv"
BYBIT_5M = "bybit_ethusdt_5m_2025-04-03_2025-07-02.csv"


def _expected_sha256(name: str) -> str:
    for line in (VENDORED_DATA / "SHA256SUMS").read_text().splitlines():
        digest, _, file = line.partition("  ")
        if file == name:
            return digest
    raise KeyError(name)


def real_candles(name: str, scratch: Path) -> Path:
    """The real candle file: ../shared/data when the checkout has it, else the vendored gzip copy, checked."""
    shared = SHARED_DATA / name
    if shared.exists():
        return shared
    packed = VENDORED_DATA / f"{name}.gz"
    if not packed.exists():
        pytest.fail(f"real candle file missing: neither {shared} nor {packed}")
    data = gzip.decompress(packed.read_bytes())
    if hashlib.sha256(data).hexdigest() != _expected_sha256(name):
        pytest.fail(f"{packed}: does not match SHA256SUMS")
    target = scratch / name
    target.write_bytes(data)
    return target


@pytest.fixture(scope="session")
def _real_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real_candles")


@pytest.fixture(scope="session")
def bybit_csv(_real_data_dir: Path) -> Path:
    return real_candles(BYBIT_1M, _real_data_dir)


@pytest.fixture(scope="session")
def binance_gap_csv(_real_data_dir: Path) -> Path:
    return real_candles(BINANCE_1M_GAP, _real_data_dir)


@pytest.fixture(scope="session")
def bybit_5m_csv(_real_data_dir: Path) -> Path:
    return real_candles(BYBIT_5M, _real_data_dir)


# --- helpers shared by several test modules ---


def dump_tables(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of a SQLite file, to show that a failed command changed nothing."""
    connection = sqlite3.connect(path)
    try:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: sorted(connection.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr) for table in tables}
    finally:
        connection.close()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` with its bytes (SQLite's -wal/-shm side files aside: they come and go), to
    show that a refused command left a folder as it found it."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.endswith(("-wal", "-shm"))
    }


@pytest.fixture
def one_torch_thread():  # type: ignore[no-untyped-def]
    """One torch thread: on 2 cores shared with other test runs, every step of a 2-thread LSTM waits at a barrier."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_session():  # type: ignore[no-untyped-def]
    """One local Ray for every Ray test of the session (walk-forward folds, tuning trials): 2 CPUs, no dashboard,
    a small object store."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 * 1024, log_to_driver=False)
    yield ray
    ray.shutdown()


# --- a tiny market, journal and trained run, shared by the model-side tests ---

TINY_DAYS = 6.0
TINY_SEED = 3


def tiny_config():  # type: ignore[no-untyped-def]
    """Small windows, a short warm-up and few epochs: the whole pipeline in seconds."""
    from lstm_trading.core.config import Config

    return (
        Config()
        .with_overrides("features", warmup_minutes=2_000)
        .with_overrides("targets", max_len=60)
        .with_overrides("labels", every_seconds=1_800, horizon_seconds=6 * 3600)
        .with_overrides("split", purge_seconds=6 * 3600)
        .with_overrides(
            "train",
            epochs=3,
            batch_size=8,
            accumulate_grad_batches=1,
            warmup_epochs=1,
            lr=3e-3,
            precision="32-true",
            devices="1",
        )
        .with_overrides("model", hidden_size=16)
    )


@pytest.fixture(scope="session")
def tiny_candles():  # type: ignore[no-untyped-def]
    from lstm_trading.data.synthetic import synthetic_candles

    return synthetic_candles(TINY_DAYS, seed=TINY_SEED)


@pytest.fixture(scope="session")
def tiny_trades(tiny_candles):  # type: ignore[no-untyped-def]
    """A first-touch journal (as the journal reader returns it) over the tiny market."""
    from lstm_trading.features.compute import compute_features
    from lstm_trading.samples.labels import label_first_touch

    config = tiny_config()
    result = label_first_touch(tiny_candles, compute_features(tiny_candles, config.features), config.labels)
    trades = result.trades.copy()
    trades["label"] = trades["side"].map({"Buy": 0, "Sell": 1, "Invalid": 2}).astype("int64")
    trades["row"] = range(2, len(trades) + 2)
    return trades


@pytest.fixture(scope="session")
def tiny_db(tiny_candles, tmp_path_factory):  # type: ignore[no-untyped-def]
    from lstm_trading.data.store import CandleStore

    path = tmp_path_factory.mktemp("tiny") / "tiny.db"
    with CandleStore(path, create=True) as store:
        store.upsert("ETHUSDT", tiny_candles, source="tiny synthetic market")
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_candles, tiny_trades, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A trained tiny run folder (read-only for tests: copy it before changing anything)."""
    import warnings

    from lstm_trading.runs.train import prepare, train_run

    config = tiny_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(tiny_candles, tiny_trades, config, symbol="ETHUSDT")
        run_dir = tmp_path_factory.mktemp("runs") / "tiny"
        train_run(prepared, config, run_dir, accelerator="cpu", progress=False)
    return run_dir
