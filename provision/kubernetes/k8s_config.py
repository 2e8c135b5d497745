"""The hardened configuration files of a kubeadm cluster, rendered as text.

Pure renderers: kubeadm's Init/Cluster/JoinConfiguration with the KubeletConfiguration and
KubeProxyConfiguration, the API server's audit policy, admission (PodSecurity) and
authentication configuration, the secrets-encryption template and containerd's config, plus
where each file goes on the node. Check ids (HN-K8S-*, HN-POL-*) refer to the hardening
catalogue; the schemas in provision/k8s_schemas/ check the field names of every document.

No secret is ever rendered (catalogue C.5): the encryption key, the bootstrap token and the CA
certificate hash are placeholders (the *_PLACEHOLDER constants) that the on-node bootstrap
script fills; the key from /dev/urandom, the token and hash from the control plane.
"""

from __future__ import annotations

import copy
import inspect
import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from provision.core.model import Kubernetes, Node, Role

KUBEADM_API = "kubeadm.k8s.io/v1beta4"  # kubeadm >= 1.31
KUBELET_API = "kubelet.config.k8s.io/v1beta1"
KUBE_PROXY_API = "kubeproxy.config.k8s.io/v1alpha1"
AUDIT_API = "audit.k8s.io/v1"
APISERVER_API = "apiserver.config.k8s.io/v1"  # Admission-, Authentication-, EncryptionConfiguration
PSA_API = "pod-security.admission.config.k8s.io/v1"

# Debian's containerd (rootful; the kubelet cannot use rootless Docker, HN-K8S-13).
CRI_SOCKET = "unix:///run/containerd/containerd.sock"
CNI_BIN_DIR = "/opt/cni/bin"  # where Calico and Cilium install their plugins (Debian: /usr/lib/cni)
CNI_CONF_DIR = "/etc/cni/net.d"
# The sandbox image kubeadm 1.34 pins (3.10 up to 1.33); an airgap bundle must carry it. Check
# it against `kubeadm config images list` whenever the pinned Kubernetes version changes.
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"

# Where things live on the node.
STAGING_DIR = "/etc/provision/k8s"  # our inputs: kubeadm configs and templates
APISERVER_CONFIG_DIR = "/etc/kubernetes/provision"  # mounted read-only into kube-apiserver
AUDIT_LOG_DIR = "/var/log/kubernetes/audit"  # mounted read-write; created 0700 root beforehand
AUDIT_LOG_PATH = f"{AUDIT_LOG_DIR}/audit.log"
# The filled encryption config holds the key: its own directory, apart from the other files.
ENCRYPTION_DIR = "/etc/kubernetes/enc"
ENCRYPTION_CONFIG = f"{ENCRYPTION_DIR}/encryption-config.yaml"  # written by cloudinit/k8s/init
CLUSTER_CA = "/etc/kubernetes/pki/ca.crt"  # written by kubeadm
CONTAINERD_CONFIG = "/etc/containerd/config.toml"

AUDIT_LOG_MAXAGE = 30  # days (CIS 1.2.17)
AUDIT_LOG_MAXBACKUP = 10  # files (CIS 1.2.18)
AUDIT_LOG_MAXSIZE = 100  # MiB (CIS 1.2.19)
POD_PIDS_LIMIT = 4096  # per pod: a fork bomb stays inside its pod (HN-K8S-10, CIS 4.2.13)
STREAMING_IDLE_TIMEOUT = "5m0s"  # exec/attach/port-forward sessions; 0 would mean never (CIS 4.2.5)
TLS_MIN_VERSION = "VersionTLS12"
# AEAD suites with forward secrecy only (CIS 1.2.29 / 4.2.12); TLS 1.3 suites are not configurable.
TLS_CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)  # fmt: skip
# The only paths an unauthenticated client may reach (HN-K8S-01): the kubelet's probes of the
# kube-apiserver static pod carry no credentials, and neither does a joining node's first step,
# which reads the cluster-info ConfigMap (the public CA and endpoint, signed with the bootstrap
# token) before it trusts the API server. Everything else needs authentication.
HEALTH_PATHS = ("/livez", "/readyz", "/healthz")
CLUSTER_INFO_PATH = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
ANONYMOUS_PATHS = (*HEALTH_PATHS, CLUSTER_INFO_PATH)
PSA_LEVEL = "restricted"
PSA_MODES = ("enforce", "audit", "warn")
# kube-proxy and the CNI need hostNetwork/privileged (HN-POL-01). Other system namespaces (the
# CNI's own, Falco) are labelled `privileged` by their installers rather than exempted here.
PSA_EXEMPT_NAMESPACES = ("kube-system",)

