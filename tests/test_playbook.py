"""Playbooks: located parse errors, node selection, step ordering, idempotence and failures.

Orchestration runs against a fake fleet: each node is an in-memory file table that understands
the few commands the steps send. The put commands also run once against the real coreutils here.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from provision.boundary.process import run as run_local
from provision.config import playbook, settings
from provision.config.playbook import CommandResult, PlaybookError, PutAction
from provision.core.errors import ConfigError, ProvisionError
from provision.core.model import Node, Role

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "playbooks"
SUDO = ("sudo", "-n", "--")
SECRET = "token=s3cr3t-do-not-log\n"


def node(name: str, *roles: Role) -> Node:
    """A node as the inventory's table builds it: what is not named here takes its default."""
    values = {"hypervisor": "h1", "network": "lo", "ssh_port": 10022, "docker": "none"}
    return settings.NODE.build({**values, "roles": roles}, name=name)


def write(tmp_path: Path, text: str, name: str = "pb.yaml") -> playbook.Playbook:
    path = tmp_path / name
    path.write_text(text)
    return playbook.load(path)


@dataclass
class File:
    content: str
    mode: int
    owner: str = "root"
    group: str = "root"


def ok(stdout: str = "") -> CommandResult:
    return CommandResult(0, stdout, "")


@dataclass
class Fleet:
    """Nodes as file tables; `calls` records every (node, argv) in order, stdin never."""

    files: dict[str, dict[str, File]]
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    users: tuple[str, ...] = ("root", "ops")
    install_writes: bool = True  # False: install exits 0 but the file stays as it was

    def __call__(self, name: str, argv: Sequence[str], stdin: str | None) -> CommandResult:
        args = tuple(argv)
        self.calls.append((name, args))
        if args[:3] == SUDO:
            args = args[3:]
        fs = self.files[name]
        match args:
            case ("stat", "-c", "%a %U %G", "--", path):
                f = fs.get(path)
                if f is None:
                    return CommandResult(1, "", f"stat: cannot statx '{path}': No such file")
                return ok(f"{f.mode:o} {f.owner} {f.group}\n")
            case ("sha256sum", "--", path):
                digest = hashlib.sha256(fs[path].content.encode()).hexdigest()
                return ok(f"{digest}  {path}\n")
            case ("install", "-T", "-m", mode, "-o", owner, "-g", group, "--", "/dev/stdin", path):
                if owner not in self.users:
                    return CommandResult(1, "", f"install: invalid user '{owner}'")
                assert stdin is not None
                if self.install_writes:
                    fs[path] = File(stdin, int(mode, 8), owner, group)
                return ok()
            case ("test", "-f", path):
                return CommandResult(0 if path in fs else 1, "", "")
            case ("touch", path):
                fs.setdefault(path, File("", 0o644))
                return ok()
            case ("true",):
                return ok()
            case ("fail",):
                return CommandResult(3, "", "\n".join(f"error line {i}" for i in range(1, 11)))
        return CommandResult(127, "", f"fake: unknown command {args}")

    def changes(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(n, a) for n, a in self.calls if a[3] in ("install", "touch", "true", "fail")]


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, str]] = []

    def __call__(self, node: str, step: str, status: str, detail: str) -> None:
        self.seen.append((node, step, status, detail))


TWO_STEPS = """\
steps:
  - name: first
    run: {check: [test, -f, /a], apply: [touch, /a]}
  - name: second
    run: {check: [test, -f, /b], apply: [touch, /b]}
"""


# --- parsing -------------------------------------------------------------------------------------


def test_default_playbook_parses_into_a_wait_a_put_and_a_run() -> None:
    pb = playbook.load(ROOT / "playbooks" / "post-boot.yaml")
    assert pb.name == "post-boot"
    assert [s.name for s in pb.steps] == ["first-boot-done", "motd", "fstrim-timer"]
    wait, put, run = (s.action for s in pb.steps)
    assert isinstance(wait, playbook.WaitAction) and not wait.sudo
    assert isinstance(put, PutAction) and (put.path, put.mode) == ("/etc/motd", "0644")
    assert isinstance(run, playbook.RunAction) and run.sudo
    assert all(s.selector == playbook.Selector() for s in pb.steps)


