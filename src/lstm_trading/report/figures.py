"""Figures as PNG (matplotlib's Agg renderer, no display needed), drawn from documents and frames.

Each command draws its own figures as it finishes (train the loss curves, evaluate the confusion matrix and the
calibration, backtest the equity, P&L and price charts); `report` only assembles them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lstm_trading.core.atomic import write_with
from lstm_trading.core.run_folder import CALIBRATION_FIGURE, CONFUSION_FIGURE, LOSS_FIGURE

EQUITY_FIGURE = "equity.png"
PNL_FIGURE = "pnl_distribution.png"
PRICE_FIGURE = "price.png"

# (file, title, the command that makes its data): in the report's order.
FIGURES = (
    (LOSS_FIGURE, "Training and validation loss", "lstm-trading train"),
    (CONFUSION_FIGURE, "Confusion matrix (test split)", "lstm-trading evaluate RUN"),
    (CALIBRATION_FIGURE, "Calibration: reliability diagram", "lstm-trading evaluate RUN"),
    (EQUITY_FIGURE, "Equity against the baselines, drawdown shaded", "lstm-trading backtest RUN"),
    (PNL_FIGURE, "P&L per trade", "lstm-trading backtest RUN"),
    (PRICE_FIGURE, "Price with entries and exits", "lstm-trading backtest RUN"),
)
BACKTEST_FIGURES = (EQUITY_FIGURE, PNL_FIGURE, PRICE_FIGURE)

_COLOURS = {"model": "#1f77b4", "buy_and_hold": "#7f7f7f", "random": "#ff7f0e", "journal": "#2ca02c"}


def _save(figure: Figure, path: Path) -> Path:
    # Drawn beside `path` and renamed: a crash never leaves half a PNG (the format is named, the name ends .tmp).
    write_with(path, lambda temporary: figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight"))
    return path


def _times(timestamps: np.ndarray | pd.Series) -> pd.DatetimeIndex:
    return pd.to_datetime(np.asarray(timestamps, dtype=np.int64), unit="s")


# --- training ---


# Each panel: its title and the (metrics.csv column, label) of its curves. The classification and regression
# parts apart, since either can fall while the other rises; the combined loss is what the optimiser minimises.
LOSS_PANELS = (
    ("classification log-loss", (("train_class_loss", "training"), ("val_class_loss", "validation"))),
    ("SL/TP regression (SmoothL1)", (("train_reg_loss", "training"), ("val_reg_loss", "validation"))),
    ("combined loss", (("train_loss_epoch", "training"), ("val_loss", "validation"))),
)


def _per_epoch(logged: pd.DataFrame, column: str) -> pd.Series:
    if column not in logged:
        return pd.Series(dtype=np.float64)
    return logged.dropna(subset=[column]).groupby("epoch")[column].last()


def chosen_epoch(logged: pd.DataFrame, criterion: str) -> int | None:
    """The epoch (from 0) whose `criterion` is lowest, the first of equal ones, as Lightning's ModelCheckpoint
    keeps it; None when the log has no such column."""
    per_epoch = _per_epoch(logged, criterion) if "epoch" in logged else pd.Series(dtype=np.float64)
    return int(per_epoch.idxmin()) if len(per_epoch) else None


def loss_figure(logged: pd.DataFrame, criterion: str | None = None) -> Figure | None:
    """A panel per loss part that the log holds, training and validation per epoch, with a line at the epoch
    `criterion` chose (the best checkpoint); None when no panel has data."""
    if "epoch" not in logged:
        return None
    panels = [
        (title, [(label, curve) for column, label in curves if len(curve := _per_epoch(logged, column))])
        for title, curves in LOSS_PANELS
    ]
    panels = [(title, curves) for title, curves in panels if curves]
    if not panels:
        return None
    chosen = chosen_epoch(logged, criterion) if criterion else None
    figure = Figure(figsize=(4.2 * len(panels), 3.8), layout="constrained")  # room for the suptitle
    for axes, (title, curves) in zip(np.atleast_1d(figure.subplots(1, len(panels), sharex=True)), panels, strict=True):
        for label, curve in curves:
            axes.plot(curve.index + 1, curve.to_numpy(), marker="o", label=label)
        if chosen is not None:
            axes.axvline(chosen + 1, color="grey", linestyle="--", label=f"chosen: epoch {chosen + 1} ({criterion})")
        axes.set_xlabel("epoch")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    figure.suptitle("Loss per epoch")
    return figure


def plot_loss_curves(metrics_csv: Path, out: Path, *, criterion: str | None = None) -> Path | None:
    """The loss figure (`loss_figure`) from Lightning's `logs/metrics.csv`; None if it has no epoch rows.
    `criterion`: the metric that chose the best checkpoint (`train.checkpoint_criterion`), marked when given."""
    if not metrics_csv.exists():
        return None
    figure = loss_figure(pd.read_csv(metrics_csv), criterion)
    return _save(figure, out) if figure is not None else None


# --- evaluation ---


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], out: Path) -> Path:
    """Counts, with each true class's row share as the colour (so a rare class is as readable as a common one)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    figure = Figure(figsize=(4.8, 4.2))
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(confusion):
        colour = "white" if shares[i, j] > 0.5 else "black"
        axes.text(j, i, f"{int(count)}\n{100 * shares[i, j]:.0f} %", ha="center", va="center", color=colour)
    ticks = range(len(class_names))
    axes.set_xticks(ticks, list(class_names))
    axes.set_yticks(ticks, list(class_names))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Confusion matrix (row share)")
    figure.colorbar(image, ax=axes, fraction=0.046)
    return _save(figure, out)