ENCRYPTION_KEY_NAME = "provision-1"
# `__NAME__` placeholders, as cloudinit/k8s/lib.sh's render_private fills them from $NAME.
ENCRYPTION_KEY_PLACEHOLDER = "__PROVISION_ENCRYPTION_KEY__"  # base64 of 32 random bytes
JOIN_TOKEN_PLACEHOLDER = "__PROVISION_JOIN_TOKEN__"  # [a-z0-9]{6}.[a-z0-9]{16}
CA_CERT_HASH_PLACEHOLDER = "__PROVISION_CA_CERT_HASH__"  # sha256:<hex of the CA's SPKI>
PLACEHOLDERS = (ENCRYPTION_KEY_PLACEHOLDER, JOIN_TOKEN_PLACEHOLDER, CA_CERT_HASH_PLACEHOLDER)

# File names, as keys of cluster_files()/worker_files() and PLACEMENTS.
KUBEADM_INIT = "kubeadm-init.yaml"
KUBEADM_JOIN = "kubeadm-join.yaml"
KUBELET_CONFIG = "kubelet-config.yaml"
AUDIT_POLICY = "audit-policy.yaml"
ADMISSION = "admission.yaml"
AUTHENTICATION = "authentication-config.yaml"
ENCRYPTION_TEMPLATE = "encryption-config.yaml.tmpl"
CONTAINERD = "containerd-config.toml"


@dataclass(frozen=True)
class Placement:
    """Where a rendered file goes on the node. A template keeps its placeholders where it is;
    the bootstrap script writes the filled copy 0600 to `filled`, or for the join config to a
    private temporary file that is gone once kubeadm has run (`filled` None)."""

    path: str
    mode: int
    template: bool = False
    filled: str | None = None


# 0600 root for everything the control plane or kubelet reads (CIS 1.1.x and 4.1.x ask for 600
# on the control-plane and kubelet config files); only containerd's config is 0644, as Debian
# ships it, because it holds nothing sensitive and tools like crictl read it.
PLACEMENTS: dict[str, Placement] = {
    KUBEADM_INIT: Placement(f"{STAGING_DIR}/{KUBEADM_INIT}", 0o600),
    KUBEADM_JOIN: Placement(f"{STAGING_DIR}/{KUBEADM_JOIN}", 0o600, template=True),
    KUBELET_CONFIG: Placement(f"{STAGING_DIR}/{KUBELET_CONFIG}", 0o600),
    AUDIT_POLICY: Placement(f"{APISERVER_CONFIG_DIR}/{AUDIT_POLICY}", 0o600),
    ADMISSION: Placement(f"{APISERVER_CONFIG_DIR}/{ADMISSION}", 0o600),
    AUTHENTICATION: Placement(f"{APISERVER_CONFIG_DIR}/{AUTHENTICATION}", 0o600),
    ENCRYPTION_TEMPLATE: Placement(
        f"{STAGING_DIR}/{ENCRYPTION_TEMPLATE}", 0o600, template=True, filled=ENCRYPTION_CONFIG
    ),
    CONTAINERD: Placement(CONTAINERD_CONFIG, 0o644),
}
# Created (root, these modes) before any file is written. The audit log directory must exist
# before `kubeadm init`: its hostPath type is Directory, so a missing one stops the API server
# instead of being created 0755 by the kubelet (HN-K8S-05).
DIRECTORIES = tuple(
    (d, 0o700) for d in (STAGING_DIR, APISERVER_CONFIG_DIR, ENCRYPTION_DIR, AUDIT_LOG_DIR)
)


def kube_version(k8s: Kubernetes) -> str:
    """`v1.34.3`: kubeadm's kubernetesVersion."""
    if not re.fullmatch(r"\d+\.\d+\.\d+", k8s.version):
        raise ValueError(f"Kubernetes version {k8s.version!r} is not MAJOR.MINOR.PATCH")
    return f"v{k8s.version}"


def minor_version(k8s: Kubernetes) -> str:
    """`v1.34`: the form Pod Security admission pins its policy version to."""
    return kube_version(k8s).rsplit(".", 1)[0]


