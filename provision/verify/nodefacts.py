"""Shared readers over the `host` and `facts` fixtures: the node state several suite files read.

Each one asks the node (testinfra's `host`, or the root-only facts helper) and hands the text to
a pure parser in provision.verify.parse. They live outside the suite so that no suite module
imports another.
"""

from __future__ import annotations

import json
from typing import Any

from testinfra.host import Host

from provision.verify.parse import Mount, Stat, parse_mounts, parse_stat
from provision.verify.plugin import Facts, FactsError


def mounts(host: Host) -> dict[str, Mount]:
    return parse_mounts(host.file("/proc/mounts").content_string)


def stat_paths(facts: Facts, *paths: str) -> dict[str, Stat]:
    """Root's `stat` of each path that exists; an absent path is simply not in the result.

    The helper's `stat` fails as a whole when one path is missing, so each path is asked alone.
    """
    out: dict[str, Stat] = {}
    for p in paths:
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
    try:
        st = parse_stat(facts("stat-ids", path)).get(path)
    except FactsError as exc:
        if "unknown verb" in str(exc):
            return None
        raise
    return (int(st.owner), int(st.group)) if st else None


def workload_ids(host: Host, user: str) -> tuple[int, str]:
    """(uid, home) of the workload user, from the passwd database."""
    entry = host.check_output(f"getent passwd {user}").split(":")
    return int(entry[2]), entry[5]


def docker_info(facts: Facts) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(facts("docker-info"))
    return info


def rootless_info(facts: Facts) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(facts("rootless-info"))
    return info
