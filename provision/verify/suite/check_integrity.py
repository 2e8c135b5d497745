"""HN-FS-11 file integrity: the golden image's own files against the AIDE database made when
the image was built. `aide --check` hashes /usr and /boot, so it runs on a channel of its own,
started with the snapshot (plugin.STARTED_VERBS)."""

from __future__ import annotations

import re

from provision.verify.checks import check
from provision.verify.plugin import Facts, FactsError
from provision.verify.snapshot import Snapshot

AIDE_FIX = (
    "The AIDE database comes with the golden image (`provision image build`): a changed file "
    "below /usr or /boot means the node runs something the image did not ship. Find out what "
    "changed it, then replace the node (`provision up` on a new root overlay)."
)
FS_11 = check(
    "HN-FS-11",
    "Ensure the image's own files are as the image's AIDE database recorded them",
    level="L1",
    severity="high",
    remediation=AIDE_FIX,
)


@FS_11
def test_aide_database(snap: Snapshot) -> None:
    db = snap.file("/var/lib/aide/aide.db")
    assert db.exists, "no AIDE database: the node was not built from an image that has one"
    assert (db.user, db.group) == ("root", "root"), f"aide.db is {db.user}:{db.group}"
    assert not db.mode & 0o077, f"aide.db is {db.mode:o}: others may read what it records"
    conf = snap.file("/etc/aide/aide.conf").content_string
    for top in ("/usr", "/boot"):
        rule = aide_file_rule(conf, top)
        assert rule is not None, f"aide.conf checks no regular file below {top}"
        assert "sha256" in rule, f"{top}'s files are checked without sha256 ({'+'.join(rule)})"


def aide_file_rule(conf: str, top: str) -> list[str] | None:
    """The attributes aide.conf checks for regular files below `top`: its last selection line
    for `top` that applies to files (unrestricted, or restricted to a list holding `f`), with
    named groups expanded once. None when no line selects them."""
    groups: dict[str, list[str]] = {}
    attributes = None
    for line in conf.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) == 3 and words[1] == "=":
            groups[words[0]] = words[2].split("+")
        elif words and words[0] == top and len(words) in (2, 3):
            types = words[1].split(",") if len(words) == 3 else ["f"]
            if "f" in types or "0" in types:
                expanded = [a for part in words[-1].split("+") for a in groups.get(part, [part])]
                attributes = expanded
    return attributes


ENTRY = re.compile(r"^[a-z][^:]*: /")


@FS_11
def test_aide_check(facts: Facts) -> None:
    part = facts.part("aide-check")
    if part.rc >= 14 or part.rc < 0:
        raise FactsError(f"aide --check could not run (exit {part.rc}): {part.stderr[-300:]}")
    # Entry lines are `<type><attribute flags>: <path>` (`f+++...: /usr/bin/x` added).
    changed = [line.split(": ", 1)[1] for line in part.stdout.splitlines() if ENTRY.match(line)]
    assert part.rc == 0, f"aide --check exit {part.rc}: " + (
        "; ".join(changed[:8]) or part.stdout.strip()[-300:]
    )
