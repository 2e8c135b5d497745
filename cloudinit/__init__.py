"""The cloud-init seed templates (Jinja2) and the on-node Kubernetes scripts (k8s/), as package
data: installed as `provision.cloudinit` (pyproject's package-dir), reached in a checkout through
the symlink provision/cloudinit. Readers use importlib.resources; nothing here is code."""
