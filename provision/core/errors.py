"""Typed errors. The CLI turns each into one actionable line and an exit code."""

from __future__ import annotations

from dataclasses import dataclass


class ProvisionError(Exception):
    """Base for every error the CLI reports without a traceback."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


@dataclass(frozen=True)
class Problem:
    """One located problem in a user's file: `file:line:col: key.path: message`."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.col}: {where}{self.message}"


class ConfigError(ProvisionError):
    """The inventory (or another user file) is invalid; carries every problem at once."""

    exit_code = 2

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.col, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(ProvisionError):
    """The command line names something that does not exist (e.g. an unknown node)."""

    exit_code = 2


class CommandError(ProvisionError):
    """A local process failed; the message names the exact command."""


class HypervisorError(ProvisionError):
    """libvirt refused or failed an operation."""


class ImageError(ProvisionError):
    """A golden image is missing, corrupt, or could not be built."""


class StateError(ProvisionError):
    """The local state directory (keys, known_hosts, locks) could not be read or written."""


class SSHError(ProvisionError):
    """A node could not be reached, or presented the wrong host key."""


class Interrupted(ProvisionError):
    """The run was interrupted (SIGINT); whatever it did converges on the next run."""

    exit_code = 130
