"""The inventory's persistent keys under state_dir: node host keys, the managed operator key and
the verifier key, in 0700 directories as 0600 files.

Only the verbs that create nodes create keys (`up`); `render`, `plan` and the read-only verbs load
what exists and show a placeholder for the rest, so looking never changes state.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from provision.core.secret import Secret
from provision.desired.hostkeys import KeyPair, generate, write_private

PLACEHOLDER_COMMENT = "placeholder-no-key-yet"


def load(path: Path) -> KeyPair | None:
    """The key pair at `path` (+ `.pub`), or None if it was never created."""
    pub = path.with_name(path.name + ".pub")
    if path.exists() and pub.exists():
        return KeyPair(Secret(path.read_text()), pub.read_text().strip())
    return None


def load_or_create(path: Path, comment: str) -> KeyPair:
    """The key pair at `path` (+ `.pub`), creating it owner-only if absent."""
    pair = load(path)
    if pair is not None:
        return pair
    pair = generate(comment)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    write_private(path, pair.private)
    path.with_name(path.name + ".pub").write_text(pair.public + "\n")
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
