"""SSH key pairs the provisioner generates: node host keys (pinned) and the managed operator key.

Pure key material; state.keys keeps them in the inventory's state directory.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

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


def public_of(private: Secret) -> str:
    """The `ssh-ed25519 AAAA...` line of an OpenSSH private key (ValueError if it is not one)."""
    key = serialization.load_ssh_private_key(private.reveal().encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an ed25519 key")
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode()