def plot_calibration(table: Sequence[dict[str, float]], ece: float, out: Path) -> Path:
    """Reliability diagram: mean top-class confidence per bin against its observed accuracy, bin counts below."""
    figure = Figure(figsize=(5, 5.5))
    top, bottom = figure.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    if table:
        confidence = [row["confidence"] for row in table]
        accuracy = [row["accuracy"] for row in table]
        top.plot(confidence, accuracy, marker="o", label="model")
        centres = [(row["low"] + row["high"]) / 2 for row in table]
        widths = [row["high"] - row["low"] for row in table]
        bottom.bar(centres, [row["count"] for row in table], width=widths, edgecolor="white")
    top.set_ylabel("observed accuracy")
    top.set_title(f"Calibration (ECE {ece:.3f})")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.grid(alpha=0.3)
    top.legend(loc="upper left")
    bottom.set_xlabel("predicted probability of the top class")
    bottom.set_ylabel("count")
    return _save(figure, out)


# --- backtest ---


def random_band(axes: Any, times: Any, equity: pd.DataFrame) -> None:
    """The random-entry runs' 5-95 % equity band, where the frame has it (every equity plot shows the null)."""
    if "random_p05" not in equity:
        return
    axes.fill_between(
        times,
        equity["random_p05"],
        equity["random_p95"],
        color=_COLOURS["random"],
        alpha=0.15,
        linewidth=0,
        label="random entries, 5-95 %",
    )


def plot_equity(equity: pd.DataFrame, out: Path) -> Path:
    """Every strategy's equity; the model's drawdown shaded (above) and in percent (below)."""
    times = _times(equity["timestamp"])
    figure = Figure(figsize=(10, 6))
    top, bottom = figure.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    model = equity["model"].to_numpy()
    peak = np.maximum.accumulate(model)
    top.fill_between(times, model, peak, color="red", alpha=0.15, linewidth=0, label="model drawdown")
    if "random_mean" in equity:
        random_band(top, times, equity)
        top.plot(times, equity["random_mean"], color=_COLOURS["random"], linewidth=1, label="random entries, mean")
    top.plot(times, equity["buy_and_hold"], color=_COLOURS["buy_and_hold"], linewidth=1, label="buy and hold")
    if "journal" in equity:
        top.plot(times, equity["journal"], color=_COLOURS["journal"], linewidth=1, label="journal trades")
    if "model_optimistic" in equity:
        top.plot(
            times,
            equity["model_optimistic"],
            color=_COLOURS["model"],
            linestyle=":",
            linewidth=1,
            label="model, optimistic same-candle fills",
        )
    top.plot(times, model, color=_COLOURS["model"], linewidth=1.6, label="model")
    top.set_ylabel("equity")
    top.set_title("Equity at each candle's close (after fees and slippage)")
    top.grid(alpha=0.3)
    top.legend(loc="best", fontsize="small")
    drawdown = 100 * (model / peak - 1)
    bottom.fill_between(times, drawdown, 0, color="red", alpha=0.4, linewidth=0)
    bottom.set_ylabel("model drawdown %")
    bottom.grid(alpha=0.3)
    figure.autofmt_xdate()
    return _save(figure, out)


