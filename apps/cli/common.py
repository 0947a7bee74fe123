"""Small helpers shared by the CLI verbs: consoles, progress bars, table printing, error exits."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import pandas as pd
import pyarrow as pa
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand

console = Console()
err_console = Console(stderr=True)


class Command(TyperCommand):
    """A verb whose usage line names its arguments as the README's command table does: ``RUN``, ``PATH...``,
    ``[PATH...]`` (each argument's ``metavar``, ``...`` when it takes several, brackets when it may be left
    out), where typer writes ``{run}`` and ``[paths]...``. Register a verb with ``app.command(name, cls=Command)``."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                pieces.extend(param.get_usage_pieces(ctx))
                continue
            name = (param.metavar or param.name.upper()) + ("..." if param.nargs != 1 else "")
            pieces.append(name if param.required else f"[{name}]")
        return pieces


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` (plain text: brackets in it are not markup) as an error and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar; yields ``update(done, total)``."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def print_arrow(table: pa.Table, *, title: str | None = None, max_rows: int = 50) -> None:
    """Print an Arrow table as a rich table (first ``max_rows`` rows); names and values are shown as they are
    (a cell ``[/unit]`` is text, not rich markup)."""
    out = Table(title=None if title is None else Text(title), show_lines=False)
    for name in table.column_names:
        out.add_column(Text(name), overflow="fold")
    for row in table.slice(0, max(max_rows, 0)).to_pylist():
        out.add_row(*(Text("" if v is None else str(v)) for v in row.values()))
    console.print(out)
    if table.num_rows > max(max_rows, 0):
        console.print(f"... {table.num_rows - max(max_rows, 0)} more rows")


def print_frame(frame: pd.DataFrame, *, title: str | None = None, max_rows: int = 50) -> None:
    """Print a pandas frame as a rich table."""
    print_arrow(pa.Table.from_pandas(frame.astype(str), preserve_index=False), title=title, max_rows=max_rows)


def print_counts(counts: Mapping[str, object], *, title: str) -> None:
    """Print a mapping as a two-column table."""
    out = Table(title=Text(title))
    out.add_column("item")
    out.add_column("value", justify="right")
    for key, value in counts.items():
        out.add_row(Text(str(key)), Text(str(value)))
    console.print(out)
