"""One node's fact snapshot: the facts helper's `snapshot` verb, parsed, and the readers over it.

The helper gathers every read-only fact the suite judges in one root process and prints one JSON
document: each helper verb (by verb and arguments), each fixed command (by name) as exit status,
stdout and stderr, and each fixed file as stat (and, for some, contents). Checks read it through
the `snap` fixture with testinfra-shaped accessors (`file(...).mode`, `service(...).is_running`),
so one round trip replaces one per fact. A fact the snapshot does not hold is a FactsError (an
ERROR verdict), never a guess.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

FORMAT = 1


class FactsError(Exception):
    """The facts helper failed: the check cannot reach a verdict."""


@dataclass(frozen=True)
class Part:
    """One command's answer, as the node gave it."""

    rc: int
    stdout: str
    stderr: str
    seconds: float = 0.0


@dataclass(frozen=True)
class FileFact:
    """A path as root sees it: stat (no symlink followed for owner and mode, as `stat -c`) and
    the contents of the few files the snapshot reads."""

    path: str
    exists: bool
    is_directory: bool = False
    user: str = ""
    group: str = ""
    uid: int = -1
    gid: int = -1
    mode: int = 0
    mtime: int = 0
    content: str | None = None
    error: str = ""

    @property
    def present(self) -> bool:
        """lstat found it (a dangling symlink too), as the helper's `exists` and `stat` say."""
        return bool(self.user)

    @property
    def content_string(self) -> str:
        if self.content is None:
            why = self.error or ("absent" if not self.exists else "its contents were not read")
            raise FactsError(f"{self.path}: no contents in the snapshot ({why})")
        return self.content


@dataclass(frozen=True)
class Service:
    """testinfra's Service over the snapshot's `systemctl is-active` / `is-enabled` parts."""

    name: str
    snap: Snapshot

    @property
    def is_running(self) -> bool:
        part = self.snap.run(f"is-active {self.name}")
        return part.rc == 0 and part.stdout.strip() == "active"

    @property
    def is_enabled(self) -> bool:
        part = self.snap.run(f"is-enabled {self.name}")
        return part.rc == 0 or part.stdout.strip() in _ENABLED_STATES


# `systemctl is-enabled` exits 0 for these states, and testinfra counts exit 0 as enabled.
_ENABLED_STATES = frozenset(
    {"enabled", "enabled-runtime", "static", "alias", "indirect", "generated", "transient"}
)


@dataclass(frozen=True)
class Snapshot:
    verbs: dict[str, Part]
    commands: dict[str, Part]
    files: dict[str, FileFact]
    seconds: float = 0.0
    errors: tuple[str, ...] = ()

    def verb(self, *args: str) -> Part | None:
        """The helper verb's answer, or None when the snapshot did not run it."""
        return self.verbs.get(" ".join(args))

    def run(self, name: str) -> Part:
        part = self.commands.get(name)
        if part is None:
            raise FactsError(f"the snapshot has no command {name!r}")
        return part

    def output(self, name: str) -> str:
        """Like testinfra's check_output: stdout without its trailing newline; non-zero fails."""
        part = self.run(name)
        if part.rc != 0:
            raise FactsError(f"{name} exited {part.rc}: {part.stderr.strip()[-300:]}")
        return part.stdout.rstrip("\r\n")

    def file(self, path: str) -> FileFact:
        fact = self.files.get(path)
        if fact is None:
            raise FactsError(f"the snapshot holds no stat of {path}")
        return fact

    def has_file(self, path: str) -> bool:
        return path in self.files

    def service(self, name: str) -> Service:
        return Service(name, self)

    def listening_sockets(self) -> list[str]:
        return parse_listening(self.output("ss-listening"))

    def passwd(self) -> list[list[str]]:
        return [line.split(":") for line in self.output("getent-passwd").splitlines()]


def parse_snapshot(text: str) -> Snapshot:
    """The helper's JSON document; FactsError when it is not one (e.g. an old helper)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FactsError(f"the snapshot is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise FactsError(f"the snapshot is not format {FORMAT}")
    return Snapshot(
        verbs={k: _part(v) for k, v in _section(doc, "verbs").items()},
        commands={k: _part(v) for k, v in _section(doc, "commands").items()},
        files={k: _file(k, v) for k, v in _section(doc, "files").items()},
        seconds=float(doc.get("seconds", 0.0)),
        errors=tuple(str(e) for e in doc.get("errors", ())),
    )


def _section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    section = doc.get(name)
    if not isinstance(section, dict):
        raise FactsError(f"the snapshot has no {name} section")
    return section


def _part(v: dict[str, Any]) -> Part:
    return Part(int(v["rc"]), str(v["stdout"]), str(v["stderr"]), float(v.get("seconds", 0.0)))


def _file(path: str, v: dict[str, Any]) -> FileFact:
    if not v.get("exists") and "user" not in v:
        return FileFact(path, False, error=str(v.get("error", "")))
    content = v.get("content")
    return FileFact(
        path=path,
        exists=bool(v["exists"]),
        is_directory=bool(v.get("is_directory")),
        user=str(v["user"]),
        group=str(v["group"]),
        uid=int(v["uid"]),
        gid=int(v["gid"]),
        mode=int(v["mode"]),
        mtime=int(v.get("mtime", 0)),
        content=None if content is None else str(content),
        error=str(v.get("read_error", "")),
    )


def parse_listening(text: str) -> list[str]:
    """`ss --numeric --listening`, as testinfra's host.socket.get_listening_sockets() reads it:
    "tcp://ADDR:PORT", "udp://ADDR:PORT", "unix://PATH"; `*` is both "::" and "0.0.0.0"."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 6 or fields[0] == "u_dgr":
            continue
        proto, status, local = fields[0], fields[1], fields[4]
        if status not in ("LISTEN", "UNCONN"):
            continue
        if proto == "u_str":
            out.append("unix://" + local)
            continue
        if proto not in ("tcp", "udp"):
            continue
        host, _, port = local.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if host == "*":
            out += [f"{proto}://:::{port}", f"{proto}://0.0.0.0:{port}"]
        else:
            out.append(f"{proto}://{host}:{int(port)}")
    return out
