"""The first-touch labeller: hand-built touches, stop-first pessimism, costs, the horizon read no further."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lstm_trading.cli import app
from lstm_trading.core.config import FeatureConfig, LabelConfig
from lstm_trading.data.csv import read_candles_csv
from lstm_trading.data.journal import read_journal
from lstm_trading.data.store import CandleStore
from lstm_trading.data.synthetic import synthetic_candles
from lstm_trading.features.compute import compute_features
from lstm_trading.samples.labels import JOURNAL_COLUMNS, LabelResult, label_first_touch

T = 1_750_000_000 // 3_600 * 3_600  # a moment on the hour
# Flat price 100 and ATR 1: long SL 98, TP 103; short SL 102, TP 97; the horizon is the 10 candles from T.
TEN_MINUTES = LabelConfig(every_seconds=3_600, horizon_seconds=600, k_sl=2, k_tp=3, fee=0.0, slippage=0.0)


def _market(touches: dict[int, tuple[float, float]], before: int = 5, after: int = 20) -> pd.DataFrame:
    """Flat candles around `T`; `touches` maps a candle's offset from `T` (minutes) to its (high, low)."""
    offsets = np.arange(-before, after)
    high = np.full(len(offsets), 100.5)
    low = np.full(len(offsets), 99.5)
    for offset, (up, down) in touches.items():
        high[offset + before], low[offset + before] = up, down
    return pd.DataFrame(
        {
            "timestamp": T + offsets * 60,
            "open": 100.0,
            "high": high,
            "low": low,
            "close": 100.0,
            "volume": 1.0,
        }
    )


def _atr_one(candles: pd.DataFrame) -> pd.DataFrame:
    """A stand-in for `compute_features`: the labeller reads only its index and its `atr` column."""
    return pd.DataFrame({"atr": 1.0}, index=pd.Index(candles["timestamp"].to_numpy(), name="timestamp"))


def _label(touches: dict[int, tuple[float, float]], config: LabelConfig = TEN_MINUTES, **kwargs: int) -> LabelResult:
    candles = _market(touches)
    return label_first_touch(candles, _atr_one(candles), config, **kwargs)


def test_take_profit_before_stop_is_a_buy_with_its_levels() -> None:
    result = _label({3: (103.0, 99.5), 5: (100.5, 97.0)})

    assert result.trades.to_dict("records") == [
        {"start_time": T, "entry_price": 100.0, "side": "Buy", "stop_loss": 98.0, "take_profit": 103.0}
    ]
    assert result.counts == {"Buy": 1, "Sell": 0, "Invalid": 0}
    assert result.median_minutes_to_touch == 4.0  # touched in the 4th candle: known by its close
    assert result.meta["horizon_seconds"] == 600


def test_falling_to_take_profit_first_is_a_sell_with_mirrored_levels() -> None:
    result = _label({0: (100.5, 97.0)})

    assert result.trades.to_dict("records") == [
        {"start_time": T, "entry_price": 100.0, "side": "Sell", "stop_loss": 102.0, "take_profit": 97.0}
    ]
    assert result.median_minutes_to_touch == 1.0


def test_stop_and_target_in_the_same_candle_count_the_stop_first() -> None:
    result = _label({2: (103.0, 98.0)})  # long: both in one candle; short: its stop (102) only

    assert result.trades["side"].tolist() == ["Invalid"]
    assert result.trades["entry_price"].tolist() == [-1.0]
    assert result.trades[["stop_loss", "take_profit"]].isna().all().all()
    assert result.invalid_reasons == {"neither": 1, "both": 0, "costs": 0}


def test_no_touch_within_the_horizon_is_invalid_and_the_candle_at_t_plus_horizon_is_notread_candles_csv() -> None:
    assert _label({}).counts == {"Buy": 0, "Sell": 0, "Invalid": 1}
    # The candle opening at T + horizon (offset 10) would be a take profit: it lies outside the horizon.
    assert _label({10: (103.0, 99.5)}).trades["side"].tolist() == ["Invalid"]
    assert _label({9: (103.0, 99.5)}).trades["side"].tolist() == ["Buy"]


