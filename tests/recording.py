"""A node recorded once (tests/data/snapshot/), replayed to the verification suite offline.

`RecordedNode` stands in for an ssh.Session and answers the suite's few commands (the helper's
`snapshot`, both `docker-probe`s, `sudo -n -l`) from the recording, counting what it is asked;
anything else exits 127, which the suite reports as ERROR. `Recording` is an editable copy of
the recording: the mutation tests break one fact in it and replay. `verdicts` runs the whole
suite and folds the outcomes per catalogue id, as `provision verify` reports them.

The recorded node: Debian 12, docker: rootful with the workload user `app` rootless, under TCG.
Taken with `bench/bench_verify.py --record`; it holds no private key material.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shlex
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from provision.baseline import hardening
from provision.boundary.process import Result
from provision.core.model import DockerMode
from provision.verify import runner
from provision.verify.checks import Status
from provision.verify.plugin import Outcome, Profile
from provision.verify.snapshot import parse_snapshot

DATA = Path(__file__).parent / "data" / "snapshot"
SNAPSHOT = (DATA / "snapshot.json").read_text()
SUDO_L = (DATA / "sudo-l.txt").read_text()
PROBES = {d: (DATA / f"probe-{d}.txt").read_text() for d in ("rootful", "rootless")}
AIDE = (DATA / "aide-check.txt").read_text()  # recorded with exit 0: nothing changed
TODAY = date(2026, 12, 1)


def helper(verb: str, *args: str) -> str:
    return shlex.join(["sudo", "-n", hardening.FACTS_HELPER, verb, *args])


HELPER = helper("snapshot")


@dataclass
class Recording:
    """The recorded answers, as plain data to edit: each edit asserts what it replaces is there,
    so a mutation that no longer matches the recording fails loudly instead of changing nothing."""

    doc: dict[str, Any] = field(default_factory=lambda: json.loads(SNAPSHOT))
    probes: dict[str, str] = field(default_factory=lambda: dict(PROBES))
    sudo_l: str = SUDO_L
    probe_exits: dict[str, tuple[int, str]] = field(default_factory=dict)  # daemon: (rc, stderr)
    aide: str = AIDE  # `aide-check`'s output
    aide_exit: int = 0
    # What the node's sshd announced (the recorded node: DebianBanner no).
    server_version: str = "SSH-2.0-OpenSSH_9.2p1"
    # Commands the suite runs live through testinfra (as the verifier), by command line.
    live: dict[str, str] = field(default_factory=dict)

    def copy(self) -> Recording:
        return copy.deepcopy(self)

    def part(self, section: str, key: str) -> dict[str, Any]:
        """A verb's or command's answer ({rc, stdout, stderr}), to edit in place."""
        found: dict[str, Any] = self.doc[section][key]
        return found

    def replace(self, section: str, key: str, old: str, new: str) -> None:
        """Replace text in a verb's or command's stdout."""
        part = self.part(section, key)
        assert old in part["stdout"], f"{section}/{key} has no {old!r}"
        part["stdout"] = part["stdout"].replace(old, new)

    def sysctl(self, key: str, value: str) -> None:
        """Set a runtime sysctl value (`sysctl -a`), adding the key when the kernel lacks it."""
        part = self.part("verbs", "sysctl")
        lines = part["stdout"].splitlines()
        kept = [line for line in lines if line.split(" = ", 1)[0] != key]
        part["stdout"] = "\n".join([*kept, f"{key} = {value}"]) + "\n"

    def file(self, path: str) -> dict[str, Any]:
        """A file's stat (and contents) as the snapshot holds it, to edit in place."""
        found: dict[str, Any] = self.doc["files"][path]
        return found

    def content(self, path: str, old: str, new: str) -> None:
        fact = self.file(path)
        assert old in fact["content"], f"{path} has no {old!r}"
        fact["content"] = fact["content"].replace(old, new)

    def probe(self, daemon: str, key: str, value: str) -> None:
        lines = self.probes[daemon].splitlines()
        assert any(line.startswith(f"{key}=") for line in lines), f"probe {daemon}: no {key}"
        self.probes[daemon] = "".join(
            f"{key}={value}\n" if line.startswith(f"{key}=") else line + "\n" for line in lines
        )

    def probe_exit(self, daemon: str, rc: int, stderr: str) -> None:
        """The probe prints nothing and exits rc (the helper's 3: its daemon is not running)."""
        assert daemon in self.probes, f"no probe {daemon}"
        self.probes[daemon] = ""
        self.probe_exits[daemon] = (rc, stderr)

    def answers(self) -> dict[str, str]:
        out = {HELPER: json.dumps(self.doc), "sudo -n -l": self.sudo_l, **self.live}
        out[helper("aide-check")] = self.aide
        for daemon, text in self.probes.items():
            out[helper("docker-probe", daemon)] = text
        return out

    def exits(self) -> dict[str, tuple[int, str]]:
        """The answers that exit non-zero: command -> (exit status, stderr)."""
        out = {helper("docker-probe", d): e for d, e in self.probe_exits.items()}
        if self.aide_exit:
            out[helper("aide-check")] = (self.aide_exit, "")
        return out


