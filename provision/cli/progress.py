"""Presenting lifecycle events: a live per-node, per-phase table on a terminal, plain lines in a
log, or JSON lines for machines. Part of the CLI layer: the only output besides cli.py."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from provision.core.events import Event

SYMBOL = {"start": "…", "done": "✓", "fail": "✗"}


class Progress:
    """Call with each Event; use as a context manager around the run."""

    def __init__(self, json_lines: bool, stream: TextIO | None = None) -> None:
        self.json_lines = json_lines
        self.stream = stream or (sys.stdout if json_lines else sys.stderr)
        self.t0 = time.monotonic()
        self.rows: dict[str, dict[str, str]] = {}
        self.phases: list[str] = []
        self.notes: list[str] = []
        live = not json_lines and self.stream.isatty()
        self.live = Live(console=Console(file=self.stream), auto_refresh=False) if live else None

    def __enter__(self) -> Progress:
        if self.live:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.update(self._table(), refresh=True)
            self.live.stop()

    def __call__(self, event: Event) -> None:
        if self.json_lines:
            record = {"t": round(time.monotonic() - self.t0, 3), **asdict(event)}
            if record["elapsed"] is not None:
                record["elapsed"] = round(record["elapsed"], 3)
            print(json.dumps(record), file=self.stream, flush=True)
            return
        if self.live is None:
            self._line(event)
            return
        if event.status in SYMBOL:
            if event.phase not in self.phases:
                self.phases.append(event.phase)
            cell = SYMBOL[event.status]
            if event.elapsed is not None:
                cell += f" {event.elapsed:.1f}s"
            self.rows.setdefault(event.node, {})[event.phase] = cell
        elif event.status in ("warn",) or event.phase == "converge":
            self.notes.append(f"{event.node}: {event.detail}")
        self.live.update(self._table(), refresh=True)

    def _line(self, e: Event) -> None:
        if e.status == "start":
            return
        took = f" {e.elapsed:.1f}s" if e.elapsed is not None else ""
        detail = f"  {e.detail}" if e.detail else ""
        print(f"{e.node:<12} {e.phase:<16} {e.status}{took}{detail}", file=self.stream, flush=True)

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False)
        table.add_column("node")
        for p in self.phases:
            table.add_column(p)
        for node, cells in self.rows.items():
            table.add_row(node, *(cells.get(p, "") for p in self.phases))
        if self.notes:
            table.caption = "\n".join(self.notes[-5:])
        return table
