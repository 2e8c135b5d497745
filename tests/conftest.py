"""Shared test setup: the --integration switch, the network guard, golden-file regeneration."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# No traffic off this machine (issue #15): every test, and every Python child it starts, is
# guarded at the socket layer; an attempt fails the test even if the test caught the error.
pytest_plugins = ["tests.netguard.plugin"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--integration",
        action="store_true",
        help="also run integration tests (root, real libvirtd, QEMU, the Debian mirror)",
    )
    parser.addoption(
        "--regen-golden",
        action="store_true",
        help="rewrite tests/golden/ from the current renderers instead of comparing",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Integration tests are deselected, not skipped, without --integration: a skip must never
    # be mistaken for a pass, and the README's test command always passes the switch.
    if config.getoption("--integration"):
        return
    keep = [i for i in items if "integration" not in i.keywords]
    dropped = [i for i in items if "integration" in i.keywords]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
