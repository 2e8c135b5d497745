"""The network guard for the Python children of the test suite (the CLI, `python -c`, pip, mypy).

The suite's plugin (tests/netguard/plugin.py) puts this folder first on PYTHONPATH, so `site`
imports this file at every Python start-up in a child: it installs the guard unless the child
runs in a network namespace other than the session's (one a test made itself), then runs the
sitecustomize this one shadows, if there is one (Debian's python3 ships
/usr/lib/python3.*/sitecustomize.py), so a child behaves as it would without the guard.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

import netguard


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["_netguard_chained_sitecustomize"] = module
    spec.loader.exec_module(module)


if netguard.in_session_netns():
    netguard.install()
_chain()
