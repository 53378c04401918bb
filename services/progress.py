"""Progress bars for long commands: live in a terminal, silent when piped or in CI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Update(Protocol):
    def __call__(self, completed: int, **fields: object) -> None: ...


@contextmanager
def progress_bar(description: str, total: int | None, fields: str = "") -> Iterator[Update]:
    """A bar with ``completed`` of ``total`` plus free-form fields, e.g.
    ``fields="{task.fields[rate]:,.0f} ev/s  failed {task.fields[failed]}"``."""
    console = Console(stderr=True)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn(fields), TimeElapsedColumn()]
    with Progress(*columns, console=console, disable=not console.is_terminal,
                  refresh_per_second=4) as bar:
        # Each field starts at 0: rich (15) draws the bar as the task is added, and a
        # field not there yet was a KeyError in every terminal, piped runs being silent.
        names = re.findall(r"task\.fields\[(\w+)\]", fields)
        task = bar.add_task(description, total=total, **dict.fromkeys(names, 0))

        def update(completed: int, **values: object) -> None:
            bar.update(task, completed=completed, **values)

        yield update
