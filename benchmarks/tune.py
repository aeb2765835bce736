"""Tuning executors: the same 8-trial study in this process, on two local worker processes, and as Ray Tune trials
on two CPUs.

Targets (issue 15): 8 trials on 2 cores, `--workers 2` at least 1.7x faster than `--workers 1`; Ray with 2 CPUs at
least 1.6x. The objective is `oos_expectancy`, with pruning off (`TuneSettings.prune`: the median pruner and ASHA
would stop different trials, depending on the order they finish in), so every executor runs the same 8
configurations (TPE's first draws are random, from the same seed); the script checks that they score them
identically. The time measured is the trials' (from the start of `tune_run` to
its line naming the best trial: the holdout's walk-forward after it is the same on every executor), worker start-up
and Ray's included; each executor runs in a fresh process whose training stack is imported before the clock
starts, so the one-process baseline pays no import the pool does not.

    PYTHONPATH=src .venv/bin/python benchmarks/tune.py [--days 8] [--max-len 1440] [--epochs 30] [--hidden 32]
                                                       [--executors local1 local2 ray2] [--trials 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import load_average, run_in_child, walkforward_config
from lstm_trading.data.store import CandleStore
from lstm_trading.data.synthetic import synthetic_candles

HOUR, DAY = 3_600, 86_400
SPACE = """
[train.lr]
low = 5e-4
high = 5e-3
log = true
[model.hidden_size]
choices = [24, 32]
[labels.k_tp]
low = 2.0
high = 4.0
step = 0.5
"""


def measure(executor: str, db: Path, out: Path, args: argparse.Namespace, results: Any) -> None:
    """One study on `executor` (local1, local2, ray2), in a child process: the trials' wall time and scores."""
    import lightning  # noqa: F401 - the training stack, imported before the clock starts
    import pandas as pd

    import lstm_trading.runs.train  # noqa: F401
    from lstm_trading.runs.tune import EXPECTANCY, TuneSettings, tune_run
    from lstm_trading.runs.tune_space import load_space
    from lstm_trading.runs.walkforward import TradeSource, WalkForwardSettings

    cfg = walkforward_config(args.max_len, args.epochs, args.hidden)
    space_file = out.parent / f"{executor}-space.toml"
    space_file.write_text(SPACE)
    settings = TuneSettings(
        space=space_file,
        trials=args.trials,
        objective=EXPECTANCY,
        prune=False,
        executor="ray" if executor.startswith("ray") else "local",
        workers=int(executor[-1]),
    )
    walk = WalkForwardSettings(
        train_span=2 * DAY, test_span=DAY // 2, accelerator="cpu", baseline="none", random_runs=100, sweep=False,
        fold_workers=1,
    )  # fmt: skip
    marks: dict[str, float] = {}

    def echo(line: str) -> None:
        if line.startswith("best: ") and "trials" not in marks:
            marks["trials"] = time.perf_counter()

    began = time.perf_counter()
    result = tune_run(
        cfg, settings, walk, load_space(space_file, cfg), db=db, symbol="ETHUSDT", source=TradeSource(), out=out,
        echo=echo,
    )  # fmt: skip
    frame = result.trials.sort_values("number")
    results.put(
        {
            "seconds": marks["trials"] - began,
            "states": frame["state"].tolist(),
            "objectives": pd.to_numeric(frame["objective"]).tolist(),
            "params": frame[["train.lr", "model.hidden_size", "labels.k_tp"]].round(12).values.tolist(),
            "trial_seconds": frame["seconds"].tolist(),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=float, default=8.0)
    parser.add_argument("--max-len", type=int, default=1_440)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--executors", nargs="+", default=["local1", "local2", "ray2"])
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "market.db"
        with CandleStore(db, create=True) as store:
            store.register_symbol("ETHUSDT", "synthetic", "linear")
            store.upsert("ETHUSDT", synthetic_candles(args.days, seed=3), source="synthetic market")
        found = {}
        for executor in args.executors:
            load = load_average()
            found[executor] = run_in_child(
                measure, (executor, db, Path(scratch) / executor, args), f"tune on {executor}"
            )
            figures = found[executor]
            mean = sum(figures["trial_seconds"]) / len(figures["trial_seconds"])
            states = ", ".join(f"{figures['states'].count(s)} {s}" for s in sorted(set(figures["states"])))
            print(
                f"{executor}: {args.trials} trials ({states}) in {figures['seconds']:.1f} s (a trial "
                f"{mean:.1f} s on average; load average {load:.2f} before)",
                flush=True,
            )
        base = found.get("local1")
        for executor, figures in found.items():
            if base is None or executor == "local1":
                continue
            same = (
                figures["states"] == base["states"]
                and figures["params"] == base["params"]
                and np.allclose(figures["objectives"], base["objectives"], rtol=0, atol=1e-12, equal_nan=True)
            )
            target = 1.7 if executor.startswith("local") else 1.6
            ratio = base["seconds"] / figures["seconds"]
            verdict = "met" if ratio >= target else "missed"
            print(
                f"{executor} against local1: {ratio:.2f}x (target >= {target}x: {verdict}); "
                f"same trials and scores: {'yes' if same else 'NO'}"
            )


if __name__ == "__main__":
    main()
