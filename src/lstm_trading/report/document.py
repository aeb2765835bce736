"""The self-contained HTML report, assembled from the run folder's documents and figures.

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

import pandas as pd

from lstm_trading.core.atomic import write_text_atomic
from lstm_trading.core.errors import DataError
from lstm_trading.core.run_folder import EQUITY_FILE, STATS_FILE, TRADES_FILE, RunFolder
from lstm_trading.report.figures import (
    BACKTEST_FIGURES,
    FIGURES,
    LOSS_FIGURE,
    backtest_figures,
    evaluation_figures,
    plot_loss_curves,
)
from lstm_trading.report.tables import (
    EV_CALIBRATION_HEADER,
    SIGNIFICANCE_HEADER,
    SWEEP_HEADER,
    _utc,
    detail_rows,
    ev_calibration_rows,
    not_traded_rows,
    significance_rows,
    sweep_rows,
    verdict_line,
)

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
        plot_loss_curves(RunFolder(run_dir).metrics_csv, run_dir / LOSS_FIGURE)
    metrics = _read_json(RunFolder(run_dir).metrics)
    if metrics:
        evaluation_figures(metrics, run_dir, missing_only=True)
    equity_csv, trades_csv = backtest_dir / EQUITY_FILE, backtest_dir / TRADES_FILE
    drawn = all((backtest_dir / name).exists() for name in BACKTEST_FIGURES)
    if equity_csv.exists() and trades_csv.exists() and not drawn:
        backtest_figures(pd.read_csv(equity_csv), pd.read_csv(trades_csv), backtest_dir)


def write_report(run_dir: Path, backtest_dir: Path | None = None) -> Report:
    """Assemble `report.html` in the run folder from its metrics, backtest statistics and figures."""
    from lstm_trading.report.tables import (
        COMPARISON_HEADER,
        SUMMARY_HEADER,
        comparison_rows,
        level_rows,
        metric_rows,
        no_information_lines,
        stratified_note,
        summary_rows,
    )

    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run folder")
    # a run killed mid-training has only logs/ and checkpoints/; its loss curves still make a report
    if not RunFolder(run_dir).trained_parts() and not RunFolder(run_dir).config.exists():
        raise DataError(
            f"{run_dir}: not a run folder (no model/, config.toml or logs/); "
            "give the folder `lstm-trading train --out` wrote"
        )
    backtest_dir = backtest_dir or RunFolder(run_dir).backtest
    _draw_missing(run_dir, backtest_dir)
    sections: list[str] = []
    bundle_json = _read_json(RunFolder(run_dir).model / "bundle.json") or {}
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
    metrics = _read_json(RunFolder(run_dir).metrics)
    if metrics and "calibration" in metrics:
        header, rows = metric_rows(metrics)
        sections.append(f"<h2>Classification on the {html.escape(str(metrics.get('split')))} split</h2>")
        sections.append(f"<p>{metrics.get('samples')} samples; baselines beside the model.</p>" + _table(header, rows))
        note = stratified_note(metrics)
        if note is not None:
            sections.append(f"<p>{html.escape(note)}.</p>")
        for line in no_information_lines(metrics):
            sections.append(f"<p><strong>{html.escape(line)}</strong></p>")
        compared = comparison_rows(metrics)
        if compared:
            sections.append("<h3>Against another run on the same trades</h3>" + _table(COMPARISON_HEADER, compared))
        header, rows = level_rows(metrics)
        sections.append("<h3>Stop loss and take profit errors</h3>" + _table(header, rows))
    stats = _read_json(backtest_dir / STATS_FILE)
    if stats:
        period = stats["period"]
        settings = stats["settings"]
        sections.append(
            f"<h2>Backtest {html.escape(period['start_utc'])} to {html.escape(period['end_utc'])}</h2>"
            f"<p>{stats['moments']} decision moments every {settings['every_seconds'] // 60} min, minimum "
            f"probability {settings['min_prob']}, minimum EV {settings.get('min_ev', 0):g} % with "
            f"{html.escape(str(settings.get('levels', 'model')))} levels, fee {100 * settings['fee']:.3f} % and "
            "slippage "
            f"{100 * settings['slippage']:.3f} % per side, maximum hold {settings['max_hold_seconds'] / 3600:g} h. "
            "Fills: entry at the open of the candle opening at the moment; stop assumed first when stop and "
            "target fall in one candle "
            f"({stats['model']['same_candle']} such trades).</p>"
        )
        sections.append(_table(SUMMARY_HEADER, summary_rows(stats)))
        verdict = verdict_line(stats)
        if verdict is not None:
            random = stats["baselines"]["random"]["significance"]
            sections.append(
                f"<h3>Is it more than luck?</h3><p><strong>{html.escape(verdict)}</strong></p>"
                "<p>Net return per trade in % of entry notional, after fees and slippage, with a 95 % interval "
                "from a stationary bootstrap over the time-ordered trades; p: the share of "
                f"{random['runs']:,} random-entry runs (the model's Buy and Sell counts, entered where flat and "
                "where the take profit exceeds the costs, the model's levels and maximum hold; "
                f"{_hours(random['average_minutes_held'])} held on average) doing at least as well per trade. "
                "Sharpe ratios from daily equity returns (UTC days, flat days included), not annualised; PSR "
                "against 0, DSR against the expected best of the trials. Verdict: edge when the interval lies "
                "above 0 and p &lt; 0.05; timing without profit when only p &lt; 0.05; under 30 trades, too few "
                "to judge.</p>" + _table(SIGNIFICANCE_HEADER, significance_rows(stats))
            )
        model = stats["model"]
        sections.append(_table(("model", ""), detail_rows(model)))
        if stats.get("sweep"):
            sweep = stats["sweep"]
            chosen = sweep.get("chosen")
            sections.append(
                "<h3>Thresholds chosen on the validation period (--sweep)</h3><p>"
                + html.escape(
                    sweep["note"] or "chosen (*): " + ", ".join(f"{k} {v:g}" for k, v in (chosen or {}).items())
                )
                + "</p>"
                + _table(SWEEP_HEADER, sweep_rows(stats))
            )
        not_traded = not_traded_rows(stats)
        if not_traded:
            sections.append("<h3>Moments not traded</h3>" + _table(("reason", "moments"), not_traded))
        calibration = ev_calibration_rows(stats)
        if calibration:
            sections.append(
                "<h3>Predicted EV against realised net return per trade</h3><p>The model's trades by decile of "
                "the EV they were taken at. EV counts every non-win as a full stop, so a rule whose EV means what "
                "it says realises at least its prediction on average.</p>" + _table(EV_CALIBRATION_HEADER, calibration)
            )
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
    path = RunFolder(run_dir).report
    write_text_atomic(path, page)
    return Report(path, figures, missing)


def _hours(minutes: float | None) -> str:
    return "-" if minutes is None else f"{minutes / 60:.1f} h"


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
    "figure{margin:1.5em 0}img{max-width:100%}figcaption{color:#555;font-size:0.9em}"
)
