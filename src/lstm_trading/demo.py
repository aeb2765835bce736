"""The main job on built-in data: a synthetic market, a labelled journal, a small model, its test metrics.

Everything lands in one folder (`demo.db`, `val.xlsx`, `run/`, and `gbm/`: a gradient-boosting baseline trained
on the same samples in seconds, shown beside the LSTM); running it again into the same folder starts over. The
configuration is small on purpose (short windows, few epochs) so it finishes in minutes on a laptop CPU; real runs
use the defaults (90-day windows).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lstm_trading.backtest.results import run_backtest
from lstm_trading.backtest.statistics import short_period_note
from lstm_trading.core.config import Config
from lstm_trading.core.errors import ConfigError
from lstm_trading.core.run_folder import RunFolder
from lstm_trading.data.journal import read_journal, write_journal
from lstm_trading.data.store import CandleStore
from lstm_trading.data.synthetic import synthetic_candles
from lstm_trading.features.compute import compute_features
from lstm_trading.models.bundle import load_bundle
from lstm_trading.models.training_record import Sources
from lstm_trading.predict import predict_moments, prediction_record
from lstm_trading.report.document import write_report
from lstm_trading.report.tables import (
    COMPARISON_HEADER,
    SUMMARY_HEADER,
    comparison_rows,
    no_information_lines,
    summary_rows,
    text_table,
    verdict_line,
)
from lstm_trading.runs.backtest import write_backtest
from lstm_trading.runs.evaluate import evaluate_run
from lstm_trading.runs.predict import with_decision
from lstm_trading.runs.train import prepare, train_run
from lstm_trading.samples.labels import label_first_touch

SYMBOL = "ETHUSDT"


@dataclass(frozen=True)
class DemoSettings:
    """The demo's small configuration: about five weeks of minutes, 6-hour windows, a dozen epochs."""

    days: float = 35.0
    seed: int = 7
    label_every_seconds: int = 1_800
    max_len: int = 360
    epochs: int = 12
    batch_size: int = 32
    lr: float = 3e-3
    warmup_epochs: int = 2

    def config(self) -> Config:
        return (
            Config()
            .with_overrides("labels", every_seconds=self.label_every_seconds)
            .with_overrides("targets", max_len=self.max_len)
            .with_overrides(
                "train",
                epochs=self.epochs,
                batch_size=self.batch_size,
                lr=self.lr,
                warmup_epochs=self.warmup_epochs,
                accumulate_grad_batches=1,
                seed=self.seed,
            )
        )


@dataclass(frozen=True)
class DemoResult:
    out_dir: Path
    run_dir: Path
    label_counts: dict[str, int]
    split_sizes: dict[str, int]
    test_metrics: dict[str, Any]
    baselines: dict[str, dict[str, Any]]
    latest: pd.DataFrame
    # the latest prediction with the decision the backtest's rule takes there (`runs.predict.with_decision`)
    latest_decision: dict[str, Any] | None = None
    backtest: dict[str, Any] | None = None  # stats.json of the backtest over the test period
    report: Path | None = None
    gbm_dir: Path | None = None
    gbm_metrics: dict[str, Any] | None = None  # the gbm run's evaluation on the same test trades
    no_information: tuple[str, ...] = ()  # the evaluation's "no information" lines, as printed


def run_demo(
    out_dir: Path,
    *,
    settings: DemoSettings = DemoSettings(),
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Synthetic market -> SQLite -> first-touch journal -> training -> test metrics -> latest prediction."""
    config = settings.config()
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: is a file, not a folder; choose a folder for the demo's files")
    out_dir.mkdir(parents=True, exist_ok=True)
    db, journal_path, run_dir = out_dir / "demo.db", out_dir / "val.xlsx", out_dir / "run"
    gbm_dir = out_dir / "gbm"
    echo(f"1/7 synthetic market: {settings.days:g} days of 1-minute candles (seed {settings.seed}) -> {db}")
    market = synthetic_candles(settings.days, seed=settings.seed)
    with CandleStore(db, create=True) as store:
        store.register_symbol(SYMBOL, "synthetic", "linear")
        store.upsert(SYMBOL, market, replace=True, source="synthetic market")
        candles = store.read(SYMBOL)
    echo(f"2/7 first-touch labels every {config.labels.every_seconds // 60} min -> {journal_path}")
    features = compute_features(candles, config.features)
    labels = label_first_touch(candles, features, config.labels)
    write_journal(journal_path, labels.trades, labels.meta)
    journal = read_journal(journal_path)
    horizon = journal.meta.get("horizon_seconds")
    echo(
        f"3/7 training a small model ({settings.max_len}-minute windows, {settings.epochs} epochs; "
        f"real runs default to {Config().targets.max_len:,}-minute windows and {Config().train.epochs} epochs)"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # trades inside the warm-up are skipped: expected here
        prepared = prepare(
            candles, journal.trades, config, symbol=SYMBOL, horizon_seconds=int(horizon) if horizon else None
        )
    sources = Sources(db=str(db.resolve()), symbol=SYMBOL, journal=str(journal_path.resolve()), sheet="tradesmain")
    train_run(prepared, config, run_dir, progress=progress, overwrite=True, sources=sources)
    echo(f"    and a gradient-boosting baseline (LightGBM) on the same samples, split and scalers -> {gbm_dir}")
    train_run(prepared, config, gbm_dir, overwrite=True, sources=sources, kind="gbm")
    echo("4/7 evaluating on the test split (trades after every training and validation trade), the gbm beside it")
    # what `lstm-trading evaluate run --against gbm` computes, writes and prints
    evaluation, _ = evaluate_run(run_dir, seed=settings.seed, against=gbm_dir)
    metrics, baselines = evaluation["model"], evaluation["baselines"]
    for line in text_table(COMPARISON_HEADER, comparison_rows(evaluation)):
        echo(line)
    uninformed = tuple(no_information_lines(evaluation))
    for line in uninformed:
        echo(line)
    bundle = load_bundle(run_dir)
    test = prepared.split.test
    echo("5/7 predicting the moment after the last candle")
    latest = predict_moments(bundle, candles.tail(bundle.history_minutes))
    every = config.backtest.every_seconds // 60
    echo(f"6/7 backtest over the test period: a decision every {every} min, after fees and slippage, with baselines")
    backtest = run_backtest(
        bundle,
        candles,
        start=int(test.start_time[0]),
        end=int(candles["timestamp"].iloc[-1]) + 60,
        config=config.backtest,
        journal=journal.trades,
        journal_name="journal (hindsight labels)",
    )
    write_backtest(backtest, RunFolder(run_dir).backtest)
    for line in text_table(SUMMARY_HEADER, summary_rows(backtest.stats)):
        echo(line)
    note = short_period_note(backtest.stats)
    if note is not None:
        echo(note)
    judged = verdict_line(backtest.stats)
    if judged is not None:
        echo(judged)
    echo("7/7 report")
    report = write_report(run_dir)
    echo(f"report: {report.path}")
    return DemoResult(
        out_dir=out_dir,
        run_dir=run_dir,
        label_counts=labels.counts,
        split_sizes=prepared.split.sizes(),
        test_metrics=metrics,
        baselines=baselines,
        latest=latest,
        latest_decision=with_decision(prediction_record(latest.iloc[0]), config.backtest),
        backtest=backtest.stats,
        report=report.path,
        gbm_dir=gbm_dir,
        gbm_metrics=evaluation["against"],
        no_information=uninformed,
    )
