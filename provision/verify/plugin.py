"""The pytest plugin that runs the suite against one node: fixtures, selection, verdicts.

Role selection and waivers are decided before a test runs (it is skipped with the reason); the
verdict of a test that ran comes from how it ended: an assertion is a FAIL, `Inconclusive` is a
WARN, anything else (a command that could not run, a lost connection) is an ERROR.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Generator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import Any

import pytest
from testinfra.host import Host

from provision.baseline import hardening
from provision.core.model import DockerMode, Waiver
from provision.verify import checks
from provision.verify.checks import Inconclusive, Status, applies
from provision.verify.snapshot import FactsError, Part, Snapshot, parse_snapshot

__all__ = [
    "Facts",
    "FactsError",
    "Outcome",
    "Plugin",
    "Profile",
    "decision",
    "failure_verdict",
    "live_waivers",
]

DETAIL_LINES = 8


@dataclass(frozen=True)
class Profile:
    """What the checks know about the node they verify, from the inventory."""

    name: str
    roles: frozenset[str]
    admin: str
    workload_user: str
    docker: DockerMode
    cmdline: tuple[str, ...]  # the kernel command line the domain XML gives it
    accel: str  # kvm or qemu (TCG): what the domain runs on
    host_key: str  # the pinned public host key, "ssh-ed25519 AAAA..."


@dataclass(frozen=True)
class Outcome:
    check_id: str
    test: str  # pytest node id, e.g. check_sysctl.py::test_sysctl[kernel.kptr_restrict]
    status: Status
    detail: str
    # Wall time of the test's setup and call: a session fixture (a container probe, say) is
    # counted in the first test that needs it, which is where a user sees verification wait.
    seconds: float = 0.0


# One run of the helper's `snapshot` verb answers every read-only fact; the container probes run
# on their own SSH channels at the same time (each in its own thread), since they take longest.
NO_SNAPSHOT_VERB = "the node's facts helper has no snapshot verb: re-provision it"
PROBE_MODULES = frozenset(
    {"check_containers", "check_docker", "check_docker_access", "check_rootless"}
)


# Verbs kept out of the snapshot because they take long (they start containers, or hash the
# image's files): each runs on a channel of its own, started with the snapshot.
STARTED_VERBS = frozenset({"docker-probe", "aide-check"})
AIDE_CHECK_ID = "HN-FS-11"  # the check that reads aide-check


def helper_command(verb: str, *args: str) -> str:
    return shlex.join(["sudo", "-n", hardening.FACTS_HELPER, verb, *args])


class Facts:
    """Root-only facts through the node's facts helper, the verifier account's only sudo right.

    Verbs are served from the node's one snapshot when it holds them; `docker-probe` and
    `aide-check` (STARTED_VERBS) from their own concurrent runs; anything else (a path only
    known at run time) from one helper call, cached.
    """

    def __init__(self, host: Host) -> None:
        self._host = host
        self._cache: dict[tuple[str, ...], str] = {}
        self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="facts")
        self._pending: dict[tuple[str, ...], Future[Part]] = {}
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        # `sysctl -a` is judged by ~66 checks: parsed once per node, not once per check.
        self._sysctl: Mapping[str, str] | None = None
        self._sysctl_persisted: Mapping[str, str] | None = None
        self.timings: dict[str, float] = {}  # wall time of each helper call, by verb and args

    def start(self, *keys: tuple[str, ...]) -> None:
        """Begin these helper calls now, each on its own channel, without waiting for them."""
        with self._lock:
            for key in keys:
                if key not in self._pending:
                    self._pending[key] = self._pool.submit(self._call, *key)

    def close(self) -> None:
        """Wait for every started call (a probe's cleanup must finish before the session ends)."""
        self._pool.shutdown(wait=True)

    def _call(self, verb: str, *args: str) -> Part:
        t0 = time.monotonic()
        r = self._host.run(helper_command(verb, *args))
        with self._lock:
            self.timings[" ".join((verb, *args))] = time.monotonic() - t0
        return Part(r.rc, r.stdout, r.stderr)

    def _answer(self, verb: str, *args: str) -> Part:
        self.start((verb, *args))
        return self._pending[(verb, *args)].result()

    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            part = self._answer("snapshot")
            if part.rc == 64 and "unknown verb" in part.stderr:
                raise FactsError(NO_SNAPSHOT_VERB)
            if part.rc != 0:
                raise FactsError(f"snapshot exited {part.rc}: {part.stderr.strip()[-300:]}")
            self._snapshot = parse_snapshot(part.stdout)
        return self._snapshot

    def __call__(self, verb: str, *args: str) -> str:
        key = (verb, *args)
        if key not in self._cache:
            part = self._part(verb, *args)
            if part.rc == 3:  # the helper's "no evidence": a daemon that should answer is down
                raise Inconclusive(part.stderr.strip() or f"{verb}: no evidence")
            if part.rc != 0:
                cmd = helper_command(verb, *args)
                raise FactsError(f"{cmd} exited {part.rc}: {part.stderr.strip()[-300:]}")
            self._cache[key] = part.stdout
        return self._cache[key]

    def part(self, verb: str, *args: str) -> Part:
        """A verb's whole answer, for a verb whose non-zero exit is evidence (aide-check)."""
        return self._part(verb, *args)

    def _part(self, verb: str, *args: str) -> Part:
        if verb in STARTED_VERBS:
            return self._answer(verb, *args)
        found = self.snapshot.verb(verb, *args)
        return found if found is not None else self._call(verb, *args)

    def sysctl(self) -> Mapping[str, str]:
        """Runtime values as root (some keys are root-only), whitespace-normalised. Read-only:
        every check shares the one parse (a failed parse is not kept: it raises every time)."""
        if self._sysctl is None:
            self._sysctl = MappingProxyType(sysctl_evidence(self("sysctl")))
        return self._sysctl

    def sysctl_persisted(self) -> Mapping[str, str]:
        """The winning persisted value of every key, as systemd-sysctl would apply it."""
        if self._sysctl_persisted is None:
            self._sysctl_persisted = MappingProxyType(parse_sysctl_config(self("sysctl-config")))
        return self._sysctl_persisted

    def host_keys(self) -> dict[str, str]:
        """The node's public host keys (root-only files here): path -> "type base64"."""
        out = {}
        for line in self("host-keys").splitlines():
            path, _, key = line.partition(" ")
            out[path] = " ".join(key.split()[:2])
        return out


# Present on every Linux kernel: without it, `sysctl -a` said nothing, and a key missing from
# nothing is no evidence that the kernel lacks it.
SYSCTL_SENTINEL = "kernel.ostype"


def sysctl_evidence(text: str) -> dict[str, str]:
    """`sysctl -a` parsed, or FactsError (an ERROR verdict) when it holds no usable output: an
    empty answer once made every HN-SYS check "N/A: key does not exist" (issue #13)."""
    values = parse_sysctl_a(text)
    if SYSCTL_SENTINEL not in values:
        raise FactsError(
            f"sysctl -a gave {len(values)} keys and no {SYSCTL_SENTINEL}: no evidence for any key"
        )
    return values


def parse_sysctl_a(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            out[key.strip()] = " ".join(value.split())
    return out


def parse_sysctl_config(text: str) -> dict[str, str]:
    """`systemd-sysctl --cat-config`: the last assignment wins; "-key" is key (may be absent)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        name = key.strip().lstrip("-").replace("/", ".")
        out[name] = " ".join(value.split())
    return out


class Plugin:
    """Registered with pytest.main(plugins=[...]) for one node's run."""

    def __init__(
        self,
        host: Host,
        profile: Profile,
        waivers: tuple[Waiver, ...],
        today: date,
        server_version: str = "",
    ) -> None:
        self._host = host
        self._server_version = server_version
        self._profile = profile
        self._facts = Facts(host)
        self._waivers = live_waivers(waivers, today)
        self._decided: dict[str, tuple[Status, str]] = {}
        self._seconds: dict[str, float] = {}
        self.outcomes: list[Outcome] = []
        self.unmarked: list[str] = []

    @pytest.fixture(scope="session")
    def host(self) -> Host:
        return self._host

    @pytest.fixture(scope="session")
    def node(self) -> Profile:
        return self._profile

    @property
    def facts(self) -> Facts:
        return self._facts

    @pytest.fixture(name="facts", scope="session")
    def facts_fixture(self) -> Facts:
        return self._facts

    @pytest.fixture(scope="session")
    def snap(self) -> Snapshot:
        """The node's one fact snapshot (fetched once, at session start)."""
        return self._facts.snapshot

    @pytest.fixture(scope="session")
    def ssh_server_version(self) -> str:
        """What the node's sshd announced to the verifier on this very connection."""
        return self._server_version

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            marker = item.get_closest_marker("hn")
            if marker is None:
                self.unmarked.append(item.nodeid)
                continue
            decided = decision(marker.args[0], self._profile, self._waivers)
            if decided is not None:
                self._decide(item, *decided)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Start the snapshot and the probes the selected checks need, all at once."""
        runnable = [i for i in session.items if i.nodeid not in self._decided]
        if not runnable:
            return
        keys: list[tuple[str, ...]] = [("snapshot",)]
        if any(_hn(i) == AIDE_CHECK_ID for i in runnable):
            keys.append(("aide-check",))
        if any(_module(i) in PROBE_MODULES for i in runnable):
            keys += [
                ("docker-probe", m) for m in ("rootful", "rootless") if m in self._profile.roles
            ]
        self._facts.start(*keys)

    def pytest_sessionfinish(self) -> None:
        self._facts.close()

    def _decide(self, item: pytest.Item, status: Status, reason: str) -> None:
        self._decided[item.nodeid] = (status, reason)
        item.add_marker(pytest.mark.skip(reason=reason))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        marker = item.get_closest_marker("hn")
        if marker is None:
            return
        seconds = self._seconds.get(item.nodeid, 0.0) + report.duration
        self._seconds[item.nodeid] = seconds
        verdict = self._verdict(item, call, report)
        if verdict is not None:
            self.outcomes.append(Outcome(marker.args[0], item.nodeid, *verdict, seconds=seconds))

    def _verdict(
        self, item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport
    ) -> tuple[Status, str] | None:
        if item.nodeid in self._decided:
            return self._decided[item.nodeid] if report.when == "setup" else None
        if report.when == "setup" and report.passed:
            return None  # the call phase decides
        if report.when == "teardown" and report.passed:
            return None
        if report.skipped:
            return Status.SKIP, _skip_reason(report)
        if report.passed:
            return Status.PASS, ""
        return failure_verdict(call.excinfo.value if call.excinfo is not None else None)


def live_waivers(waivers: tuple[Waiver, ...], today: date) -> dict[str, Waiver]:
    """The inventory's waivers that still apply today, by catalogue id."""
    return {w.check_id: w for w in waivers if w.expires is None or w.expires >= today}


def decision(
    check_id: str, profile: Profile, waivers: Mapping[str, Waiver]
) -> tuple[Status, str] | None:
    """The verdict of a test decided before it runs (not for this node's roles, or waived in the
    inventory: `waivers` holds the live ones by id), or None when it runs."""
    meta = checks.REGISTRY[check_id]
    if not applies(meta.roles, profile.roles):
        return Status.SKIP, f"not applicable: applies to {', '.join(sorted(meta.roles))} nodes"
    if meta.id in waivers:
        w = waivers[meta.id]
        until = f" (until {w.expires.isoformat()})" if w.expires else ""
        return Status.WAIVED, f"waived in the inventory{until}: {w.reason}"
    return None


def failure_verdict(exc: BaseException | None) -> tuple[Status, str]:
    """How a test that did not pass or skip ended: an assertion is a FAIL, `Inconclusive` a
    WARN, anything else (a command that could not run, a lost connection) an ERROR."""
    if isinstance(exc, AssertionError):
        return Status.FAIL, _short(str(exc))
    if isinstance(exc, Inconclusive):
        return Status.WARN, _short(str(exc))
    return Status.ERROR, _short(f"{type(exc).__name__}: {exc}")


def _hn(item: pytest.Item) -> str:
    marker = item.get_closest_marker("hn")
    return str(marker.args[0]) if marker is not None else ""


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _short(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if len(lines) > DETAIL_LINES:
        lines = [*lines[:DETAIL_LINES], "..."]
    return "\n".join(lines)
