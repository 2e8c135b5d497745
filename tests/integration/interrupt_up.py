"""Run the `provision` CLI and signal this very process at the first event matching a pattern.

    python -m tests.integration.interrupt_up NODE PHASE STATUS SIGNAL -- provision-args...

The signal is real (os.kill); the hook only decides *when*, so an interruption lands inside the
named phase instead of wherever a reader of the output happens to catch up with it.

The run starts with SIGINT ignored, as a script's background job does (issue #12: that is how
the suite once lost its SIGINT and `up` ran on): `provision` must take SIGINT back itself.
"""

from __future__ import annotations

import os
import signal
import sys

from provision.cli import main as cli
from provision.cli import progress
from provision.core.events import Event


def main() -> int:
    node, phase, status, name, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: NODE PHASE STATUS SIGNAL -- ARGS"
    sig = signal.Signals[name]
    original = progress.Progress.__call__
    fired = False

    def hooked(self: progress.Progress, event: Event) -> None:
        nonlocal fired
        original(self, event)
        if not fired and (event.node, event.phase, event.status) == (node, phase, status):
            fired = True
            print(f"interrupt_up: {name} at {node} {phase} {status}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), sig)

    progress.Progress.__call__ = hooked  # type: ignore[method-assign]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
