"""Run the suite against nodes and fold the outcomes into one verdict per catalogue id.

Every catalogue id gets a result on every node: what its checks found, or why it was not run
(not applicable to the node's roles or to nodes this tool builds, a built-in deviation, or an
inventory waiver). An id nothing accounts for is an ERROR, so coverage gaps cannot hide.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import date
from importlib.resources import as_file, files
from pathlib import Path

import pytest

from provision.baseline import catalogue, hardening
from provision.boundary import ssh
from provision.core.errors import ProvisionError, SSHError
from provision.core.events import Emit, phase
from provision.core.model import Inventory, Node, Waiver
from provision.desired import render
from provision.state import paths, workspace
from provision.verify.backend import host as pinned_host
from provision.verify.checks import (
    REGISTRY,
    SEVERITY_ORDER,
    Status,
    applies,
    node_roles,
    not_applicable,
)
from provision.verify.plugin import Outcome, Plugin, Profile

SUITE = files("provision.verify.suite")


class VerifyError(ProvisionError):
    """The suite itself could not run (as opposed to checks that failed)."""


@dataclass(frozen=True)
class Result:
    id: str
    title: str
    level: str
    severity: str
    status: Status
    detail: str  # why it failed, was skipped or waived; per test when there are several
    remediation: str
    tests: int  # how many suite tests ran for this id
    seconds: float = 0.0  # the wall time of those tests

    @property
    def group(self) -> str:
        return self.id.split("-")[1]


@dataclass(frozen=True)
class SuiteRun:
    outcomes: list[Outcome]
    output: str  # pytest's own
    round_trips: int
    fetches: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class NodeReport:
    node: str
    roles: frozenset[str]
    results: tuple[Result, ...]
    error: str | None = None  # the run stopped before a verdict (e.g. host key refused)
    phases: tuple[tuple[str, float], ...] = ()  # (phase, seconds): connect, checks
    # Helper calls made alongside the checks (snapshot, probes: they overlap, so they are not
    # phases), by verb, and how many commands the node was sent (one SSH round trip each).
    fetches: tuple[tuple[str, float], ...] = ()
    round_trips: int = 0

    @property
    def failed(self) -> bool:
        return self.error is not None or any(r.status in _FAILING for r in self.results)


_FAILING = frozenset({Status.FAIL, Status.ERROR})


def suite_args(suite: Path) -> list[str]:
    """pytest's arguments for the suite directory: its own ini and rootdir, no cache, and not
    testinfra's plugin (its `host` fixture would use an unpinned backend)."""
    return [
        str(suite),
        *("-c", str(suite / "pytest.ini"), "--rootdir", str(suite)),
        *("-p", "no:cacheprovider", "-p", "no:pytest11.testinfra"),
    ]


def run_suite(
    session: ssh.Session,
    profile: Profile,
    waivers: tuple[Waiver, ...],
    today: date,
    select: str | None = None,
) -> SuiteRun:
    """Run the suite in-process against one node."""
    host = pinned_host(session, profile.name)
    plugin = Plugin(host, profile, waivers, today, session.server_version)
    out = io.StringIO()
    # pytest collects the suite by path, so it needs a real directory. pip installs a wheel
    # unzipped, and an editable install or a checkout is a directory too; then as_file hands
    # back the package's own directory (no copy), so pytest imports the checks as
    # provision.verify.suite.*, the very modules whose registry the plugin reads.
    with as_file(SUITE) as suite, redirect_stdout(out), redirect_stderr(out):
        args = [
            *suite_args(suite),
            # Per-run costs that give a verdict nothing: two full gc.collect()s at unconfigure
            # (a third of a run on the recording) and a log handler around every test.
            "-p",
            "no:unraisableexception",
            "-p",
            "no:threadexception",
            "-p",
            "no:logging",
            "-q",
        ]
        if select:
            args += ["-k", select]
        code = pytest.main(args, plugins=[plugin])
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        raise VerifyError(
            f"the verification suite did not run on {profile.name} (pytest exit {int(code)})",
            hint=out.getvalue().strip()[-800:],
        )
    if plugin.unmarked:
        raise VerifyError(f"suite tests without a catalogue id: {', '.join(plugin.unmarked)}")
    fetches = tuple(sorted(plugin.facts.timings.items()))
    return SuiteRun(plugin.outcomes, out.getvalue(), host.backend.round_trips, fetches)


