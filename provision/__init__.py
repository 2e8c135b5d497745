"""provision: hardened KVM nodes from a YAML inventory."""

__version__ = "0.1.0"
