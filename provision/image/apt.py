"""Where a golden image's packages come from: its signed APT sources (the suite, -updates and
-security) and, after the build, which of them each installed package came from. Pure
functions; the build (provision/image/image.py) runs mmdebstrap with them.
"""

from __future__ import annotations

import re
from pathlib import Path

from provision.core.errors import ImageError
from provision.core.model import ImageSpec

# The archive keyring every APT source of the image and its nodes is signed by (HN-SC-05).
ARCHIVE_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def mirror_url(spec: ImageSpec) -> str:
    if spec.snapshot:
        return f"http://snapshot.debian.org/archive/debian/{spec.snapshot}"
    return spec.mirror


def security_url(spec: ImageSpec) -> str:
    if spec.snapshot:
        return f"http://snapshot.debian.org/archive/debian-security/{spec.snapshot}"
    return spec.security_mirror or spec.mirror.rstrip("/") + "-security"


def suites(spec: ImageSpec) -> tuple[str, ...]:
    """The suites an image is built from, in APT's order: the release, its point-release
    updates and its security fixes (Lynis PKGS-7388: without -security a node misses every
    OpenSSH, OpenSSL and kernel fix between point releases)."""
    return (spec.suite, f"{spec.suite}-updates", f"{spec.suite}-security")


def sources(spec: ImageSpec) -> tuple[str, ...]:
    """The image's APT sources, one-line format, each signed by the archive keyring: what
    mmdebstrap builds from and writes to the node's /etc/apt/sources.list."""
    release, updates, security = suites(spec)
    signed = f"[signed-by={ARCHIVE_KEYRING}]"
    return (
        f"deb {signed} {mirror_url(spec)} {release} main",
        f"deb {signed} {mirror_url(spec)} {updates} main",
        f"deb {signed} {security_url(spec)} {security} main",
    )


_INDEX_SUITE = re.compile(r"_dists_([^_]+)_main_binary-[a-z0-9]+_Packages$")


def indexes(lists: Path) -> dict[str, str]:
    """suite -> the text of its Packages index, from APT's lists directory in the rootfs."""
    found: dict[str, str] = {}
    for path in sorted(lists.glob("*_Packages")):
        if m := _INDEX_SUITE.search(path.name):
            found[m.group(1)] = found.get(m.group(1), "") + path.read_text(errors="replace")
    if not found:
        raise ImageError(f"no package indexes in {lists}: cannot tell where packages came from")
    return found


def package_origins(
    installed: tuple[tuple[str, str, str], ...], indexes: dict[str, str]
) -> tuple[tuple[str, str], ...]:
    """(package, suite) for every installed package: the suite whose index has exactly the
    installed version, the most specific first (-security, then -updates, then the release),
    so a fix is credited to the archive that shipped it. A package no index has is an error:
    nothing may enter an image from outside its signed sources."""
    versions: dict[str, set[tuple[str, str]]] = {}
    for suite, text in indexes.items():
        pairs = versions.setdefault(suite, set())
        name = ""
        for line in text.splitlines():
            if line.startswith("Package: "):
                name = line[9:].strip()
            elif line.startswith("Version: "):
                pairs.add((name, line[9:].strip()))
    order = sorted(versions, key=lambda s: (not s.endswith("-security"), "-" not in s, s))
    origins: list[tuple[str, str]] = []
    strays: list[str] = []
    for package, version, _arch in installed:
        found = next((s for s in order if (package, version) in versions[s]), None)
        if found is None:
            strays.append(f"{package} {version}")
        else:
            origins.append((package, found))
    if strays:
        raise ImageError(f"installed packages in no source's index: {', '.join(strays)}")
    return tuple(origins)