def fold(
    profile: Profile,
    outcomes: Iterable[Outcome],
    waivers: tuple[Waiver, ...],
    today: date,
    selected: bool = False,
) -> tuple[Result, ...]:
    """One result per catalogue id, in catalogue order. `selected`: only ids that ran."""
    by_id: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_id.setdefault(o.check_id, []).append(o)
    na = not_applicable()
    deviations = {d.check_id: d for d in hardening.DEVIATIONS}
    live_waivers = {w.check_id: w for w in waivers if w.expires is None or w.expires >= today}
    results = []
    for entry in catalogue.entries():
        meta = REGISTRY.get(entry.id)
        title = meta.title if meta else entry.summary
        level, severity = (meta.level, meta.severity) if meta else ("", "")
        remediation = meta.remediation if meta else ""
        found = by_id.get(entry.id)
        if found:
            status = min((o.status for o in found), key=SEVERITY_ORDER.index)
            results.append(
                Result(
                    entry.id,
                    title,
                    level,
                    severity,
                    status,
                    _details(found, status),
                    remediation,
                    len(found),
                    sum(o.seconds for o in found),
                )
            )
            continue
        if selected:
            continue
        dev = deviations.get(entry.id)
        if dev is not None and "all" not in dev.roles and applies(dev.roles, profile.roles):
            # A departure of some roles' nodes outranks the id's not-applicable elsewhere.
            status, detail = Status.WAIVED, f"deviation: {dev.reason}"
        elif entry.id in na and not applies(na[entry.id].roles, profile.roles):
            status, detail = (
                Status.SKIP,
                "not applicable: " + ", ".join(sorted(na[entry.id].roles)) + " nodes only",
            )
        elif entry.id in na:
            status, detail = Status.SKIP, f"not applicable: {na[entry.id].reason}"
        elif entry.id in deviations:
            status, detail = Status.WAIVED, f"deviation: {deviations[entry.id].reason}"
        elif entry.id in live_waivers:
            status, detail = (
                Status.WAIVED,
                f"waived in the inventory: {live_waivers[entry.id].reason}",
            )
        else:
            status, detail = Status.ERROR, "no check, exemption or waiver covers this id"
        results.append(Result(entry.id, title, level, severity, status, detail, remediation, 0))
    return tuple(results)


def _details(found: list[Outcome], status: Status) -> str:
    """The reasons behind the id's status: the tests that ended that way."""
    worst = [o for o in found if o.status is status and o.detail]
    if len(found) == 1:
        return worst[0].detail if worst else ""
    return "\n".join(f"{o.test.split('::')[-1]}: {o.detail}" for o in worst)


def expired(waivers: tuple[Waiver, ...], today: date) -> list[Waiver]:
    return [w for w in waivers if w.expires is not None and w.expires < today]


def profile_of(r: render.NodeRender) -> Profile:
    return Profile(
        name=r.node.name,
        roles=node_roles(r.node),
        admin=r.node.admin.name,
        workload_user=r.node.workload_user,
        docker=r.node.docker,
        cmdline=tuple(hardening.kernel_cmdline(r.node).split()),
        accel=r.accel.value,
        host_key=" ".join(r.host_key_public.split()[:2]),
    )


def verifier_target(inv: Inventory, r: render.NodeRender) -> ssh.Target:
    """The verifier account, pinned to the node's host key in our known_hosts and nothing else."""
    host, port = r.ssh_address
    return ssh.Target(
        host=host,
        port=port,
        user=hardening.VERIFIER_USER,
        identity=paths.verifier_key(inv),
        known_hosts=paths.known_hosts(inv),
    )


def verify(
    inv: Inventory,
    nodes: tuple[Node, ...],
    emit: Emit,
    today: date,
    select: str | None = None,
    connect: Callable[[ssh.Target], ssh.Session] = ssh.connect,
) -> list[NodeReport]:
    """Verify each node in turn; a node that cannot be reached is reported, the rest go on."""
    rendered, _ = workspace.render_inventory(inv, nodes)
    workspace.write_known_hosts(inv, rendered)
    reports = []
    for r in rendered.nodes:
        profile = profile_of(r)
        name = r.node.name
        t0 = time.monotonic()
        try:
            with phase(emit, name, "connect", detail=f"{hardening.VERIFIER_USER}@pinned key"):
                session = connect(verifier_target(inv, r))
        except SSHError as exc:  # str() carries the hint; the node's name makes it one line
            took = ("connect", time.monotonic() - t0)
            reports.append(NodeReport(name, profile.roles, (), f"{name}: {exc}", (took,)))
            continue
        took = ("connect", time.monotonic() - t0)
        t0 = time.monotonic()
        with session, phase(emit, name, "verify"):
            run = run_suite(session, profile, r.node.waivers, today, select)
        checks = ("checks", time.monotonic() - t0)
        results = fold(profile, run.outcomes, r.node.waivers, today, selected=select is not None)
        reports.append(
            NodeReport(
                name,
                profile.roles,
                results,
                None,
                (took, checks),
                fetches=run.fetches,
                round_trips=run.round_trips,
            )
        )
    return reports
