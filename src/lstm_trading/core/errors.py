"""Errors a user can act on. The CLI catches `LstmTradingError` once and prints one line (exit code 2)."""


class LstmTradingError(Exception):
    """Base of every error the tool raises on purpose; the message names the file, row or key and the fix."""


class DataError(LstmTradingError):
    """Bad candles, journal rows or databases."""


class NoWindow(DataError):
    """A moment inside a gap longer than `max_gap_minutes` or the warm-up after one: it has no usable window.
    A pause for the live loop (no new entries until the warm-up is over), an error for a single prediction."""


class ConfigError(LstmTradingError):
    """Unknown keys, wrong types or out-of-range values in a configuration or a command-line option."""


class ModelFileError(LstmTradingError):
    """A model bundle that is missing, truncated, edited or from a newer format version."""


class WriteError(LstmTradingError):
    """A file the tool writes could not be written (disk full, read-only folder); nothing half-written is left."""


def error_line(error: BaseException, *, name_type: bool = True) -> str:
    """`error` as the one line a table, a log or a record keeps: our own errors as worded, anything else led
    by its type (a bare "list index out of range" says too little) unless `name_type` is off; an error with no
    message is its type's name, never an empty line."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    return line if isinstance(error, LstmTradingError) or not name_type else f"{type(error).__name__}: {line}"
