"""The run folder: one class names every path in it, so no module spells a file name of another.

It lives in `core` (not `runs`) because the layers below `runs` write into it too: training its checkpoints and
logs, the report its HTML; they take a `RunFolder` and never build the names themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lstm_trading.core.config import BacktestConfig, load_config

CONFIG_FILE = "config.toml"
MODEL_DIR = "model"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
BACKTEST_DIR = "backtest"
REPLAY_DIR = "replay"
SEEDS_DIR = "seeds"  # `train --n-seeds N`: one run folder per seed below it
SEEDS_FILE = "seeds.json"  # and their test metrics, mean and std
# the files of a backtest's (or a replay's) folder
TRADES_FILE = "trades.csv"
EQUITY_FILE = "equity.csv"
STATS_FILE = "stats.json"
# figures, drawn by the command that makes their data and assembled by `report`
LOSS_FIGURE = "loss_curves.png"
CONFUSION_FIGURE = "confusion_matrix.png"
CALIBRATION_FIGURE = "calibration.png"


@dataclass(frozen=True)
class RunFolder:
    """`train --out RUN` writes it; every later command reads from it and writes beside it."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    def backtest_config(self) -> BacktestConfig:
        """The trading settings the run's resolved `config.toml` holds (defaults without one): what backtest,
        predict and live decide with unless their flags say otherwise."""
        return load_config(self.config).backtest if self.config.exists() else BacktestConfig()

    @property
    def model(self) -> Path:
        return self.root / MODEL_DIR

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def metrics_csv(self) -> Path:
        """Lightning's CSV log: a row per epoch (losses, validation metrics) and per learning-rate change."""
        return self.logs / "metrics.csv"

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def seeds(self) -> Path:
        return self.root / SEEDS_DIR

    def seed(self, seed: int) -> Path:
        """The run folder of one seed of `train --n-seeds` (a whole run folder: evaluate, resume it alone)."""
        return self.seeds / f"seed-{seed}"

    @property
    def seeds_summary(self) -> Path:
        return self.root / SEEDS_FILE

    @property
    def backtest(self) -> Path:
        return self.root / BACKTEST_DIR

    @property
    def replay(self) -> Path:
        return self.root / REPLAY_DIR

    @property
    def report(self) -> Path:
        return self.root / REPORT_FILE

    def live(self, account: str) -> Path:
        """Where the live loop of `account` writes its decision log."""
        return self.root / f"live-{account}"

    def figure(self, name: str) -> Path:
        return self.root / name

    def trained_parts(self) -> list[Path]:
        """What training writes and `--overwrite` replaces: a folder holding any of them holds a run."""
        return [path for path in (self.model, self.checkpoints, self.logs, self.seeds) if path.exists()]


# `walkforward --out WF`: one run folder per fold and model kind below `folds/`, the stitched backtest in `oos/`
FOLDS_DIR = "folds"
FOLD_FILE = "fold.json"  # a fold's record, written last: a fold folder with it holds a finished fold
FOLD_SIGNALS_FILE = "signals.npz"  # the fold model's signals at its test period's decision moments
FOLD_VAL_SIGNALS_FILE = "val_signals.npz"  # ... and at its validation period's: where its thresholds are chosen
OOS_DIR = "oos"
WALKFORWARD_SETTINGS_FILE = "settings.json"
FOLDS_TABLE_FILE = "folds.csv"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class WalkForwardFolder:
    """`walkforward --out WF` writes it: settings.json, folds/NAME (a run folder per fold and model kind),
    oos/ (the stitched backtest of the main model, oos/KIND/ of a baseline kind), folds.csv, summary.json and
    report.html."""

    root: Path

    @property
    def settings(self) -> Path:
        return self.root / WALKFORWARD_SETTINGS_FILE

    @property
    def folds(self) -> Path:
        return self.root / FOLDS_DIR

    def fold(self, name: str, kind: str | None = None) -> RunFolder:
        """The run folder of fold `name` (`007-2025-06-12`); a baseline kind's beside it (`007-2025-06-12-gbm`)."""
        return RunFolder(self.folds / (name if kind is None else f"{name}-{kind}"))

    @staticmethod
    def fold_record(fold: RunFolder) -> Path:
        return fold.root / FOLD_FILE

    @staticmethod
    def fold_signals(fold: RunFolder) -> Path:
        return fold.root / FOLD_SIGNALS_FILE

    @staticmethod
    def fold_val_signals(fold: RunFolder) -> Path:
        return fold.root / FOLD_VAL_SIGNALS_FILE

    def oos(self, kind: str | None = None) -> Path:
        return self.root / OOS_DIR if kind is None else self.root / OOS_DIR / kind

    @property
    def folds_table(self) -> Path:
        return self.root / FOLDS_TABLE_FILE

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY_FILE

    @property
    def report(self) -> Path:
        return self.root / REPORT_FILE

    def outputs(self) -> list[Path]:
        """What `--overwrite` clears before the folds are trained again."""
        paths = (self.settings, self.folds, self.root / OOS_DIR, self.folds_table, self.summary, self.report)
        return [path for path in paths if path.exists()]
