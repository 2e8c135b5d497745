"""cloud-init NoCloud seed documents rendered from the `cloudinit/` templates: pure functions.

Templates render with StrictUndefined, and every YAML document is parsed back before it is used,
so a template mistake fails here rather than on a booting node. They are package data of
`provision.cloudinit`, read through importlib.resources (a wheel, an editable install and a
checkout alike), never located from this file's path.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

import jinja2
import yaml

from provision.baseline import accounts, hardening
from provision.core.model import Network, Node, SeedFile
from provision.core.secret import Secret
from provision.desired.hostkeys import KeyPair

TEMPLATES: Traversable = files("provision.cloudinit")
# libyaml's safe loader when PyYAML has it (25x faster on a seed: drift parses one per node),
# else the pure-Python one; both load the same safe subset.
SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# `up` touches it once first boot is done, so a later boot never re-runs first-boot work (nor
# regenerates keys); empty. Drift expects it like a seed file.
FIRST_BOOT_DONE = "/etc/cloud/cloud-init.disabled"
AUDIT_RULES = "/etc/audit/rules.d/60-provision.rules"  # drift compares the loaded rules with it


@dataclass(frozen=True)
class Seed:
    """The three NoCloud documents. user-data holds the node's private host key."""

    user_data: Secret
    meta_data: str
    network_config: str

    def files(self) -> dict[str, Secret | str]:
        return {
            "user-data": self.user_data,
            "meta-data": self.meta_data,
            "network-config": self.network_config,
        }


def _source(name: str) -> tuple[str, str, Callable[[], bool]] | None:
    """A template's text straight from the package's resources: no real directory needed, so
    this works however the package is installed. The filename is for jinja's error messages;
    "up to date" always: package data does not change while provision runs."""
    path = TEMPLATES.joinpath(*name.split("/"))
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8"), str(path), lambda: True


@functools.cache
def _env() -> jinja2.Environment:
    """One environment per process, so each template is compiled once, not once per node (a
    fleet's drift rendered 21 templates for every node: a quarter of its time)."""
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_source),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # YAML, JSON and shell, not HTML: values are quoted with tojson
    )


def render_template(name: str, **values: object) -> str:
    return _env().get_template(name).render(**values)


def sysctl_conf(node: Node) -> str:
    return render_template("sysctl.conf.j2", sysctls=hardening.sysctls(node))


# Executables among the seed files: the shell scripts tests run shellcheck on.
HARDEN_SCRIPT = "/usr/local/sbin/provision-harden"
ROOTLESS_SCRIPT = "/usr/local/sbin/provision-docker-rootless"


