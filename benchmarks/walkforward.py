"""Walk-forward executors: the same independent folds on one local process, on two, and as Ray tasks on two CPUs.

Targets (issue 18): `--fold-workers 2` at least 1.7x faster than `--fold-workers 1`; Ray with 2 CPUs at least
1.6x; the per-fold overhead beyond training (loading candles, features, prediction of the test and validation
periods, writing the fold) under 10 % of the fold's time at 1,440-minute windows. Every executor must give the
same folds.csv and oos/trades.csv (checked here too). Prints the wall times, their ratios and the overhead.

    PYTHONPATH=src .venv/bin/python benchmarks/walkforward.py [--days 10] [--max-len 1440] [--epochs 4]
                                                              [--hidden 32] [--executors local1 local2 ray2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import load_average, walkforward_config
from lstm_trading.core.config import Config
from lstm_trading.data.store import CandleStore
from lstm_trading.data.synthetic import synthetic_candles
from lstm_trading.runs.walkforward import TradeSource, WalkForwardSettings, walkforward_run

HOUR, DAY = 3_600, 86_400


def run(db: Path, out: Path, executor: str, settings: dict, cfg: Config) -> tuple[float, dict]:
    workers = int(executor[-1])
    chosen = WalkForwardSettings(
        **settings,
        fold_workers=workers,
        executor="ray" if executor.startswith("ray") else "local",
        accelerator="cpu",
        baseline="none",
        random_runs=100,
        sweep=False,
    )
    began = time.perf_counter()
    result = walkforward_run(cfg, chosen, db=db, symbol="ETHUSDT", source=TradeSource(), out=out, echo=lambda _: None)
    wall = time.perf_counter() - began
    if result.failures:
        raise SystemExit(f"{executor}: folds failed: {result.failures}")
    return wall, json.loads((out / "summary.json").read_text())


def fold_overhead(out: Path) -> tuple[int, float, float]:
    """Folds, their mean time, and the mean share of it outside training (fold.json's seconds)."""
    records = [json.loads(p.read_text()) for p in sorted((out / "folds").glob("*/fold.json"))]
    totals = [r["seconds"]["total"] for r in records]
    shares = [1 - r["seconds"]["train"] / r["seconds"]["total"] for r in records]
    return len(records), sum(totals) / len(totals), sum(shares) / len(shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=float, default=10.0)
    parser.add_argument("--max-len", type=int, default=1_440)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--executors", nargs="+", default=["local1", "local2", "ray2"])
    args = parser.parse_args()
    cfg = walkforward_config(args.max_len, args.epochs, args.hidden)
    settings = {"train_span": 3 * DAY, "test_span": DAY // 2}
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "market.db"
        with CandleStore(db, create=True) as store:
            store.register_symbol("ETHUSDT", "synthetic", "linear")
            store.upsert("ETHUSDT", synthetic_candles(args.days, seed=7), source="benchmark market")
        print(f"load average before: {load_average():.2f}")
        walls: dict[str, float] = {}
        outputs: dict[str, tuple[bytes, bytes]] = {}
        for executor in args.executors:
            out = Path(scratch) / executor
            wall, _ = run(db, out, executor, settings, cfg)
            walls[executor] = wall
            outputs[executor] = ((out / "folds.csv").read_bytes(), (out / "oos" / "trades.csv").read_bytes())
            folds, mean, share = fold_overhead(out)
            print(
                f"{executor:>7}: {wall:7.1f} s for {folds} folds (a fold {mean:.1f} s, {100 * share:.1f} % of it "
                "outside training)"
            )
        first = args.executors[0]
        for executor in args.executors[1:]:
            same = outputs[executor] == outputs[first]
            print(f"{executor} / {first}: {walls[first] / walls[executor]:.2f}x faster; same files: {same}")
        print(f"load average after: {load_average():.2f}")


if __name__ == "__main__":
    main()
