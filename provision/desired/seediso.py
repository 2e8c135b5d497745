"""The NoCloud seed as an ISO 9660 image (volume label `cidata`), built in memory with pycdlib.

No external tool (genisoimage, cloud-localds) is needed, so the seed is built the same way on any
machine. The image carries the node's private host key: it is written 0600 from the start.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path

import pycdlib

from provision.core import privfs
from provision.desired.seed import Seed

# cloud-init 22.4 (DataSourceNoCloud._get_devices) looks for an iso9660 or vfat device whose
# blkid LABEL is exactly "CIDATA" or "cidata". Lowercase is not an ISO 9660 d-character, but it is
# what cloud-localds (genisoimage -volid cidata) writes, what blkid reports unchanged, and the name
# the design and libvirt XML use, so it is the one we write (in the primary and Joliet descriptors).
LABEL = "cidata"

# Seed file names are plain lowercase words and dashes (user-data, meta-data, network-config).
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def seed_image(files: Mapping[str, bytes | str]) -> bytes:
    """An ISO image holding `files` in its root directory under their exact names (pure).

    Rock Ridge (which Linux's isofs prefers) and Joliet carry the real names; the plain ISO 9660
    names underneath (USER_DATA.;1, ...) are only for readers that understand neither.
    """
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=LABEL, joliet=3, rock_ridge="1.09")
    for name, content in files.items():
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a seed file name: {name!r}")
        data = content.encode() if isinstance(content, str) else content
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            iso_path=f"/{name.upper().replace('-', '_')}.;1",
            rr_name=name,
            joliet_path=f"/{name}",
            file_mode=0o100400,  # regular file, owner read-only: cloud-init reads it as root
        )
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def write_seed(path: Path, seed: Seed) -> Path:
    """Write the seed image to `path`, created 0600 and renamed into place; returns `path`."""
    files = {
        name: value if isinstance(value, str) else value.reveal()
        for name, value in seed.files().items()
    }
    privfs.write_file(path, seed_image(files), 0o600)
    return path