def seed_files(node: Node, network: Network) -> tuple[SeedFile, ...]:
    """Every file the seed writes for this node, in write order; runcmd then applies them."""

    def f(path: str, mode: str, template: str, **values: object) -> SeedFile:
        return SeedFile(path, mode, render_template(template, **values).rstrip("\n"))

    modules = hardening.modules(node)
    files = [
        SeedFile("/etc/sysctl.d/60-provision-hardening.conf", "0644", sysctl_conf(node).rstrip()),
    ]
    if modules:
        files.append(
            f("/etc/modules-load.d/provision.conf", "0644", "modules-load.conf.j2", modules=modules)
        )
    files += [
        f(
            "/etc/modprobe.d/provision-blacklist.conf",
            "0644",
            "modprobe-blacklist.conf.j2",
            modules=hardening.BLACKLISTED_MODULES,
        ),
        f(
            "/etc/ssh/sshd_config.d/10-provision-hardening.conf",
            "0600",
            "sshd-hardening.conf.j2",
            allow_users=(node.admin.name, hardening.VERIFIER_USER),
        ),
        f("/etc/sudoers.d/10-provision-defaults", "0440", "sudoers-defaults.j2"),
        f("/etc/security/limits.d/60-provision-core.conf", "0644", "limits-core.conf.j2"),
        f("/etc/systemd/coredump.conf.d/60-provision.conf", "0644", "coredump.conf.j2"),
        f("/etc/profile.d/provision-core.sh", "0644", "profile-core.sh.j2"),
        f(
            "/etc/security/pwquality.conf.d/60-provision.conf",
            "0644",
            "pwquality.conf.j2",
            settings=accounts.PWQUALITY,
        ),
        f(
            "/etc/fail2ban/jail.local",
            "0644",
            "fail2ban-jail.local.j2",
            ignore=hardening.fail2ban_ignore(network),
        ),
        f("/etc/issue", "0644", "issue.j2", banner=accounts.LOGIN_BANNER.rstrip("\n")),
        f("/etc/issue.net", "0644", "issue.j2", banner=accounts.LOGIN_BANNER.rstrip("\n")),
        f(
            "/etc/sudoers.d/60-provision-verifier",
            "0440",
            "sudoers-verifier.j2",
            verifier_user=hardening.VERIFIER_USER,
            facts_helper=hardening.FACTS_HELPER,
        ),
        f(
            hardening.FACTS_HELPER,
            "0755",
            "verify-facts.sh.j2",
            workload_user=node.workload_user,
            verifier_user=hardening.VERIFIER_USER,
            helper_paths=hardening.FACTS_HELPER_PATHS,
        ),
        f(
            "/etc/provision/firewall.nft",
            "0600",
            "firewall.nft.j2",
            ports=hardening.firewall_ports(node),
            rootful=hardening.is_rootful(node),
        ),
        f(
            "/etc/systemd/system/provision-firewall.service",
            "0644",
            "provision-firewall.service.j2",
        ),
        f(AUDIT_RULES, "0640", "audit.rules.j2"),
        f("/etc/audit/auditd.conf", "0640", "auditd.conf.j2"),
        f("/etc/systemd/journald.conf.d/60-provision.conf", "0644", "journald.conf.j2"),
        f("/etc/systemd/system/user@.service.d/delegate.conf", "0644", "user-delegate.conf.j2"),
    ]
    if hardening.is_rootful(node):
        files.append(f("/etc/docker/daemon.json", "0644", "daemon.json.j2"))
    if hardening.has_rootless(node):
        user = node.workload_user
        files += [
            f(
                "/etc/systemd/user/docker-rootless.service",
                "0644",
                "docker-rootless.service.j2",
                user=user,
            ),
            f(
                "/etc/profile.d/provision-docker-rootless.sh",
                "0644",
                "docker-rootless-env.sh.j2",
                user=user,
            ),
            f(ROOTLESS_SCRIPT, "0750", "docker-rootless.sh.j2", user=user),
        ]
    files.append(
        f(
            HARDEN_SCRIPT,
            "0750",
            "harden.sh.j2",
            modules=modules,
            admin_user=node.admin.name,
            verifier_user=hardening.VERIFIER_USER,
            workload_user=node.workload_user,
            login_defs=accounts.LOGIN_DEFS,
            home_mode=accounts.HOME_MODE,
            shell_timeout=accounts.SHELL_TIMEOUT_S,
        )
    )
    return tuple(files)


def verifier_key_line(public_key: str) -> str:
    """The verifier's authorized_keys line. `restrict` turns off everything the suite does not
    use (pty, port/agent/X11 forwarding, ~/.ssh/rc): it only runs commands on exec channels.
    The operator's keys stay unrestricted."""
    return f"restrict {public_key}"


def render_seed(
    inventory: str,
    node: Node,
    network: Network,
    host_key: KeyPair,
    admin_keys: tuple[str, ...],
    instance_id: str,
    verifier_key: str | None = None,
    extra: tuple[SeedFile, ...] = (),
    private_dirs: tuple[str, ...] = (),
) -> Seed:
    """The node's seed. Without `verifier_key` the verifier account exists but cannot log in.

    `extra`: role files (Kubernetes: provision.k8s_seed), written after the hardening set."""
    files = (*seed_files(node, network), *extra)
    user_data = render_template(
        "user-data.yaml.j2",
        inventory=inventory,
        node=node,
        host_key_private=host_key.private.reveal().rstrip("\n"),
        host_key_public=host_key.public,
        admin_keys=list(admin_keys),
        verifier_user=hardening.VERIFIER_USER,
        verifier_keys=[verifier_key_line(verifier_key)] if verifier_key else [],
        files=files,
        private_dirs=private_dirs,
    )
    meta_data = render_template("meta-data.yaml.j2", node=node, instance_id=instance_id)
    network_config = render_template("network-config.yaml.j2", node=node, network=network)
    for name, text in (
        ("user-data", user_data),
        ("meta-data", meta_data),
        ("network-config", network_config),
    ):
        _parse_back(name, text)
    for sf in files:
        if sf.path.endswith(".json"):
            json.loads(sf.content)
    return Seed(Secret(user_data), meta_data, network_config)


def _parse_back(name: str, text: str) -> None:
    try:
        doc = yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as exc:  # a template bug, not a user error
        raise RuntimeError(f"rendered {name} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise RuntimeError(f"rendered {name} is not a mapping")
