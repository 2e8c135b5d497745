"""A.14 VM and provisioning hygiene, seen from inside the node; A.13's package provenance."""

from __future__ import annotations

import pytest

from provision.verify.checks import check
from provision.verify.plugin import Facts, Profile
from provision.verify.snapshot import FactsError, Snapshot


@check(
    "HN-VM-01",
    "Ensure the NoCloud seed is gone after first boot",
    level="L1",
    severity="crit",
    remediation="`provision up` detaches and deletes the seed after first boot; re-run it.",
)
def test_seed_detached(snap: Snapshot) -> None:
    assert not snap.file("/dev/disk/by-label/cidata").exists, "a cidata disk is still attached"
    fstypes = str(snap.output("lsblk-fstype")).split()
    assert "iso9660" not in fstypes, "an iso9660 disk is still attached"


@check(
    "HN-VM-02",
    "Ensure cloud-init's copies of user-data are root-only",
    level="L1",
    severity="high",
    remediation="chmod 0600 the files listed (cloud-init writes them 0600 itself).",
)
@pytest.mark.parametrize(
    "path",
    ["/var/lib/cloud/instance/user-data.txt", "/run/cloud-init/instance-data-sensitive.json"],
)
def test_user_data_private(snap: Snapshot, path: str) -> None:
    f = snap.file(path)
    if not f.exists:
        pytest.skip(f"N/A: {path} does not exist on this node")
    assert f.user == "root", f"{path} is owned by {f.user}"
    assert f.mode & 0o077 == 0, f"{path} is {f.mode:o}: readable beyond root"


@check(
    "HN-VM-03",
    "Ensure the host key is fresh per node: one ed25519 key, the provisioner's pinned one",
    level="L1",
    severity="crit",
    remediation="Host keys come from the seed and are pinned; a different or extra key means "
    "the node was cloned or re-keyed: re-provision it.",
)
def test_fresh_host_key(facts: Facts, node: Profile) -> None:
    keys = facts.host_keys()
    assert sorted(keys) == ["/etc/ssh/ssh_host_ed25519_key.pub"], f"host keys: {sorted(keys)}"
    assert keys["/etc/ssh/ssh_host_ed25519_key.pub"] == node.host_key, (
        "the host key is not the one the provisioner generated"
    )


@check(
    "HN-VM-04",
    "Ensure early entropy from virtio-rng",
    level="L1",
    severity="med",
    remediation="The domain XML carries a virtio-rng device (provision/domain.py).",
)
def test_virtio_rng(snap: Snapshot) -> None:
    current = snap.file("/sys/class/misc/hw_random/rng_current")
    assert current.exists, "no hardware RNG device"
    name = str(current.content_string).strip()
    assert name.startswith("virtio_rng"), f"hardware RNG is {name!r}, not virtio-rng"


SC_05 = check(
    "HN-SC-05",
    "Ensure the APT sources cover the release, -updates and -security, all signed",
    level="L1",
    severity="high",
    remediation="Reference the archive keyring with signed-by on every source and list the "
    "release's -updates and -security suites (the golden image's sources.list does). Updates "
    "arrive as golden-image rebuilds and rollouts, not apt on nodes.",
)


@SC_05
def test_apt_sources_signed(snap: Snapshot) -> None:
    found = snap.run("apt-trusted")  # grep: 0 found, 1 none, 2 could not read
    if found.rc not in (0, 1):
        raise FactsError(f"grep of /etc/apt exited {found.rc}: {found.stderr.strip()[-300:]}")
    trusted = found.stdout.split()
    assert not trusted, f"unsigned APT sources: {trusted}"
    assert snap.file("/usr/share/keyrings/debian-archive-keyring.gpg").exists, (
        "debian-archive-keyring is missing: nothing can verify the archive"
    )


def apt_sources(text: str) -> list[tuple[str, str, str]]:
    """(file, suite, signed-by) of every APT source in `grep -rH '' /etc/apt/sources.list*`
    output: one-line `deb [opts] URI SUITE COMPONENTS...` entries and deb822 stanzas."""
    out: list[tuple[str, str, str]] = []
    stanzas: dict[tuple[str, int], dict[str, str]] = {}
    counters: dict[str, int] = {}
    for row in text.splitlines():
        path, _, line = row.partition(":")
        body = line.split("#", 1)[0].strip()
        if path.endswith(".sources"):
            if not body:
                counters[path] = counters.get(path, 0) + 1
                continue
            key, _, value = body.partition(":")
            stanzas.setdefault((path, counters.get(path, 0)), {})[key.strip().lower()] = value
            continue
        words = body.split()
        if not words or words[0] != "deb":
            continue
        opts = ""
        if len(words) > 1 and words[1].startswith("["):
            end = next(i for i, w in enumerate(words) if w.endswith("]"))
            opts, words = " ".join(words[1 : end + 1]).strip("[]"), [words[0], *words[end + 1 :]]
        signed = next((o.split("=", 1)[1] for o in opts.split() if o.startswith("signed-by=")), "")
        if len(words) >= 3:
            out.append((path, words[2], signed))
    for (path, _), fields in stanzas.items():
        if "deb" in fields.get("types", "").split():
            for suite in fields.get("suites", "").split():
                out.append((path, suite, fields.get("signed-by", "").strip()))
    return out


@SC_05
def test_apt_sources_cover_security(snap: Snapshot) -> None:
    part = snap.run("apt-sources")  # grep: 0 found, 1 nothing, 2 an unreadable file
    if part.rc not in (0, 1):
        raise FactsError(f"grep of the APT sources exited {part.rc}: {part.stderr[-300:]}")
    sources = apt_sources(part.stdout)
    assert sources, "no APT source at all"
    unsigned = [f"{path}: {suite}" for path, suite, signed in sources if not signed]
    assert not unsigned, f"APT sources without signed-by: {unsigned}"
    suites = {suite for _, suite, _ in sources}
    releases = {s for s in suites if "-" not in s and "/" not in s}
    assert releases, f"no release suite among {sorted(suites)}"
    wanted = {f"{r}{tail}" for r in releases for tail in ("-updates", "-security")}
    missing = sorted(wanted - suites)
    assert not missing, f"no APT source for {missing}: the node would miss their fixes"
