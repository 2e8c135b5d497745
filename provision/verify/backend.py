"""A testinfra backend over our pinned SSH session, so checks keep testinfra's `host` API while
every command goes through `provision.ssh` (RejectPolicy, our known_hosts, ed25519 only)."""

from __future__ import annotations

import threading
from typing import Any

from testinfra.backend.base import BaseBackend, CommandResult
from testinfra.host import Host

from provision.boundary import ssh

COMMAND_TIMEOUT_S = 420.0  # a container probe under TCG took up to 140 s (import + two runs)


class PinnedSSHBackend(BaseBackend):  # type: ignore[misc]  # testinfra is untyped
    NAME = "provision"

    def __init__(self, session: ssh.Session, name: str) -> None:
        super().__init__(name)
        self._session = session
        self._lock = threading.Lock()
        self.commands: list[str] = []  # every command sent, in order: one SSH round trip each

    @property
    def round_trips(self) -> int:
        return len(self.commands)

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        cmd = self.get_command(command, *args)
        with self._lock:  # the snapshot and the probes run from threads at once
            self.commands.append(cmd)
        r = self._session.run(["/bin/sh", "-c", cmd], check=False, timeout=COMMAND_TIMEOUT_S)
        return self.result(r.returncode, self.encode(cmd), r.stdout, r.stderr)


def host(session: ssh.Session, name: str) -> Host:
    backend = PinnedSSHBackend(session, name)
    h = Host(backend)
    backend.set_host(h)
    return h
