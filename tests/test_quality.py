"""The suite runs the linters: ruff (lint + format) and mypy --strict on the package."""

from __future__ import annotations

import sys
from pathlib import Path

from provision.boundary.process import run

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_ruff_check() -> None:
    result = run([BIN / "ruff", "check", "provision", "tests", "bench"], cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run(
        [BIN / "ruff", "format", "--check", "provision", "tests", "bench"], cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run([BIN / "mypy", "--strict", "provision"], cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
