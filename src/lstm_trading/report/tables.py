"""Tables as text cells, made from the documents the stages return (metrics.json, stats.json): no stage imported.

`cli`, the demo and the HTML report print the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lstm_trading.core.timeutil import format_time

# --- tables for the command line ---


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def with_spread(column: dict[str, Any], key: str) -> str:
    """A figure, with its standard deviation where the column has one (the stratified draws)."""
    std = column.get(f"{key}_std")
    if std is None or not np.isfinite(std):
        return _cell(column[key])
    return f"{_cell(column[key])} ± {_cell(std)}"


def metric_rows(document: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Header and rows: each classification figure for the model and, beside it, for each baseline.

    Stratified random shows its expectation: accuracy and macro-F1 as mean ± standard deviation over its draws
    (older documents: the one draw they hold); its log-loss is the class prior's.
    """
    names = ["model", *document["baselines"]]
    columns = [document["model"], *document["baselines"].values()]
    header = ("metric", *(n.replace("_", " ") for n in names))
    rows: list[tuple[str, ...]] = [
        ("accuracy", *(with_spread(c, "accuracy") for c in columns)),
        ("macro-F1", *(with_spread(c, "macro_f1") for c in columns)),
        ("log-loss", *(_cell(c.get("log_loss")) for c in columns)),
    ]
    for name in document["model"]["per_class"]:
        for key, label in (("precision", "P"), ("recall", "R"), ("f1", "F1")):
            rows.append((f"{name} {label}", *(_cell(c["per_class"][name][key]) for c in columns)))
    ece = document["calibration"]
    rows.append(("ECE", _cell(ece["ece"]), "-", "-", _cell(ece["baselines"]["stratified_random"])))
    return header, rows


def stratified_note(document: dict[str, Any]) -> str | None:
    """What the stratified-random column is: its draws, and that its log-loss is the class prior's."""
    random = document["baselines"].get("stratified_random") or {}
    if "draws" not in random:
        return None
    return (
        f"stratified random: labels drawn with the training class frequencies, mean ± std over "
        f"{random['draws']:,} draws (seed {random['seed']}; accuracy in closed form); its log-loss is the class "
        "prior's"
    )


def no_information_lines(document: dict[str, Any]) -> list[str]:
    """The evaluation's "no information" line and, under `--against`, the other run's, each naming its run."""
    lines: list[str] = []
    against = document.get("against")
    for part in (document, against) if against else (document,):
        line = part.get("no_information")
        if line:
            lines.append(f"{line} ({part.get('kind', 'model')}, {part.get('run', '-')})" if against else line)
    return lines


COMPARISON_HEADER = (
    "run",
    "kind",
    "samples",
    "log-loss",
    "class prior's log-loss",
    "log-loss - prior's",
    "accuracy",
    "macro-F1",
    "ECE",
)


def comparison_rows(document: dict[str, Any]) -> list[tuple[str, ...]]:
    """The run and its `--against` run side by side on the same trades (`COMPARISON_HEADER`), then the
    stratified-random expectation for scale; empty without an `against` part."""
    against = document.get("against")
    if not against:
        return []

    def row(part: dict[str, Any]) -> tuple[str, ...]:
        model = part["model"]
        prior = (part.get("class_prior") or {}).get("log_loss")
        difference = model.get("log_loss_vs_prior")
        return (
            str(part.get("run", "-")),
            str(part.get("kind", "-")),
            str(part["samples"]),
            _cell(model.get("log_loss")),
            _cell(prior),
            "-" if difference is None else f"{difference:+.3f}",
            _cell(model["accuracy"]),
            _cell(model["macro_f1"]),
            _cell(part["calibration"]["ece"]),
        )

    rows = [row(document), row(against)]
    random = document["baselines"]["stratified_random"]
    rows.append(
        (
            "stratified random",
            "baseline",
            str(document["samples"]),
            _cell(random.get("log_loss")),
            _cell(random.get("log_loss")),
            "+0.000",
            with_spread(random, "accuracy"),
            with_spread(random, "macro_f1"),
            _cell(document["calibration"]["baselines"]["stratified_random"]),
        )
    )
    return rows


