"""Issue #15, bad input, property-based: mangled inventories never crash or hang the CLI.

Hypothesis mangles two valid inventories (the shipped local one and a multi-node one) in their
structure (wrong types, missing and unknown keys, bad URIs, duplicated and aliased nodes,
overlapping ssh ports, absurd sizes, trailing newlines and control characters, alias bombs,
recursive aliases, deep nesting) and in their bytes (non-UTF-8, NUL, truncation, duplicated
lines). Each example runs `provision render` in this process, the verb that loads and checks
the inventory and then only renders files into a fresh directory (no libvirt, no network). The
outcome must be one of two: exit 0 (the mutation was still valid), or exit 2 with every line
`file:line:col: key.path: message` and the count last. Anything else, an exception escaping
`main` (what the user would see as a traceback) or an example running past HANG_S, fails.

Reproducible: derandomize=True (examples derive from the test itself, not a random seed) and no
example database. Wall time: about 20 s for the MAX_EXAMPLES of the three tests on this machine.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
import signal
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from provision.cli.main import main
from tests.helpers import LOCAL, ROOT

MAX_EXAMPLES = 200  # per test
HANG_S = 10  # far beyond any example (a valid render takes ~25 ms): only a hang reaches it
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=HANG_S / 2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

STATE = "/nonexistent/provision-fuzz-state"  # read (keys, golden image), never written by render
LOCAL_TEXT = LOCAL.read_text().replace("/var/lib/provision", STATE, 1)
LOCAL_TEXT = LOCAL_TEXT.replace("../playbooks/", f"{ROOT}/playbooks/")
FLEET_TEXT = f"""\
name: fleet
state_dir: {STATE}
image: {{name: bookworm-node, snapshot: 20261101T000000Z}}
hypervisors:
  h1: {{uri: "qemu:///system", pool_path: /var/lib/provision/pool, accel: qemu}}
  h2: {{uri: "test:///default", pool_path: /srv/pool, accel: qemu, require_nvme: false}}
networks:
  lo: {{mode: user}}
  br: {{mode: bridge, bridge: br0, cidr: 10.9.0.0/24, gateway: 10.9.0.1, dns: [10.9.0.2]}}
defaults:
  hypervisor: h1
  network: lo
  docker: rootless
  admin: {{name: ops, managed_key: true}}
  labels: {{owner: team, env: dev}}
  sysctl: {{vm.swappiness: 10}}
groups:
  workers: {{roles: [k8s-worker], docker: rootful, memory_mib: 2048}}
kubernetes:
  install: prerequisites
  namespaces:
    shop:
      sample_workload: true
      allow:
        web: {{pods: {{app: web}}, from_namespaces: [edge], ports: ["8080"]}}
    edge: {{}}
nodes:
  cp1:
    ssh_port: 10022
    roles: [k8s-control-plane]
    waivers: {{HN-SSH-11: "a bastion account is being added"}}
  w1: {{groups: [workers], network: br, address: 10.9.0.5/24, hypervisor: h2}}
  w2:
    groups: [workers]
    ssh_port: 10023
    drift_ignore: {{"file:/etc/motd": "the motd belongs to the team that runs it"}}
"""
BASES = {"local": yaml.safe_load(LOCAL_TEXT), "fleet": yaml.safe_load(FLEET_TEXT)}

SUMMARY = re.compile(r"error: [1-9]\d* problem\(s\) in the inventory")


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` in the code swallows
    it (and none of OSError's: TimeoutError is one)."""


