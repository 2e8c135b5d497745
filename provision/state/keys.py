"""The inventory's persistent keys under state_dir: node host keys, the managed operator key and
the verifier key, in 0700 directories as 0600 files.

Only the verbs that create nodes create keys (`up`); `render`, `plan` and the read-only verbs load
what exists and show a placeholder for the rest, so looking never changes state.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from provision.core import privfs
from provision.core.secret import Secret
from provision.desired.hostkeys import KeyPair, generate, public_of

PLACEHOLDER_COMMENT = "placeholder-no-key-yet"


def load(path: Path) -> KeyPair | None:
    """The key pair at `path` (+ `.pub`), or None if it was never created.

    A key decides who is authorised (`NOPASSWD:ALL` for the admin key) and whose host key is
    believed, so it is used only if nobody else could have written or read it (core.privfs), and
    its public half is derived from the private key: a `.pub` that does not match is refused.
    """
    if not privfs.check_dir(path.parent):
        return None
    raw = privfs.read_file(path, secret=True)
    pub_path = path.with_name(path.name + ".pub")
    pub = privfs.read_file(pub_path, secret=False)
    if raw is None or pub is None:
        return None
    private = Secret(raw.decode("utf-8", "replace"))
    public = pub.decode("utf-8", "replace").strip()
    try:
        derived = public_of(private)
    except ValueError as exc:
        raise privfs.UnsafePathError(
            f"{path} is not an OpenSSH ed25519 private key: {exc}",
            hint="restore it from a backup, or remove it and the .pub so provision makes a new "
            "one (a new host key must be re-pinned; a new admin key re-authorised)",
        ) from None
    if public.split()[:2] != derived.split()[:2]:
        raise privfs.UnsafePathError(
            f"{pub_path} does not hold the public half of {path}",
            hint="someone changed one of them: restore both, or remove both so provision makes "
            "a new pair",
        )
    return KeyPair(private, public)


def load_or_create(path: Path, comment: str) -> KeyPair:
    """The key pair at `path` (+ `.pub`), creating it owner-only if absent."""
    privfs.ensure_dir(path.parent)
    pair = load(path)
    if pair is not None:
        return pair
    pair = generate(comment)
    privfs.write_file(path, pair.private.reveal().encode(), 0o600)
    privfs.write_file(path.with_name(path.name + ".pub"), (pair.public + "\n").encode(), 0o644)
    return pair


def placeholder() -> KeyPair:
    """Stands in for a key not created yet. The public half is well-formed (fingerprints and
    known_hosts lines render) but a hash, not a point anyone holds the private key of, and the
    private half is a comment, so a rendered placeholder can never authenticate anything."""
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"
    blob += hashlib.sha256(b"provision: no key created yet").digest()
    public = f"ssh-ed25519 {base64.b64encode(blob).decode()} {PLACEHOLDER_COMMENT}"
    return KeyPair(Secret("# placeholder: `provision up` creates this key\n"), public)


def is_placeholder(public: str) -> bool:
    return public.endswith(" " + PLACEHOLDER_COMMENT)
