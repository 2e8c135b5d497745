"""Playbooks: post-boot steps as data, parsed, planned and applied through a caller's runner.

Each step pairs a read-only check with an apply that runs only when the check fails, so `plan` can
say what would run and a second `up` changes nothing. This module never opens a connection: the
caller passes a `Run` (converge.postboot adapts `ssh.Session.run`), which keeps it pure and
testable.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from provision.config.settings import NAME, USER
from provision.config.table import Kind, Parser, Setting, Table, closest, type_name
from provision.config.yamlsrc import Loc, Value
from provision.config.yamlsrc import load as load_yaml
from provision.core.errors import ConfigError, Problem, ProvisionError
from provision.core.model import Node, Role


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


Run = Callable[[str, Sequence[str], str | None], CommandResult]  # node name, argv, stdin text
Emit = Callable[[str, str, str, str], None]  # node, "playbook/step", Progress, detail


@dataclass(frozen=True)
class Selector:
    """The nodes a step runs on: by role or by name; neither means every node."""

    roles: tuple[Role, ...] = ()
    nodes: tuple[str, ...] = ()
    node_locs: tuple[Loc, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class RunAction:
    check: tuple[str, ...]
    apply: tuple[str, ...]
    sudo: bool


@dataclass(frozen=True)
class PutAction:
    path: str
    content: str = field(repr=False)  # may be sensitive: kept out of reprs, logs and errors
    mode: str  # octal, e.g. "0644"
    owner: str
    group: str


@dataclass(frozen=True)
class WaitAction:
    until: tuple[str, ...]
    timeout_s: int
    interval_s: int
    sudo: bool


Action = RunAction | PutAction | WaitAction


@dataclass(frozen=True)
class Step:
    name: str
    selector: Selector
    action: Action


@dataclass(frozen=True)
class Playbook:
    name: str  # the file's stem
    source: Path
    steps: tuple[Step, ...]


# ok: the check passes; apply: it fails, apply would run; pending: the node is not up, checked
# after first boot; wait: polled during apply only.
Status = Literal["ok", "apply", "pending", "wait"]
Progress = Literal["start", "ok", "applied", "fail"]
Sleep = Callable[[float], None]
Clock = Callable[[], float]


@dataclass(frozen=True)
class StepPlan:
    playbook: str
    step: str
    node: str
    status: Status
    detail: str


@dataclass(frozen=True)
class StepResult:
    playbook: str
    step: str
    node: str
    status: Progress  # ok or applied: a failure raises
    detail: str


class PlaybookError(ProvisionError):
    """A step's apply failed or left its check failing, or a wait timed out."""

    def __init__(
        self, playbook: str, step: str, node: str, what: str, returncode: int, tail: Sequence[str]
    ) -> None:
        self.playbook, self.step, self.node = playbook, step, node
        self.returncode, self.tail = returncode, tuple(tail)
        lines = "".join(f"\n  {line}" for line in self.tail)
        super().__init__(f"playbook {playbook}, step {step}, node {node}: {what}{lines}")


# --- parsing: one table per mapping, in the settings engine (config.table) ---------------------


def _text(regex: str, expected: str) -> Parser:
    """A string the whole of which matches, or one message saying what was expected."""

    def parse(value: Value, path: str, problems: list[Problem]) -> str | None:
        if isinstance(value.data, str) and re.fullmatch(regex, value.data):
            return value.data
        got = type_name(value.data)
        problems.append(value.loc.problem(path, f"expected {expected}, got {got}"))
        return None

    return parse


def _argv(value: Value, path: str, problems: list[Problem]) -> tuple[str, ...] | None:
    if not value.is_list or not value.data:
        got = "an empty list" if value.is_list else type_name(value.data)
        message = f"expected a list of arguments, e.g. [test, -f, /etc/motd], got {got}"
        problems.append(value.loc.problem(path, message))
        return None
    before = len(problems)
    for i, item in enumerate(value.data):
        if not isinstance(item.data, str):
            # Never convert: an unquoted 0644 has already become 420 by now.
            got = type_name(item.data)
            problems.append(item.loc.problem(f"{path}[{i}]", f"expected a string, got {got}"))
        elif i == 0 and (not item.data or any(c.isspace() for c in item.data)):
            message = f"{item.data!r} is not a program: one list item per argument, no shell"
            problems.append(item.loc.problem(f"{path}[0]", message))
    return tuple(v.data for v in value.data) if len(problems) == before else None


