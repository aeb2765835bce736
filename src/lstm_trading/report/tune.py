"""The tuning report: the holdout against the search's score on top (the gap is the overfitting the search did),
the objective of every trial, Optuna's parameter importances, the score against each important parameter, and
the best trial's deflated Sharpe ratio, in one self-contained HTML file.

Made from the documents `tune` writes (summary.json and trials.csv): like the rest of `report`, it imports no
stage.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lstm_trading.core.atomic import write_text_atomic
from lstm_trading.report.document import _STYLE, _table
from lstm_trading.report.figures import _COLOURS
from lstm_trading.report.walkforward import _png

if TYPE_CHECKING:
    from pathlib import Path

SHOWN_PARAMETERS = 4  # the most important parameters drawn against the score


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def objective_figure(trials: pd.DataFrame, summary: dict[str, Any]) -> Figure:
    """Each trial's objective in the order they were started, the best so far, and the holdout's score."""
    figure = Figure(figsize=(10, 4))
    axes = figure.subplots()
    complete = trials[trials["state"] == "complete"]
    values = pd.to_numeric(complete["objective"], errors="coerce")
    axes.plot(complete["number"], values, "o", color=_COLOURS["model"], label="completed trial")
    pruned = trials[trials["state"] == "pruned"]
    if not pruned.empty:  # a pruned trial's score so far: its mean fold skill, or its last running expectancy
        folds = sorted((c for c in trials.columns if c.startswith("fold_")), key=lambda c: int(c.split("_")[1]))
        scores = pruned[folds].apply(pd.to_numeric, errors="coerce")
        running = summary["objective"] == "oos_expectancy"
        partial = scores.ffill(axis=1).iloc[:, -1] if running else scores.mean(axis=1)
        shown = "the expectancy of its trades so far" if running else "mean of its folds so far"
        axes.plot(pruned["number"], partial, "x", color="#7f7f7f", label=f"pruned trial ({shown})")
    if not complete.empty:
        order = complete.sort_values("number")
        axes.step(order["number"], pd.to_numeric(order["objective"]).cummax(), where="post", color="black",
                  linewidth=1, alpha=0.6, label="best so far")  # fmt: skip
    holdout = summary.get("holdout", {}).get("objective")
    if holdout is not None:
        axes.axhline(holdout, color=_COLOURS["random"], linestyle="--", label="best configuration on the holdout")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("trial")
    axes.set_ylabel(summary["objective"])
    axes.set_title("Objective per trial on the tuning period's folds")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def importance_figure(importances: dict[str, float]) -> Figure | None:
    """Optuna's parameter importances (fANOVA, summing to 1), largest on top."""
    if not importances:
        return None
    names = sorted(importances, key=importances.__getitem__)
    figure = Figure(figsize=(8, 0.5 * len(names) + 1.2))
    axes = figure.subplots()
    axes.barh(names, [importances[n] for n in names], color=_COLOURS["model"])
    axes.set_xlabel("importance (share of the objective's variance)")
    axes.set_title("Which parameters the objective depends on")
    axes.grid(alpha=0.3, axis="x")
    return figure


