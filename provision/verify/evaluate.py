"""Judge one node's fact snapshot against the whole suite, offline and without pytest's run.

`provision drift` judges every node of a fleet from the snapshot it already collected. Running
the suite through `pytest.main` per node costs pytest's per-test protocol (most of 0.46 s a
node) and is not thread-safe; here the suite is collected once per process and each test
function is then called directly with the plugin's fixtures, so a node costs what its checks
cost. Role applicability, waivers, the verdict of each way a test can end and the fold into
one result per catalogue id are the plugin's and the runner's own functions, so the verdicts
are the ones `provision verify` gives (tests/test_verify_evaluate.py holds the two together on
every mutation of the recorded node).

Read-only by construction: there is no session here. The `host` the checks get answers the
facts helper's snapshot command from the snapshot text and nothing else; a check that needs
evidence the snapshot does not hold (a container probe, which starts containers; `sudo -n -l`;
a file read at run time) raises `NotCollected`, and its id is reported SKIP, "not evaluated
offline", and listed in `Evaluation.not_evaluated`.
"""

from __future__ import annotations

import functools
import inspect
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from importlib.resources import as_file
from pathlib import Path
from typing import Any, NoReturn

import pytest

from provision.baseline import hardening
from provision.core.model import Waiver
from provision.verify import runner
from provision.verify.checks import SEVERITY_ORDER, Status
from provision.verify.plugin import (
    Facts,
    Outcome,
    Profile,
    decision,
    failure_verdict,
    helper_command,
    live_waivers,
)
from provision.verify.snapshot import Part

__all__ = [
    "FIXTURES",
    "Evaluation",
    "NotCollected",
    "collect",
    "collect_from",
    "evaluate",
]

# The fixtures `plugin.Plugin` gives the suite; a test asking for any other fails collection.
FIXTURES = frozenset({"host", "node", "facts", "snap", "ssh_server_version"})
# Marks the suite uses; skip/skipif/xfail/usefixtures would change what pytest runs, and this
# evaluator does not model them, so a test carrying one fails collection instead.
MARKS = frozenset({"hn", "parametrize"})
SNAPSHOT_COMMAND = helper_command("snapshot")
NOT_EVALUATED = "not evaluated offline: needs {what} (`provision verify` checks it)"
# Statuses a partly evaluated id keeps: the tests that did run already show the id is not
# clean, and verify (the worst of all its tests) cannot report it any better.
_KEPT = frozenset({Status.ERROR, Status.FAIL, Status.WARN})