def test_a_win_too_small_to_pay_the_round_trip_costs_is_invalid() -> None:
    # Costs 2 * (1 % + 0.5 %) of 100 = 3.0 against a take-profit distance of 3 ATR = 3.0: not more, so no trade.
    costly = LabelConfig(every_seconds=3_600, horizon_seconds=600, k_sl=2, k_tp=3, fee=0.01, slippage=0.005)
    result = _label({3: (103.0, 99.5)}, costly)

    assert result.trades["side"].tolist() == ["Invalid"]
    assert result.invalid_reasons == {"neither": 0, "both": 0, "costs": 1}
    assert result.cost_share_of_median_tp == pytest.approx(1.0)

    cheaper = LabelConfig(every_seconds=3_600, horizon_seconds=600, k_sl=2, k_tp=3, fee=0.0055, slippage=0.001)
    result = _label({3: (103.0, 99.5)}, cheaper)
    assert result.trades["side"].tolist() == ["Buy"]
    assert result.cost_share_of_median_tp == pytest.approx(2 * 0.0065 / 0.03)


def test_both_sides_winning_is_invalid() -> None:
    # A take profit nearer than the stop lets both win: up 1 ATR first, then down 1 ATR, neither stop at 3 ATR.
    wide_stop = LabelConfig(every_seconds=3_600, horizon_seconds=600, k_sl=3, k_tp=1, fee=0.0, slippage=0.0)
    result = _label({1: (101.0, 99.5), 2: (100.5, 99.0)}, wide_stop)

    assert result.trades["side"].tolist() == ["Invalid"]
    assert result.invalid_reasons == {"neither": 0, "both": 1, "costs": 0}


def test_moments_need_a_candle_at_t_features_at_t_minus_60_and_the_whole_horizon() -> None:
    candles = _market({})
    features = _atr_one(candles)

    assert len(label_first_touch(candles, features, TEN_MINUTES).trades) == 1
    # No candle opening at T (a gap at T): not labelled.
    assert len(label_first_touch(candles[candles["timestamp"] != T], features, TEN_MINUTES).trades) == 0
    # No feature row for the candle closed at T (still in the warm-up): not labelled.
    assert len(label_first_touch(candles, features.loc[T:], TEN_MINUTES).trades) == 0
    # The horizon must end inside the data: the last candle T+540 closes at T+600 = T + horizon.
    assert len(label_first_touch(candles[candles["timestamp"] <= T + 540], features, TEN_MINUTES).trades) == 1
    assert len(label_first_touch(candles[candles["timestamp"] <= T + 480], features, TEN_MINUTES).trades) == 0


def test_start_and_end_select_moments_half_open() -> None:
    hourly = LabelConfig(every_seconds=3_600, horizon_seconds=600, fee=0.0, slippage=0.0)
    candles = _market({}, before=5, after=3 * 60 + 9)  # the last candle opens at T + 3 h 8 min
    features = _atr_one(candles)

    def moments(**kwargs: int) -> list[int]:
        return label_first_touch(candles, features, hourly, **kwargs).trades["start_time"].tolist()

    assert moments() == [T, T + 3_600, T + 7_200]  # T + 3 h would need candles to T + 3 h 10 min
    assert moments(start=T + 1, end=T + 7_200) == [T + 3_600]
    assert moments(start=T + 3_600, end=T + 3_601) == [T + 3_600]


def test_empty_result_keeps_the_journal_columns() -> None:
    candles = _market({})
    result = label_first_touch(candles, _atr_one(candles).iloc[:0], TEN_MINUTES)

    assert tuple(result.trades.columns) == JOURNAL_COLUMNS
    assert result.counts == {"Buy": 0, "Sell": 0, "Invalid": 0}
    assert np.isnan(result.median_minutes_to_touch)


def test_meta_records_the_parameters_and_symbol() -> None:
    candles = _market({})
    result = label_first_touch(candles, _atr_one(candles), TEN_MINUTES, symbol="ETHUSDT")

    assert result.meta == {
        "labeller": "first-touch",
        "every_seconds": 3_600,
        "horizon_seconds": 600,
        "k_sl": 2.0,
        "k_tp": 3.0,
        "fee": 0.0,
        "slippage": 0.0,
        "symbol": "ETHUSDT",
    }


# --- real candles, against a plain per-moment loop ---