def plot_pnl_distribution(trades: pd.DataFrame, out: Path) -> Path:
    """Histogram of each trade's return on its position (after costs), split by exit reason."""
    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    if len(trades):
        returns = trades["return_pct"].to_numpy(dtype=np.float64)
        bins = np.histogram_bin_edges(returns, bins=min(40, max(5, len(returns) // 2))).tolist()
        for reason, part in trades.groupby("exit_reason"):
            axes.hist(part["return_pct"], bins=bins, alpha=0.6, label=f"{reason} ({len(part)})")
        axes.axvline(0, color="black", linewidth=0.8)
        axes.axvline(float(returns.mean()), color="red", linestyle="--", label=f"mean {returns.mean():+.3f} %")
        axes.legend(fontsize="small")
    else:
        axes.text(0.5, 0.5, "no trades", ha="center", va="center", transform=axes.transAxes)
    axes.set_xlabel("return per trade, % of position (after fees and slippage)")
    axes.set_ylabel("trades")
    axes.set_title("P&L distribution")
    return _save(figure, out)


def plot_price(equity: pd.DataFrame, trades: pd.DataFrame, out: Path) -> Path:
    """Close price over the backtest with each trade's entry (triangle: up Buy, down Sell) and exit (cross)."""
    figure = Figure(figsize=(10, 4.5))
    axes = figure.subplots()
    axes.plot(_times(equity["timestamp"]), equity["close"], color="black", linewidth=0.7, label="close")
    for side, marker, colour in (("Buy", "^", "green"), ("Sell", "v", "red")):
        part = trades[trades["side"] == side]
        if len(part):
            axes.scatter(
                _times(part["entry_time"]),
                part["entry_price"],
                marker=marker,
                color=colour,
                s=36,
                label=f"{side} entry",
            )
    if len(trades):
        win = trades["pnl"] > 0
        for chosen, colour, label in ((win, "green", "exit, profit"), (~win, "red", "exit, loss")):
            part = trades[chosen]
            if len(part):
                exit_candle = part["exit_time"] - 60  # drawn on the candle the exit happened in
                axes.scatter(_times(exit_candle), part["exit_price"], marker="x", color=colour, s=30, label=label)
    axes.set_ylabel("price")
    axes.set_title("Price with the model's entries and exits")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    figure.autofmt_xdate()
    return _save(figure, out)


def backtest_figures(equity: pd.DataFrame, trades: pd.DataFrame, out_dir: Path) -> list[Path]:
    """The backtest's three figures into `out_dir`."""
    return [
        plot_equity(equity, out_dir / EQUITY_FIGURE),
        plot_pnl_distribution(trades, out_dir / PNL_FIGURE),
        plot_price(equity, trades, out_dir / PRICE_FIGURE),
    ]


def evaluation_figures(document: dict[str, Any], out_dir: Path, *, missing_only: bool = False) -> list[Path]:
    """The confusion matrix and the reliability diagram of a metrics.json document into `out_dir` (with
    `missing_only`, only those whose PNG is not there yet, as `report` draws them on the way)."""
    drawn = []
    model, calibration = document.get("model") or {}, document.get("calibration")
    confusion_path, calibration_path = out_dir / CONFUSION_FIGURE, out_dir / CALIBRATION_FIGURE
    if "confusion" in model and not (missing_only and confusion_path.exists()):
        drawn.append(plot_confusion(np.asarray(model["confusion"]), list(model["per_class"]), confusion_path))
    if calibration and not (missing_only and calibration_path.exists()):
        drawn.append(plot_calibration(calibration["table"], calibration["ece"], calibration_path))
    return drawn