def level_rows(document: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Header and rows: SL / TP errors in % of entry (mean abs, median abs) by side, model and `k * ATR` rule."""
    header: tuple[str, ...] = (
        "levels (% of entry)",
        "side",
        "trades",
        "SL mean abs",
        "SL median abs",
        "TP mean abs",
        "TP median abs",
    )
    sources = [("model", document["model"]["levels"])]
    rule = document.get("atr_rule")
    if rule:
        if rule["samples"] != document["model"]["levels"]["all"]["stop_loss"]["count"]:
            sources.append(("model, rows with own SL/TP", rule["model_levels"]))
        sources.append(("k * ATR rule, rows with own SL/TP", rule["levels"]))
    rows: list[tuple[str, ...]] = []
    for name, levels in sources:
        for side in ("Buy", "Sell", "all"):
            sl, tp = levels[side]["stop_loss"], levels[side]["take_profit"]
            rows.append(
                (
                    name,
                    side,
                    str(sl["count"]),
                    _cell(sl["mean_abs"], 4),
                    _cell(sl["median_abs"], 4),
                    _cell(tp["mean_abs"], 4),
                    _cell(tp["median_abs"], 4),
                )
            )
    return header, rows


def _percent(value: float | None, sign: str = "+") -> str:
    if value is None:
        return "-"
    return "0.00%" if value == 0 else f"{100 * value:{sign}.2f}%"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


SUMMARY_HEADER = ("strategy", "return", "Sharpe", "max drawdown", "trades", "win rate", "profit factor")


def summary_rows(stats: dict[str, Any]) -> list[tuple[str, ...]]:
    """The model against each baseline as text cells (`SUMMARY_HEADER`): what `backtest` and the demo print.

    Random entries show the mean and standard deviation over their runs; the model's second row is its return
    under optimistic fills (target first when stop and target fall in one candle).
    """

    def row(name: str, s: dict[str, Any]) -> tuple[str, ...]:
        return (
            name,
            _percent(s["total_return"]),
            _number(s["sharpe"]),
            _percent(s["max_drawdown"]),
            str(s["trades"]),
            _percent(s["win_rate"], ""),
            _number(s["profit_factor"]),
        )

    model = stats["model"]
    optimistic = model["optimistic_same_candle"]
    rows = [
        row("model", model),
        (f"optimistic fills ({model['same_candle']} same-candle)", _percent(optimistic["total_return"])) + ("",) * 5,
    ]
    baselines = stats["baselines"]
    rows.append(row("buy and hold", baselines["buy_and_hold"]))
    random = baselines.get("random")
    if random:

        def spread(key: str, percent: bool = True, sign: str = "+") -> str:
            part = random[key]
            if part is None:
                return "-"
            if percent:
                return f"{100 * part['mean']:{sign}.2f}% ± {100 * part['std']:.2f}"
            return f"{part['mean']:.2f} ± {part['std']:.2f}"

        rows.append(
            (
                f"random entries ({_random_runs(random)} runs)",
                spread("total_return"),
                spread("sharpe", False),
                spread("max_drawdown"),
                f"{random['trades']['mean']:.1f}" if random["trades"] else "-",
                spread("win_rate", sign=""),
                spread("profit_factor", False),
            )
        )
    if baselines.get("atr_levels"):
        rows.append(row(ATR_LEVELS_NAME, baselines["atr_levels"]))
    journal = baselines.get("journal")
    if journal:
        rows.append(row(journal.get("name", "journal"), journal))
    return rows


ATR_LEVELS_NAME = "same signals, k x ATR levels"


def _random_runs(random: dict[str, Any]) -> int:
    """How many random runs a stats.json's random baseline has (`seeds`: one written before `runs`)."""
    return int(random.get("runs") or len(random.get("seeds", [])))


def _maybe(value: float | None, text: str) -> str:
    return "-" if value is None else text.format(value)


SIGNIFICANCE_HEADER = (
    "strategy",
    "trades",
    "net / trade",
    "95 % interval",
    "p vs random",
    "daily Sharpe",
    "PSR",
    "DSR",
    "verdict",
)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f} %"


def _interval(bounds: Sequence[float | None] | None) -> str:
    if not bounds or bounds[0] is None or bounds[1] is None:
        return "-"
    return f"{bounds[0]:+.3f} to {bounds[1]:+.3f} %"


def significance_rows(stats: dict[str, Any]) -> list[tuple[str, ...]]:
    """Per strategy (`SIGNIFICANCE_HEADER`): net return per trade in % of entry notional with its bootstrap
    interval, the p-value against random entries, daily Sharpe (not annualised), PSR, DSR and the verdict.

    The random entries' row shows the runs' mean and the central 95 % of their means per trade: the null the
    p-values are read against. Empty for a stats.json written before these statistics.
    """

    def row(name: str, s: dict[str, Any]) -> tuple[str, ...] | None:
        sig = s.get("significance")
        if not sig:
            return None
        return (
            name,
            str(sig["trades"]),
            _pct(sig["expectancy_pct"]),
            _interval(sig["interval_pct"]),
            _maybe(sig["p_random_entries"], "{:.3f}"),
            _maybe(sig["sharpe_daily"], "{:.3f}"),
            _maybe(sig["psr"], "{:.2f}"),
            _maybe(sig["dsr"], "{:.2f}"),
            sig["verdict"],
        )

    baselines = stats["baselines"]
    rows = [row("model", stats["model"]), row("buy and hold", baselines["buy_and_hold"])]
    random = baselines.get("random")
    if random and random.get("significance"):
        null = random["significance"]
        sharpe = random.get("sharpe_daily")
        rows.append(
            (
                f"random entries ({null['runs']} runs)",
                _maybe(null["trades_per_run"]["mean"], "{:.1f}"),
                _pct(null["expectancy_pct"]["mean"]),
                "runs: " + _interval([null["expectancy_pct"]["p2_5"], null["expectancy_pct"]["p97_5"]]),
                "-",
                "-" if not sharpe else f"{sharpe['mean']:.3f} ± {sharpe['std']:.3f}",
                "-",
                "-",
                "(the null)",
            )
        )
    if baselines.get("atr_levels"):
        rows.append(row(ATR_LEVELS_NAME, baselines["atr_levels"]))
    journal = baselines.get("journal")
    if journal:
        rows.append(row(journal.get("name", "journal"), journal))
    return [r for r in rows if r is not None]