class NotCollected(Exception):
    """A check asked for evidence outside the snapshot: offline, it cannot be judged."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass(frozen=True)
class Case:
    """One collected suite test: its function and what pytest would call it with."""

    nodeid: str  # as the plugin's Outcome.test, e.g. check_ssh.py::test_crypto[ciphers-...]
    check_id: str
    function: Callable[..., object]
    fixtures: tuple[str, ...]  # the function's arguments that are plugin fixtures
    params: Mapping[str, object]  # its parametrize arguments


@dataclass(frozen=True)
class Evaluation:
    results: tuple[runner.Result, ...]  # one per catalogue id, as runner.fold gives them
    # Ids with a test that needed evidence outside the snapshot, in catalogue order: SKIP, or
    # what their other tests found when that already fails them.
    not_evaluated: tuple[str, ...]
    asked: tuple[str, ...]  # every command a check asked the host for, answered or not


class OfflineHost:
    """The `host` fixture offline: the helper's snapshot command, answered from the snapshot
    text, is the only command it knows; any other command, file or module is `NotCollected`."""

    def __init__(self, snapshot_text: str) -> None:
        self._text = snapshot_text
        self._lock = threading.Lock()  # Facts asks from its own pool thread
        self.asked: list[str] = []  # every command asked for, answered or not
        self.refused: list[str] = []  # what each refusal needed, in order

    def run(self, command: str, *args: str) -> Part:
        # testinfra's quoting of the arguments, so a check sees the command it would send
        cmd = command % tuple(shlex.quote(a) for a in args) if args else command
        with self._lock:
            self.asked.append(cmd)
        if cmd == SNAPSHOT_COMMAND:
            return Part(0, self._text, "")
        self._refuse(_needs(cmd))

    def file(self, path: str) -> NoReturn:
        with self._lock:
            self.asked.append(f"file {path}")
        self._refuse(f"{path} read on the node")

    def __getattr__(self, name: str) -> NoReturn:  # any other testinfra module
        if name.startswith("_"):  # copy, pickle and our own attributes before __init__
            raise AttributeError(name)
        self._refuse(f"testinfra's host.{name} on the node")

    def _refuse(self, what: str) -> NoReturn:
        with self._lock:
            self.refused.append(what)
        raise NotCollected(what)


def _needs(cmd: str) -> str:
    words = shlex.split(cmd)
    if words[:3] == ["sudo", "-n", hardening.FACTS_HELPER] and len(words) > 3:
        verb = " ".join(words[3:])
        if words[3] == "docker-probe":
            return f"the {' '.join(words[4:])} container probe (`{verb}` starts a container)"
        if words[3] == "aide-check":
            return "AIDE's check of the image's files (`aide-check` hashes /usr and /boot)"
        return f"the facts helper's `{verb}`, which the snapshot does not hold"
    return f"`{cmd}` run on the node"


def evaluate(
    profile: Profile,
    snapshot_text: str,
    waivers: tuple[Waiver, ...],
    today: date,
    server_version: str,
) -> Evaluation:
    """One result per catalogue id for the node whose snapshot this is, as verify folds them,
    and the ids it could not evaluate from the snapshot alone."""
    cases = collect()
    host = OfflineHost(snapshot_text)
    facts = Facts(host)
    try:
        fixtures = _Fixtures(host, profile, facts, server_version)
        live = live_waivers(waivers, today)
        outcomes: list[Outcome] = []
        missing: dict[str, list[str]] = {}
        for case in cases:
            t0 = time.perf_counter()
            decided = decision(case.check_id, profile, live)
            if decided is None:
                refused = len(host.refused)
                try:
                    decided = _run(case, fixtures)
                except NotCollected as exc:
                    missing.setdefault(case.check_id, []).append(exc.what)
                    continue
                if len(host.refused) > refused:
                    # The check caught the refusal and went on: its verdict is not the node's.
                    missing.setdefault(case.check_id, []).extend(host.refused[refused:])
                    continue
            seconds = time.perf_counter() - t0
            outcomes.append(Outcome(case.check_id, case.nodeid, *decided, seconds=seconds))
    finally:
        facts.close()
    folded = runner.fold(profile, outcomes, waivers, today)
    return Evaluation(
        tuple(_offline(r, outcomes, missing.get(r.id)) for r in folded),
        tuple(r.id for r in folded if r.id in missing),
        tuple(host.asked),
    )


def _run(case: Case, fixtures: _Fixtures) -> tuple[Status, str]:
    """Call the test as pytest would, and its verdict as the plugin gives it."""
    try:
        kwargs = {name: fixtures.get(name) for name in case.fixtures}
        case.function(**kwargs, **case.params)
    except NotCollected:
        raise
    except pytest.skip.Exception as exc:
        return Status.SKIP, str(exc)  # the reason, as the report gives it
    except (Exception, pytest.fail.Exception) as exc:
        return failure_verdict(exc)
    return Status.PASS, ""


def _offline(
    result: runner.Result, outcomes: list[Outcome], needs: list[str] | None
) -> runner.Result:
    """The id's result when some of its tests need evidence outside the snapshot."""
    if needs is None:
        return result
    what = NOT_EVALUATED.format(what=", ".join(dict.fromkeys(needs)))
    ran = [o for o in outcomes if o.check_id == result.id]
    worst = min((o.status for o in ran), key=SEVERITY_ORDER.index, default=Status.SKIP)
    if worst in _KEPT:
        return replace(result, detail=f"{result.detail}\n{what}".strip())
    return replace(result, status=Status.SKIP, detail=what, tests=len(ran))


