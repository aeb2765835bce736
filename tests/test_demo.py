"""The demo on its fixed seed learns: better than drawing classes at their training frequencies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lstm_trading.demo import run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("demo")
    return run_demo(out, progress=False, echo=lambda line: None)


def test_demo_beats_the_stratified_random_baseline(demo) -> None:  # type: ignore[no-untyped-def]
    model, random = demo.test_metrics, demo.baselines["stratified_random"]
    assert model["macro_f1"] >= random["macro_f1"] + 0.05, (model["macro_f1"], random["macro_f1"])
    # the stratified baseline's probabilities are the class priors: its log-loss is the prior's cross-entropy
    assert model["log_loss"] <= random["log_loss"] - 0.02, (model["log_loss"], random["log_loss"])


def test_demo_leaves_a_usable_run_folder(demo) -> None:  # type: ignore[no-untyped-def]
    run: Path = demo.run_dir
    assert (run / "model" / "bundle.json").exists() and (run / "config.toml").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["samples"] == demo.split_sizes["test"]
    assert set(metrics["baselines"]) == {"majority", "always_invalid", "stratified_random"}
    assert metrics["baselines"]["stratified_random"]["draws"] == 2_000  # the expectation, not one draw
    # the gbm baseline, trained on the same samples, evaluated on the same test trades beside the LSTM
    assert demo.gbm_dir is not None and (demo.gbm_dir / "model" / "bundle.json").exists()
    assert (metrics["kind"], metrics["against"]["kind"]) == ("lstm", "gbm") and demo.gbm_metrics is not None
    assert demo.gbm_metrics["samples"] == metrics["samples"]
    for part in (metrics, demo.gbm_metrics):
        above = part["model"]["log_loss"] > part["class_prior"]["log_loss"]
        assert (part["no_information"] is not None) == above
        assert any(part["no_information"] in line for line in demo.no_information) == above
    assert (demo.out_dir / "demo.db").exists() and (demo.out_dir / "val.xlsx").exists()
    latest = demo.latest.iloc[0]
    assert latest["side"] in ("Buy", "Sell", "Invalid")
    assert abs(latest["p_buy"] + latest["p_sell"] + latest["p_invalid"] - 1) < 1e-6
    assert sum(demo.label_counts.values()) > 1000 and min(demo.label_counts.values()) > 100


def test_demo_ends_with_a_complete_report(demo) -> None:  # type: ignore[no-untyped-def]
    from html import escape

    from lstm_trading.report.figures import FIGURES

    assert demo.report is not None and demo.report.exists()
    html = demo.report.read_text()
    for name, title, _ in FIGURES:
        folder = demo.run_dir / "backtest" if (demo.run_dir / "backtest" / name).exists() else demo.run_dir
        assert (folder / name).exists(), name
        assert escape(title, quote=False) in html, title
    assert html.count("data:image/png;base64,") == len(FIGURES)  # self-contained
    assert demo.backtest is not None
    assert {"model", "baselines"} <= set(demo.backtest)  # the backtest over the test period, with its baselines


def test_demo_command_prints_unwrapped_lines_and_the_latest_prediction_in_prices(tmp_path: Path) -> None:
    """Piped into a file or `less`, the 80-column default must not cut the backtest table's rows in two."""
    from typer.testing import CliRunner

    from lstm_trading.cli import app

    result = CliRunner(env={"COLUMNS": "80"}).invoke(
        app, ["demo", "--out", str(tmp_path / "demo"), "--days", "20", "--epochs", "1", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("strategy"))
    assert header.split() == [
        "strategy",
        "return",
        "Sharpe",
        "max",
        "drawdown",
        "trades",
        "win",
        "rate",
        "profit",
        "factor",
    ]
    (note,) = [line for line in lines if line.startswith("Sharpe and Sortino ('-')")]
    assert note.endswith("days") and "of 30 days or more; this one has " in note  # the test period is days long
    (verdict,) = [line for line in lines if line.startswith("verdict: ")]  # the backtest ends in a verdict
    import re

    verdicts = "edge|timing without profit|too few trades to judge|no evidence of an edge"
    assert re.match(rf"verdict: ({verdicts}): \d+ trades", verdict), verdict
    (random,) = [line for line in lines if line.startswith("stratified random ")]  # the lstm-gbm comparison
    assert " ± " in random
    (final,) = [line for line in lines if "stratified random" in line and "│" in line]  # the closing table's
    assert final.count(" ± ") == 2, final  # macro-F1 and accuracy as the mean ± std of the draws
    assert any(" lstm " in line for line in lines) and any(" gbm " in line for line in lines)
    (latest,) = [line for line in lines if line.startswith("latest moment ")]
    assert " entry " in latest and "; P Buy " in latest
    # the decision the backtest's rule takes there, with its reason, not the most likely class
    assert re.search(r": (Buy \((Buy|Sell): EV|Sell \((Buy|Sell): EV|no trade \(no trade: )", latest), latest
    if ": Buy (" in latest or ": Sell (" in latest:
        assert ", stop loss " in latest and ", take profit " in latest