def _reference(candles: pd.DataFrame, features: pd.DataFrame, t: int, config: LabelConfig) -> str:
    """The rule read literally, one moment at a time: the oracle for the vectorised labeller."""
    horizon = candles[(candles["timestamp"] >= t) & (candles["timestamp"] < t + config.horizon_seconds)]
    entry = horizon["open"].iloc[0]
    atr = features.loc[t - 60, "atr"]
    pays = config.k_tp * atr > 2 * (config.fee + config.slippage) * entry
    wins = {}
    for side, sign in (("Buy", 1), ("Sell", -1)):
        stop, target = entry - sign * config.k_sl * atr, entry + sign * config.k_tp * atr
        wins[side] = False
        for high, low in zip(horizon["high"], horizon["low"], strict=True):
            stop_hit = low <= stop if sign == 1 else high >= stop
            target_hit = high >= target if sign == 1 else low <= target
            if stop_hit:
                break
            if target_hit:
                wins[side] = pays
                break
    if wins["Buy"] != wins["Sell"]:
        return "Buy" if wins["Buy"] else "Sell"
    return "Invalid"


@pytest.mark.parametrize(
    ("fixture", "config", "every"),
    [
        ("bybit_csv", FeatureConfig(), 3_600),
        ("binance_gap_csv", FeatureConfig(warmup_minutes=3_000), 900),  # moments around the 270-minute gap
    ],
)
def test_vectorised_labels_match_a_plain_loop_on_real_candles(
    request: pytest.FixtureRequest, fixture: str, config: FeatureConfig, every: int
) -> None:
    candles = read_candles_csv(request.getfixturevalue(fixture))
    if fixture == "binance_gap_csv":
        candles = candles.iloc[:12_000]  # the gap is at row 5,700; keep the loop short
    features = compute_features(candles, config)
    label_config = LabelConfig(every_seconds=every, horizon_seconds=4 * 3_600, k_sl=2, k_tp=3)

    result = label_first_touch(candles, features, label_config)

    trades = result.trades
    assert len(trades) > 100
    assert set(trades["side"]) == {"Buy", "Sell", "Invalid"}
    expected = [_reference(candles, features, int(t), label_config) for t in trades["start_time"]]
    assert trades["side"].tolist() == expected
    assert sum(result.counts.values()) == len(trades)
    buys, sells = trades[trades["side"] == "Buy"], trades[trades["side"] == "Sell"]
    assert (buys["stop_loss"] < buys["entry_price"]).all() and (buys["entry_price"] < buys["take_profit"]).all()
    assert (sells["take_profit"] < sells["entry_price"]).all() and (sells["entry_price"] < sells["stop_loss"]).all()
    atr = features["atr"].reindex(buys["start_time"] - 60).to_numpy()
    np.testing.assert_allclose(buys["take_profit"] - buys["entry_price"], 3 * atr, rtol=1e-12)


