"""Figures (PNG, matplotlib's Agg renderer, no display needed) and the self-contained HTML report.

`train`, `evaluate` and `backtest` draw their own figures into the run folder as they finish; `report` only
assembles them, with the metrics and statistics tables, into one `report.html` whose images are embedded
(base64), so the file can be mailed or archived alone. A figure whose data exists but whose PNG is missing
(a run trained before the figures existed) is drawn on the way.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lstm_trading.atomic import write_text_atomic, write_with
from lstm_trading.errors import DataError
from lstm_trading.samples import CLASS_NAMES

LOSS_FIGURE = "loss_curves.png"
CONFUSION_FIGURE = "confusion_matrix.png"
CALIBRATION_FIGURE = "calibration.png"
EQUITY_FIGURE = "equity.png"
PNL_FIGURE = "pnl_distribution.png"
PRICE_FIGURE = "price.png"
REPORT_FILE = "report.html"
BACKTEST_DIR = "backtest"

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


def plot_loss_curves(metrics_csv: Path, out: Path) -> Path | None:
    """Training and validation loss per epoch from Lightning's `logs/metrics.csv`; None if it has none."""
    if not metrics_csv.exists():
        return None
    logged = pd.read_csv(metrics_csv)
    if "epoch" not in logged:
        return None
    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    drawn = False
    for column, label in (("train_loss_epoch", "training"), ("val_loss", "validation")):
        if column in logged:
            per_epoch = logged.dropna(subset=[column]).groupby("epoch")[column].last()
            if len(per_epoch):
                axes.plot(per_epoch.index + 1, per_epoch.to_numpy(), marker="o", label=label)
                drawn = True
    if not drawn:
        return None
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss (classification + SL/TP regression)")
    axes.set_title("Loss per epoch")
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, out)


# --- evaluation ---