def cluster_files(k8s: Kubernetes, control_plane: Node, advertise: str) -> dict[str, str]:
    """Every file the control-plane node needs, by name (see PLACEMENTS for path and mode)."""
    if Role.K8S_CONTROL_PLANE not in control_plane.roles:
        raise ValueError(f"node {control_plane.name} does not have the control-plane role")
    address = str(ipaddress.ip_interface(advertise).ip)  # accepts 10.0.0.1 and 10.0.0.1/24
    return {
        KUBEADM_INIT: _yaml(
            _doc(init_configuration, k8s, control_plane, address),
            _doc(cluster_configuration, k8s),
            _doc(kubelet_configuration),
            _doc(kube_proxy_configuration, k8s),
        ),
        KUBELET_CONFIG: _yaml(_doc(kubelet_configuration)),
        AUDIT_POLICY: _yaml(_doc(audit_policy)),
        ADMISSION: _yaml(_doc(admission_configuration, k8s)),
        AUTHENTICATION: _yaml(_doc(authentication_configuration)),
        ENCRYPTION_TEMPLATE: _yaml(_doc(encryption_configuration)),
        CONTAINERD: containerd_config(),
    }


def worker_files(k8s: Kubernetes, worker: Node, control_plane_address: str) -> dict[str, str]:
    """Every file a worker needs. Its kubelet settings arrive from the cluster: `kubeadm join`
    downloads the kubelet-config ConfigMap that `kubeadm init` uploaded from kubeadm-init.yaml;
    the local kubelet-config.yaml is the reference the verifier compares against."""
    if Role.K8S_WORKER not in worker.roles:
        raise ValueError(f"node {worker.name} does not have the worker role")
    return {
        KUBEADM_JOIN: _yaml(_doc(join_configuration, k8s, worker, control_plane_address)),
        KUBELET_CONFIG: _yaml(_doc(kubelet_configuration)),
        CONTAINERD: containerd_config(),
    }


# --- kubeadm ---------------------------------------------------------------------------------


def _node_registration(node: Node) -> dict[str, Any]:
    # No kubeletExtraArgs: a --hostname-override would defeat NodeRestriction (CIS 4.2.8).
    return {"name": node.name, "criSocket": CRI_SOCKET, "imagePullPolicy": "IfNotPresent"}


def init_configuration(k8s: Kubernetes, node: Node, address: str) -> dict[str, Any]:
    """kubeadm init for the control plane. No bootstrapTokens: no token is ever rendered; the
    bootstrap script mints a short-lived one for the workers on the node."""
    return {
        "apiVersion": KUBEADM_API,
        "kind": "InitConfiguration",
        "localAPIEndpoint": {"advertiseAddress": address, "bindPort": k8s.api_port},
        "nodeRegistration": _node_registration(node),
    }


def _args(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in pairs]


def _mount(name: str, path: str, read_only: bool) -> dict[str, Any]:
    # pathType Directory: a missing directory stops the pod rather than appearing as 0755.
    mount = {"name": name, "hostPath": path, "mountPath": path, "readOnly": read_only}
    return {**mount, "pathType": "Directory"}


def apiserver_args() -> tuple[tuple[str, str], ...]:
    """The kube-apiserver flags added to kubeadm's, which already wire TLS, etcd, the kubelet
    client certificate and the service-account keys (HN-K8S-07/08/09)."""
    return (
        ("authorization-mode", "Node,RBAC"),  # HN-K8S-02
        # Instead of --anonymous-auth=false (the two exclude each other): anonymous requests
        # only on ANONYMOUS_PATHS, so probes and `kubeadm join` still work (HN-K8S-01).
        ("authentication-config", PLACEMENTS[AUTHENTICATION].path),
        # PodSecurity, ServiceAccount and NamespaceLifecycle are on by default. Never
        # AlwaysPullImages: an airgapped node has no registry to pull from (HN-K8S-03).
        ("enable-admission-plugins", "NodeRestriction"),
        ("admission-control-config-file", PLACEMENTS[ADMISSION].path),
        ("audit-policy-file", PLACEMENTS[AUDIT_POLICY].path),  # HN-K8S-05
        ("audit-log-path", AUDIT_LOG_PATH),
        ("audit-log-maxage", str(AUDIT_LOG_MAXAGE)),
        ("audit-log-maxbackup", str(AUDIT_LOG_MAXBACKUP)),
        ("audit-log-maxsize", str(AUDIT_LOG_MAXSIZE)),
        ("encryption-provider-config", ENCRYPTION_CONFIG),  # HN-K8S-06
        ("profiling", "false"),  # HN-K8S-04
        ("service-account-lookup", "true"),  # HN-K8S-08
        ("service-account-extend-token-expiration", "false"),
        # Verify the kubelets' serving certificates (CIS 1.2.5). They are CA-signed because of
        # serverTLSBootstrap, whose CSRs must be approved; until then logs/exec fail (HN-K8S-07).
        ("kubelet-certificate-authority", CLUSTER_CA),
        ("tls-min-version", TLS_MIN_VERSION),
        ("tls-cipher-suites", ",".join(TLS_CIPHER_SUITES)),
    )


