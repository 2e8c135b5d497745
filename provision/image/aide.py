"""AIDE's database of a golden image's own files (HN-FS-11), made when the image is built."""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

from provision.boundary.process import run

CONF = "etc/aide/aide.conf"  # in the rootfs; the text is aide.conf beside this module
DB = "var/lib/aide/aide.db"


def conf() -> str:
    return (resources.files("provision.image") / "aide.conf").read_text(encoding="utf-8")


def initialise(rootfs: Path, env: dict[str, str]) -> str:
    """Write the configuration and initialise the database in the finished tree (after
    mmdebstrap's cleanup, which removes policy-rc.d and restores start-stop-daemon); the
    database is root's alone. Returns its sha256, which goes into the manifest."""
    (rootfs / CONF).write_text(conf())
    os.chmod(rootfs / CONF, 0o644)
    run(["chroot", rootfs, "aide", "--init", f"--config=/{CONF}"], env=env, timeout=1800)
    os.replace(rootfs / f"{DB}.new", rootfs / DB)
    os.chmod(rootfs / DB, 0o600)
    return hashlib.sha256((rootfs / DB).read_bytes()).hexdigest()
