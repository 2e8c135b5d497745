"""The offline evaluator (provision/verify/evaluate.py) against the pytest runner, its oracle.

On the clean recording, on every setup the mutations use and on every mutation applied
(tests/mutations/), `evaluate` must give each catalogue id the status `provision verify` gives it
(the suite run by pytest, folded by runner.fold), except the ids whose evidence is outside the
snapshot: those must be exactly NOT_EVALUATED (as far as they apply to the node), each SKIP
saying so, or, when the tests of the id that did run already fail, no better than verify. The
runner's verdicts are shared with tests/test_verify_mutations.py (tests/recording.outcomes).
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from _pytest.fixtures import FixtureFunctionDefinition

from provision.verify import evaluate as offline
from provision.verify import runner
from provision.verify.checks import REGISTRY, SEVERITY_ORDER, Status, applies
from provision.verify.containers import parse_inspect
from provision.verify.plugin import Plugin, Profile
from provision.verify.snapshot import parse_snapshot
from tests.mutations import ALL, Mutation
from tests.recording import HELPER, TODAY, Recording, helper, outcomes, recorded_profile

# Ids whose evidence the snapshot does not hold, and why: `provision verify` gathers it live.
NOT_EVALUATED = {
    "HN-CRT-02": "the runtimes' container probes (`docker-probe`, which starts a container) "
    "show they drop capabilities; with workloads, their CapEff is read live in /proc/PID/status",
    "HN-CRT-03": "the probes show no-new-privileges is enforced; with workloads, their "
    "NoNewPrivs is read live in /proc/PID/status",
    "HN-CRT-04": "with workloads only: their Seccomp line, read live in /proc/PID/status",
    "HN-CRT-05": "the probes show a read-only root filesystem is enforced",
    "HN-DKR-02": "the rootful probe shows the container's root is remapped (its uid_map)",
    "HN-DKR-10": "the rootful probe's seccomp mode",
    "HN-DKRL-11": "the rootless probe (its uid map, capabilities, seccomp)",
    "HN-USR-06": "`sudo -n -l` as the verifier: the effective sudo defaults, run live",
    "HN-FS-11": "AIDE's check of the image's files (`aide-check` hashes /usr and /boot)",
}
WITH_WORKLOADS_ONLY = frozenset({"HN-CRT-04"})
SERVER_VERSION = Recording().server_version


def expected_not_evaluated(rec: Recording, profile: Profile) -> set[str]:
    snap = parse_snapshot(json.dumps(rec.doc))
    workloads = any(
        parse_inspect(part.stdout)
        for d in ("rootful", "rootless")
        if (part := snap.verb("docker-inspect", d)) is not None and part.rc == 0
    )
    ids = set(NOT_EVALUATED) if workloads else set(NOT_EVALUATED) - WITH_WORKLOADS_ONLY
    return {i for i in ids if applies(REGISTRY[i].roles, profile.roles)}


def judged(rec: Recording, profile: Profile) -> offline.Evaluation:
    return offline.evaluate(profile, json.dumps(rec.doc), (), TODAY, rec.server_version)


def assert_agrees(rec: Recording, profile: Profile) -> None:
    got = judged(rec, profile)
    want = {r.id: r for r in runner.fold(profile, outcomes(rec, profile), (), TODAY)}
    assert [r.id for r in got.results] == list(want)
    assert set(got.not_evaluated) == expected_not_evaluated(rec, profile)
    for r in got.results:
        w = want[r.id]
        if r.id not in got.not_evaluated:
            assert r.status is w.status, (r.id, r.detail, w.detail)
            # pytest explains a failed assert further while it runs a test: FAIL details differ.
            if r.status is not Status.FAIL:
                assert r.detail == w.detail, r.id
        elif r.status is Status.SKIP:
            assert r.detail.startswith("not evaluated offline: needs "), (r.id, r.detail)
        else:  # its tests that ran already fail: verify, the worst of all of them, is no better
            assert SEVERITY_ORDER.index(w.status) <= SEVERITY_ORDER.index(r.status), r.id
            assert "not evaluated offline" in r.detail, r.id


def test_the_clean_recording_gets_verifys_verdicts() -> None:
    assert_agrees(Recording(), recorded_profile())


def _setups() -> list[Mutation]:
    seen: dict[tuple[object, str], Mutation] = {}
    for m in ALL:
        if m.setup is not None:
            seen.setdefault((m.setup, m.roles), m)
    return list(seen.values())


@pytest.mark.parametrize("m", _setups(), ids=lambda m: f"setup of {m.name}")
def test_each_mutation_setup_gets_verifys_verdicts(m: Mutation) -> None:
    rec = Recording()
    assert m.setup is not None
    m.setup(rec)
    assert_agrees(rec, recorded_profile(m.roles))


@pytest.mark.parametrize("m", ALL, ids=lambda m: m.name)
def test_each_mutation_gets_verifys_verdicts(m: Mutation) -> None:
    rec = Recording()
    if m.setup is not None:
        m.setup(rec)
    m.change(rec)
    assert_agrees(rec, recorded_profile(m.roles))


def test_an_id_partly_outside_the_snapshot_keeps_a_failure_its_other_tests_found() -> None:
    rec = Recording()
    next(m for m in ALL if m.name == "HN-USR-06:NOPASSWD for the workload user").change(rec)
    got = {r.id: r for r in judged(rec, recorded_profile()).results}
    assert got["HN-USR-06"].status is Status.FAIL, got["HN-USR-06"].detail
    assert "needs `sudo -n -l`" in got["HN-USR-06"].detail


def test_nothing_is_sent_but_the_snapshot_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the offline evaluator tried to reach outside the process")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    got = judged(Recording(), recorded_profile())
    assert offline.SNAPSHOT_COMMAND == HELPER
    # Asked for, and refused (NotCollected): the probes, AIDE's check and `sudo -n -l`;
    # answered: the snapshot.
    assert sorted(got.asked) == sorted(
        [
            HELPER,
            helper("docker-probe", "rootful"),
            helper("docker-probe", "rootless"),
            helper("aide-check"),
            "sudo -n -l",
        ]
    )
    host = offline.OfflineHost("{}")
    assert host.run(HELPER).stdout == "{}"
    with pytest.raises(offline.NotCollected, match="run on the node"):
        host.run("cat /etc/shadow")
    with pytest.raises(offline.NotCollected, match="/proc/1/status"):
        host.file("/proc/1/status")
    with pytest.raises(offline.NotCollected):
        host.sysctl("kernel.ostype")


def test_nodes_evaluated_at_once_from_threads_get_their_own_verdicts() -> None:
    recs = []
    for m in ALL[:: len(ALL) // 8][:8]:
        rec = Recording()
        if m.setup is not None:
            m.setup(rec)
        m.change(rec)
        recs.append((rec, recorded_profile(m.roles)))
    serial = [judged(rec, prof).results for rec, prof in recs]
    got: dict[int, tuple[runner.Result, ...]] = {}

    def run(i: int) -> None:
        rec, prof = recs[i]
        got[i] = judged(rec, prof).results

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(recs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    strip = [tuple((r.id, r.status, r.detail) for r in rs) for rs in serial]
    assert [tuple((r.id, r.status, r.detail) for r in got[i]) for i in range(len(recs))] == strip


def test_the_evaluator_gives_the_suite_the_plugins_fixtures() -> None:
    plugin = {v.name for v in vars(Plugin).values() if isinstance(v, FixtureFunctionDefinition)}
    assert plugin == offline.FIXTURES


def test_every_suite_test_is_collected_once() -> None:
    cases = offline.collect()
    assert offline.collect() is cases
    assert len({c.nodeid for c in cases}) == len(cases)
    assert {c.check_id for c in cases} == set(REGISTRY)


SUITE_MODULE = """
import pytest

