"""Loading: YAML with source locations, the settings engine and the inventory's tables, the
inventory and playbook parsers. Everything after this layer sees frozen dataclasses only."""