@contextlib.contextmanager
def _bounded(seconds: float) -> Iterator[None]:
    def alarm(_sig: int, _frame: FrameType | None) -> None:
        raise Hang(f"an example ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _check_cli(data: bytes) -> None:
    """`provision render` of the inventory `data`: exit 0, or exit 2 with located lines only."""
    with tempfile.TemporaryDirectory(prefix="pv-fuzz-") as tmp:
        path = Path(tmp) / "inv.yaml"
        path.write_bytes(data)
        err, out = io.StringIO(), io.StringIO()
        with _bounded(HANG_S), contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(["render", "-i", str(path), "-o", f"{tmp}/out"])
    lines = err.getvalue().splitlines()
    event(f"exit {code}")  # `--hypothesis-show-statistics` shows how often each outcome came
    if code == 2 and lines:
        event("syntax" if "YAML" in lines[0] or "UTF-8" in lines[0] else "checked by the tables")
    assert code in (0, 2), (code, lines)
    if code == 0:
        return
    assert lines and SUMMARY.fullmatch(lines[-1]), lines
    located = re.compile(rf"{re.escape(str(path))}:([1-9]\d*):([1-9]\d*): \S.*")
    for line in lines[:-1]:
        assert located.fullmatch(line), (line, lines)
    assert len(lines) - 1 == int(lines[-1].split()[1]), lines  # one line per problem


# --- structural mutations -------------------------------------------------------------------

BAD_STRINGS = [
    "ops\n",
    "a\x00b",
    "x\u2028y",
    "tab\there",
    "",
    " ",
    "~",
    "../../etc/passwd",
    "~nouser-pv-fuzz/key",
    "/dev/zero",
    "qemu+tcp://kvm1/system",
    "qemu+tls://kvm1/system?no_verify=1",
    "qemu://kvm1/system?No_Verify=yes",
    "qemu+ssh://root@kvm1/system",
    "qemu+ssh://root@kvm1:99999/system",
    "qemu+ssh://[::1/system",
    "qemu:///system\n",
    "test:///default",
    "10.9.0.5/24",
    "10.9.0.500/24",
    "k8s-worker",
    "rootful",
    "yes",
    "0644",
    "until 2027-13-01: a reason long enough",
]
ABSURD = [10**15, 2**63, -(2**63), 2**64 + 1, 10**4000, -1, 0, 1, 65536, 1023]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(ABSURD),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(BAD_STRINGS),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(doc: Any) -> list[tuple[Any, ...]]:
    """Every path into the document, each container once: earlier mutations may have made it
    recursive, a bomb or deep."""
    out: list[tuple[Any, ...]] = []
    seen: set[int] = set()
    stack: list[tuple[tuple[Any, ...], Any]] = [((), doc)]
    while stack:
        path, value = stack.pop()
        out.append(path)
        if id(value) in seen or len(path) > 8:
            continue
        if isinstance(value, dict | list):
            seen.add(id(value))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack += [((*path, k), v) for k, v in items]
    return sorted(out, key=lambda p: (len(p), [str(x) for x in p]))


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _laughs(levels: int) -> list[Any]:
    bomb: list[Any] = ["lol"] * 9
    for _ in range(levels):
        bomb = [bomb] * 9  # one list, nine times: safe_dump writes an anchor and aliases
    return bomb


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


ACTIONS = (
    "set",
    "delete",
    "unknown",
    "newline",
    "copy-node",
    "alias-node",
    "same-port",
    "bomb",
    "recursive",
    "deep",
)


@st.composite
def mangled(draw: st.DrawFn, base: str) -> bytes:
    doc = copy.deepcopy(BASES[base])
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(ACTIONS))
        path = draw(st.sampled_from(_paths(doc)))
        parent, key = (_at(doc, path[:-1]), path[-1]) if path else (None, None)
        nodes = doc.get("nodes") if isinstance(doc, dict) else None
        names = list(nodes) if isinstance(nodes, dict) else []
        if action == "set" and parent is None:
            doc = draw(VALUES)  # the whole document: a scalar, a list, another mapping
        elif action == "set":
            parent[key] = draw(VALUES)
        elif action == "delete" and isinstance(parent, dict):
            del parent[key]
        elif action == "unknown" and isinstance(_at(doc, path), dict):
            _at(doc, path)[draw(st.text(max_size=10))] = draw(SCALARS)
        elif action == "newline" and parent is not None and isinstance(parent[key], str):
            parent[key] += draw(st.sampled_from(["\n", "\x00", "\r", "\x85", " \n"]))
        elif action in ("copy-node", "alias-node") and names and isinstance(nodes, dict):
            node = nodes[draw(st.sampled_from(names))]
            nodes[draw(st.text(min_size=1, max_size=8))] = (
                copy.deepcopy(node) if action == "copy-node" else node
            )
        elif action == "same-port" and len(names) > 1 and isinstance(nodes, dict):
            a, b = draw(st.permutations(names))[:2]
            if isinstance(nodes[a], dict) and isinstance(nodes[b], dict):
                nodes[b]["ssh_port"] = nodes[a].get("ssh_port", 10022)
        elif action == "bomb" and parent is not None:
            parent[key] = _laughs(draw(st.integers(2, 9)))
        elif action == "recursive" and parent is not None:
            loop: list[Any] = []
            loop.append(loop)
            parent[key] = loop
        elif action == "deep" and parent is not None:
            parent[key] = _nested(draw(st.integers(10, 150)))
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=draw(st.booleans()))
    return text.encode("utf-8")


