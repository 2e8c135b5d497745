"""The hardened cluster config files (provision/kubernetes/k8s_config.py), checked against the
schemas in provision/kubernetes/k8s_schemas/ (hand-derived from the upstream Go types) and
against the catalogue's HN-K8S-* rows."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import tomllib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from provision.config import inventory
from provision.core.model import AllowRule, K8sInstall, Kubernetes, Role, WorkloadNamespace
from provision.kubernetes import k8s_config as kc
from tests.helpers import LOCAL

# Package data, read the way the package reads its own (a wheel ships them, see test_wheel.py).
SCHEMAS = resources.files("provision.kubernetes") / "k8s_schemas"

K8S = Kubernetes(
    version="1.34.3",
    install=K8sInstall.BUNDLE,
    bundle=None,
    bundle_sha256=None,
    pod_cidr="10.244.0.0/16",
    service_cidr="10.96.0.0/12",
    api_port=6443,
    namespaces=(
        WorkloadNamespace(
            "shop",
            (AllowRule("web", (("app", "web"),), ("edge",), (("app", "client"),), (8080,)),),
            sample_workload=True,
        ),
        WorkloadNamespace("batch", (), sample_workload=False),
    ),
)
BASE = inventory.load(LOCAL).nodes[0]
CONTROL_PLANE = dataclasses.replace(BASE, name="cp1", roles=(Role.K8S_CONTROL_PLANE,))
WORKER = dataclasses.replace(BASE, name="worker1", roles=(Role.K8S_WORKER,))
CLUSTER = kc.cluster_files(K8S, CONTROL_PLANE, "10.20.0.11/24")
WORKER_FILES = kc.worker_files(K8S, WORKER, "10.20.0.11")
YAML_FILES = {
    f"{where}:{name}": text
    for where, files in (("cp", CLUSTER), ("worker", WORKER_FILES))
    for name, text in files.items()
    if name != kc.CONTAINERD
}


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def _doc(name: str, kind: str) -> dict[str, Any]:
    files = CLUSTER if name in CLUSTER else WORKER_FILES
    return next(d for d in _docs(files[name]) if d["kind"] == kind)


def _schema_file(doc: dict[str, Any]) -> Traversable:
    """kubernetes-validate's naming: <kind>-<first label of the group>-<version>.json."""
    group, version = doc["apiVersion"].split("/")
    return SCHEMAS / f"{doc['kind'].lower()}-{group.split('.')[0]}-{version}.json"


def _validate(doc: dict[str, Any]) -> None:
    schema = json.loads(_schema_file(doc).read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)


def _args(component: str) -> dict[str, str]:
    cluster = _doc(kc.KUBEADM_INIT, "ClusterConfiguration")
    return {a["name"]: a["value"] for a in cluster[component].get("extraArgs", [])}


# --- schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(YAML_FILES))
def test_every_rendered_document_matches_its_upstream_schema(name: str) -> None:
    docs = _docs(YAML_FILES[name])
    assert docs
    for doc in docs:
        _validate(doc)
        if doc["kind"] == "AdmissionConfiguration":  # the embedded PodSecurityConfiguration too
            for plugin in doc["plugins"]:
                _validate(plugin["configuration"])


def test_every_schema_is_valid_and_names_its_upstream_source() -> None:
    readme = (SCHEMAS / "README.md").read_text()
    files = sorted((p for p in SCHEMAS.iterdir() if p.name.endswith(".json")), key=lambda p: p.name)
    assert len(files) == 10
    for path in files:
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        assert re.search(r"kubernetes/kubernetes \S+types(_encryption)?\.go", schema["$comment"])
        assert schema["additionalProperties"] is False
        assert f"`{path.name}`" in readme


