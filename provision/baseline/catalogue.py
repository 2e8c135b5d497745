"""The hardening catalogue's check ids, read from the vendored research document.

`catalogue.md` is the team's check catalogue (HN-* ids with sources and conflicts). The verifier
must account for every id in it: run it, report it not applicable, or waive it with a reason.
It is package data, read through importlib.resources.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

PATH: Traversable = files("provision.baseline") / "catalogue.md"
ID = re.compile(r"^HN-[A-Z0-9]+-\d\d$")
_ROW = re.compile(r"^\| (HN-[A-Z0-9]+-\d\d) \| ([^|]*)\|")


@dataclass(frozen=True)
class Entry:
    id: str
    summary: str  # the catalogue's second column: what is checked

    @property
    def group(self) -> str:
        return self.id.split("-")[1]


def entries(text: str | None = None) -> tuple[Entry, ...]:
    """Every table row of the catalogue, in document order."""
    source = PATH.read_text(encoding="utf-8") if text is None else text
    out = []
    for line in source.splitlines():
        m = _ROW.match(line)
        if m:
            out.append(Entry(m.group(1), m.group(2).strip()))
    return tuple(out)


def ids() -> frozenset[str]:
    return frozenset(e.id for e in entries())
