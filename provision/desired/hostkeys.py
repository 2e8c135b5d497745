"""SSH key pairs the provisioner generates: node host keys (pinned) and the managed operator key.

Pure key material; state.keys keeps them in the inventory's state directory.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provision.core.secret import Secret


@dataclass(frozen=True)
class KeyPair:
    private: Secret  # OpenSSH PEM text
    public: str  # "ssh-ed25519 AAAA... comment"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)


def fingerprint(public: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line."""
    blob = base64.b64decode(public.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def from_private_bytes(raw: bytes, comment: str) -> KeyPair:
    """A key pair from a 32-byte ed25519 seed (tests use fixed seeds for golden files)."""
    return _pair(Ed25519PrivateKey.from_private_bytes(raw), comment)


def generate(comment: str) -> KeyPair:
    return _pair(Ed25519PrivateKey.generate(), comment)


def _pair(key: Ed25519PrivateKey, comment: str) -> KeyPair:
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return KeyPair(Secret(private), f"{public.decode()} {comment}")


def write_private(path: Path, secret: Secret) -> None:
    """Write a secret file created 0600 from the start (never world-readable, even briefly)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.reveal())
    os.replace(tmp, path)
