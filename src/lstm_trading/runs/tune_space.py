"""The search space of `tune`: which settings a study varies, and over what, read from a TOML file.

Each key is a setting of the configuration, `section.key` (any stage but `runtime`, which changes no result),
with a range or a list of choices:

```toml
[targets.max_len]           # or, flat: "targets.max_len" = { low = 360, high = 1440, log = true }
low = 360
high = 1440
log = true
[model.hidden_size]
choices = [16, 32, 64]
[labels.k_tp]
low = 1.5
high = 4.0
step = 0.5
```

An integer setting takes integer bounds (an integer range), a decimal one any numbers (a float range), every
other setting (text, true/false, lists) only `choices`. Everything is checked here, once, before a study is
opened: an unknown key (with a "did you mean"), `low > high`, a choice of the wrong type and a bound that the
setting itself refuses are one-line `ConfigError`s that name the file and the key.
"""

from __future__ import annotations

import difflib
import math
import tomllib
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstm_trading.core.config import Config, config_from_dict
from lstm_trading.core.errors import ConfigError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

RANGE_FIELDS = ("low", "high", "log", "step", "choices")
UNTUNABLE_SECTIONS = ("runtime",)  # how work is spread over cores: no result depends on it
INT, FLOAT, CATEGORICAL = "int", "float", "categorical"


