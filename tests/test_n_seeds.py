"""`train --n-seeds N`: N seeds, each in its own run folder, test metrics as mean and std over them, and the
best-validation seed's bundle as the run's."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import tiny_config
from lstm_trading.cli import app
from lstm_trading.core.config import dump_config
from lstm_trading.data.journal import write_journal
from lstm_trading.evaluate.metrics import evaluate_bundle
from lstm_trading.models.bundle import load_bundle
from lstm_trading.runs.evaluate import select_test_trades

SEED = 7
METRICS = ("log_loss", "accuracy", "macro_f1")


@pytest.fixture(scope="module")
def files(tiny_trades: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("n_seeds")
    journal = folder / "val.xlsx"
    write_journal(journal, tiny_trades[["start_time", "entry_price", "side"]], {"horizon_seconds": 6 * 3600})
    config = folder / "tiny.toml"
    config.write_text(dump_config(tiny_config().with_overrides("train", epochs=2)))
    return {"journal": journal, "config": config}


def _train(db: Path, files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--db",
        str(db),
        "--trades",
        str(files["journal"]),
        "--config",
        str(files["config"]),
        "--out",
        str(out),
        "--no-progress",
        "--accelerator",
        "cpu",
        "--seed",
        str(SEED),
        *extra,
    ]


def _seeds_run(tiny_db: Path, files: dict[str, Path], out: Path, kind: str) -> tuple[Path, str]:
    result = CliRunner().invoke(app, _train(tiny_db, files, out, "--model", kind, "--n-seeds", "2"))
    assert result.exit_code == 0, result.output
    return out, result.stdout


@pytest.fixture(scope="module")
def lstm_seeds(tiny_db: Path, files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return _seeds_run(tiny_db, files, tmp_path_factory.mktemp("lstm") / "run", "lstm")


@pytest.fixture(scope="module")
def gbm_seeds(tiny_db: Path, files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return _seeds_run(tiny_db, files, tmp_path_factory.mktemp("gbm") / "run", "gbm")


@pytest.mark.parametrize("which", ["lstm_seeds", "gbm_seeds"])
def test_two_seeds_are_trained_summarised_and_the_better_validation_one_kept(
    which: str, request: pytest.FixtureRequest
) -> None:
    out, stdout = request.getfixturevalue(which)
    document = json.loads((out / "seeds.json").read_text())
    seeds = document["seeds"]
    assert [s["seed"] for s in seeds] == [SEED, SEED + 1]
    for entry in seeds:  # each seed is a whole run folder, trained with its own seed
        bundle = json.loads((out / entry["folder"] / "model" / "bundle.json").read_text())
        assert entry["folder"] == f"seeds/seed-{entry['seed']}"
        assert bundle["training"]["seed"] == entry["seed"]
        assert bundle["validation"]["best_val_loss"] == pytest.approx(entry["best_val_loss"])
        assert set(entry["test"]) == set(METRICS)
    for metric in METRICS:
        values = [s["test"][metric] for s in seeds]
        assert document["test"][metric]["mean"] == pytest.approx(statistics.mean(values))
        assert document["test"][metric]["std"] == pytest.approx(statistics.stdev(values))
    assert document["criterion"] == "val_class_loss" and document["test_samples"] > 0
    # the run's bundle is the seed with the lower validation criterion, byte for byte, and so is its config
    best = min(seeds, key=lambda s: s["best_val_loss"])
    assert document["chosen_seed"] == best["seed"]
    kept = out / best["folder"]
    assert (out / "model" / "bundle.json").read_bytes() == (kept / "model" / "bundle.json").read_bytes()
    assert (out / "config.toml").read_text() == (kept / "config.toml").read_text()
    assert f"seed = {best['seed']}" in (out / "config.toml").read_text()
    assert "mean ± std" in stdout and f"{best['seed']} (kept)" in stdout
    assert f"kept seed {best['seed']}" in stdout


def test_the_seeds_test_metrics_are_what_evaluate_computes(
    gbm_seeds: tuple[Path, str], tiny_candles: pd.DataFrame, tiny_trades: pd.DataFrame
) -> None:
    out, _ = gbm_seeds
    document = json.loads((out / "seeds.json").read_text())
    for entry in document["seeds"]:
        bundle = load_bundle(out / entry["folder"])
        test = select_test_trades(tiny_trades, bundle.training.test_start_times)
        # `evaluate`'s own function, on the candles the run was trained on (evaluate RUN loads fewer before the
        # test split, and the tiny warm-up of 2,000 minutes leaves its features a little start-dependent)
        model = evaluate_bundle(bundle, tiny_candles, test)["model"]
        assert len(test) == document["test_samples"]
        for metric in METRICS:
            assert entry["test"][metric] == pytest.approx(model[metric], rel=1e-9), metric


def test_seeds_refusals_and_an_overwrite_with_one_seed(
    gbm_seeds: tuple[Path, str], tiny_db: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    out, _ = gbm_seeds
    for extra, message in (
        (("--n-seeds", "0"), "--n-seeds: must be at least 1, got 0"),
        (("--n-seeds", "2", "--resume"), "--resume: --n-seeds trains every seed anew"),
        (("--seed", "4294967295", "--n-seeds", "2"), "past the largest seed 4294967295"),
    ):
        result = CliRunner().invoke(app, _train(tiny_db, files, tmp_path / "x", *extra))
        assert result.exit_code == 2 and message in result.stderr, result.output
    resumed = CliRunner().invoke(app, ["train", "--out", str(out), "--resume"])
    assert resumed.exit_code == 2 and "holds several seeds; resume one seed's run folder" in resumed.stderr
    # --overwrite with the default single seed leaves no seeds behind to contradict the new bundle
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    result = CliRunner().invoke(app, _train(tiny_db, files, copy, "--model", "gbm", "--overwrite"))
    assert result.exit_code == 0, result.output
    assert not (copy / "seeds").exists() and not (copy / "seeds.json").exists()
    assert json.loads((copy / "model" / "bundle.json").read_text())["training"]["seed"] == SEED
