"""HN-FS-09: filesystem, protocol and storage-bus modules nobody on a node needs cannot load."""

from __future__ import annotations

import pytest

from provision.verify.checks import check
from provision.verify.nodefacts import builtin_module, loaded_modules
from provision.verify.parse import install_commands
from provision.verify.snapshot import Snapshot
from provision.verify.suite.check_filesystem import REPROVISION

# DEVSEC os-10 / OSH os_unused_filesystems, plus the protocols. vfat only without EFI firmware.
# Written out from the catalogue on purpose, not imported from hardening.BLACKLISTED_MODULES:
# a module dropped from the renderer's list must fail here, not silently shrink the check.
UNUSED_MODULES = (
    "cramfs",
    "freevxfs",
    "jffs2",
    "hfs",
    "hfsplus",
    "squashfs",
    "udf",
    "vfat",
    "dccp",
    "rds",
    "sctp",
    "tipc",
    "usb-storage",
    "firewire-core",
)


@check(
    "HN-FS-09",
    "Ensure unused filesystem and protocol modules cannot be loaded",
    level="L1",
    severity="low",
    remediation=(
        "Add `install <module> /bin/true` and `blacklist <module>` to "
        "/etc/modprobe.d/provision-blacklist.conf (cloudinit/modprobe-blacklist.conf.j2, list "
        "in provision/baseline/hardening.py BLACKLISTED_MODULES) and `rmmod` it. " + REPROVISION
    ),
)
@pytest.mark.parametrize("module", UNUSED_MODULES)
def test_module_disabled(snap: Snapshot, module: str) -> None:
    if module == "vfat" and snap.file("/sys/firmware/efi").exists:
        pytest.skip("N/A: EFI firmware boots from a vfat partition")
    loaded = loaded_modules(snap)
    assert module not in loaded, f"{module} is loaded"
    builtin = builtin_module(snap, module)
    assert not builtin, f"{module} is built into the kernel: no install line can disable it"
    out = snap.run(f"modprobe {module}")  # `/sbin/modprobe -n -v MODULE`
    commands = install_commands(out.stdout)
    assert any(c in ("/bin/false", "/bin/true") for c in commands), (
        f"`modprobe -n -v {module}` would {'run ' + '; '.join(commands) if commands else 'load it'}"
        f" ({(out.stdout + out.stderr).strip() or 'no output'}), expected install /bin/true"
    )