@dataclass(frozen=True)
class Parameter:
    """One searched setting: an int or float range (`low`..`high`, optionally on a log scale or in steps), or a
    list of choices."""

    name: str  # section.key
    kind: str  # INT, FLOAT or CATEGORICAL
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    @property
    def section(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def key(self) -> str:
        return self.name.split(".", 1)[1]

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution that samples this parameter."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == CATEGORICAL:
            return CategoricalDistribution(list(self.choices))
        assert self.low is not None and self.high is not None
        if self.kind == INT:
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    @property
    def largest(self) -> Any:
        """The largest value the parameter can take (a range's high, the largest numeric choice)."""
        if self.kind != CATEGORICAL:
            return self.high
        numbers = [c for c in self.choices if isinstance(c, int | float) and not isinstance(c, bool)]
        return max(numbers) if numbers else None

    def document(self) -> dict[str, Any]:
        """As recorded with a study (a rerun with another space is refused)."""
        if self.kind == CATEGORICAL:
            return {"name": self.name, "choices": list(self.choices)}
        return {"name": self.name, "kind": self.kind, "low": self.low, "high": self.high, "log": self.log,
                "step": self.step}  # fmt: skip


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    parameters: tuple[Parameter, ...]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def distributions(self) -> dict[str, BaseDistribution]:
        return {p.name: p.distribution() for p in self.parameters}

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    def largest(self, name: str, default: Any) -> Any:
        """The largest value a setting takes in any trial: its parameter's, else `default` (the base config's)."""
        parameter = self.parameter(name)
        value = None if parameter is None else parameter.largest
        return default if value is None else value

    def document(self) -> list[dict[str, Any]]:
        return [p.document() for p in self.parameters]


def _settings(base: Config) -> dict[str, Any]:
    """Every `section.key` of the configuration and its type annotation."""
    found: dict[str, Any] = {}
    for section in fields(Config):
        stage = type(getattr(base, section.name))
        hints = typing.get_type_hints(stage)
        for item in fields(stage):
            found[f"{section.name}.{item.name}"] = hints[item.name]
    return found


def _did_you_mean(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def apply_params(config: Config, params: dict[str, Any]) -> Config:
    """`config` with each `section.key` of `params` replaced, checked by the configuration's own rules (whose
    message names the key)."""
    document = config.to_dict()
    for name, value in params.items():
        section, key = name.split(".", 1)
        document[section] = {**document[section], key: value}
    return config_from_dict(document)


def _check_value(base: Config, path: Path, name: str, what: str, value: Any) -> None:
    """A bound or a choice must be a value the setting itself accepts."""
    try:
        apply_params(base, {name: value})
    except ConfigError as error:
        raise ConfigError(f"{path}: {name}: {what} {value!r} is refused by the setting: {error}") from None


def _parameter(base: Config, path: Path, name: str, annotation: Any, table: Any) -> Parameter:
    where = f"{path}: {name}"
    if not isinstance(table, dict):
        raise ConfigError(
            f"{where}: expected a table with low and high (and log or step) or with choices, got {table!r}"
        )
    for field_name in table:
        if field_name not in RANGE_FIELDS:
            hint = _did_you_mean(field_name, list(RANGE_FIELDS)) or f"; use {', '.join(RANGE_FIELDS)}"
            raise ConfigError(f"{where}: unknown field '{field_name}'{hint}")
    expected = getattr(annotation, "__name__", str(annotation))
    if "choices" in table:
        others = [f for f in ("low", "high", "log", "step") if f in table]
        if others:
            raise ConfigError(f"{where}: give either choices or a range (low, high), not both ({others[0]})")
        choices = table["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list, got {choices!r}")
        for choice in choices:
            if isinstance(choice, list | dict):
                raise ConfigError(f"{where}: choice {choice!r} is a {type(choice).__name__}; choices are single values")
            if not _fits(choice, annotation):
                raise ConfigError(
                    f"{where}: choice {choice!r} is a {type(choice).__name__}, but the setting takes {expected}"
                )
            _check_value(base, path, name, "choice", choice)
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{where}: a choice is listed twice in {choices!r}")
        coerced = tuple(float(c) if annotation is float else c for c in choices)
        return Parameter(name, CATEGORICAL, choices=coerced)
    if annotation not in (int, float):
        raise ConfigError(f"{where}: the setting takes {expected}, which has no range; list its values as choices")
    for bound in ("low", "high"):
        if bound not in table:
            raise ConfigError(f"{where}: a range needs low and high; {bound} is missing (or give choices)")
    low, high, log, step = table["low"], table["high"], table.get("log", False), table.get("step")
    kind = INT if annotation is int else FLOAT
    checked: list[tuple[str, Any]] = [("low", low), ("high", high)] + ([] if step is None else [("step", step)])
    for label, value in checked:
        if not _is_number(value) or not math.isfinite(value):
            raise ConfigError(f"{where}: {label} must be a number, got {value!r}")
        if kind == INT and not isinstance(value, int):
            raise ConfigError(f"{where}: {label} {value!r} is not a whole number, but the setting takes int")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if low > high:
        raise ConfigError(f"{where}: low {low!r} is above high {high!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs a positive low, got {low!r}")
    if step is not None:
        if step <= 0:
            raise ConfigError(f"{where}: step must be positive, got {step!r}")
        if log:
            raise ConfigError(f"{where}: give either log or step, not both (Optuna samples one or the other)")
        steps = (high - low) / step
        if abs(steps - round(steps)) > 1e-9:
            raise ConfigError(f"{where}: high - low ({high - low:g}) is not a whole number of steps of {step!r}")
    _check_value(base, path, name, "low", low)
    _check_value(base, path, name, "high", high)
    as_number = int if kind == INT else float
    return Parameter(
        name, kind, low=as_number(low), high=as_number(high), log=log, step=None if step is None else as_number(step)
    )


def _fits(value: Any, annotation: Any) -> bool:
    """Whether a choice has the setting's type (an int where a float belongs is fine; a bool is never a number)."""
    if annotation is float:
        return _is_number(value)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.get_origin(annotation) is tuple:
        return False
    options = typing.get_args(annotation) or (annotation,)
    return any(_fits(value, option) if option in (int, float) else isinstance(value, option) for option in options)


def _entries(path: Path, data: dict[str, Any]) -> list[tuple[str, Any]]:
    """(`section.key`, its table) for both spellings: `[section.key]` tables and flat `"section.key" = {...}`."""
    entries: list[tuple[str, Any]] = []
    for top, value in data.items():
        if "." in top:
            entries.append((top, value))
        elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            entries.extend((f"{top}.{key}", table) for key, table in value.items())
        else:
            raise ConfigError(
                f"{path}: '{top}' is not a setting: name each as section.key, e.g. [train.lr] with low and high"
            )
    return entries


def load_space(path: Path, base: Config) -> SearchSpace:
    """Read and check a search space against the configuration it varies (module docstring)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"--space {path}: cannot read the search space: {error.strerror or error}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the search space as UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    known = _settings(base)
    parameters = []
    for name, table in _entries(path, data):
        if name not in known:
            raise ConfigError(f"{path}: unknown key '{name}'{_did_you_mean(name, list(known))}")
        if name.split(".", 1)[0] in UNTUNABLE_SECTIONS:
            raise ConfigError(f"{path}: {name}: runtime settings change no result; there is nothing to tune")
        parameters.append(_parameter(base, path, name, known[name], table))
    if not parameters:
        raise ConfigError(f"{path}: no setting to search; add one, e.g. [train.lr] with low = 1e-4, high = 3e-3")
    return SearchSpace(path, tuple(parameters))