@pytest.mark.parametrize(
    ("name", "kind", "mutate", "message"),
    [
        # A misspelt top-level field (protectKernelDefault) is not silently ignored.
        (kc.KUBELET_CONFIG, "KubeletConfiguration",
         lambda d: d.update(protectKernelDefault=True), "protectKernelDefault"),
        (kc.KUBELET_CONFIG, "KubeletConfiguration", lambda d: d.update(readOnlyPort="0"), "'0'"),
        (kc.KUBELET_CONFIG, "KubeletConfiguration",
         lambda d: d["authentication"]["anonymous"].update(enable=False), "enable"),
        (kc.KUBELET_CONFIG, "KubeletConfiguration",
         lambda d: d.update(streamingConnectionIdleTimeout="5 minutes"), "5 minutes"),
        (kc.KUBEADM_INIT, "ClusterConfiguration",
         lambda d: d["apiServer"]["extraArgs"].append({"nam": "x", "value": "y"}), "nam"),
        (kc.KUBEADM_INIT, "ClusterConfiguration",
         lambda d: d["apiServer"].update(extraArgs={"profiling": "false"}), "is not of type"),
        (kc.KUBEADM_INIT, "ClusterConfiguration",
         lambda d: d["apiServer"]["extraVolumes"][0].update(pathType="Dir"), "Dir"),
        (kc.KUBEADM_INIT, "InitConfiguration",
         lambda d: d["localAPIEndpoint"].update(bindPort="6443"), "'6443'"),
        (kc.AUDIT_POLICY, "Policy",
         lambda d: d["rules"][0].update(level="Everything"), "Everything"),
        (kc.AUDIT_POLICY, "Policy", lambda d: d["rules"][0].update(verb=["get"]), "verb"),
        (kc.ENCRYPTION_TEMPLATE, "EncryptionConfiguration",
         lambda d: d["resources"][0]["providers"][0].update(identity={}), "too many properties"),
        (kc.AUTHENTICATION, "AuthenticationConfiguration",
         lambda d: d["anonymous"]["conditions"].append({"paths": "/metrics"}), "paths"),
        (kc.KUBEADM_JOIN, "JoinConfiguration", lambda d: d.pop("discovery"), "discovery"),
    ],
)  # fmt: skip
def test_schemas_reject_misspelt_keys_and_wrong_types(
    name: str, kind: str, mutate: Any, message: str
) -> None:
    doc = _doc(name, kind)
    _validate(doc)
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError, match=re.escape(message)):
        _validate(doc)


def test_the_pod_security_schema_rejects_an_unpinned_or_unknown_level() -> None:
    psa = _doc(kc.ADMISSION, "AdmissionConfiguration")["plugins"][0]["configuration"]
    for key, bad in (("enforce-version", "1.34"), ("enforce", "strict")):
        broken = {**psa, "defaults": {**psa["defaults"], key: bad}}
        with pytest.raises(jsonschema.ValidationError):
            _validate(broken)


# --- API server (HN-K8S-01..08) --------------------------------------------------------------


def test_anonymous_requests_only_reach_health_and_join_discovery() -> None:
    args = _args("apiServer")
    # --anonymous-auth and an AuthenticationConfiguration with `anonymous` exclude each other.
    assert "anonymous-auth" not in args
    assert args["authentication-config"] == kc.PLACEMENTS[kc.AUTHENTICATION].path
    anonymous = _doc(kc.AUTHENTICATION, "AuthenticationConfiguration")["anonymous"]
    assert anonymous["enabled"] is True
    assert [c["path"] for c in anonymous["conditions"]] == [
        "/livez",
        "/readyz",
        "/healthz",
        # kubeadm join's token discovery reads this before it has any credentials.
        "/api/v1/namespaces/kube-public/configmaps/cluster-info",
    ]


def test_apiserver_authorizes_with_node_and_rbac_and_restricts_nodes() -> None:
    args = _args("apiServer")
    assert args["authorization-mode"] == "Node,RBAC"
    plugins = args["enable-admission-plugins"].split(",")
    assert "NodeRestriction" in plugins
    assert not {"AlwaysAdmit", "AlwaysPullImages"} & set(plugins)
    assert args["service-account-lookup"] == "true"
    assert args["service-account-extend-token-expiration"] == "false"
    assert args["kubelet-certificate-authority"] == kc.CLUSTER_CA
    assert "token-auth-file" not in args


@pytest.mark.parametrize("component", ["apiServer", "controllerManager", "scheduler"])
def test_profiling_is_off_everywhere(component: str) -> None:
    assert _args(component)["profiling"] == "false"


@pytest.mark.parametrize("component", ["controllerManager", "scheduler"])
def test_controller_manager_and_scheduler_bind_to_loopback(component: str) -> None:
    assert _args(component)["bind-address"] == "127.0.0.1"