def plot_confusion(confusion: np.ndarray, out: Path) -> Path:
    """Counts, with each true class's row share as the colour (so a rare class is as readable as a common one)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    figure = Figure(figsize=(4.8, 4.2))
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(confusion):
        colour = "white" if shares[i, j] > 0.5 else "black"
        axes.text(j, i, f"{int(count)}\n{100 * shares[i, j]:.0f} %", ha="center", va="center", color=colour)
    ticks = range(len(CLASS_NAMES))
    axes.set_xticks(ticks, CLASS_NAMES)
    axes.set_yticks(ticks, CLASS_NAMES)
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


def plot_equity(equity: pd.DataFrame, out: Path) -> Path:
    """Every strategy's equity; the model's drawdown shaded (above) and in percent (below)."""
    times = _times(equity["timestamp"])
    figure = Figure(figsize=(10, 6))
    top, bottom = figure.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    model = equity["model"].to_numpy()
    peak = np.maximum.accumulate(model)
    top.fill_between(times, model, peak, color="red", alpha=0.15, linewidth=0, label="model drawdown")
    if "random_mean" in equity:
        top.fill_between(
            times,
            equity["random_p05"],
            equity["random_p95"],
            color=_COLOURS["random"],
            alpha=0.15,
            linewidth=0,
            label="random entries, 5-95 %",
        )
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


# --- the HTML report ---


@dataclass(frozen=True)
class Report:
    path: Path
    figures: dict[str, Path]  # file name -> where it was read from
    missing: dict[str, str]  # file name -> the command that makes it


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error}); run the command that writes it again") from None
    return data if isinstance(data, dict) else None


def _draw_missing(run_dir: Path, backtest_dir: Path) -> None:
    """Figures whose data is in the run folder but whose PNG is not (e.g. a run trained before figures)."""
    if not (run_dir / LOSS_FIGURE).exists():
        plot_loss_curves(run_dir / "logs" / "metrics.csv", run_dir / LOSS_FIGURE)
    metrics = _read_json(run_dir / "metrics.json")
    if metrics and not (run_dir / CONFUSION_FIGURE).exists() and "confusion" in metrics.get("model", {}):
        plot_confusion(np.asarray(metrics["model"]["confusion"]), run_dir / CONFUSION_FIGURE)
    if metrics and not (run_dir / CALIBRATION_FIGURE).exists() and metrics.get("calibration"):
        plot_calibration(metrics["calibration"]["table"], metrics["calibration"]["ece"], run_dir / CALIBRATION_FIGURE)
    equity_csv, trades_csv = backtest_dir / "equity.csv", backtest_dir / "trades.csv"
    drawn = all((backtest_dir / name).exists() for name in BACKTEST_FIGURES)
    if equity_csv.exists() and trades_csv.exists() and not drawn:
        backtest_figures(pd.read_csv(equity_csv), pd.read_csv(trades_csv), backtest_dir)


def write_report(run_dir: Path, backtest_dir: Path | None = None) -> Report:
    """Assemble `report.html` in the run folder from its metrics, backtest statistics and figures."""
    from lstm_trading.backtest import SUMMARY_HEADER, summary_rows
    from lstm_trading.evaluate import level_rows, metric_rows

    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run folder")
    # a run killed mid-training has only logs/ and checkpoints/; its loss curves still make a report
    if not any((run_dir / name).exists() for name in ("model", "config.toml", "logs", "checkpoints")):
        raise DataError(
            f"{run_dir}: not a run folder (no model/, config.toml or logs/); "
            "give the folder `lstm-trading train --out` wrote"
        )
    backtest_dir = backtest_dir or run_dir / BACKTEST_DIR
    _draw_missing(run_dir, backtest_dir)
    sections: list[str] = []
    bundle_json = _read_json(run_dir / "model" / "bundle.json") or {}
    training = bundle_json.get("training") or {}
    if training:
        facts = [
            ("training period", " to ".join(_utc(t) for t in training.get("train_period", []))),
            ("split sizes", ", ".join(f"{k} {v}" for k, v in (training.get("split_sizes") or {}).items())),
            ("training classes", ", ".join(f"{k} {v}" for k, v in (training.get("class_counts") or {}).items())),
            ("window (minutes)", str((bundle_json.get("targets") or {}).get("max_len", "-"))),
            ("epochs run", str(training.get("epochs_run", "-"))),
            ("best validation loss", f"{(bundle_json.get('validation') or {}).get('best_val_loss', float('nan')):.4f}"),
        ]
        sections.append("<h2>Run</h2>" + _table(("", ""), facts))
    metrics = _read_json(run_dir / "metrics.json")
    if metrics and "calibration" in metrics:
        header, rows = metric_rows(metrics)
        sections.append(f"<h2>Classification on the {html.escape(str(metrics.get('split')))} split</h2>")
        sections.append(f"<p>{metrics.get('samples')} samples; baselines beside the model.</p>" + _table(header, rows))
        header, rows = level_rows(metrics)
        sections.append("<h3>Stop loss and take profit errors</h3>" + _table(header, rows))
    stats = _read_json(backtest_dir / "stats.json")
    if stats:
        period = stats["period"]
        settings = stats["settings"]
        sections.append(
            f"<h2>Backtest {html.escape(period['start_utc'])} to {html.escape(period['end_utc'])}</h2>"
            f"<p>{stats['moments']} decision moments every {settings['every_seconds'] // 60} min, minimum "
            f"probability {settings['min_prob']}, fee {100 * settings['fee']:.3f} % and slippage "
            f"{100 * settings['slippage']:.3f} % per side, maximum hold {settings['max_hold_seconds'] / 3600:g} h. "
            "Fills: entry at the open of the candle opening at the moment; stop assumed first when stop and "
            "target fall in one candle "
            f"({stats['model']['same_candle']} such trades).</p>"
        )
        sections.append(_table(SUMMARY_HEADER, summary_rows(stats)))
        model = stats["model"]
        sections.append(_table(("model", ""), detail_rows(model)))
    figures: dict[str, Path] = {}
    missing: dict[str, str] = {}
    blocks: list[str] = []
    for name, title, command in FIGURES:
        folder = backtest_dir if name in BACKTEST_FIGURES else run_dir
        path = folder / name
        if path.exists():
            figures[name] = path
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            blocks.append(
                f'<figure id="{name}"><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(title)} ({name})</figcaption></figure>"
            )
        else:
            missing[name] = command
            blocks.append(
                f'<figure id="{name}"><figcaption>{html.escape(title)} ({name}): not made yet; run '
                f"<code>{html.escape(command)}</code></figcaption></figure>"
            )
    sections.append("<h2>Figures</h2>" + "".join(blocks))
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>lstm-trading report: {html.escape(run_dir.name)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>lstm-trading report: {html.escape(str(run_dir))}</h1>" + "".join(sections) + "</body></html>\n"
    )
    path = run_dir / REPORT_FILE
    write_text_atomic(path, page)
    return Report(path, figures, missing)


def _maybe(value: float | None, text: str) -> str:
    return "-" if value is None else text.format(value)


def detail_rows(model: dict[str, Any]) -> list[tuple[str, str]]:
    """The model's statistics beyond the summary table, as text cells."""
    return [
        ("exposure", f"{100 * model['exposure']:.1f} %"),
        ("average holding time", _maybe(model["average_minutes_held"], "{:.0f} min")),
        ("fees paid", f"{model['fees_paid']:.2f}"),
        ("slippage paid", f"{model['slippage_paid']:.2f}"),
        ("round-trip costs / average TP distance", _maybe(model["costs_share_of_average_tp"], "{:.1%}")),
        ("Sortino", _maybe(model["sortino"], "{:.2f}")),
        ("same-candle SL/TP (stop assumed first)", str(model["same_candle"])),
        ("P&L with optimistic same-candle fills", f"{model['optimistic_same_candle']['pnl']:.2f}"),
        ("exits", ", ".join(f"{k} {v}" for k, v in model["exits"].items())),
    ]


def _utc(seconds: int) -> str:
    from lstm_trading.timeutil import format_time

    return format_time(int(seconds))


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
    "figure{margin:1.5em 0}img{max-width:100%}figcaption{color:#555;font-size:0.9em}"
)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A plain-text table (first column left, others right-aligned) for logs and the demo's output."""
    cells = [list(map(str, header)), *(list(map(str, row)) for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    return [line(cells[0]), "  ".join("-" * w for w in widths), *(line(row) for row in cells[1:])]
