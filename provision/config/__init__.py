"""Loading: YAML with source locations, the settings table, the inventory and playbook parsers.
Everything after this layer sees frozen dataclasses only."""