def test_audit_log_flags_meet_cis_and_the_files_are_mounted() -> None:
    args = _args("apiServer")
    assert int(args["audit-log-maxage"]) >= 30
    assert int(args["audit-log-maxbackup"]) >= 10
    assert int(args["audit-log-maxsize"]) >= 100
    volumes = {
        v["hostPath"]: v
        for v in _doc(kc.KUBEADM_INIT, "ClusterConfiguration")["apiServer"]["extraVolumes"]
    }
    # Every file the API server is pointed at lives in a mounted directory; only the log's
    # directory is writable.
    for flag in (
        "audit-policy-file",
        "admission-control-config-file",
        "authentication-config",
        "encryption-provider-config",
    ):
        mount = volumes[str(Path(args[flag]).parent)]
        assert mount["readOnly"] is True and mount["mountPath"] == mount["hostPath"]
    log = volumes[str(Path(args["audit-log-path"]).parent)]
    assert log["readOnly"] is False
    assert all(v["pathType"] == "Directory" for v in volumes.values())
    assert (kc.AUDIT_LOG_DIR, 0o700) in kc.DIRECTORIES


def _audit_level(user: str, verb: str, group: str, resource: str, namespace: str = "ns") -> str:
    """The level of a request under the rendered policy: the first matching rule wins."""
    for rule in _doc(kc.AUDIT_POLICY, "Policy")["rules"]:
        if "nonResourceURLs" in rule:
            continue
        if rule.get("users") and user not in rule["users"]:
            continue
        if rule.get("userGroups") or (rule.get("verbs") and verb not in rule["verbs"]):
            continue
        if rule.get("namespaces") and namespace not in rule["namespaces"]:
            continue
        matched = [r for r in rule.get("resources", []) if r["group"] == group]
        if rule.get("resources") and not any(resource in r["resources"] for r in matched):
            continue
        return str(rule["level"])
    return "None"


@pytest.mark.parametrize(
    ("verb", "group", "resource", "level"),
    [
        ("get", "", "secrets", "Metadata"),  # never the secret's value
        ("create", "", "secrets", "Metadata"),
        ("update", "", "configmaps", "Metadata"),
        ("create", "authentication.k8s.io", "tokenreviews", "Metadata"),
        ("create", "", "serviceaccounts/token", "Metadata"),
        ("create", "", "pods/exec", "Metadata"),
        ("create", "", "pods/attach", "Metadata"),
        ("create", "", "pods/portforward", "Metadata"),
        ("create", "rbac.authorization.k8s.io", "clusterrolebindings", "RequestResponse"),
        ("patch", "rbac.authorization.k8s.io", "roles", "RequestResponse"),
        ("create", "apps", "deployments", "Request"),
        ("list", "", "pods", "Metadata"),
        ("create", "", "events", "None"),
    ],
)
def test_audit_policy_records_what_the_catalogue_asks(
    verb: str, group: str, resource: str, level: str
) -> None:
    assert _audit_level("alice", verb, group, resource) == level


def test_audit_policy_drops_only_system_read_chatter() -> None:
    assert _audit_level("system:kube-proxy", "watch", "", "endpoints") == "None"
    assert _audit_level("system:kube-proxy", "delete", "", "endpoints") == "Request"
    policy = _doc(kc.AUDIT_POLICY, "Policy")
    assert policy["omitStages"] == ["RequestReceived"]
    assert policy["rules"][-1] == {"level": "Metadata"}  # nothing falls through unlogged


def test_pod_security_defaults_to_restricted_pinned_with_kube_system_exempt() -> None:
    admission = _doc(kc.ADMISSION, "AdmissionConfiguration")
    assert _args("apiServer")["admission-control-config-file"] == kc.PLACEMENTS[kc.ADMISSION].path
    (plugin,) = admission["plugins"]
    assert plugin["name"] == "PodSecurity"
    config = plugin["configuration"]
    assert config["defaults"] == {
        "enforce": "restricted",
        "enforce-version": "v1.34",
        "audit": "restricted",
        "audit-version": "v1.34",
        "warn": "restricted",
        "warn-version": "v1.34",
    }
    assert config["exemptions"]["namespaces"] == ["kube-system"]
    assert config["exemptions"]["usernames"] == []


def test_secrets_are_encrypted_with_a_key_generated_on_the_node() -> None:
    args = _args("apiServer")
    placement = kc.PLACEMENTS[kc.ENCRYPTION_TEMPLATE]
    assert args["encryption-provider-config"] == placement.filled == kc.ENCRYPTION_CONFIG
    (resources,) = _doc(kc.ENCRYPTION_TEMPLATE, "EncryptionConfiguration")["resources"]
    assert resources["resources"] == ["secrets"]
    first, last = resources["providers"][0], resources["providers"][-1]
    assert list(first) == ["secretbox"]  # never identity first (CIS 1.2.27)
    assert first["secretbox"]["keys"] == [
        {"name": kc.ENCRYPTION_KEY_NAME, "secret": kc.ENCRYPTION_KEY_PLACEHOLDER}
    ]
    assert last == {"identity": {}}


