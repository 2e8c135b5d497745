"""Shared readers over the `snap` and `facts` fixtures: the node state several suite files read.

Each one reads the node's fact snapshot (or, for a path only known at run time, asks the facts
helper) and hands the text to a pure parser in provision.verify.parse. They live outside the
suite so that no suite module imports another.
"""

from __future__ import annotations

import json
from typing import Any

from provision.verify.parse import Mount, Stat, parse_mounts, parse_stat
from provision.verify.plugin import Facts, FactsError
from provision.verify.snapshot import Snapshot


def mounts(snap: Snapshot) -> dict[str, Mount]:
    return parse_mounts(snap.file("/proc/mounts").content_string)


def loaded_modules(snap: Snapshot) -> list[str]:
    """Module names in /proc/modules (`cut -d' ' -f1 /proc/modules`)."""
    return [
        line.split(" ", 1)[0] for line in snap.file("/proc/modules").content_string.splitlines()
    ]


def builtin_module(snap: Snapshot, module: str) -> bool:
    """Whether the running kernel has the module built in (its modules.builtin names it)."""
    text = snap.file(f"/lib/modules/{snap.output('uname-r')}/modules.builtin").content_string
    return any(line.endswith(f"/{module}.ko") for line in text.splitlines())


def installed_packages(snap: Snapshot) -> dict[str, tuple[str, str]]:
    """package -> (dpkg status, version) for the packages the snapshot asks dpkg-query about."""
    out = {}
    for line in snap.run("dpkg").stdout.splitlines():
        fields = line.split("\t")
        if len(fields) == 3:
            out[fields[0]] = (fields[1], fields[2])
    return out


def stat_paths(facts: Facts, *paths: str) -> dict[str, Stat]:
    """Root's `stat` of each path that exists; an absent path is simply not in the result.

    Paths the snapshot stat'ed come from it; any other is asked alone (the helper's `stat`
    fails as a whole when one path is missing).
    """
    out: dict[str, Stat] = {}
    snap = facts.snapshot
    for p in paths:
        if snap.has_file(p):
            f = snap.file(p)
            if f.present:
                out[p] = Stat(p, f.user, f.group, f.mode)
            continue
        try:
            out |= parse_stat(facts("stat", p))
        except FactsError as exc:
            if "No such file or directory" not in str(exc):
                raise
    return out


def numeric_ids(facts: Facts, path: str) -> tuple[int, int] | None:
    """(uid, gid) of a path, or None when the node's helper cannot say.

    `stat` prints names, and ids without a name (subordinate ids: dockremap's, a rootless user's)
    come out as UNKNOWN. The helper verb `stat-ids PATH` prints `%n %u:%g %a` instead.
    """
    if facts.snapshot.has_file(path):
        f = facts.snapshot.file(path)
        return (f.uid, f.gid) if f.present else None
    try:
        st = parse_stat(facts("stat-ids", path)).get(path)
    except FactsError as exc:
        if "unknown verb" in str(exc):
            return None
        raise
    return (int(st.owner), int(st.group)) if st else None


def workload_ids(snap: Snapshot, user: str) -> tuple[int, str]:
    """(uid, home) of the workload user, from the passwd database."""
    entry = [row for row in snap.passwd() if row[0] == user]
    if not entry:
        raise FactsError(f"getent passwd has no {user}")
    return int(entry[0][2]), entry[0][5]


def docker_info(facts: Facts) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(facts("docker-info"))
    return info


def rootless_info(facts: Facts) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(facts("rootless-info"))
    return info
