"""Funding on perpetuals: what a position open across a funding time pays or receives (DESIGN.md "Decision").

A linear perpetual exchanges funding between longs and shorts every 8 hours, at 00:00, 08:00 and 16:00 UTC
(Bybit's and Binance's schedule for USDT perpetuals). A position pays for a funding time F when it is open
across it: `entry_time < F <= exit_time` (entered exactly at F it was not open at F; exited exactly at F it
was). With a positive rate longs pay and shorts receive. The charge is `rate * notional` with the notional at
entry, `quantity * entry_executed` (the price paid, so the charge is `rate` of the notional `return_pct`
divides by); exchanges use the position's value at the mark price at F, which the candles approximate no
better than the entry.

Symbols that fund more often (every 4 hours or every hour, as some Bybit perpetuals do) are charged at every
funding time their stored history records: the stored times are the exchange's own, so a position pays at each
stored F in `(entry_time, exit_time]`, and at the 8-hour times the history does not cover at the constant rate.

Spot symbols pay none: the runs layer builds a schedule only for symbols the store records as perpetuals, and
`NO_FUNDING` (or None) elsewhere. Funding is booked with the fill (`execution.book_fill`), so the backtest, the
random baselines, the replay and paper and live trading all charge it from here.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from lstm_trading.core.errors import ConfigError
from lstm_trading.core.timeutil import format_time

FUNDING_INTERVAL = 8 * 3600  # seconds between funding times; multiples of it since the epoch are 00, 08, 16 UTC
DEFAULT_FUNDING_RATE = 0.0001  # 0.01 % per period: the baseline rate when the premium is zero (see the README)


def funding_times(entry_time: int, exit_time: int) -> range:
    """The funding times F with `entry_time < F <= exit_time` (UTC seconds)."""
    first = (int(entry_time) // FUNDING_INTERVAL + 1) * FUNDING_INTERVAL
    return range(first, int(exit_time) + 1, FUNDING_INTERVAL)


@dataclass(frozen=True)
class FundingSchedule:
    """The rate charged at each funding time: `stored[F]` where the exchange's history has it, else `rate`.

    Parameters
    ----------
    rate
        The constant rate per 8-hour period, as a fraction (0.0001 is 0.01 %); 0 charges nothing.
    stored
        Historical rates by funding time (UTC seconds), from `ingest funding`. A funding time between the first
        and the last stored one that has no stored rate falls back to `rate` (`missing` counts them).
    """

    rate: float = 0.0
    stored: Mapping[int, float] = field(default_factory=lambda: MappingProxyType({}))
    _times: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)  # `stored`'s, sorted

    def __post_init__(self) -> None:
        if not -0.1 < self.rate < 0.1:
            raise ConfigError(f"funding: must be a fraction per 8-hour period in (-0.1, 0.1), got {self.rate:g}")
        object.__setattr__(self, "stored", MappingProxyType({int(t): float(r) for t, r in self.stored.items()}))
        object.__setattr__(self, "_times", tuple(sorted(self.stored)))

    @property
    def active(self) -> bool:
        """Whether any funding time can charge anything."""
        return self.rate != 0 or any(self.stored.values())

    @property
    def stored_range(self) -> tuple[int, int] | None:
        """First and last stored funding time; None without stored rates."""
        return (min(self.stored), max(self.stored)) if self.stored else None

    def rate_at(self, moment: int) -> float:
        """The rate of the funding time `moment`: the stored one, else the constant."""
        return self.stored.get(int(moment), self.rate)

    def charge(self, direction: int, notional: float, entry_time: int, exit_time: int) -> float:
        """What a position pays for funding (negative: receives): the sum over the funding times F with
        `entry_time < F <= exit_time` of `direction * notional * rate(F)`. `direction` is +1 long, -1 short;
        `notional` the position's value at entry (`quantity * entry_executed` in `book_fill`)."""
        if not self.active:
            return 0.0
        rates = sum(rate for _, rate in self.events(entry_time, exit_time))
        return float(direction * notional * rates)

    def events(self, entry_time: int, exit_time: int) -> list[tuple[int, float]]:
        """The funding times F with `entry_time < F <= exit_time` and their rates: every stored one (a symbol
        funding every 4 h or 1 h has them off the 8-hour grid), and each 8-hour time without a stored rate at
        the constant."""
        times = self._times
        first, last = bisect.bisect_right(times, int(entry_time)), bisect.bisect_right(times, int(exit_time))
        stored = [(t, self.stored[t]) for t in times[first:last]]
        constant = [(t, self.rate) for t in funding_times(entry_time, exit_time) if t not in self.stored]
        return sorted(stored + constant)

    def missing(self, start: int, end: int) -> list[int]:
        """The funding times in `(start, end]` inside the stored range with no stored rate (charged the constant)."""
        held = self.stored_range
        if held is None:
            return []
        return [t for t in funding_times(max(start, held[0] - 1), min(end, held[1])) if t not in self.stored]

    def outside(self, start: int, end: int) -> int:
        """How many funding times in `(start, end]` lie before or after the stored range (charged the constant)."""
        held = self.stored_range
        times = funding_times(start, end)
        if held is None:
            return len(times)
        return sum(1 for t in times if t < held[0] or t > held[1])

    def describe(self) -> str:
        """`0.0100 % per 8 h (constant)` or `... (stored rates)`, as the backtest prints it."""
        if self.stored:
            first, last = self.stored_range or (0, 0)
            return (
                f"stored rates ({len(self.stored):,} from {format_time(first)} to {format_time(last)}; "
                f"{100 * self.rate:.4f} % per 8 h outside them)"
            )
        return f"{100 * self.rate:.4f} % per 8 h (constant)"


NO_FUNDING = FundingSchedule()
