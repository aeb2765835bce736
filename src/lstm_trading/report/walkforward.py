"""The walk-forward's report: the verdict on top, the stitched out-of-sample equity with the fold boundaries, each
fold's log-loss against its class prior and its expectancy, and the tables, in one self-contained HTML file.

Made from the documents `walkforward` writes (summary.json, folds.csv, each kind's equity.csv and stats.json):
like the rest of `report`, it imports no stage.
"""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lstm_trading.core.atomic import write_text_atomic
from lstm_trading.report.document import _STYLE, _table
from lstm_trading.report.figures import _COLOURS, _times, random_band
from lstm_trading.report.tables import (
    SIGNIFICANCE_HEADER,
    SUMMARY_HEADER,
    not_traded_rows,
    significance_rows,
    summary_rows,
)

if TYPE_CHECKING:
    from pathlib import Path


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def equity_figure(equity: pd.DataFrame, boundaries: list[int], title: str) -> Figure:
    """The stitched model's equity against buy and hold and the random-entry band, a line at each fold's start."""
    times = _times(equity["timestamp"])
    figure = Figure(figsize=(10, 4.5))
    axes = figure.subplots()
    random_band(axes, times, equity)
    axes.plot(times, equity["buy_and_hold"], color=_COLOURS["buy_and_hold"], linewidth=1, label="buy and hold")
    axes.plot(times, equity["model"], color=_COLOURS["model"], linewidth=1.3, label="model (each fold's own)")
    for i, boundary in enumerate(boundaries):
        axes.axvline(_times(np.array([boundary]))[0], color="black", alpha=0.25, linewidth=0.8,
                     label="fold start" if i == 0 else None)  # fmt: skip
    axes.set_ylabel("equity")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize="small")
    return figure


def folds_figure(folds: pd.DataFrame) -> Figure | None:
    """Per fold and model kind: the test log-loss against the class prior's (above), the expectancy per trade
    after costs (below). None without a trained fold."""
    trained = folds[folds["status"] == "trained"]
    if trained.empty:
        return None
    figure = Figure(figsize=(10, 5.5))
    top, bottom = figure.subplots(2, 1, sharex=True)
    kinds = list(dict.fromkeys(trained["model"]))
    width = 0.8 / max(len(kinds), 1)
    for i, kind in enumerate(kinds):
        rows = trained[trained["model"] == kind]
        k = rows["k"].to_numpy(dtype=np.float64)
        top.plot(k, rows["log_loss"].astype(float), marker="o", label=f"{kind} log-loss")
        expectancy = rows["expectancy_pct"].astype(float).fillna(0.0)
        bottom.bar(k + (i - (len(kinds) - 1) / 2) * width, expectancy, width=width, label=kind)
    prior = trained.drop_duplicates("k")
    top.plot(prior["k"].astype(float), prior["prior_log_loss"].astype(float), marker="_", linestyle="--",
             color="grey", label="class prior")  # fmt: skip
    top.set_ylabel("test log-loss")
    top.set_title("Each fold's model on its test trades, against its class prior (lower is better)")
    top.grid(alpha=0.3)
    top.legend(fontsize="small")
    bottom.set_xticks(sorted(set(trained["k"].astype(int))))
    bottom.axhline(0, color="black", linewidth=0.8)
    bottom.set_ylabel("% per trade")
    bottom.set_xlabel("fold")
    bottom.set_title("Expectancy per trade after costs, in the stitched backtest")
    bottom.grid(alpha=0.3)
    bottom.legend(fontsize="small")
    return figure


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def write_walkforward_report(
    path: Path,
    summary: dict[str, Any],
    folds: pd.DataFrame,
    backtests: dict[str, tuple[pd.DataFrame, dict[str, Any]]],
    *,
    main: str,
) -> Path:
    """`report.html` from the walk-forward's summary, its folds table and each kind's (equity, stats)."""
    models = summary["models"]
    order = [main, *(kind for kind in models if kind != main)]
    sections = ["<h2>Verdict</h2>"]
    sections += [
        f"<p><strong>{html.escape(kind)}: {html.escape(models[kind]['sentence'])}</strong></p>" for kind in order
    ]
    period = summary["period"]
    counts = summary["folds"]
    walk = summary["settings"]["walkforward"]
    sections.append(
        f"<p>Out of sample from {html.escape(period['first_test_utc'])} to {html.escape(period['end_utc'])}: "
        f"{counts['trained']} folds trained, {len(counts['skipped'])} skipped; {html.escape(walk['scheme'])} "
        f"training spans of {walk['train_span'] / 86_400:g} days, test spans of {walk['test_span'] / 86_400:g} days "
        f"every {walk['step'] / 86_400:g} days, purge {walk['purge_seconds'] / 3600:g} h. Each moment is decided by "
        "the model of its fold in one position loop (equity carried across folds). Verdict: edge when the 95 % "
        "interval of the expectancy lies above 0 and p &lt; 0.05 against random entries; timing without profit "
        "when only p &lt; 0.05; under 30 trades, too few to judge.</p>"
    )
    for kind in order:
        equity, stats = backtests[kind]
        boundaries = [int(f["test_start"]) for f in stats.get("folds", [])]
        figure = equity_figure(equity, boundaries, f"{kind}: stitched out-of-sample equity")
        sections.append(f"<h2>{html.escape(kind)}</h2>")
        sections.append(f'<figure><img alt="{html.escape(kind)} equity" src="data:image/png;base64,{_png(figure)}">')
        sections.append("<figcaption>Equity against buy and hold and random entries, fold starts marked</figcaption>")
        sections.append("</figure>")
        sections.append(_table(SUMMARY_HEADER, summary_rows(stats)))
        sections.append(_table(SIGNIFICANCE_HEADER, significance_rows(stats)))
        not_traded = not_traded_rows(stats)
        if not_traded:
            sections.append(f"<h3>Moments not traded ({stats['moments']:,} in all)</h3>")
            sections.append(_table(("reason", "moments"), not_traded))
    per_fold = folds_figure(folds)
    if per_fold is not None:
        sections.append("<h2>Folds</h2>")
        sections.append(f'<figure><img alt="folds" src="data:image/png;base64,{_png(per_fold)}"></figure>')
    shown = [c for c in folds.columns if c not in ("reason",)]
    rows = [[_cell(row[c]) for c in shown] for row in folds.to_dict("records")]
    sections.append(_table(shown, rows))
    skipped = folds[folds["status"] == "skipped"].drop_duplicates("fold")
    if not skipped.empty:
        reasons = "".join(
            f"<li>{html.escape(str(r.fold))}: {html.escape(str(r.reason))}</li>" for r in skipped.itertuples()
        )
        sections.append(f"<h3>Skipped folds</h3><ul>{reasons}</ul>")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>lstm-trading walk-forward</title>"
        f"<style>{_STYLE}</style></head><body><h1>lstm-trading walk-forward</h1>"
        + "".join(sections)
        + "</body></html>\n"
    )
    write_text_atomic(path, page)
    return path