@dataclass
class _Fixtures:
    """The plugin's session fixtures for one node; `snap` once, its error kept as pytest keeps
    a session fixture's (every test that needs it ends with that error)."""

    host: OfflineHost
    node: Profile
    facts: Facts
    ssh_server_version: str
    _snap: Any = None
    _snap_error: BaseException | None = field(default=None, repr=False)

    def get(self, name: str) -> object:
        if name != "snap":
            return getattr(self, name)
        if self._snap is None and self._snap_error is None:
            try:
                self._snap = self.facts.snapshot
            except Exception as exc:
                self._snap_error = exc
        if self._snap_error is not None:
            raise self._snap_error
        return self._snap


# --- collection, once per process ------------------------------------------------------------

# pytest is not thread-safe: one collection at a time, and the suite's only once per process.
_COLLECT_LOCK = threading.RLock()


def collect() -> tuple[Case, ...]:
    """The suite's tests, collected by pytest once per process."""
    with _COLLECT_LOCK:
        return _collected()


@functools.cache
def _collected() -> tuple[Case, ...]:
    with as_file(runner.SUITE) as suite:
        return collect_from(Path(suite))


def collect_from(suite: Path) -> tuple[Case, ...]:
    """Collect the suite in `suite` (a directory with its pytest.ini); VerifyError when pytest
    cannot, or when a test needs what the evaluator does not model."""
    collector = _Collector()
    args = [
        *runner.suite_args(suite),
        "--collect-only",
        # No terminal output and no capture: collection must not write to, or swap, the
        # process's stdout and stderr (another thread may be printing progress).
        "-p",
        "no:terminal",
        "--capture=no",
    ]
    with _COLLECT_LOCK:
        code = pytest.main(args, plugins=[collector])
    if collector.errors or code != pytest.ExitCode.OK:
        raise runner.VerifyError(
            f"the verification suite in {suite} cannot be evaluated offline (pytest exit "
            f"{int(code)}): " + "; ".join(e.splitlines()[0] for e in collector.errors[:3]),
            hint="\n".join(collector.errors)[-800:],
        )
    if collector.unmarked:
        raise runner.VerifyError(
            f"suite tests without a catalogue id: {', '.join(collector.unmarked)}"
        )
    return tuple(collector.cases)


class _Collector:
    """A pytest plugin that keeps what each collected test needs to be called directly, and
    refuses what the evaluator does not model (other fixtures, other marks)."""

    def __init__(self) -> None:
        self.cases: list[Case] = []
        self.unmarked: list[str] = []
        self.errors: list[str] = []

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.errors.append(f"{report.nodeid}: {report.longreprtext}")

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            try:
                case = _case(item)
            except _Unsupported as exc:
                self.errors.append(f"{item.nodeid}: {exc}")
                continue
            if case is None:
                self.unmarked.append(item.nodeid)
            else:
                self.cases.append(case)


class _Unsupported(Exception):
    pass


def _case(item: pytest.Item) -> Case | None:
    if not isinstance(item, pytest.Function):
        raise _Unsupported(f"a {type(item).__name__}, not a test function")
    marker = item.get_closest_marker("hn")
    if marker is None:
        return None
    marks = {m.name for m in item.iter_markers()} - MARKS
    if marks:
        raise _Unsupported(f"marks the offline evaluator does not model: {sorted(marks)}")
    callspec = getattr(item, "callspec", None)
    params: dict[str, object] = dict(callspec.params) if callspec is not None else {}
    args = tuple(inspect.signature(item.function).parameters)
    # item.fixturenames holds autouse fixtures too (a conftest's, say): all must be known.
    other = sorted(set(item.fixturenames) - FIXTURES - set(params))
    if other or set(args) - FIXTURES - set(params):
        raise _Unsupported(f"fixtures the offline evaluator does not provide: {other}")
    if _suite_fixtures(item):
        raise _Unsupported(f"fixtures defined in the suite: {_suite_fixtures(item)}")
    return Case(
        item.nodeid,
        str(marker.args[0]),
        item.function,
        tuple(a for a in args if a not in params),
        params,
    )


def _suite_fixtures(item: pytest.Function) -> list[str]:
    """Fixtures a conftest or test module defines (a plugin's have an empty baseid): one could
    shadow a plugin fixture, or an indirect parameter could go through one."""
    defs = item._fixtureinfo.name2fixturedefs
    return sorted(n for n, ds in defs.items() if any(d.baseid for d in ds))