def test_broken_playbook_reports_every_problem_with_its_location() -> None:
    path = DATA / "broken.yaml"
    with pytest.raises(ConfigError) as err:
        playbook.load(path)
    f = str(path)
    assert [str(p) for p in err.value.problems] == [
        f"{f}:3:11: steps[0].name: 'Banner' is not a valid name",
        f"{f}:4:18: steps[0].on.roles[0]: 'k8s-master' is not one of: k8s-control-plane, "
        "k8s-worker",
        f"{f}:6:7: steps[0].run: missing required key 'apply'",
        f"{f}:6:14: steps[0].run.check: expected a list of arguments, e.g. [test, -f, /etc/motd], "
        "got str 'test -f /etc/issue.net'",
        f"{f}:7:7: steps[0].run.aply: unknown key (did you mean 'apply'?)",
        f"{f}:10:13: steps[1].put.path: expected an absolute file path, got str 'etc/motd'",
        f'{f}:12:13: steps[1].put.mode: expected an octal mode string like "0644" (quoted: YAML '
        "reads 0644 as the number 420), got int 420",
        f"{f}:13:14: steps[1].put.owner: 'Root' is not a valid owner",
        f"{f}:14:11: steps[2].name: duplicate step name 'motd' (first at line 8)",
        f"{f}:15:17: steps[2].on.nodes: empty list: omit `on` to run on every node",
        f"{f}:17:14: steps[2].wait.until: expected a list of arguments, e.g. [test, -f, "
        "/etc/motd], got an empty list",
        f"{f}:18:18: steps[2].wait.timeout_s: 0 is out of range [1, 86400]",
        f"{f}:19:5: steps[3]: needs exactly one of run, put, wait (got run, put)",
        f"{f}:22:5: steps[4]: needs exactly one of run, put, wait",
        f"{f}:23:9: steps[4].on: give exactly one of roles or nodes",
        f"{f}:26:22: steps[5].run.check[1]: expected a string, got int 420",
        f"{f}:27:15: steps[5].run.apply[0]: 'sh -c true' is not a program: one list item per "
        "argument, no shell",
        f"{f}:28:13: steps[5].run.sudo: expected a boolean (true/false), got str 'maybe'",
        f"{f}:29:5: steps[6]: expected a mapping, got str 'just a string'",
        f"{f}:33:7: steps[7].wait.interval: unknown key (did you mean 'interval_s'?)",
    ]


def test_load_all_reports_the_problems_of_every_file_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        playbook.load_all([DATA / "misspelled.yaml", ROOT / "playbooks" / "post-boot.yaml"])
    f = str(DATA / "misspelled.yaml")
    assert [str(p) for p in err.value.problems] == [
        f"{f}:1:1: missing required key 'steps'",
        f"{f}:1:1: stpes: unknown key (did you mean 'steps'?)",
    ]
    with pytest.raises(ConfigError) as err:
        playbook.load_all([DATA / "misspelled.yaml", DATA / "broken.yaml"])
    assert {p.file for p in err.value.problems} == {f, str(DATA / "broken.yaml")}