# HN-K8S-04: no profiling; the controller-manager and scheduler answer only on loopback.
_LOOPBACK_ONLY = (("profiling", "false"), ("bind-address", "127.0.0.1"))
CONTROLLER_MANAGER_ARGS = (*_LOOPBACK_ONLY, ("use-service-account-credentials", "true"))
SCHEDULER_ARGS = _LOOPBACK_ONLY


def cluster_configuration(k8s: Kubernetes) -> dict[str, Any]:
    """Control-plane flags on top of kubeadm's defaults. No --anonymous-auth: the
    AuthenticationConfiguration allows anonymous requests only on the health endpoints and the
    cluster-info ConfigMap that `kubeadm join` reads (HN-K8S-01). The audit policy, PodSecurity
    defaults are files in /etc/kubernetes/provision, the encryption config (with its key) in
    /etc/kubernetes/enc, both mounted read-only; the audit log directory is mounted read-write
    (kubeadm mounts none of them, HN-K8S-05/06)."""
    return {
        "apiVersion": KUBEADM_API,
        "kind": "ClusterConfiguration",
        "kubernetesVersion": kube_version(k8s),
        "networking": {
            "podSubnet": k8s.pod_cidr,
            "serviceSubnet": k8s.service_cidr,
            "dnsDomain": "cluster.local",
        },
        "apiServer": {
            "extraArgs": _args(*apiserver_args()),
            "extraVolumes": [
                _mount("provision-config", APISERVER_CONFIG_DIR, read_only=True),
                _mount("encryption-config", ENCRYPTION_DIR, read_only=True),
                _mount("audit-log", AUDIT_LOG_DIR, read_only=False),
            ],
        },
        "controllerManager": {"extraArgs": _args(*CONTROLLER_MANAGER_ARGS)},
        "scheduler": {"extraArgs": _args(*SCHEDULER_ARGS)},
    }


def join_configuration(k8s: Kubernetes, node: Node, control_plane_address: str) -> dict[str, Any]:
    """kubeadm join for a worker, as a template: the bootstrap script replaces the token and CA
    hash placeholders with what the control plane issues in a private temporary file, gone once
    kubeadm has run. The CA hash pin is what stops a fake control plane: never drop it for
    unsafeSkipCAVerification."""
    host = ipaddress.ip_interface(control_plane_address).ip
    endpoint = f"[{host}]:{k8s.api_port}" if host.version == 6 else f"{host}:{k8s.api_port}"
    token = {
        "apiServerEndpoint": endpoint,
        "token": JOIN_TOKEN_PLACEHOLDER,
        "caCertHashes": [CA_CERT_HASH_PLACEHOLDER],
    }
    return {
        "apiVersion": KUBEADM_API,
        "kind": "JoinConfiguration",
        "nodeRegistration": _node_registration(node),
        # The same token authenticates the TLS bootstrap (kubeadm's default, made explicit).
        "discovery": {"bootstrapToken": token, "tlsBootstrapToken": JOIN_TOKEN_PLACEHOLDER},
    }


# --- kubelet and kube-proxy ------------------------------------------------------------------


