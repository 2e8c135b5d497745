"""Kubernetes as desired state: pinned checksums, the airgap bundle, cluster configs, workload
manifests, the files the seed carries, the bootstrap as playbook steps, policy coverage."""
