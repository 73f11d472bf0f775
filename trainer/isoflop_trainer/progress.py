"""Progress bars for long commands, drawn by rich on stderr when it is a terminal and not at all
otherwise (pipes and logs keep exactly their lines). Shared by `isoflop-train prepare` and the
`isoflop` command line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(
    what: str, total: int | None, unit: str = "", enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """A function that advances the bar by n while the block runs; the bar goes with it."""
    if not enabled or not sys.stderr.isatty() or total == 0:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
               TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)