def kubelet_configuration() -> dict[str, Any]:
    """Kubelet hardening (HN-K8S-10/11): no anonymous access, webhook authorization, no read-only
    port, CA-signed serving certificates (their CSRs need approval), seccomp RuntimeDefault for
    every pod, a PID limit per pod. protectKernelDefaults: the kubelet refuses to start unless
    the node's sysctls already equal its defaults (HN-SYS-26). The systemd cgroup driver must
    match containerd's SystemdCgroup (HN-K8S-13)."""
    return {
        "apiVersion": KUBELET_API,
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True, "cacheTTL": "2m0s"},
            "x509": {"clientCAFile": CLUSTER_CA},
        },
        "authorization": {
            "mode": "Webhook",
            "webhook": {"cacheAuthorizedTTL": "5m0s", "cacheUnauthorizedTTL": "30s"},
        },
        "readOnlyPort": 0,
        "serverTLSBootstrap": True,
        "rotateCertificates": True,
        "protectKernelDefaults": True,
        "seccompDefault": True,
        "makeIPTablesUtilChains": True,
        "streamingConnectionIdleTimeout": STREAMING_IDLE_TIMEOUT,
        "podPidsLimit": POD_PIDS_LIMIT,
        "cgroupDriver": "systemd",
        "containerRuntimeEndpoint": CRI_SOCKET,
        "failSwapOn": True,
        "tlsMinVersion": TLS_MIN_VERSION,
        "tlsCipherSuites": list(TLS_CIPHER_SUITES),
    }


def kube_proxy_configuration(k8s: Kubernetes) -> dict[str, Any]:
    """kube-proxy: metrics on loopback only (HN-K8S-12). No NodePorts on 127.0.0.1, or
    kube-proxy would set net.ipv4.conf.all.route_localnet=1, which the hardening keeps at 0;
    NodePorts answer only on the node's primary address."""
    return {
        "apiVersion": KUBE_PROXY_API,
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": k8s.pod_cidr,
        "metricsBindAddress": "127.0.0.1:10249",
        "iptables": {"localhostNodePorts": False},
        "nodePortAddresses": ["primary"],
    }


# --- API server configuration files ----------------------------------------------------------