NOT_TRADED_NAMES = {
    "no_window": "no usable window (a gap or its warm-up)",
    "tp_below_costs": "take profit does not pay the costs",
    "ev_below_min": "EV at or below min-ev",
    "prob_below_min": "P below min-prob",
    "position_open": "a position was open",
    "daily_loss_limit": "daily loss limit",
    "no_equity": "no equity left",
    "no_candle": "no candle to enter at",
}


def not_traded_counts(stats: dict[str, Any]) -> dict[str, int]:
    """Moments not traded by reason: the decision rule's, then the account's (signals it refused); none of 0."""
    counts = {key: int(value) for key, value in (stats.get("not_traded") or {}).items()}
    for key, value in (stats["model"].get("skipped") or {}).items():
        counts[key] = counts.get(key, 0) + int(value)
    return {key: value for key, value in counts.items() if value}


def not_traded_rows(stats: dict[str, Any]) -> list[tuple[str, str]]:
    """Why moments were not traded, a row per reason (`not_traded_counts`)."""
    return [(NOT_TRADED_NAMES.get(key, str(key)), f"{value:,}") for key, value in not_traded_counts(stats).items()]


def not_traded_line(counts: dict[str, int]) -> str:
    """`not_traded_counts` in one line, the commonest reason first: why a run has few trades, at a glance."""
    ordered = sorted(counts.items(), key=lambda item: -item[1])
    return "; ".join(f"{NOT_TRADED_NAMES.get(key, key)}: {value:,}" for key, value in ordered)


EV_CALIBRATION_HEADER = ("trades", "predicted EV", "mean predicted EV", "realised net / trade")


def ev_calibration_rows(stats: dict[str, Any]) -> list[tuple[str, ...]]:
    """The model's trades by predicted-EV bin against what they earned (`statistics.ev_calibration`)."""
    return [
        (
            str(row["trades"]),
            f"{row['ev_low']:+.3f} to {row['ev_high']:+.3f} %",
            _pct(row["mean_ev_pct"]),
            _pct(row["mean_return_pct"]),
        )
        for row in stats["model"].get("ev_calibration") or []
    ]


SWEEP_HEADER = ("min-prob", "min-ev", "trades", "net / trade", "return")


def sweep_rows(stats: dict[str, Any]) -> list[tuple[str, ...]]:
    """The validation grid of `backtest --sweep`, the chosen cell marked."""
    sweep = stats.get("sweep")
    if not sweep:
        return []
    chosen = sweep.get("chosen") or {}
    rows: list[tuple[str, ...]] = []
    for cell in sweep["grid"]:
        mark = " *" if cell["min_prob"] == chosen.get("min_prob") and cell["min_ev"] == chosen.get("min_ev") else ""
        rows.append(
            (
                f"{cell['min_prob']:g}{mark}",
                f"{cell['min_ev']:+g} %",
                str(cell["trades"]),
                _pct(cell["expectancy_pct"]),
                f"{cell['total_return_pct']:+.2f} %",
            )
        )
    return rows


def verdict_line(stats: dict[str, Any]) -> str | None:
    """The model's verdict in one sentence with the figures it rests on (None before these statistics)."""
    sig = stats["model"].get("significance")
    if not sig:
        return None
    parts = [f"{sig['trades']} trades"]
    if sig["expectancy_pct"] is not None:
        interval = sig["interval_pct"]
        within = f" (95 % interval {_interval(interval)})" if interval else ""
        parts.append(f"{sig['expectancy_pct']:+.3f} % net per trade{within}")
    if sig["p_random_entries"] is not None:
        parts.append(f"p = {sig['p_random_entries']:.3f} against {sig['random_runs']:,} random-entry runs")
    return f"verdict: {sig['verdict']}: " + ", ".join(parts)


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
        *_significance_details(model.get("significance")),
    ]


def _significance_details(sig: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not sig:
        return []
    variance, best = _maybe(sig["sharpe_variance"], "{:.2e}"), _maybe(sig["expected_max_sharpe"], "{:.3f}")
    return [
        ("bootstrap block length (trades)", _maybe(sig["block_length"], "{:.1f}")),
        (
            "daily returns: days, skewness, kurtosis (raw)",
            f"{sig['days']}, {_maybe(sig['skewness'], '{:.2f}')}, {_maybe(sig['kurtosis'], '{:.2f}')}",
        ),
        (
            "DSR: trials, variance of null Sharpe, expected max Sharpe",
            f"{sig['trials']}, {variance}, {best}",
        ),
    ]


def _utc(seconds: int) -> str:

    return format_time(int(seconds))


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A plain-text table (first column left, others right-aligned) for logs and the demo's output."""
    cells = [list(map(str, header)), *(list(map(str, row)) for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    return [line(cells[0]), "  ".join("-" * w for w in widths), *(line(row) for row in cells[1:])]