@FUZZ
@given(mangled("local"))
def test_mangled_local_inventory_gives_exit_0_or_located_errors(data: bytes) -> None:
    _check_cli(data)


@FUZZ
@given(mangled("fleet"))
def test_mangled_fleet_inventory_gives_exit_0_or_located_errors(data: bytes) -> None:
    _check_cli(data)


# --- byte mutations: what no YAML dumper writes -----------------------------------------------

NOISE = [b"\xff", b"\xc3", b"\xe9", b"\x00", b"\x85", b"\t", b"\r", b"&a ", b"*a ", b"*nope", b": "]
NOISE += [b"- ", b"{", b"]", b"'", b'"', b"!!binary ", b"!foo ", b"? ", b"---\n", b"%YAML 1.1\n"]
NOISE += [b"!!bool ", b"!!timestamp ", b"!!int ", b"!!float ", b"!!str ", b"!!set ", b"!!omap "]
NOISE += [b"\n", b"<<: *a\n", b"\xef\xbb\xbf", b"\xe2\x80\xa8", "é".encode(), b"9" * 5000]


@st.composite
def scrambled(draw: st.DrawFn) -> bytes:
    data = (LOCAL_TEXT if draw(st.booleans()) else FLEET_TEXT).encode()
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        lines = data.splitlines(keepends=True)
        hows = ["insert", "replace", "truncate", "line-twice", "bytes", "before-value"]
        how = draw(st.sampled_from(hows))
        if how == "insert":
            data = data[:at] + draw(st.sampled_from(NOISE)) + data[at:]
        elif how == "replace":
            data = data[:at] + draw(st.sampled_from(NOISE)) + data[at + 1 :]
        elif how == "truncate":
            data = data[:at]
        elif how == "line-twice" and lines:  # a duplicated key: a node or hypervisor named twice
            i = draw(st.integers(0, len(lines) - 1))
            data = b"".join([*lines[: i + 1], lines[i], *lines[i + 1 :]])
        elif how == "before-value" and b": " in data:  # a tag, an alias or a byte on a value
            at = [i + 2 for i in range(len(data)) if data.startswith(b": ", i)]
            i = draw(st.sampled_from(at))
            data = data[:i] + draw(st.sampled_from(NOISE)) + data[i:]
        elif how == "bytes":
            data = data[:at] + draw(st.binary(max_size=6)) + data[at:]
    return data


@FUZZ
@given(scrambled())
def test_scrambled_bytes_give_exit_0_or_located_errors(data: bytes) -> None:
    _check_cli(data)


def test_the_bases_are_valid() -> None:
    """The mutations start from inventories that load and render (exit 0)."""
    for text in (LOCAL_TEXT, FLEET_TEXT):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "inv.yaml"
            path.write_text(text)
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                assert main(["render", "-i", str(path), "-o", f"{tmp}/out"]) == 0
