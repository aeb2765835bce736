"""`LiveSettings`: the live command's defaults in one place, values checked once with errors naming the flag, and
the flags of one mode refused in the other."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lstm_trading.cli import app
from lstm_trading.core.errors import ConfigError
from lstm_trading.core.timeutil import DAY
from lstm_trading.live.settings import LiveSettings

DB = Path("candles.db")
DEFAULTS = {f.name: f.default for f in fields(LiveSettings)}


def test_the_defaults_are_the_ones_the_live_command_always_had() -> None:
    settings = LiveSettings(db=DB)
    assert (settings.mode, settings.exchange, settings.market) == ("paper", "bybit", "linear")
    assert (settings.max_errors, settings.retries, settings.backoff_s) == (5, 3, 2.0)
    assert settings.max_model_age_s == 30 * DAY
    assert settings.account_name == "paper" and settings.folder(Path("run")) == Path("run/live-paper")


def test_the_help_names_the_settings_defaults_it_does_not_hold() -> None:
    """The CLI's flags default to None (not given), so the help's "(default ...)" must follow LiveSettings."""
    result = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["live", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert f"Consecutive failed periods before stopping (default {DEFAULTS['max_errors']})" in text
    assert f"then skip the period (default {DEFAULTS['retries']})" in text
    assert f"doubles (default {DEFAULTS['backoff_s']:g})" in text
    assert f"older bundle data (default {DEFAULTS['max_model_age_s'] // DAY}d)" in text
    assert f"Any exchange ccxt knows (default {DEFAULTS['exchange']})" in text
    assert f"{DEFAULTS['market']} (USDT perpetual, the default)" in text
    assert f"{DEFAULTS['mode']} (simulated fills, the default)" in text


def test_flags_not_given_keep_the_defaults() -> None:
    settings = LiveSettings.from_flags(db=DB, mode=None, retries=None, max_errors=7, quiet=False)
    assert settings == LiveSettings(db=DB, max_errors=7)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_errors": 0}, "--max-errors 0: must be at least 1"),
        ({"retries": -1}, "--retries -1: must not be negative"),
        ({"backoff_s": -0.5}, "--backoff -0.5: must not be negative"),
        ({"max_model_age_s": 0}, "--max-model-age 0s: must be positive"),
        ({"periods": 0}, "--periods 0: must be at least 1"),
        ({"workers": 0}, "--workers 0: must be at least 1"),
        ({"mode": "demo"}, "--mode: unknown mode 'demo'; use paper (simulated fills, the default) or live"),
        ({"quantity": 0.0}, "--qty 0: must be above 0 (units of the base currency, e.g. 0.5 ETH)"),
        ({"max_quantity": -1.0}, "--max-qty -1: must be above 0 (units of the base currency, e.g. 0.5 ETH)"),
    ],
)
def test_a_value_out_of_range_names_the_flag(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        LiveSettings(db=DB, **values)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_a_replay_names_its_own_account_and_folder() -> None:
    settings = LiveSettings(replay=True, start=1_700_000_000)
    assert settings.account_name == "replay" and settings.folder(Path("run")) == Path("run/replay")
    assert not settings.live  # a replay never trades real money, whatever --mode says
    named = LiveSettings(db=DB, account="main", out_dir=Path("logs"))
    assert named.account_name == "main" and named.folder(Path("run")) == Path("logs")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replay"], "--replay needs --from (the first moment to replay); --to defaults to the end of the data"),
        ([], "live needs --db: the candle database it keeps current and stores its state in"),
        (
            ["--db", "x.db", "--mode", "demo"],
            "--mode: unknown mode 'demo'; use paper (simulated fills, the default) or live",
        ),
    ],
)
def test_the_command_refuses_before_reading_the_run(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["live", str(tmp_path / "no-run"), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {message}\n"
    assert list(tmp_path.iterdir()) == []