# --- kubelet, kube-proxy, kubeadm ------------------------------------------------------------


@pytest.mark.parametrize("name", ["init", "standalone", "worker"])
def test_kubelet_is_hardened(name: str) -> None:
    kubelet = {
        "init": lambda: _doc(kc.KUBEADM_INIT, "KubeletConfiguration"),
        "standalone": lambda: _docs(CLUSTER[kc.KUBELET_CONFIG])[0],
        "worker": lambda: _docs(WORKER_FILES[kc.KUBELET_CONFIG])[0],
    }[name]()
    assert kubelet["authentication"]["anonymous"] == {"enabled": False}
    assert kubelet["authentication"]["webhook"]["enabled"] is True
    assert kubelet["authentication"]["x509"]["clientCAFile"] == kc.CLUSTER_CA
    assert kubelet["authorization"]["mode"] == "Webhook"
    assert kubelet["readOnlyPort"] == 0
    for flag in (
        "serverTLSBootstrap",
        "rotateCertificates",
        "protectKernelDefaults",
        "seccompDefault",
        "makeIPTablesUtilChains",
    ):
        assert kubelet[flag] is True, flag
    assert kubelet["cgroupDriver"] == "systemd"
    assert kubelet["podPidsLimit"] > 0
    assert kubelet["streamingConnectionIdleTimeout"] not in ("0", "0s")
    assert kubelet["containerRuntimeEndpoint"] == kc.CRI_SOCKET


def test_kube_proxy_metrics_on_loopback_and_no_localhost_nodeports() -> None:
    proxy = _doc(kc.KUBEADM_INIT, "KubeProxyConfiguration")
    assert proxy["metricsBindAddress"].startswith("127.0.0.1:")
    assert proxy["iptables"]["localhostNodePorts"] is False
    assert proxy["clusterCIDR"] == K8S.pod_cidr


def test_init_configuration_comes_from_the_model() -> None:
    init = _doc(kc.KUBEADM_INIT, "InitConfiguration")
    assert init["localAPIEndpoint"] == {"advertiseAddress": "10.20.0.11", "bindPort": 6443}
    assert init["nodeRegistration"]["name"] == "cp1"
    assert init["nodeRegistration"]["criSocket"] == "unix:///run/containerd/containerd.sock"
    assert "bootstrapTokens" not in init
    cluster = _doc(kc.KUBEADM_INIT, "ClusterConfiguration")
    assert cluster["kubernetesVersion"] == "v1.34.3"
    assert cluster["networking"]["podSubnet"] == K8S.pod_cidr
    assert cluster["networking"]["serviceSubnet"] == K8S.service_cidr
    kinds = [d["kind"] for d in _docs(CLUSTER[kc.KUBEADM_INIT])]
    assert kinds == [
        "InitConfiguration",
        "ClusterConfiguration",
        "KubeletConfiguration",
        "KubeProxyConfiguration",
    ]


