"""Where output goes: results to stdout, progress and warnings to stderr.

A progress bar appears only when stderr is a terminal; in CI and pipes the output stays quiet.
Output that is not a terminal (a pipe, a file, CI) is laid out PIPE_WIDTH columns wide unless
COLUMNS says otherwise, not rich's 80: a table would otherwise cut its long reasons short.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

PIPE_WIDTH = 200


def _console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        console = Console(stderr=stderr, highlight=False, soft_wrap=True, width=PIPE_WIDTH)
    return console


console = _console()
err_console = _console(stderr=True)


@contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n=1)`; draws a bar on a terminal, nothing otherwise."""
    if not err_console.is_terminal or total <= 1:
        yield lambda n=1: None
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err_console, transient=True)
    with bar:
        task_id = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task_id, n)
