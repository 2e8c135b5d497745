"""Progress events: what every long operation reports, per node and phase.

The vocabulary is shared by converge/, verify/ and the CLI's progress output, so it lives at the
bottom: reporting progress must not mean importing the orchestrator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    node: str  # "*" for work shared by several nodes (image, pool, uploads)
    phase: str
    status: str  # start | done | fail | info | warn
    elapsed: float | None = None
    detail: str = ""


Emit = Callable[[Event], None]


@contextmanager
def phase(emit: Emit, node: str, name: str, detail: str = "") -> Iterator[None]:
    emit(Event(node, name, "start", detail=detail))
    t0 = time.monotonic()
    try:
        yield
    except BaseException as exc:
        emit(Event(node, name, "fail", time.monotonic() - t0, type(exc).__name__))
        raise
    emit(Event(node, name, "done", time.monotonic() - t0, detail))
