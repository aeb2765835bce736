"""The report: every figure exists after train, evaluate and backtest, and one self-contained HTML names each."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lstm_trading.cli import app
from lstm_trading.core.run_folder import LOSS_FIGURE
from lstm_trading.data.journal import write_journal
from lstm_trading.report.document import write_report
from lstm_trading.report.figures import (
    BACKTEST_FIGURES,
    FIGURES,
    plot_loss_curves,
    plot_pnl_distribution,
    plot_price,
)

runner = CliRunner(env={"COLUMNS": "200"})


def test_train_leaves_its_loss_curves(tiny_run: Path) -> None:
    assert (tiny_run / LOSS_FIGURE).stat().st_size > 1000


def test_report_assembles_every_figure(
    tiny_run: Path, tiny_db: Path, tiny_trades: pd.DataFrame, tmp_path: Path
) -> None:
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    journal = tmp_path / "journal.xlsx"
    write_journal(journal, tiny_trades[["start_time", "entry_price", "side", "stop_loss", "take_profit"]])
    evaluated = runner.invoke(app, ["evaluate", str(run), "--db", str(tiny_db), "--trades", str(journal)])
    assert evaluated.exit_code == 0, evaluated.output
    backtest = ["backtest", str(run), "--db", str(tiny_db), "--min-prob", "0", "--min-ev", "-1", "--no-progress"]
    tested = runner.invoke(app, backtest)
    assert tested.exit_code == 0, tested.output
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert f"report: {run / 'report.html'} (6 figures)" in result.output
    for name, _, _ in FIGURES:
        folder = run / "backtest" if name in BACKTEST_FIGURES else run
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    page = (run / "report.html").read_text()
    for name, title, _ in FIGURES:
        assert f'<figure id="{name}"><img alt="{html.escape(title)}" src="data:image/png;base64,' in page, name
    assert len(re.findall(r'src="(?!data:)', page)) == 0  # self-contained: nothing outside the file
    for text in ("macro-F1", "buy and hold", "random entries", "Stop loss and take profit errors"):
        assert text in page
    for text in ("Moments not traded", "Predicted EV against realised", "same signals, k x ATR levels"):
        assert text in page


def test_report_names_what_is_missing_and_how_to_make_it(tiny_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    (run / LOSS_FIGURE).unlink()
    report = write_report(run)
    assert set(report.figures) == {LOSS_FIGURE}  # drawn again from logs/metrics.csv on the way
    assert report.missing["confusion_matrix.png"] == "lstm-trading evaluate RUN"
    assert report.missing["equity.png"] == "lstm-trading backtest RUN"
    assert "not made yet; run <code>lstm-trading backtest RUN</code>" in report.path.read_text()
    result = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no such run folder" in result.output


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    # regression: `report runs` (the parent folder) wrote runs/report.html with 0 figures and exit code 0
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {tmp_path}: not a run folder (no model/, config.toml or logs/); "
        "give the folder `lstm-trading train --out` wrote"
    )
    assert not (tmp_path / "report.html").exists()


def test_figures_without_trades_or_logs(tmp_path: Path) -> None:
    empty = pd.DataFrame(columns=["entry_time", "exit_time", "side", "entry_price", "exit_price", "pnl", "return_pct"])
    empty["exit_reason"] = []
    equity = pd.DataFrame({"timestamp": 1_704_067_200 + 60 * np.arange(5), "close": np.linspace(100, 101, 5)})
    assert plot_pnl_distribution(empty, tmp_path / "pnl.png").exists()
    assert plot_price(equity, empty, tmp_path / "price.png").exists()
    assert plot_loss_curves(tmp_path / "missing.csv", tmp_path / "loss.png") is None


@pytest.mark.parametrize("column", ["train_loss_epoch", "val_loss"])
def test_loss_curves_from_either_column(tmp_path: Path, column: str) -> None:
    csv = tmp_path / "metrics.csv"
    pd.DataFrame({"epoch": [0, 0, 1, 1], column: [1.0, np.nan, 0.8, np.nan]}).to_csv(csv, index=False)
    assert plot_loss_curves(csv, tmp_path / "loss.png") == tmp_path / "loss.png"
