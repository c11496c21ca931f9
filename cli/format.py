"""What the command tables share: one console, timestamps and cells printed as written."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()


def when(epoch: float | None) -> str:
    """A timestamp for tables."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M")


def add_row(table: Table, *cells: str) -> None:
    """Add a row of plain text: call content such as ``[pin]`` must print as written."""
    table.add_row(*(Text(cell) for cell in cells))


def print_error(message: str) -> None:
    """Print an error in red, as plain text (it may quote what the user typed)."""
    console.print(Text(message, style="red"))
