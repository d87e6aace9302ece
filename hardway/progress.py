"""How the library reports progress without printing: a callback the caller passes in.

`Progress` is called as `with progress("issuing certificates", total) as advance: advance(1)`.
The library defaults to `silent`; the task layer passes `hardway.output.progress`, which draws a
bar on a terminal. spec, pki, render, bundle and lab import this module, never hardway.output.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from typing import Callable, Iterator, Protocol

Advance = Callable[..., None]  # advance(n=1)


class Progress(Protocol):
    def __call__(self, description: str, total: int) -> AbstractContextManager[Advance]: ...


@contextmanager
def silent(description: str, total: int) -> Iterator[Advance]:
    yield lambda n=1: None
