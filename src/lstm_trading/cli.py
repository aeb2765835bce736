"""The `lstm-trading` command: parse, call the library, print. No logic lives here.

Every `LstmTradingError` becomes one line on stderr and exit code 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

from pathlib import Path

from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from lstm_trading.errors import LstmTradingError


class _OneLineErrors(TyperGroup):
    """Turns every `LstmTradingError` into one line on stderr and exit code 2, also under `CliRunner`."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except LstmTradingError as error:
            if _state["debug"]:
                raise
            err_console.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_OneLineErrors,
    name="lstm-trading",
    help="Train an LSTM on 1-minute candles to decide Buy / Sell / no trade, with stop loss and take profit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ingest_app = typer.Typer(help="Bring candles into the SQLite store.", no_args_is_help=True)
db_app = typer.Typer(help="Maintain candle databases.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
app.add_typer(db_app, name="db")

console = Console()
err_console = Console(stderr=True)

_state = {"debug": False}

DB_OPTION = typer.Option(Path("bybit1min.db"), "--db", help="SQLite candle database.")
SYMBOL_OPTION = typer.Option("ETHUSDT", "--symbol", help="Symbol name in the store.")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _state["debug"] = debug


# --- commands are added below, one section per module ---


def main() -> None:
    """Console-script entry point."""
    app()
