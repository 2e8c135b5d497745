"""The only module that starts local processes: argv lists, never a shell string."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from provision.core.errors import CommandError


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str | Path],
    *,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    capture: bool = True,
    timeout: float | None = None,
) -> Result:
    """Run `argv` and return its result; raise CommandError naming the command on failure.

    With capture=False the child's output goes to our stdout/stderr (long builds show progress).
    """
    args = tuple(str(a) for a in argv)
    try:
        # argv list and shell=False: arguments are never interpreted by a shell.
        proc = subprocess.run(  # noqa: S603
            args,
            input=input,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            capture_output=capture,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandError(
            f"command not found: {args[0]}", hint="install it (see README: setup.sh)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"timed out after {timeout}s: {shlex.join(args)}") from exc
    result = Result(args, proc.returncode, proc.stdout or "", proc.stderr or "")
    if check and proc.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        detail = ("\n  " + "\n  ".join(tail)) if tail else ""
        raise CommandError(f"command failed (exit {proc.returncode}): {shlex.join(args)}{detail}")
    return result


def exec_replace(argv: Sequence[str | Path]) -> int:
    """Replace this process with `argv` (interactive ssh/console sessions own the terminal)."""
    args = [str(a) for a in argv]
    try:
        os.execvp(args[0], args)  # argv list, no shell
    except FileNotFoundError as exc:
        raise CommandError(f"command not found: {args[0]}") from exc
    raise AssertionError("unreachable")  # pragma: no cover
