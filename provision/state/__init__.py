"""Local state under state_dir: paths, run and pool locks, persistent keys, and the inventory made
concrete on this machine (rendered with its keys, URIs and SSH targets)."""
