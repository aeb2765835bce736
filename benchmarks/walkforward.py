"""Walk-forward executors: the same independent folds on one local process, on two, and as Ray tasks on two CPUs.

Targets (issue 18): `--fold-workers 2` at least 1.7x faster than `--fold-workers 1`; Ray with 2 CPUs at least
1.6x; the per-fold overhead beyond training (loading candles, features, prediction of the test and validation
periods, writing the fold) under 10 % of the fold's time at 1,440-minute windows. Every executor must give the
same folds.csv and oos/trades.csv (checked here too). Prints the wall times, their ratios, the overhead and each
fold's time. Each executor runs the `walkforward` command in a fresh process, as a user would: its imports,
the fold processes' or Ray's start-up, the stitched backtest and the report are all in its wall time.

Shared cloud machines drift by 20 % from one run to the next: `--rounds R` runs every executor R times, in turn,
and compares the fastest wall time of each.

Every fold trains all its epochs by default (`--patience` = `--epochs`), so the 6 folds cost about the same and the
ratios measure the executors. With early stopping (`--patience 5`, say) the folds differ by a factor of 3 and the
ratio mostly says how lucky the hand-out order was; the printed bound (the fold times packed longest first onto the
workers) says how much of the ratio the executor could have reached with those folds.

    PYTHONPATH=src .venv/bin/python benchmarks/walkforward.py [--days 7] [--max-len 1440] [--epochs 60]
                              [--patience EPOCHS] [--hidden 32] [--executors local1 local2 ray2] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import load_average, walkforward_config
from lstm_trading.core.config import dump_config
from lstm_trading.data.store import CandleStore
from lstm_trading.data.synthetic import synthetic_candles

SOURCE = Path(__file__).resolve().parent.parent / "src"


def run(db: Path, config: Path, out: Path, executor: str) -> float:
    """The `walkforward` command as a user runs it, in a fresh process (its imports and start-up counted)."""
    command = [
        sys.executable, "-m", "lstm_trading", "walkforward", "--db", str(db), "--config", str(config),
        "--train-span", "3d", "--test-span", "12h", "--out", str(out), "--fold-workers", executor[-1],
        "--executor", "ray" if executor.startswith("ray") else "local", "--accelerator", "cpu",
        "--baseline", "none", "--random-runs", "100", "--no-sweep",
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(SOURCE) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    began = time.perf_counter()
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode != 0 or not (out / "summary.json").exists():
        raise SystemExit(
            f"{executor}: walkforward failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return wall


def fold_times(out: Path) -> tuple[list[float], float]:
    """Each fold's seconds in fold order, and the mean share of them outside training (fold.json's seconds)."""
    records = [json.loads(p.read_text()) for p in sorted((out / "folds").glob("*/fold.json"))]
    totals = [r["seconds"]["total"] for r in records]
    shares = [1 - r["seconds"]["train"] / r["seconds"]["total"] for r in records]
    return totals, sum(shares) / len(shares)


def packed(times: list[float], workers: int) -> float:
    """The wall time of these folds handed longest first to `workers` workers that start at once."""
    loads = [0.0] * workers
    for seconds in sorted(times, reverse=True):
        loads[loads.index(min(loads))] += seconds
    return max(loads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--max-len", type=int, default=1_440)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--patience", type=int, help="early stopping's patience (default: --epochs, none)")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--executors", nargs="+", default=["local1", "local2", "ray2"])
    parser.add_argument("--rounds", type=int, default=1, help="runs of every executor, in turn; the fastest counts")
    args = parser.parse_args()
    patience = args.patience or args.epochs
    cfg = walkforward_config(args.max_len, args.epochs, args.hidden).with_overrides(
        "train", early_stop_patience=patience
    )
    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / "benchmark.toml"
        config.write_text(dump_config(cfg))
        db = Path(scratch) / "market.db"
        with CandleStore(db, create=True) as store:
            store.register_symbol("ETHUSDT", "synthetic", "linear")
            store.upsert("ETHUSDT", synthetic_candles(args.days, seed=7), source="benchmark market")
        print(f"load average before: {load_average():.2f}; {args.epochs} epochs, patience {patience}")
        walls: dict[str, float] = {}
        fold_seconds: dict[str, list[float]] = {}
        outputs: dict[str, tuple[bytes, bytes]] = {}
        for round_ in range(args.rounds):
            for executor in args.executors:
                out = Path(scratch) / f"{executor}-{round_}"
                wall = run(db, config, out, executor)
                times, share = fold_times(out)
                workers = int(executor[-1])
                print(
                    f"{executor:>7}: {wall:7.1f} s for {len(times)} folds (a fold {sum(times) / len(times):.1f} s, "
                    f"{100 * share:.1f} % of it outside training; folds {', '.join(f'{t:.1f}' for t in times)} s; "
                    f"packed onto {workers}: {packed(times, workers):.1f} s)"
                    + (f" [round {round_ + 1}]" if args.rounds > 1 else "")
                )
                outputs.setdefault(executor, ((out / "folds.csv").read_bytes(), (out / "oos/trades.csv").read_bytes()))
                if wall < walls.get(executor, float("inf")):
                    walls[executor], fold_seconds[executor] = wall, times
        first = args.executors[0]
        for executor in args.executors[1:]:
            same = outputs[executor] == outputs[first]
            alone = fold_seconds[first]
            bound = sum(alone) / packed(alone, int(executor[-1]))
            print(
                f"{executor} / {first}: {walls[first] / walls[executor]:.2f}x faster (at most {bound:.2f}x with "
                f"{first}'s fold times{', fastest of each' if args.rounds > 1 else ''}); same files: {same}"
            )
        print(f"load average after: {load_average():.2f}")


if __name__ == "__main__":
    main()