def parameters_figure(
    trials: pd.DataFrame, names: Sequence[str], objective: str, log_scale: Sequence[str]
) -> Figure | None:
    """The completed trials' objective against each of `names`, the best trial ringed."""
    complete = trials[trials["state"] == "complete"]
    if complete.empty or not names:
        return None
    figure = Figure(figsize=(10, 3.2 * ((len(names) + 1) // 2)))
    grid = figure.subplots((len(names) + 1) // 2, 2, squeeze=False)
    values = pd.to_numeric(complete["objective"], errors="coerce")
    best = values.idxmax()
    for axes, name in zip(grid.ravel(), names, strict=False):
        column = complete[name]
        numeric = pd.to_numeric(column, errors="coerce")
        if numeric.notna().all():
            x = numeric
        else:  # choices of text: one position per choice
            labels = sorted(map(str, column.unique()))
            x = column.map(lambda v, labels=labels: labels.index(str(v)))
            axes.set_xticks(range(len(labels)), labels)
        axes.plot(x, values, "o", color=_COLOURS["model"], alpha=0.8)
        axes.plot([x[best]], [values[best]], "o", markersize=12, markerfacecolor="none", color="black")
        if name in log_scale:
            axes.set_xscale("log")
        axes.set_xlabel(name)
        axes.set_ylabel(objective)
        axes.grid(alpha=0.3)
    for axes in grid.ravel()[len(names) :]:
        axes.set_visible(False)
    figure.suptitle("Objective against each parameter (the best trial ringed)")
    figure.tight_layout()
    return figure


def holdout_figure(summary: dict[str, Any]) -> Figure | None:
    """The best trial's fold scores in the search next to the holdout's, each group's mean as a line."""
    # by fold number: a skipped fold, or one without a score, is a gap (None, NaN here)
    search = [np.nan if v is None else v for v in summary["best"].get("fold_scores") or []]
    holdout = [np.nan if v is None else v for v in summary["holdout"].get("fold_scores") or []]
    if not search and not holdout:
        return None
    figure = Figure(figsize=(10, 3.8))
    axes = figure.subplots()
    left = np.arange(len(search))
    right = np.arange(len(holdout)) + len(search) + 1
    axes.bar(left, search, color=_COLOURS["model"], label="search: the best trial's folds")
    axes.bar(right, holdout, color=_COLOURS["random"], label="holdout: its walk-forward's folds")
    for span, value, colour in (
        (left, summary["best"]["objective"], _COLOURS["model"]),
        (right, summary["holdout"].get("objective"), _COLOURS["random"]),
    ):
        if len(span) and value is not None:
            axes.hlines(value, span[0] - 0.4, span[-1] + 0.4, colors=colour, linestyles="--")
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xticks(list(left) + list(right), [f"s{i + 1}" for i in left] + [f"h{i + 1}" for i in range(len(right))])
    axes.set_ylabel(summary["objective"])
    axes.set_title("The best configuration: its score in the search against its score on the holdout")
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize="small")
    return figure


def _figure(sections: list[str], figure: Figure | None, alt: str, caption: str) -> None:
    if figure is None:
        return
    sections.append(f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(figure)}">')
    sections.append(f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def write_tune_report(
    path: Path, summary: dict[str, Any], trials: pd.DataFrame, parameters: Sequence[str], *, log_scale: Sequence[str]
) -> Path:
    """`report.html` from tune's summary and its trials table."""
    best, holdout, objective = summary["best"], summary["holdout"], summary["objective"]
    periods = summary["periods"]
    sections = ["<h2>The holdout against the search</h2>"]
    gap = summary.get("gap")
    if holdout.get("objective") is not None:
        sections.append(
            f"<p><strong>In the search, trial {best['number']} scored {objective} {best['objective']:+.4f}; "
            f"on the holdout, which no trial saw, the same configuration scored {holdout['objective']:+.4f} "
            f"(a gap of {gap:+.4f}: the overfitting the search did).</strong></p>"
        )
        sections.append(f"<p><strong>Holdout: {html.escape(holdout['sentence'])}</strong></p>")
    else:
        why = "; ".join(holdout.get("failures") or []) or holdout.get("reason") or "nothing to score"
        sections.append(f"<p><strong>The holdout's walk-forward has no score: {html.escape(why)}</strong></p>")
        if holdout.get("sentence"):
            sections.append(f"<p><strong>Holdout: {html.escape(holdout['sentence'])}</strong></p>")
    sections.append(
        f"<p>Tuning period {html.escape(periods['tuning'][0])} to {html.escape(periods['tuning'][1])}; holdout "
        f"{html.escape(periods['holdout'][0])} to {html.escape(periods['holdout'][1])}, one label horizon later. "
        "Each trial walk-forwards the tuning period; the best configuration is walk-forwarded once over the "
        "holdout.</p>"
    )
    rows = [
        ["objective", _cell(best["objective"]), _cell(holdout.get("objective"))],
        ["daily Sharpe ratio", _cell(best.get("sharpe_daily")), _cell(holdout.get("sharpe_daily"))],
        ["probabilistic Sharpe ratio (SR* = 0)", "-", _cell(holdout.get("psr"))],
        ["deflated Sharpe ratio", _cell(best.get("dsr")), "-"],
        ["trials started (N)", _cell(best.get("trials")), "1"],
        ["variance of the trials' Sharpe ratios (V)", _cell(best.get("sharpe_variance")), "-"],
        ["expected maximum Sharpe ratio of N trials", _cell(best.get("expected_max_sharpe")), "-"],
        ["trades", "-", _cell(holdout.get("trades"))],
        ["expectancy % per trade", "-", _cell(holdout.get("expectancy_pct"))],
    ]
    sections.append(_table(["", f"search (trial {best['number']})", "holdout"], rows))
    _figure(sections, holdout_figure(summary), "holdout", "Fold scores: s = search (best trial), h = holdout")
    sections.append("<h2>Trials</h2>")
    states = ", ".join(f"{count} {state}" for state, count in sorted(summary["trials"].items()))
    sections.append(f"<p>{html.escape(states)}.</p>")
    _figure(sections, objective_figure(trials, summary), "objective per trial", "Objective per trial")
    importances = summary.get("importances") or {}
    _figure(sections, importance_figure(importances), "importances", "Optuna's parameter importances (fANOVA)")
    ranked = sorted(importances, key=importances.__getitem__, reverse=True) or list(parameters)
    shown = [name for name in ranked if name in trials.columns][:SHOWN_PARAMETERS]
    _figure(
        sections,
        parameters_figure(trials, shown, objective, log_scale),
        "objective against parameters",
        "Objective against the most important parameters",
    )
    sections.append("<h3>Best parameters</h3>")
    sections.append(_table(["parameter", "value"], [[k, _cell(v)] for k, v in sorted(best["params"].items())]))
    complete = trials[trials["state"] == "complete"].copy()
    complete["objective"] = pd.to_numeric(complete["objective"], errors="coerce")
    top = complete.sort_values("objective", ascending=False).head(20)
    columns = ["number", "objective", "sharpe", "trades", *parameters]
    sections.append("<h3>The 20 best trials</h3>")
    sections.append(_table(columns, [[_cell(row[c]) for c in columns] for row in top.to_dict("records")]))
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>lstm-trading tune</title>"
        f"<style>{_STYLE}</style></head><body><h1>lstm-trading tune: {html.escape(summary['study'])}</h1>"
        + "".join(sections)
        + "</body></html>\n"
    )
    write_text_atomic(path, page)
    return path
