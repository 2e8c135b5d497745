"""No traffic off this machine, enforced (issue #15): the pytest side of the network guard.

At session start it guards this process (always: pytest never changes its own network
namespace), records the session's network namespace, names a fresh log file, and puts
tests/netguard first on PYTHONPATH, all in os.environ, so every Python child a test starts with
the inherited environment (the CLI as `python -m provision.cli`, the console script, `python -c`)
runs tests/netguard/sitecustomize.py and is guarded too.

Every phase of every test (setup, call, teardown) ends by reading the log lines written since
the last phase, by this process or any child: if there are any, that phase's report is turned
into a failure listing each attempt (test id, pid, argv, target). A hook rather than an autouse
fixture: a fixture's teardown can only add an error after the test already reported a pass, and
it runs before other fixtures' teardown, whose attempts it would miss; the report hook sees
every phase, whoever made the attempt. Attempts outside any test (collection, a child still
running after its test) fail the session at its end.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Generator
from pathlib import Path

import pytest

from tests.netguard import netguard

_SAVED = pytest.StashKey[dict[str, str | None]]()
_LOG = pytest.StashKey[Path]()
_OFFSET = pytest.StashKey[list[int]]()


def pytest_configure(config: pytest.Config) -> None:
    fd, name = tempfile.mkstemp(prefix="provision-netguard-", suffix=".jsonl")
    os.close(fd)
    keys = (netguard.LOG_ENV, netguard.NETNS_ENV, "PYTHONPATH")
    config.stash[_SAVED] = {k: os.environ.get(k) for k in keys}
    config.stash[_LOG] = Path(name)
    config.stash[_OFFSET] = [0]
    # Set even when inherited (a test's inner pytest run): its attempts are its own to report,
    # in its own log, and its own namespace is the one its children are judged against.
    os.environ[netguard.LOG_ENV] = name
    os.environ[netguard.NETNS_ENV] = str(netguard.netns_inode())
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if netguard.GUARD_DIR not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([netguard.GUARD_DIR, *paths])
    netguard.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    for key, value in config.stash.get(_SAVED, {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    log = config.stash.get(_LOG, None)
    if log is not None:
        log.unlink(missing_ok=True)


def _new_attempts(config: pytest.Config) -> list[dict[str, object]]:
    """The complete log lines written since the last call (a half-written line waits)."""
    offset = config.stash[_OFFSET]
    with config.stash[_LOG].open("rb") as f:
        f.seek(offset[0])
        data = f.read()
    complete = data[: data.rfind(b"\n") + 1]
    offset[0] += len(complete)
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def _describe(attempts: list[dict[str, object]]) -> str:
    lines = [f"netguard: {len(attempts)} attempt(s) to reach off this machine:"]
    for a in attempts:
        lines.append(
            f"  {a['call']} {a['target']}: {a['reason']}\n"
            f"    test {a['test'] or '(none)'}, pid {a['pid']}, argv {a['argv']}"
        )
    return "\n".join(lines)


# tryfirst: the outermost wrapper, so it sees the report after skipping's wrapper made it an
# xfail.
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    attempts = _new_attempts(item.config)
    if not attempts:
        return report
    text = _describe(attempts)
    report.longrepr = f"{report.longrepr}\n\n{text}" if report.failed else text
    report.outcome = "failed"
    if hasattr(report, "wasxfail"):
        del report.wasxfail  # an expected failure must not hide an attempt either
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _LOG not in session.config.stash:
        return
    attempts = _new_attempts(session.config)
    if attempts:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(_describe(attempts), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
