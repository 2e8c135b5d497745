"""A.14 VM and provisioning hygiene, and HN-SC-05's APT signatures
(provision/verify/suite/check_vm.py)."""

from __future__ import annotations

from typing import Any

from tests.mutations import Edit, both, content, mutation, replace, stat
from tests.mutations.boot import command
from tests.recording import Recording

RSA_PUB = "/etc/ssh/ssh_host_rsa_key.pub ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQDmutation\n"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def file_fact(path: str, fact: dict[str, Any]) -> Edit:
    """Replace a path's whole stat as the snapshot holds it (present <-> absent)."""

    def edit(rec: Recording) -> None:
        rec.file(path)  # the snapshot must already stat it
        rec.doc["files"][path] = fact

    return edit


def extra_host_key(rec: Recording) -> None:
    """An RSA host key next to the pinned ed25519 one (`ssh-keygen -A`, a cloned image)."""
    rec.part("verbs", "host-keys")["stdout"] += RSA_PUB
    rec.replace(
        "commands",
        "ls-etc-ssh",
        "ssh_host_ed25519_key.pub\n",
        "ssh_host_ed25519_key.pub\nssh_host_rsa_key\nssh_host_rsa_key.pub\n",
    )


ROOT_LINK = {
    "exists": True,
    "is_directory": False,
    "is_symlink": True,
    "user": "root",
    "group": "root",
    "uid": 0,
    "gid": 0,
    "mode": 0o777,
    "mtime": 1796119734,
}
ABSENT = {"error": "No such file or directory", "exists": False}
ISO9660 = command("lsblk-fstype", "ext4\niso9660\n")

MUTATIONS = [
    mutation(
        "HN-VM-01",
        "the cidata seed still attached",
        both(file_fact("/dev/disk/by-label/cidata", ROOT_LINK), ISO9660),
    ),
    mutation("HN-VM-01", "an iso9660 disk attached", ISO9660),
    mutation(
        "HN-VM-02", "user-data.txt 0644", stat("/var/lib/cloud/instance/user-data.txt", mode=0o644)
    ),
    mutation(
        "HN-VM-03",
        "host key re-generated",
        replace(
            "verbs", "host-keys", "AAAAC3NzaC1lZDI1NTE5AAAAIGXu", "AAAAC3NzaC1lZDI1NTE5AAAAIXXX"
        ),
        also="HN-SSH-12",
    ),
    mutation(
        "HN-VM-03",
        "an extra RSA host key",
        extra_host_key,
        also="HN-SSH-08",
    ),
    mutation(
        "HN-VM-04",
        "no hardware RNG",
        content("/sys/class/misc/hw_random/rng_current", "virtio_rng.0", "none"),
    ),
    mutation(
        "HN-SC-05",
        "a [trusted=yes] APT source",
        command("apt-trusted", "/etc/apt/sources.list.d/docker.list\n"),
    ),
    mutation("HN-SC-05", "debian-archive-keyring missing", file_fact(KEYRING, ABSENT)),
    mutation(
        "HN-SC-05",
        "no bookworm-security source",
        lambda rec: rec.part("commands", "apt-sources").update(
            stdout="".join(
                line + "\n"
                for line in rec.part("commands", "apt-sources")["stdout"].splitlines()
                if "bookworm-security" not in line
            )
        ),
    ),
    mutation(
        "HN-SC-05",
        "an unsigned bookworm-updates source",
        replace(
            "commands",
            "apt-sources",
            f"deb [signed-by={KEYRING}] http://deb.debian.org/debian bookworm-updates",
            "deb http://deb.debian.org/debian bookworm-updates",
        ),
    ),
]