def test_candles_at_or_after_the_horizon_change_nothing(bybit_csv: Path) -> None:
    candles = read_candles_csv(bybit_csv)
    features = compute_features(candles)
    config = LabelConfig(every_seconds=3_600, horizon_seconds=6 * 3_600)
    first = label_first_touch(candles, features, config).trades
    t = int(first["start_time"].iloc[len(first) // 2])

    after = candles["timestamp"] >= t + config.horizon_seconds
    wild = candles.copy()
    wild.loc[after, "high"] = wild.loc[after, "high"] * 10  # every target above and every stop below is hit
    wild.loc[after, "low"] = wild.loc[after, "low"] / 10
    changed = label_first_touch(wild, features, config, start=t, end=t + 1).trades
    cut = label_first_touch(candles[~after], features, config, start=t, end=t + 1).trades

    pd.testing.assert_frame_equal(changed, first[first["start_time"] == t].reset_index(drop=True))
    pd.testing.assert_frame_equal(cut, changed)


# --- the `label` command ---


@pytest.fixture(scope="module")
def fortnight_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    candles = synthetic_candles(days=12, seed=5)
    path = tmp_path_factory.mktemp("labels") / "fortnight.db"
    with CandleStore(path, create=True) as store:
        store.upsert("ETHUSDT", candles)
    return path, candles


def test_label_command_writes_the_journal_and_warns_when_costs_eat_the_targets(
    fortnight_db: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    db, candles = fortnight_db
    out = tmp_path / "val.xlsx"

    result = CliRunner().invoke(app, ["label", "--db", str(db), "--symbol", "ETHUSDT", "--out", str(out)])

    assert result.exit_code == 0, result.output
    expected = label_first_touch(candles, compute_features(candles), LabelConfig(), symbol="ETHUSDT")
    counts = expected.counts
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"ETHUSDT: {len(expected.trades):,} moments every 60m from 2024-01-06 14:00 UTC")
    assert lines[1].startswith(f"Buy {counts['Buy']:,} (")
    assert f"Invalid {counts['Invalid']:,} (" in lines[1]
    assert (
        lines[2] == f"median minutes to first touch (of the winning take profits): {expected.median_minutes_to_touch:g}"
    )
    assert lines[3] == (
        f"costs: 0.130% round trip = {expected.cost_share_of_median_tp:.1%} of the median take-profit distance"
    )
    assert expected.cost_share_of_median_tp > 0.25
    assert result.stderr.startswith(
        f"warning: round-trip costs are {expected.cost_share_of_median_tp:.0%} of the median take-profit distance"
    )
    journal = read_journal(out)
    assert journal.meta["horizon_seconds"] == 86_400
    assert journal.meta["symbol"] == "ETHUSDT"
    written = journal.trades[list(JOURNAL_COLUMNS)].reset_index(drop=True)
    pd.testing.assert_frame_equal(written, expected.trades, check_dtype=False, rtol=1e-12)


def test_label_command_options_reach_the_labeller_and_small_costs_give_no_warning(
    fortnight_db: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    db, candles = fortnight_db
    out = tmp_path / "val.xlsx"
    args = ["label", "--db", str(db), "--out", str(out), "--every", "15m", "--horizon", "4h", "--k-sl", "6"]
    args += ["--k-tp", "9", "--fee", "0.02%", "--slippage", "0", "--from", "2024-01-10", "--to", "2024-01-11"]

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    config = LabelConfig(every_seconds=900, horizon_seconds=14_400, k_sl=6, k_tp=9, fee=0.0002, slippage=0.0)
    expected = label_first_touch(candles, compute_features(candles), config, start=1_704_844_800, end=1_704_931_200)
    journal = read_journal(out)
    assert len(journal.trades) == 96
    assert journal.trades["side"].tolist() == expected.trades["side"].tolist()
    assert {key: journal.meta[key] for key in ("every_seconds", "horizon_seconds", "k_sl", "k_tp", "fee")} == {
        "every_seconds": 900,
        "horizon_seconds": 14_400,
        "k_sl": 6,
        "k_tp": 9,
        "fee": 0.0002,
    }


def test_label_command_explains_when_there_is_nothing_to_label(
    fortnight_db: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    out = tmp_path / "val.xlsx"

    result = CliRunner().invoke(app, ["label", "--db", str(fortnight_db[0]), "--out", str(out), "--from", "2025-01-01"])

    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: no moments to label: ETHUSDT has features from 2024-01-06 13:20 UTC and candles to "
        "2024-01-12 23:59 UTC, and each moment needs its whole --horizon 24h inside them (and inside --from/--to)"
    )
    assert not out.exists()


def test_label_command_refuses_an_out_that_is_not_xlsx(fortnight_db: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    # regression: `--out val.csv` wrote an Excel workbook under a .csv name and said "journal written to val.csv"
    out = tmp_path / "val.csv"

    result = CliRunner().invoke(app, ["label", "--db", str(fortnight_db[0]), "--out", str(out)])

    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: --out {out}: the journal is an Excel workbook; name it .xlsx"
    assert not out.exists()


def test_label_command_names_an_out_of_range_flag(fortnight_db: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    # regression: `--every 7` said "labels.every_seconds: must be at least one minute", a key the user never typed
    args = ["label", "--db", str(fortnight_db[0]), "--out", str(tmp_path / "val.xlsx"), "--every", "7"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --every: must be at least one minute (labels.every_seconds = 7)"
    args[-2:] = ["--k-tp", "-1"]  # named as itself, not as --k-sl
    result = CliRunner().invoke(app, args)
    assert result.stderr.strip() == "error: --k-tp: must be positive (a multiple of ATR) (labels.k_tp = -1.0)"