def test_an_empty_file_needs_steps(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pb.yaml:1:1: missing required key 'steps'"):
        write(tmp_path, "")


# --- node selection ------------------------------------------------------------------------------


def test_targets_by_role_by_name_and_by_default_keep_the_inventory_order(tmp_path: Path) -> None:
    pb = write(
        tmp_path,
        """\
steps:
  - name: cp
    on: {roles: [k8s-control-plane]}
    run: {check: [/bin/true], apply: [/bin/true]}
  - name: named
    on: {nodes: [w2, cp1]}
    run: {check: [/bin/true], apply: [/bin/true]}
  - name: all
    run: {check: [/bin/true], apply: [/bin/true]}
""",
    )
    nodes = [
        node("cp1", Role.K8S_CONTROL_PLANE),
        node("w1", Role.K8S_WORKER),
        node("w2", Role.K8S_WORKER, Role.K8S_CONTROL_PLANE),
    ]
    names = [[n.name for n in playbook.targets(s, nodes)] for s in pb.steps]
    assert names == [["cp1", "w2"], ["cp1", "w2"], ["cp1", "w1", "w2"]]


def test_check_against_locates_selectors_naming_unknown_nodes(tmp_path: Path) -> None:
    pb = write(
        tmp_path,
        """\
steps:
  - name: named
    on: {nodes: [node1, nod2]}
    run: {check: [/bin/true], apply: [/bin/true]}
""",
    )
    assert playbook.check_against([pb], ["node1", "node2"]) == [
        f"{tmp_path / 'pb.yaml'}:3:25: steps[0].on.nodes[1]: no node 'nod2' in the inventory "
        "(did you mean 'node2'?)"
    ]
    assert playbook.check_against([pb], ["node1", "nod2"]) == []


# --- apply ---------------------------------------------------------------------------------------


def test_each_step_runs_on_every_node_before_the_next_step_starts(tmp_path: Path) -> None:
    pb = write(tmp_path, TWO_STEPS)
    fleet = Fleet({"n1": {}, "n2": {}})
    results = playbook.apply_playbooks([pb], [node("n1"), node("n2")], fleet, Events())
    assert fleet.changes() == [
        ("n1", (*SUDO, "touch", "/a")),
        ("n2", (*SUDO, "touch", "/a")),
        ("n1", (*SUDO, "touch", "/b")),
        ("n2", (*SUDO, "touch", "/b")),
    ]
    assert [(r.step, r.node, r.status) for r in results] == [
        ("first", "n1", "applied"),
        ("first", "n2", "applied"),
        ("second", "n1", "applied"),
        ("second", "n2", "applied"),
    ]


def test_control_plane_steps_finish_before_worker_steps_whatever_the_node_order(
    tmp_path: Path,
) -> None:
    pb = write(
        tmp_path,
        """\
steps:
  - name: init
    on: {roles: [k8s-control-plane]}
    run: {check: [test, -f, /init], apply: [touch, /init]}
  - name: join
    on: {roles: [k8s-worker]}
    run: {check: [test, -f, /join], apply: [touch, /join]}
""",
    )
    fleet = Fleet({"w1": {}, "cp1": {}, "w2": {}})
    nodes = [node("w1", Role.K8S_WORKER), node("cp1", Role.K8S_CONTROL_PLANE)]
    playbook.apply_playbooks([pb], [*nodes, node("w2", Role.K8S_WORKER)], fleet, Events())
    assert [(n, a[-1]) for n, a in fleet.changes()] == [
        ("cp1", "/init"),
        ("w1", "/join"),
        ("w2", "/join"),
    ]


def test_a_second_apply_runs_only_checks(tmp_path: Path) -> None:
    pb = write(
        tmp_path,
        TWO_STEPS
        + f"""\
  - name: secret
    put: {{path: /etc/app.conf, content: {json.dumps(SECRET)}, mode: "0600", owner: ops}}
""",
    )
    fleet = Fleet({"n1": {}, "n2": {}})
    nodes = [node("n1"), node("n2")]
    playbook.apply_playbooks([pb], nodes, fleet, Events())
    assert fleet.files["n1"]["/etc/app.conf"] == File(SECRET, 0o600, "ops", "root")
    fleet.calls.clear()
    events = Events()
    results = playbook.apply_playbooks([pb], nodes, fleet, events)
    assert {r.status for r in results} == {"ok"}
    assert fleet.changes() == []
    assert {a[3] for _, a in fleet.calls} == {"test", "stat", "sha256sum"}
    assert [e[2] for e in events.seen] == ["start", "ok"] * 6


def test_a_put_repairs_mode_owner_and_content_drift(tmp_path: Path) -> None:
    pb = write(tmp_path, "steps:\n  - name: conf\n    put: {path: /etc/c, content: new}\n")
    fleet = Fleet({"n1": {"/etc/c": File("old", 0o600, "ops", "root")}})
    (result,) = playbook.apply_playbooks([pb], [node("n1")], fleet, Events())
    assert result.status == "applied"
    assert result.detail == "mode 600 (want 0644), owner ops (want root), content differs"
    assert fleet.files["n1"]["/etc/c"] == File("new", 0o644)


def test_a_failing_apply_raises_with_the_exit_code_and_the_last_lines(tmp_path: Path) -> None:
    pb = write(
        tmp_path, "steps:\n  - name: broken\n    run: {check: [test, -f, /x], apply: [fail]}\n"
    )
    events = Events()
    with pytest.raises(PlaybookError) as err:
        playbook.apply_playbooks([pb], [node("n1"), node("n2")], Fleet({"n1": {}}), events)
    e = err.value
    assert isinstance(e, ProvisionError)
    assert (e.playbook, e.step, e.node, e.returncode) == ("pb", "broken", "n1", 3)
    assert str(e).startswith(
        "playbook pb, step broken, node n1: apply exited 3: sudo -n -- fail\n  error line 6\n"
    )
    assert str(e).endswith("  error line 10")
    assert "error line 5" not in str(e)
    assert events.seen[-1] == ("n1", "pb/broken", "fail", e.message)


def test_an_apply_that_leaves_the_check_failing_raises(tmp_path: Path) -> None:
    pb = write(
        tmp_path, "steps:\n  - name: noop\n    run: {check: [test, -f, /x], apply: ['true']}\n"
    )
    with pytest.raises(PlaybookError, match=r"the check still fails after apply: sudo -n -- test"):
        playbook.apply_playbooks([pb], [node("n1")], Fleet({"n1": {}}), Events())


def test_put_content_never_appears_in_errors_events_argv_or_repr(tmp_path: Path) -> None:
    pb = write(
        tmp_path,
        "steps:\n  - name: secret\n"
        f"    put: {{path: /etc/s, content: {json.dumps(SECRET)}, owner: nobody}}\n",
    )
    fleet, events = Fleet({"n1": {}}), Events()
    with pytest.raises(PlaybookError) as err:
        playbook.apply_playbooks([pb], [node("n1")], fleet, events)
    assert "install: invalid user 'nobody'" in str(err.value)
    seen = [str(err.value), repr(pb), *map(repr, events.seen), *map(repr, fleet.calls)]
    # A put whose install leaves the old file: the error must not carry sha256sum's output either.
    stale = Fleet({"n1": {"/etc/s": File("old", 0o644, "nobody")}}, users=("nobody",))
    stale.install_writes = False
    with pytest.raises(PlaybookError, match="still fails after apply: content differs") as again:
        playbook.apply_playbooks([pb], [node("n1")], stale, events)
    seen += [str(again.value), *map(repr, events.seen)]
    digests = [hashlib.sha256(t.encode()).hexdigest() for t in (SECRET, "old")]
    assert not [s for s in seen if "s3cr3t" in s or any(d in s for d in digests)]


def test_a_wait_polls_until_the_command_succeeds(tmp_path: Path) -> None:
    pb = write(tmp_path, "steps:\n  - name: ready\n    wait: {until: [test, -f, /ready]}\n")
    fleet = Fleet({"n1": {}})
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            fleet.files["n1"]["/ready"] = File("", 0o644)

    now = lambda: sum(slept)  # noqa: E731
    (result,) = playbook.apply_playbooks(
        [pb], [node("n1")], fleet, Events(), sleep=sleep, clock=now
    )
    assert (result.status, result.detail) == ("ok", "ready after 10s")
    assert slept == [5, 5]


def test_a_wait_raises_after_its_timeout(tmp_path: Path) -> None:
    pb = write(
        tmp_path,
        "steps:\n  - name: ready\n"
        "    wait: {until: [test, -f, /r], timeout_s: 12, interval_s: 5}\n",
    )
    fleet = Fleet({"n1": {}})
    slept: list[float] = []
    with pytest.raises(PlaybookError, match=r"not ready after 12s: sudo -n -- test -f /r exited 1"):
        playbook.apply_playbooks(
            [pb], [node("n1")], fleet, Events(), sleep=slept.append, clock=lambda: sum(slept)
        )
    assert slept == [5, 5, 2]
    assert len(fleet.calls) == 4


# --- plan ----------------------------------------------------------------------------------------


def test_plan_runs_only_checks_and_marks_unreachable_nodes_pending(tmp_path: Path) -> None:
    pb = write(
        tmp_path,
        """\
steps:
  - name: ready
    wait: {until: [test, -f, /ready], timeout_s: 60}
  - name: touched
    run: {check: [test, -f, /a], apply: [touch, /a]}
  - name: conf
    put: {path: /etc/c, content: "x\\n"}
""",
    )
    fleet = Fleet({"n1": {"/a": File("", 0o644)}})
    plans = playbook.plan_steps([pb], [node("n1"), node("n2")], fleet, reachable={"n1"})
    assert [(p.step, p.node, p.status, p.detail) for p in plans] == [
        ("ready", "n1", "wait", "wait until test -f /ready (timeout 60s)"),
        ("ready", "n2", "wait", "wait until test -f /ready (timeout 60s)"),
        ("touched", "n1", "ok", "sudo -n -- test -f /a exited 0"),
        ("touched", "n2", "pending", "node not up: checked after first boot"),
        ("conf", "n1", "apply", "/etc/c is missing or unreadable"),
        ("conf", "n2", "pending", "node not up: checked after first boot"),
    ]
    assert fleet.changes() == []
    offline = playbook.plan_steps([pb], [node("n1")], None, reachable=set())
    assert [p.status for p in offline] == ["wait", "pending", "pending"]


# --- facts ---------------------------------------------------------------------------------------


def test_put_differs_reads_recorded_stat_and_sha256sum_output() -> None:
    put = PutAction("/etc/a\\b", "x\n", "0644", "root", "root")
    digest = hashlib.sha256(b"x\n").hexdigest()
    stat = CommandResult(0, "600 root adm\n", "")
    # sha256sum escapes a backslash in the name and then starts the line with one.
    sha = CommandResult(0, f"\\{digest}  /etc/a\\\\b\n", "")
    assert playbook.put_differs(put, stat, sha) == "mode 600 (want 0644), group adm (want root)"
    assert playbook.put_differs(put, CommandResult(0, "644 root root\n", ""), sha) == ""
    missing = CommandResult(1, "", "stat: cannot statx '/etc/a': No such file or directory")
    assert playbook.put_differs(put, missing, None) == "/etc/a\\b is missing or unreadable"


def test_put_commands_work_with_the_real_coreutils(tmp_path: Path) -> None:
    """install reads the content from a stdin pipe, as under sshd; stat and sha256sum then agree.
    Only sudo is left out: the test runs as whoever runs the suite."""
    owner = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    target = tmp_path / "conf"
    target.write_text("old\n")
    target.chmod(0o600)
    pb = write(
        tmp_path,
        f"""\
steps:
  - name: conf
    put: {{path: {str(target)!r}, content: "line 1\\nline 2\\n", mode: "0640",
           owner: {owner}, group: {group}}}
""",
    )

    def local(name: str, argv: Sequence[str], stdin: str | None) -> CommandResult:
        assert tuple(argv[:3]) == SUDO
        r = run_local(argv[3:], check=False, input=stdin)
        return CommandResult(r.returncode, r.stdout, r.stderr)

    first = playbook.apply_playbooks([pb], [node("n1")], local, Events())
    assert [r.status for r in first] == ["applied"]
    assert target.read_text() == "line 1\nline 2\n"
    assert target.stat().st_mode & 0o7777 == 0o640
    again = playbook.apply_playbooks([pb], [node("n1")], local, Events())
    assert [(r.status, r.detail) for r in again] == [("ok", f"{target} matches")]
