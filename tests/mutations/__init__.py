"""Mutations of the recorded clean node, one per catalogue id the suite can PASS.

Each `Mutation` is the smallest change to the recording (tests/recording.py) that breaks its
id's property: a sysctl value, a negated sudo default, an extra UID 0, a world-writable file,
a missing nft rule. tests/test_verify_mutations.py replays the recording with it and asserts
that this id, and only the ids listed in `also` (the ones that judge the same fact), FAIL.
`setup` first brings the recording to a state where the id PASSes when the clean node alone
cannot show it (a workload container running, a Kubernetes node's files), and `roles` is the
profile the node is judged as. `warns` names the ids that must WARN with the mutation, where it
takes their evidence away (a daemon that is down cannot be asked): any other WARN is a failure.

Group modules (sysctls, ssh, ...: never named like a helper here, the submodule would shadow
it) each define MUTATIONS; `ALL` collects them, and the coverage test fails when a registered
id has none.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from tests.recording import Recording

Edit = Callable[[Recording], None]


@dataclass(frozen=True)
class Mutation:
    check_id: str
    what: str  # the broken property, as a test id reads: "kptr_restrict 1"
    change: Edit
    also: frozenset[str] = frozenset()
    setup: Edit | None = None
    roles: str = "all rootful rootless"
    warns: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return f"{self.check_id}:{self.what}"


def mutation(
    check_id: str,
    what: str,
    change: Edit,
    also: str = "",
    setup: Edit | None = None,
    roles: str = "all rootful rootless",
    warns: str = "",
) -> Mutation:
    return Mutation(
        check_id, what, change, frozenset(also.split()), setup, roles, frozenset(warns.split())
    )


def replace(section: str, key: str, old: str, new: str) -> Edit:
    return lambda rec: rec.replace(section, key, old, new)


def sysctl(key: str, value: str) -> Edit:
    return lambda rec: rec.sysctl(key, value)


def content(path: str, old: str, new: str) -> Edit:
    return lambda rec: rec.content(path, old, new)


def stat(path: str, **fields: object) -> Edit:
    def edit(rec: Recording) -> None:
        fact = rec.file(path)
        for k, v in fields.items():
            assert k in fact, f"{path}: no {k} in its stat"
            fact[k] = v

    return edit


def probe(daemon: str, key: str, value: str) -> Edit:
    return lambda rec: rec.probe(daemon, key, value)


def answer(section: str, key: str, rc: int, stdout: str = "", stderr: str = "") -> Edit:
    """A verb's or command's whole answer: exit status, stdout and stderr."""

    def edit(rec: Recording) -> None:
        rec.part(section, key).update(rc=rc, stdout=stdout, stderr=stderr)

    return edit


def probe_exit(daemon: str, rc: int, stderr: str) -> Edit:
    return lambda rec: rec.probe_exit(daemon, rc, stderr)


def both(*edits: Edit) -> Edit:
    def edit(rec: Recording) -> None:
        for e in edits:
            e(rec)

    return edit


def _collect() -> tuple[Mutation, ...]:
    out: list[Mutation] = []
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        out += importlib.import_module(f"{__name__}.{mod.name}").MUTATIONS
    return tuple(out)


ALL = _collect()