def _selector(value: Value, path: str, problems: list[Problem]) -> Selector | None:
    parsed = SELECTOR.parse(value, path, problems)
    if parsed.built is None:
        return None
    given = [k for k in ("roles", "nodes") if k in value.data]
    if len(given) != 1:
        problems.append(value.loc.problem(path, "give exactly one of roles or nodes"))
        return None
    key = given[0]
    if not parsed.values[key]:
        message = "empty list: omit `on` to run on every node"
        problems.append(value.data[key].loc.problem(f"{path}.{key}", message))
        return None
    if key == "nodes":  # where each name was, for check_against
        locs = tuple(i.loc for i in value.data["nodes"].data)
        return replace(parsed.built, node_locs=locs)
    return parsed.built


SUDO = Setting("sudo", Kind.BOOL, "Run as `sudo -n -- ARGV`.", True)
ARGV = "An argv list, never a shell string."
SELECTOR = Table(
    Selector,
    Setting("roles", Kind.ENUM_LIST, "Nodes with any of these roles.", (), enum=Role),
    Setting(
        "nodes",
        Kind.LIST,
        "These nodes, by name.",
        (),
        # Checked as a list of `node`: the message says "'X' is not a valid node".
        parse=Setting("node", Kind.LIST, "A node name.", pattern=NAME).check,
    ),
)
RUN = Table(
    RunAction,
    Setting("check", Kind.LIST, f"Exit 0: done. {ARGV}", parse=_argv),
    Setting(
        "apply",
        Kind.LIST,
        f"Runs when the check fails; then the check must pass. {ARGV}",
        parse=_argv,
    ),
    SUDO,
)
MODE = 'an octal mode string like "0644" (quoted: YAML reads 0644 as the number 420)'
PUT = Table(
    PutAction,
    Setting(
        "path",
        Kind.STR,
        "Absolute path of the file; its directory must exist.",
        parse=_text(r"/[^\x00-\x1f]*[^/\x00-\x1f]", "an absolute file path"),
    ),
    Setting(
        "content",
        Kind.STR,
        "The file's content: never logged or shown in errors.",
        multiline=True,  # a file: the one setting that is text of many lines
    ),
    Setting("mode", Kind.STR, "Octal mode, quoted.", "0644", parse=_text(r"[0-7]{3,4}", MODE)),
    Setting("owner", Kind.STR, "Owner of the file.", "root", pattern=USER),
    Setting("group", Kind.STR, "Group of the file.", "root", pattern=USER),
)
WAIT = Table(
    WaitAction,
    Setting("until", Kind.LIST, f"Ready when it exits 0. {ARGV}", parse=_argv),
    Setting("timeout_s", Kind.INT, "Fail after this long.", 300, minimum=1, maximum=86400),
    Setting("interval_s", Kind.INT, "Between two tries.", 5, minimum=1, maximum=3600),
    SUDO,
)
ACTIONS: dict[str, Table[Any]] = {"run": RUN, "put": PUT, "wait": WAIT}
STEP: Table[dict[str, Any]] = Table(
    dict,  # a Step takes exactly one of the actions: _step builds it
    Setting("name", Kind.STR, "Unique in the file.", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$"),
    Setting("on", Kind.SECTION, "The nodes: every node when omitted.", Selector(), parse=_selector),
    *(Setting(k, Kind.SECTION, f"A {k} step.", None, table=t) for k, t in ACTIONS.items()),
)


def _step(value: Value, path: str, problems: list[Problem]) -> Step | None:
    parsed = STEP.parse(value, path, problems)
    kinds = [k for k in ACTIONS if value.is_map and k in value.data]
    if value.is_map and len(kinds) != 1:
        got = f" (got {', '.join(kinds)})" if kinds else ""
        problems.append(value.loc.problem(path, f"needs exactly one of run, put, wait{got}"))
        return None
    v = parsed.built
    return None if v is None else Step(v["name"], v["on"], v[kinds[0]])


def _steps(value: Value, path: str, problems: list[Problem]) -> tuple[Step, ...] | None:
    if not value.is_list or not value.data:
        got = "an empty list" if value.is_list else type_name(value.data)
        problems.append(value.loc.problem(path, f"expected a list of steps, got {got}"))
        return None
    steps = [_step(v, f"{path}[{i}]", problems) for i, v in enumerate(value.data)]
    first: dict[str, Loc] = {}
    for i, item in enumerate(value.data):
        name = item.data.get("name") if item.is_map else None
        if name is None or not isinstance(name.data, str):
            continue
        if name.data in first:
            message = f"duplicate step name {name.data!r} (first at line {first[name.data].line})"
            problems.append(name.loc.problem(f"{path}[{i}].name", message))
        first.setdefault(name.data, name.loc)
    return None if None in steps else tuple(s for s in steps if s is not None)


PLAYBOOK = Table(Playbook, Setting("steps", Kind.LIST, "The steps, in order.", parse=_steps))


def load(path: Path) -> Playbook:
    """Load and check one playbook; raise ConfigError listing every problem."""
    problems: list[Problem] = []
    parsed = PLAYBOOK.parse(load_yaml(path), "", problems, name=path.stem, source=path)
    if parsed.built is None:
        raise ConfigError(problems)
    return parsed.built


def load_all(paths: Iterable[Path]) -> tuple[Playbook, ...]:
    """The inventory's playbooks in order; one ConfigError with the problems of every file."""
    playbooks, problems = [], []
    for path in paths:
        try:
            playbooks.append(load(path))
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return tuple(playbooks)


def targets(step: Step, nodes: Sequence[Node]) -> tuple[Node, ...]:
    sel = step.selector
    if sel.nodes:
        return tuple(n for n in nodes if n.name in sel.nodes)
    if sel.roles:
        return tuple(n for n in nodes if set(n.roles) & set(sel.roles))
    return tuple(nodes)


def check_against(playbooks: Iterable[Playbook], node_names: Iterable[str]) -> list[str]:
    """Located problems for selectors naming nodes the inventory does not have."""
    known, out = set(node_names), []
    for pb in playbooks:
        for i, step in enumerate(pb.steps):
            sel = step.selector
            locs = sel.node_locs or (Loc(str(pb.source), 0, 0),) * len(sel.nodes)
            for j, (name, loc) in enumerate(zip(sel.nodes, locs, strict=True)):
                if name not in known:
                    message = f"no node {name!r} in the inventory{closest(name, known)}"
                    out.append(str(loc.problem(f"steps[{i}].on.nodes[{j}]", message)))
    return out


# --- facts (read, parsed by pure functions) and operations (only when a fact says so) ------------


def _sudo(argv: Sequence[str], sudo: bool = True) -> tuple[str, ...]:
    return ("sudo", "-n", "--", *argv) if sudo else tuple(argv)


def stat_argv(path: str) -> tuple[str, ...]:
    return _sudo(["stat", "-c", "%a %U %G", "--", path])


def sha_argv(path: str) -> tuple[str, ...]:
    return _sudo(["sha256sum", "--", path])


def install_argv(put: PutAction) -> tuple[str, ...]:
    # The content goes through stdin (a pipe under sshd), never into an argv, and install creates
    # the file 0600 before chown/chmod. -T: a directory at `path` is an error, not a target.
    argv = ["install", "-T", "-m", put.mode, "-o", put.owner, "-g", put.group]
    return _sudo([*argv, "--", "/dev/stdin", put.path])


def put_differs(put: PutAction, stat: CommandResult, sha: CommandResult | None) -> str:
    """How the node's file differs from the wanted one ("" if not), from stat_argv and sha_argv."""
    if stat.returncode != 0:
        return f"{put.path} is missing or unreadable"
    m = re.fullmatch(r"([0-7]{3,4}) (\S+) (\S+)", stat.stdout.strip())
    if m is None:
        return f"unexpected stat output {stat.stdout.strip()!r}"
    diffs = [f"mode {m[1]} (want {put.mode})"] if int(m[1], 8) != int(put.mode, 8) else []
    wanted = (("owner", m[2], put.owner), ("group", m[3], put.group))
    diffs += [f"{what} {got} (want {want})" for what, got, want in wanted if got != want]
    # sha256sum starts the line with a backslash when it had to escape the file name.
    digest = sha.stdout.split(maxsplit=1)[0].lstrip("\\") if sha and sha.stdout.strip() else ""
    if sha is None or sha.returncode != 0 or digest != _sha256(put.content):
        diffs.append("content differs")
    return ", ".join(diffs)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()  # ssh.Session.run sends stdin as UTF-8


def _check(action: RunAction | PutAction, node: str, run: Run) -> tuple[bool, str, CommandResult]:
    """(done, what was found, the last command's result)"""
    if isinstance(action, RunAction):
        argv = _sudo(action.check, action.sudo)
        r = run(node, argv, None)
        return r.returncode == 0, f"{shlex.join(argv)} exited {r.returncode}", r
    stat = run(node, stat_argv(action.path), None)
    sha = run(node, sha_argv(action.path), None) if stat.returncode == 0 else None
    differs = put_differs(action, stat, sha)
    # stat's result, not sha256sum's: a digest of the content could be guessed back from an error.
    return not differs, differs or f"{action.path} matches", stat


def _tail(r: CommandResult) -> list[str]:
    return (r.stderr.strip() or r.stdout.strip()).splitlines()[-5:]


def describe(action: Action) -> str:
    """One line naming what a step does; never a put's content."""
    if isinstance(action, RunAction):
        return f"run {shlex.join(action.apply)}"
    if isinstance(action, PutAction):
        return f"put {action.path} ({action.mode} {action.owner}:{action.group})"
    return f"wait until {shlex.join(action.until)} (timeout {action.timeout_s}s)"


def plan_steps(
    playbooks: Sequence[Playbook], nodes: Sequence[Node], run: Run | None, reachable: set[str]
) -> list[StepPlan]:
    """What apply would do, running checks only. A check sees the node as it is now, so a step
    that depends on an earlier step's apply shows `apply` until that step has run."""
    plans = []
    for pb in playbooks:
        for step in pb.steps:
            for node in targets(step, nodes):
                action = step.action
                status: Status
                if isinstance(action, WaitAction):
                    status, detail = "wait", describe(action)
                elif run is None or node.name not in reachable:
                    status, detail = "pending", "node not up: checked after first boot"
                else:
                    done, detail, _ = _check(action, node.name, run)
                    status = "ok" if done else "apply"
                plans.append(StepPlan(pb.name, step.name, node.name, status, detail))
    return plans


class _Failed(Exception):
    """(what, returncode, tail) of a failed step, before it is named for the user."""


def apply_playbooks(
    playbooks: Sequence[Playbook],
    nodes: Sequence[Node],
    run: Run,
    emit: Emit,
    *,
    sleep: Sleep = time.sleep,
    clock: Clock = time.monotonic,
) -> list[StepResult]:
    """Run each step on all its nodes before the next step starts: that ordering is what puts a
    control plane before its workers. Raise PlaybookError at the first failure."""
    results = []
    for pb in playbooks:
        for step in pb.steps:
            for node in targets(step, nodes):
                label = f"{pb.name}/{step.name}"
                emit(node.name, label, "start", describe(step.action))
                try:
                    if isinstance(step.action, WaitAction):
                        status, detail = _wait(step.action, node.name, run, sleep, clock)
                    else:
                        status, detail = _converge(step.action, node.name, run)
                except _Failed as exc:
                    error = PlaybookError(pb.name, step.name, node.name, *exc.args)
                    emit(node.name, label, "fail", error.message)
                    raise error from None
                emit(node.name, label, status, detail)
                results.append(StepResult(pb.name, step.name, node.name, status, detail))
    return results


def _converge(action: RunAction | PutAction, node: str, run: Run) -> tuple[Progress, str]:
    done, found, _ = _check(action, node, run)
    if done:
        return "ok", found
    if isinstance(action, RunAction):
        argv, stdin = _sudo(action.apply, action.sudo), None
    else:
        argv, stdin = install_argv(action), action.content
    r = run(node, argv, stdin)
    if r.returncode != 0:
        raise _Failed(f"apply exited {r.returncode}: {shlex.join(argv)}", r.returncode, _tail(r))
    done, after, last = _check(action, node, run)
    if not done:
        # An apply that "succeeds" without reaching the checked state would run on every `up`.
        what = f"the check still fails after apply: {after}"
        raise _Failed(what, last.returncode, _tail(last) or _tail(r))
    return "applied", found


def _wait(
    action: WaitAction, node: str, run: Run, sleep: Sleep, clock: Clock
) -> tuple[Progress, str]:
    argv = _sudo(action.until, action.sudo)
    start = clock()
    while True:
        r = run(node, argv, None)
        waited = clock() - start
        if r.returncode == 0:
            return "ok", f"ready after {waited:.0f}s"
        if waited >= action.timeout_s:
            what = f"not ready after {action.timeout_s}s: {shlex.join(argv)} exited {r.returncode}"
            raise _Failed(what, r.returncode, _tail(r))
        sleep(min(action.interval_s, action.timeout_s - waited))
