"""After first boot: the Kubernetes bootstrap, then the inventory's playbooks, over one pinned
SSH session per node. Both are playbook steps (provision.config.playbook); this module only connects
them to the nodes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from provision.boundary import ssh
from provision.config import playbook
from provision.core.events import Emit, Event, phase
from provision.core.model import Inventory
from provision.desired import render
from provision.kubernetes import k8s_bootstrap
from provision.state.workspace import ssh_target

PLAYBOOK_COMMAND_TIMEOUT_S = 900.0


def playbook_runner(sessions: dict[str, ssh.Session]) -> playbook.Run:
    """Playbook commands over each node's pinned SSH session (as the admin, sudo where asked)."""

    def run(node: str, argv: Sequence[str], stdin: str | None) -> playbook.CommandResult:
        r = sessions[node].run(argv, check=False, timeout=PLAYBOOK_COMMAND_TIMEOUT_S, input=stdin)
        return playbook.CommandResult(r.returncode, r.stdout, r.stderr)

    return run


def run_playbooks(
    inv: Inventory, rendered: render.Rendered, playbooks: tuple[playbook.Playbook, ...], emit: Emit
) -> list[playbook.StepResult]:
    """The Kubernetes bootstrap (if any node has a role), then every playbook, step by step across
    the nodes, over one session per node."""

    def on_step(node: str, step: str, status: str, detail: str) -> None:
        kind = "warn" if status == "fail" else "info"
        emit(
            Event(
                node,
                "playbook",
                kind,
                detail=f"{step} {status}" + (f": {detail}" if detail else ""),
            )
        )

    sessions: dict[str, ssh.Session] = {}
    try:
        for r in rendered.nodes:
            sessions[r.node.name] = ssh.connect(ssh_target(inv, r))
        nodes = tuple(r.node for r in rendered.nodes)
        run = playbook_runner(sessions)
        results = []
        if inv.kubernetes is not None and k8s_bootstrap.playbook(inv) is not None:

            def upload(node: str, local: Path, remote: str) -> None:
                sessions[node].put_file(remote, local, 0o600)

            with phase(emit, "*", "kubernetes", inv.kubernetes.install.value):
                results += k8s_bootstrap.bootstrap(inv, nodes, run, upload, on_step)
        if playbooks:
            with phase(emit, "*", "playbooks", ", ".join(p.name for p in playbooks)):
                results += playbook.apply_playbooks(playbooks, nodes, run, on_step)
        return results
    finally:
        for s in sessions.values():
            s.close()