def test_join_configuration_pins_the_ca_through_placeholders() -> None:
    join = _doc(kc.KUBEADM_JOIN, "JoinConfiguration")
    assert join["nodeRegistration"]["name"] == "worker1"
    assert join["discovery"] == {
        "bootstrapToken": {
            "apiServerEndpoint": "10.20.0.11:6443",
            "token": "__PROVISION_JOIN_TOKEN__",
            "caCertHashes": ["__PROVISION_CA_CERT_HASH__"],
        },
        "tlsBootstrapToken": "__PROVISION_JOIN_TOKEN__",
    }
    assert "unsafeSkipCAVerification" not in join["discovery"]["bootstrapToken"]
    v6 = kc.join_configuration(K8S, WORKER, "fd00::11/64")
    assert v6["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "[fd00::11]:6443"


def test_containerd_uses_systemd_cgroups_and_the_cni_plugin_path() -> None:
    for files in (CLUSTER, WORKER_FILES):
        config = tomllib.loads(files[kc.CONTAINERD])
        assert config["version"] == 2
        assert "cri" not in config["disabled_plugins"]
        cri = config["plugins"]["io.containerd.grpc.v1.cri"]
        runc = cri["containerd"]["runtimes"]["runc"]
        assert runc["runtime_type"] == "io.containerd.runc.v2"
        assert runc["options"]["SystemdCgroup"] is True
        assert cri["cni"] == {"bin_dir": "/opt/cni/bin", "conf_dir": "/etc/cni/net.d"}
        assert cri["sandbox_image"] == kc.PAUSE_IMAGE


# --- secrets, placement, inputs --------------------------------------------------------------

SECRET_SHAPES = {
    "bootstrap token": r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b",
    "CA hash": r"sha256:[0-9a-f]{64}",
    "32-byte base64 key": r"[A-Za-z0-9+/]{43}=",
    "PEM block": r"-----BEGIN ",
}


def test_the_secret_shapes_recognise_real_secrets() -> None:
    """The check below is not vacuous: each pattern finds a value of its kind."""
    samples = {
        "bootstrap token": "token: abcdef.0123456789abcdef",
        "CA hash": "sha256:" + "ab" * 32,
        "32-byte base64 key": base64.b64encode(bytes(range(32))).decode(),
        "PEM block": "-----BEGIN PRIVATE KEY-----",
    }
    for what, pattern in SECRET_SHAPES.items():
        assert re.search(pattern, samples[what]), what


def test_no_secret_material_in_any_rendered_file() -> None:
    for files in (CLUSTER, WORKER_FILES):
        for name, text in files.items():
            for what, pattern in SECRET_SHAPES.items():
                assert not re.search(pattern, text), f"{what} in {name}"
            # A value that must be secret appears only as its placeholder, only in templates.
            for placeholder in kc.PLACEHOLDERS:
                if placeholder in text:
                    assert kc.PLACEMENTS[name].template, name


def test_placeholders_use_the_on_node_render_convention() -> None:
    """cloudinit/k8s/lib.sh's render_private replaces `__NAME__` with the variable NAME."""
    assert kc.PLACEHOLDERS == (
        "__PROVISION_ENCRYPTION_KEY__",
        "__PROVISION_JOIN_TOKEN__",
        "__PROVISION_CA_CERT_HASH__",
    )
    assert kc.ENCRYPTION_KEY_PLACEHOLDER in CLUSTER[kc.ENCRYPTION_TEMPLATE]
    for placeholder in kc.PLACEHOLDERS[1:]:
        assert placeholder in WORKER_FILES[kc.KUBEADM_JOIN]


def test_every_file_has_a_place_and_a_strict_mode() -> None:
    for name in {*CLUSTER, *WORKER_FILES}:
        placement = kc.PLACEMENTS[name]
        if name == kc.CONTAINERD:  # where containerd reads it; nothing secret in it
            assert (placement.path, placement.mode) == ("/etc/containerd/config.toml", 0o644)
            continue
        assert placement.path.startswith(("/etc/kubernetes/", "/etc/provision/k8s/")), name
        assert placement.mode == 0o600, name
        if placement.filled:
            assert placement.template
            assert placement.filled.startswith(("/etc/kubernetes/", "/etc/provision/k8s/"))
    assert kc.PLACEMENTS[kc.KUBEADM_JOIN].path == "/etc/provision/k8s/kubeadm-join.yaml"
    assert kc.PLACEMENTS[kc.ENCRYPTION_TEMPLATE].filled == (
        "/etc/kubernetes/enc/encryption-config.yaml"
    )
    assert dict(kc.DIRECTORIES) == {
        "/etc/provision/k8s": 0o700,
        "/etc/kubernetes/provision": 0o700,
        "/etc/kubernetes/enc": 0o700,
        "/var/log/kubernetes/audit": 0o700,
    }


def test_rendering_is_deterministic_and_free_of_yaml_aliases() -> None:
    assert kc.cluster_files(K8S, CONTROL_PLANE, "10.20.0.11") == CLUSTER
    for text in YAML_FILES.values():
        assert not re.search(r"[&*]id\d+", text)
        assert text.startswith("# ")  # each document says why it is shaped so


def test_nodes_need_the_matching_role_and_versions_a_patch_level() -> None:
    with pytest.raises(ValueError, match="control-plane role"):
        kc.cluster_files(K8S, WORKER, "10.20.0.11")
    with pytest.raises(ValueError, match="worker role"):
        kc.worker_files(K8S, CONTROL_PLANE, "10.20.0.11")
    with pytest.raises(ValueError, match=r"MAJOR\.MINOR\.PATCH"):
        kc.cluster_files(dataclasses.replace(K8S, version="1.34"), CONTROL_PLANE, "10.20.0.11")
    with pytest.raises(ValueError):
        kc.cluster_files(K8S, CONTROL_PLANE, "cp1.example")