INTERACTIVE = ("pods/exec", "pods/attach", "pods/portforward", "pods/proxy", "services/proxy")
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
RBAC = ("roles", "rolebindings", "clusterroles", "clusterrolebindings")
# (level, match) in order: the first matching rule wins, so the order is the policy.
AUDIT_RULES: tuple[tuple[str, dict[str, Any]], ...] = (
    # Read-only system chatter that would drown the log.
    ("None", {"users": ["system:kube-proxy"], "verbs": ["watch"], "resources": [
        {"group": "", "resources": ["endpoints", "services", "services/status"]},
        {"group": "discovery.k8s.io", "resources": ["endpointslices"]}]}),
    ("None", {"userGroups": ["system:nodes"], "verbs": ["get"],
              "resources": [{"group": "", "resources": ["nodes", "nodes/status"]}]}),
    ("None", {"users": ["system:kube-controller-manager", "system:kube-scheduler"],
              "verbs": ["get", "update"], "namespaces": ["kube-system"],
              "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}]}),
    ("None", {"nonResourceURLs": ["/healthz*", "/livez*", "/readyz*", "/version"]}),
    ("None", {"resources": [{"group": "", "resources": ["events"]},
                            {"group": "events.k8s.io", "resources": ["events"]}]}),
    # Secrets, config maps and tokens: who and when, never the bodies, which would put secret
    # values and bearer tokens into the log.
    ("Metadata", {"resources": [
        {"group": "", "resources": ["secrets", "configmaps", "serviceaccounts/token"]},
        {"group": "authentication.k8s.io", "resources": ["tokenreviews"]}]}),
    # Interactive access: the command is in the request URI, which Metadata records; the
    # streams themselves are in the audit log at no level.
    ("Metadata", {"resources": [{"group": "", "resources": [*INTERACTIVE, "nodes/proxy"]}]}),
    # Every change to RBAC with the full objects.
    ("RequestResponse", {"verbs": [*WRITE_VERBS], "resources": [
        {"group": "rbac.authorization.k8s.io", "resources": [*RBAC]}]}),
    ("Request", {"verbs": [*WRITE_VERBS]}),  # other changes with what was asked
    ("Metadata", {}),  # and every other request
)  # fmt: skip


def audit_policy() -> dict[str, Any]:
    """API audit policy (HN-K8S-05): secrets and tokens at Metadata only, exec/attach/port-forward
    recorded, RBAC changes in full, read-only system chatter dropped."""
    return {
        "apiVersion": AUDIT_API,
        "kind": "Policy",
        "omitStages": ["RequestReceived"],  # ResponseComplete carries everything it would
        "rules": [{"level": level, **copy.deepcopy(match)} for level, match in AUDIT_RULES],
    }


def admission_configuration(k8s: Kubernetes) -> dict[str, Any]:
    """PodSecurity defaults for namespaces without labels (HN-POL-01): restricted for enforce,
    audit and warn, pinned to the cluster's minor version so an upgrade cannot silently change
    the policy. kube-system is exempt: kube-proxy and the CNI need host access."""
    defaults = {}
    for mode in PSA_MODES:
        defaults[mode] = PSA_LEVEL
        defaults[f"{mode}-version"] = minor_version(k8s)
    exemptions = {"usernames": [], "runtimeClasses": [], "namespaces": list(PSA_EXEMPT_NAMESPACES)}
    psa = {"apiVersion": PSA_API, "kind": "PodSecurityConfiguration", "defaults": defaults}
    return {
        "apiVersion": APISERVER_API,
        "kind": "AdmissionConfiguration",
        "plugins": [{"name": "PodSecurity", "configuration": {**psa, "exemptions": exemptions}}],
    }


def authentication_configuration() -> dict[str, Any]:
    """Anonymous requests only for the health endpoints the kubelet probes and for the
    cluster-info ConfigMap a joining node reads before it trusts the API server (HN-K8S-01,
    CIS 1.2.1). Every other request must authenticate, whatever RBAC grants system:anonymous."""
    return {
        "apiVersion": APISERVER_API,
        "kind": "AuthenticationConfiguration",
        "anonymous": {"enabled": True, "conditions": [{"path": p} for p in ANONYMOUS_PATHS]},
    }


def encryption_configuration() -> dict[str, Any]:
    """Secrets encryption at rest (HN-K8S-06), as a template: the bootstrap script replaces the
    key placeholder with base64 of 32 bytes from /dev/urandom, once, writing
    /etc/kubernetes/enc/encryption-config.yaml 0600. Never regenerate the key: secrets
    written with the old one would be lost. secretbox first (the upstream docs rate aescbc weak
    and aesgcm needs a new key every 200k writes); identity last, to read secrets written before
    encryption was on."""
    key = {"name": ENCRYPTION_KEY_NAME, "secret": ENCRYPTION_KEY_PLACEHOLDER}
    return {
        "apiVersion": APISERVER_API,
        "kind": "EncryptionConfiguration",
        "resources": [
            {
                "resources": ["secrets"],
                "providers": [{"secretbox": {"keys": [key]}}, {"identity": {}}],
            }
        ],
    }


# --- containerd ------------------------------------------------------------------------------


def containerd_config() -> str:
    """containerd 1.6 (Debian 12) config, `version = 2` (HN-K8S-13). Debian's default has no
    SystemdCgroup (so runc would use cgroupfs while the kubelet uses systemd) and looks for CNI
    plugins in /usr/lib/cni, where no CNI installs them. The values are JSON strings, which are
    TOML basic strings; the tests parse the result with tomllib."""
    return f"""\
# Rendered by provision (HN-K8S-13): CRI on, systemd cgroups for runc, the CNI's plugin paths.
version = 2
disabled_plugins = []

[plugins."io.containerd.grpc.v1.cri"]
sandbox_image = {json.dumps(PAUSE_IMAGE)}

[plugins."io.containerd.grpc.v1.cri".containerd]
default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
SystemdCgroup = true

[plugins."io.containerd.grpc.v1.cri".cni]
bin_dir = {json.dumps(CNI_BIN_DIR)}
conf_dir = {json.dumps(CNI_CONF_DIR)}
"""


# --- YAML ---------------------------------------------------------------------------------


class YamlDumper(yaml.SafeDumper):
    """Safe YAML without anchors: a value shared between two places is written out twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _doc(build: Callable[..., dict[str, Any]], *args: Any) -> tuple[str, dict[str, Any]]:
    """A document with its builder's docstring, which says why it is shaped so."""
    return (build.__doc__ or "", build(*args))


def _yaml(*docs: tuple[str, dict[str, Any]]) -> str:
    """Multi-document YAML, each document headed by its reasons as comments."""
    parts = []
    for why, doc in docs:
        lines = inspect.cleandoc(why).splitlines()
        comment = "".join(f"# {line}".rstrip() + "\n" for line in lines)
        parts.append(comment + yaml.dump(doc, Dumper=YamlDumper, sort_keys=False))
    return "---\n".join(parts)