class RecordedNode:
    """An ssh.Session stand-in answering from a recording, counting what it is asked."""

    def __init__(self, recording: Recording | str | None = None) -> None:
        if isinstance(recording, str):  # a snapshot document alone
            rec = Recording()
            rec.doc = json.loads(recording)
            recording = rec
        rec = recording or Recording()
        self.server_version = rec.server_version
        self.answers = rec.answers()
        self.exits = rec.exits()
        self.commands: list[str] = []

    def run(self, argv: list[str], **_: Any) -> Result:
        cmd = argv[-1]
        self.commands.append(cmd)
        if cmd in self.answers:
            rc, stderr = self.exits.get(cmd, (0, ""))
            return Result(tuple(argv), rc, self.answers[cmd], stderr)
        return Result(tuple(argv), 127, "", f"not recorded: {cmd}")


def recorded_profile(roles: str = "all rootful rootless") -> Profile:
    snap = parse_snapshot(SNAPSHOT)
    key = snap.verbs["host-keys"].stdout.split(" ", 1)[1].strip()
    return Profile(
        name="pvdev5",
        roles=frozenset(roles.split()),
        admin="ops",
        workload_user="app",
        docker=DockerMode.ROOTFUL,
        cmdline=tuple(snap.file("/proc/cmdline").content_string.split()),
        accel="qemu",
        host_key=key,
    )


# The suite's outcomes by recording and profile: the mutation tests and the offline evaluator's
# oracle (tests/test_verify_evaluate.py) judge the same recordings, and a run costs ~0.4 s.
_RUNS: dict[tuple[str, Profile], tuple[Outcome, ...]] = {}


def outcomes(recording: Recording, profile: Profile) -> tuple[Outcome, ...]:
    """The whole suite run on the recording (once per recording and profile)."""
    answers = [recording.answers(), recording.exits(), recording.server_version]
    key = hashlib.sha256(json.dumps(answers, sort_keys=True).encode()).hexdigest()
    if (key, profile) not in _RUNS:
        node = RecordedNode(recording)
        run_ = runner.run_suite(node, profile, (), TODAY)  # type: ignore[arg-type]
        _RUNS[key, profile] = tuple(run_.outcomes)
    return _RUNS[key, profile]


def verdicts(recording: Recording, profile: Profile | None = None) -> dict[str, runner.Result]:
    """The whole suite on the recording, one result per catalogue id that ran."""
    prof = profile or recorded_profile()
    found = outcomes(recording, prof)
    return {r.id: r for r in runner.fold(prof, found, (), TODAY, selected=True)}


def by_status(results: dict[str, runner.Result], *statuses: Status) -> set[str]:
    return {i for i, r in results.items() if r.status in statuses}