@pytest.mark.hn("HN-SYS-01")
{extra}
def test_it({args}) -> None:
    pass
"""


def _suite(tmp_path: Path, name: str, args: str, extra: str = "", conftest: str = "") -> Path:
    # A module name per test: pytest imports it by basename, and sys.modules keeps it.
    (tmp_path / "pytest.ini").write_text("[pytest]\npython_files = check_*.py\n")
    (tmp_path / f"check_{name}.py").write_text(SUITE_MODULE.format(args=args, extra=extra))
    if conftest:
        (tmp_path / "conftest.py").write_text(conftest)
    return tmp_path


def test_a_suite_test_needing_another_fixture_fails_collection(tmp_path: Path) -> None:
    conftest = "import pytest\n\n@pytest.fixture\ndef docker():\n    return 1\n"
    suite = _suite(tmp_path, "eval_fixture", "snap, docker", conftest=conftest)
    with pytest.raises(runner.VerifyError, match="does not provide: \\['docker'\\]"):
        offline.collect_from(suite)


def test_a_suite_autouse_fixture_fails_collection(tmp_path: Path) -> None:
    conftest = "import pytest\n\n@pytest.fixture(autouse=True)\ndef env():\n    return 1\n"
    suite = _suite(tmp_path, "eval_autouse", "snap", conftest=conftest)
    with pytest.raises(runner.VerifyError, match="\\['env'\\]"):
        offline.collect_from(suite)


def test_a_suite_test_with_a_skip_mark_fails_collection(tmp_path: Path) -> None:
    suite = _suite(tmp_path, "eval_mark", "snap", extra="@pytest.mark.skipif(True, reason='x')")
    with pytest.raises(runner.VerifyError, match="does not model: \\['skipif'\\]"):
        offline.collect_from(suite)


def test_a_suite_that_does_not_import_fails_collection(tmp_path: Path) -> None:
    suite = _suite(tmp_path, "eval_broken", "snap", extra="@no_such_decorator")
    with pytest.raises(runner.VerifyError, match="cannot be evaluated offline"):
        offline.collect_from(suite)
