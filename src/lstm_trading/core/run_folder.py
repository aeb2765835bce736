"""The run folder: one class names every path in it, so no module spells a file name of another.

It lives in `core` (not `runs`) because the layers below `runs` write into it too: training its checkpoints and
logs, the report its HTML; they take a `RunFolder` and never build the names themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.toml"
MODEL_DIR = "model"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
BACKTEST_DIR = "backtest"
REPLAY_DIR = "replay"
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
        return [path for path in (self.model, self.checkpoints, self.logs) if path.exists()]
