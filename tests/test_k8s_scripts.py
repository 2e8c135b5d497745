"""The on-node Kubernetes scripts (cloudinit/k8s/): shellcheck-clean, and run here where that is
free of side effects: `bundle verify` on fake bundles, `prereqs check` against a fake /proc and
/sys, the helpers that write secrets, and the refusals on a node without binaries.

Nothing here runs `apply`/`install` for real: those need root, systemd and the binaries, and
change the machine. Every run gets a curated PATH (only the tools it may use, plus fakes) and
the config directory overridden with PROVISION_K8S_ETC.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from provision.boundary.process import Result, run
from provision.kubernetes import k8s_bundle
from tests.test_k8s_bundle import (
    FAKE_PINS,
    Odd,
    good_files,
    image_archive,
    sums_for,
    write_bundle,
)

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "cloudinit" / "k8s"
DATA = Path(__file__).resolve().parent / "data" / "k8s"
SCRIPTS = ("prereqs", "bundle", "init", "join", "policies")
# Real tools the scripts may use here, linked into the curated PATH (never kubeadm/kubectl).
REAL_TOOLS = (
    *(
        "awk",
        "basename",
        "cat",
        "chmod",
        "cp",
        "cut",
        "dirname",
        "find",
        "grep",
        "gzip",
        "head",
        "id",
    ),
    *("install", "mkdir", "mktemp", "mv", "paste", "readlink", "rm", "sed", "sha256sum", "sort"),
    *("stat", "tar", "tr", "wc"),
)


def test_every_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck is not None, "shellcheck is required (apt-get install shellcheck)"
    result = run([shellcheck, "-x", *SCRIPTS, "lib.sh"], cwd=K8S, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_is_executable_strict_bash(script: str) -> None:
    path = K8S / script
    assert path.stat().st_mode & stat.S_IXUSR
    lines = path.read_text().splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "set -euo pipefail" in lines


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_refuses_an_unknown_subcommand_with_usage(script: str, env: Env) -> None:
    result = env.run(script, "frobnicate")
    assert result.returncode == 2
    assert f"{script}: usage: " in result.stderr


def test_the_units_use_the_bundles_kubelet() -> None:
    assert "ExecStart=/usr/local/bin/kubelet\n" in (K8S / "kubelet.service").read_text()
    dropin = (K8S / "10-kubeadm.conf").read_text()
    assert "ExecStart=\nExecStart=/usr/local/bin/kubelet $KUBELET_KUBECONFIG_ARGS" in dropin


# --- the environment each script runs in ---


class Env:
    """A curated PATH, an overridable config dir and a private TMPDIR."""

    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "bin"
        self.etc = tmp_path / "etc-provision-k8s"
        self.state = tmp_path / "state"
        self.tmp = tmp_path / "tmp"
        self.sysroot = tmp_path / "sysroot"
        for d in (self.bin, self.etc, self.state, self.tmp):
            d.mkdir()
        for tool in REAL_TOOLS:
            found = shutil.which(tool)
            assert found is not None, tool
            (self.bin / tool).symlink_to(found)
        self.vars: dict[str, str] = {}

    def fake(self, name: str, body: str) -> None:
        path = self.bin / name
        # Drop a symlink to a real tool first: writing through it would replace the real tool.
        path.unlink(missing_ok=True)
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
        assert not path.is_symlink() and path.resolve().parent == self.bin.resolve()

    def run(self, script: str, *args: str) -> Result:
        env = {
            "PATH": str(self.bin),
            "PROVISION_K8S_ETC": str(self.etc),
            "PROVISION_K8S_STATE": str(self.state),
            "TMPDIR": str(self.tmp),
            "LC_ALL": "C",
            **self.vars,
        }
        return run([K8S / script, *args], env=env, check=False)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = Env(tmp_path)
    for binary in ("kubeadm", "kubectl"):
        assert not (e.bin / binary).exists()
    return e


# --- bundle verify on this machine ---


@pytest.fixture
def bundle_env(env: Env) -> Env:
    (env.etc / "pins.sha256").write_text(k8s_bundle.pins_sha256(FAKE_PINS))
    (env.etc / "version").write_text("1.34.4\n")
    return env


@pytest.mark.parametrize(("gz", "prefix"), [(False, ""), (True, "./")])
def test_bundle_verify_accepts_a_good_bundle(
    bundle_env: Env, tmp_path: Path, gz: bool, prefix: str
) -> None:
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, good_files(), gz=gz, prefix=prefix)
    result = bundle_env.run("bundle", "verify", str(path), digest)
    assert result.returncode == 0, result.stderr
    assert (
        f"verified: sha256 {digest}, 12 files match SHA256SUMS, 5 pinned artifacts match"
        in result.stdout
    )
    assert list(bundle_env.tmp.iterdir()) == []  # its private work directory is gone


def _flip(files: dict[str, bytes], name: str) -> dict[str, bytes]:
    data = bytearray(files[name])
    data[0] ^= 1
    return files | {name: bytes(data)}


def _scenarios() -> dict[str, tuple[dict[str, bytes], bytes | None, tuple[Odd, ...], list[str]]]:
    good = good_files()
    sums = sums_for(good)
    less = dict(good)
    del less["bin/kubelet"]
    return {
        "changed-byte": (
            _flip(good, "bin/kubeadm"),
            None,
            (),
            ["bundle: refused: bin/kubeadm: sha256", "differs from the pinned upstream"],
        ),
        "changed-byte-old-sums": (
            _flip(good, "archives/crictl-v1.34.0-linux-amd64.tar.gz"),
            sums,
            (),
            ["differs from SHA256SUMS", "crictl-v1.34.0-linux-amd64.tar.gz: sha256"],
        ),
        "extra-file": (good | {"bin/helper": b"x"}, None, (), ["unexpected member bin/helper"]),
        "unlisted-file": (
            good | {"images/extra.tar": image_archive("x/y:z")},
            sums,
            (),
            ["member images/extra.tar is not listed in SHA256SUMS"],
        ),
        "dotdot": (good, None, (Odd("../evil", tarfile.REGTYPE),), ["../evil climbs out"]),
        "absolute": (
            good,
            None,
            (Odd("/tmp/evil", tarfile.REGTYPE),),
            ["/tmp/evil is an absolute"],
        ),
        "symlink": (
            good,
            None,
            (Odd("images/link.tar", tarfile.SYMTYPE, "/etc/shadow"),),
            ["member images/link.tar is a symlink"],
        ),
        "hardlink": (
            good,
            None,
            (Odd("images/hard.tar", tarfile.LNKTYPE, "bin/kubeadm"),),
            ["member images/hard.tar is a hard link"],
        ),
        "device": (good, None, (Odd("images/dev.tar", tarfile.CHRTYPE),), ["is a device"]),
        "missing-binary": (less, None, (), ["bin/kubelet is missing (pinned in"]),
        "ghost-in-sums": (
            good,
            sums + f"{'0' * 64}  bin/ghost\n".encode(),
            (),
            ["SHA256SUMS lists bin/ghost, which is not in the bundle"],
        ),
    }


@pytest.mark.parametrize("scenario", sorted(_scenarios()))
def test_bundle_verify_refuses_a_tampered_bundle_like_the_python_verifier(
    bundle_env: Env, tmp_path: Path, scenario: str
) -> None:
    files, sums, odd, fragments = _scenarios()[scenario]
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, files, sums=sums, odd=odd)
    result = bundle_env.run("bundle", "verify", str(path), digest)
    assert result.returncode == 3, result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert all(line.startswith("bundle: refused: ") for line in result.stderr.splitlines())
    assert list(bundle_env.tmp.iterdir()) == []
    assert not (tmp_path / "evil").exists()
    with pytest.raises(k8s_bundle.BundleError):  # the operator's machine refuses it too
        k8s_bundle.verify_bundle(path, digest, "1.34.4", pins=FAKE_PINS)


def test_bundle_verify_lists_every_listing_problem_at_once(bundle_env: Env, tmp_path: Path) -> None:
    path = tmp_path / "bundle.tar"
    odd = (Odd("../x", tarfile.REGTYPE), Odd("bin/l", tarfile.SYMTYPE, "/etc/passwd"))
    digest = write_bundle(path, good_files() | {"notes.txt": b"hi"}, odd=odd)
    result = bundle_env.run("bundle", "verify", str(path), digest)
    assert result.returncode == 3
    assert len(result.stderr.splitlines()) == 3, result.stderr


def test_bundle_verify_refuses_a_file_that_is_not_a_tar(bundle_env: Env, tmp_path: Path) -> None:
    path = tmp_path / "bundle.tar"
    path.write_bytes(b"not a tar" * 100)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    result = bundle_env.run("bundle", "verify", str(path), digest)
    assert result.returncode == 3
    assert "bundle: refused: not a readable tar archive" in result.stderr


def test_bundle_verify_refuses_a_missing_bundle(bundle_env: Env, tmp_path: Path) -> None:
    result = bundle_env.run("bundle", "verify", str(tmp_path / "nowhere.tar"), "0" * 64)
    assert result.returncode == 3
    assert "no such file" in result.stderr


def test_bundle_verify_needs_the_rendered_pins(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, good_files())
    result = env.run("bundle", "verify", str(path), digest)
    assert result.returncode == 5
    assert f"missing {env.etc}/pins.sha256 (rendered by the seed)" in result.stderr


def test_bundle_verify_refuses_malformed_pins(bundle_env: Env, tmp_path: Path) -> None:
    (bundle_env.etc / "pins.sha256").write_text("deadbeef  bin/kubeadm\n")
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, good_files())
    result = bundle_env.run("bundle", "verify", str(path), digest)
    assert result.returncode == 5
    assert "pins.sha256 line 1 is not" in result.stderr


def test_the_node_compares_what_it_received_with_bundle_sha256(
    bundle_env: Env, tmp_path: Path
) -> None:
    """Issue #15: the operator's machine checks bundle_sha256 at preflight and reads the file
    again minutes later to upload it; a bundle swapped in between (a good, pinned one even) is
    refused by the node before anything is extracted."""
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, good_files())
    other = write_bundle(tmp_path / "other.tar", good_files(), gz=True)
    result = bundle_env.run("bundle", "verify", str(path), other)
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stderr.strip() == (
        f"bundle: refused: {path}: sha256 {digest} is not the inventory's bundle_sha256 {other}"
    )
    assert list(bundle_env.tmp.iterdir()) == []
    bad = bundle_env.run("bundle", "verify", str(path), "ZZ")
    assert bad.returncode != 0 and "64 lowercase hex" in bad.stderr


def test_bundle_check_fails_when_the_pinned_binaries_are_not_installed(bundle_env: Env) -> None:
    result = bundle_env.run("bundle", "check")  # reads /usr/local/bin only; fake pins never match
    assert result.returncode == 1
    assert "FAIL /usr/local/bin/kubeadm: not installed or not the pinned build" in result.stdout


# --- refusals on a node without binaries: before any side effect ---

NO_KUBEADM = "kubeadm is not installed: install a bundle or use install: apt"


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("init", ("apply",), f"init: {NO_KUBEADM}"),
        ("init", ("join-material",), f"init: {NO_KUBEADM}"),
        ("join", ("apply",), f"join: {NO_KUBEADM}"),
        ("policies", ("apply",), "policies: kubectl is not installed: install a bundle or use"),
        ("policies", ("check",), "policies: kubectl is not installed"),
    ],
)
def test_bootstrap_steps_refuse_without_the_binaries(
    env: Env, script: str, args: tuple[str, ...], message: str
) -> None:
    # Rendered inputs are present, so the refusal is about the binary and nothing else.
    (env.etc / "kubeadm-init.yaml").write_text("kind: InitConfiguration\n")
    (env.etc / "encryption-config.yaml.tmpl").write_text("secret: __PROVISION_ENCRYPTION_KEY__\n")
    before_etc = sorted(env.etc.iterdir())
    enc_existed = Path("/etc/kubernetes/enc").exists()
    result = env.run(script, *args)
    assert result.returncode == 4, result.stdout + result.stderr
    assert result.stderr.startswith(message)
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""
    assert sorted(env.etc.iterdir()) == before_etc
    assert list(env.state.iterdir()) == []
    assert list(env.tmp.iterdir()) == []
    assert Path("/etc/kubernetes/enc").exists() == enc_existed


# --- helpers that handle secrets (lib.sh) ---


def _lib(env: Env, snippet: str, **variables: str) -> Result:
    program = f'PROG=test; . "{K8S}/lib.sh"; {snippet}'
    base = {"PATH": str(env.bin), "PROVISION_K8S_ETC": str(env.etc), "LC_ALL": "C"}
    return run(["/bin/bash", "-euo", "pipefail", "-c", program], env=base | variables, check=False)


def test_render_private_fills_placeholders_from_the_environment_into_a_0600_file(
    env: Env, tmp_path: Path
) -> None:
    template = tmp_path / "join.yaml"
    template.write_text("token: __PROVISION_JOIN_TOKEN__\nhash: __PROVISION_CA_CERT_HASH__\n")
    target = tmp_path / "out.yaml"
    result = _lib(
        env,
        f'render_private "{template}" "{target}" PROVISION_JOIN_TOKEN PROVISION_CA_CERT_HASH',
        PROVISION_JOIN_TOKEN="abcdef.0123456789abcdef",
        PROVISION_CA_CERT_HASH="sha256:" + "a" * 64,
    )
    assert result.returncode == 0, result.stderr
    assert target.read_text() == (f"token: abcdef.0123456789abcdef\nhash: sha256:{'a' * 64}\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("out.yaml.")] == []


def test_render_private_keeps_base64_keys_intact(env: Env, tmp_path: Path) -> None:
    template = tmp_path / "enc.tmpl"
    template.write_text("secret: __PROVISION_ENCRYPTION_KEY__\n")
    key = "q+/Zx9" * 7 + "A="
    result = _lib(
        env,
        f'render_private "{template}" "{tmp_path}/enc.yaml" PROVISION_ENCRYPTION_KEY',
        PROVISION_ENCRYPTION_KEY=key,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "enc.yaml").read_text() == f"secret: {key}\n"


def test_render_private_refuses_a_template_without_the_placeholder(
    env: Env, tmp_path: Path
) -> None:
    template = tmp_path / "enc.tmpl"
    template.write_text("secret: hard-coded\n")
    result = _lib(env, f'render_private "{template}" "{tmp_path}/x" PROVISION_ENCRYPTION_KEY')
    assert result.returncode == 5
    assert "has no __PROVISION_ENCRYPTION_KEY__ placeholder" in result.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("mode", "ok"), [(0o600, True), (0o400, True), (0o640, False)])
def test_require_private_file_refuses_group_or_world_access(
    env: Env, tmp_path: Path, mode: int, ok: bool
) -> None:
    secret = tmp_path / "join.env"
    secret.write_text("PROVISION_JOIN_TOKEN=x\n")
    secret.chmod(mode)
    result = _lib(env, f'require_private_file "{secret}"')
    assert (result.returncode == 0) is ok, result.stderr
    if not ok:
        assert result.returncode == 5 and "must not be readable by group or others" in result.stderr


# --- prereqs check against a fake /proc, /sys and containerd ---

SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/bridge/bridge-nf-call-iptables": "1",
    "net/bridge/bridge-nf-call-ip6tables": "1",
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}


@pytest.fixture
def node(env: Env) -> Env:
    """A node where every prerequisite holds."""
    root = env.sysroot
    for module in ("overlay", "br_netfilter"):
        (root / "sys" / "module" / module).mkdir(parents=True)
    for key, value in SYSCTLS.items():
        path = root / "proc" / "sys" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    (root / "proc" / "swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n")
    (root / "etc").mkdir()
    (root / "etc" / "fstab").write_text("# <fs> <mp> <type>\nLABEL=root / ext4 defaults 0 1\n")
    dump = env.sysroot / "containerd-dump.toml"
    shutil.copy(DATA / "containerd-config-dump.toml", dump)
    for tool in ("ip", "iptables", "mount", "nsenter"):
        env.fake(tool, "exit 0")
    env.fake("systemctl", 'exit "${FAKE_CONTAINERD_INACTIVE:-0}"')
    env.fake("containerd", f'[ "$1 $2" = "config dump" ] && exec cat "{dump}"')
    env.vars["PROVISION_K8S_SYSROOT"] = str(env.sysroot)
    return env


def test_prereqs_check_passes_when_everything_holds(node: Env) -> None:
    result = node.run("prereqs", "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "prereqs: all 21 prerequisites hold\n"


def _set(node: Env, key: str, value: str) -> None:
    (node.sysroot / "proc" / "sys" / key).write_text(value + "\n")


def _edit_dump(node: Env, old: str, new: str) -> None:
    dump = node.sysroot / "containerd-dump.toml"
    text = dump.read_text()
    assert old in text
    dump.write_text(text.replace(old, new))


BREAKAGES = {
    "module": (
        lambda n: (n.sysroot / "sys" / "module" / "br_netfilter").rmdir(),
        "FAIL module br_netfilter: not loaded",
    ),
    "ip_forward": (
        lambda n: _set(n, "net/ipv4/ip_forward", "0"),
        "FAIL sysctl net.ipv4.ip_forward: is 0, must be 1",
    ),
    "bridge-sysctl-absent": (
        lambda n: (n.sysroot / "proc/sys/net/bridge/bridge-nf-call-ip6tables").unlink(),
        "FAIL sysctl net.bridge.bridge-nf-call-ip6tables: not present on this kernel",
    ),
    "overcommit": (
        lambda n: _set(n, "vm/overcommit_memory", "2"),
        "FAIL sysctl vm.overcommit_memory: is 2, must be 1",
    ),
    "root_maxbytes": (
        lambda n: _set(n, "kernel/keys/root_maxbytes", "25000"),
        "FAIL sysctl kernel.keys.root_maxbytes: is 25000, must be 25000000",
    ),
    "swap-active": (
        lambda n: (n.sysroot / "proc" / "swaps").write_text(
            "Filename\tType\tSize\tUsed\tPriority\n/dev/vda2 partition 1024 0 -2\n"
        ),
        "FAIL swap: active on /dev/vda2",
    ),
    "swap-in-fstab": (
        lambda n: (n.sysroot / "etc" / "fstab").write_text("/swapfile none swap sw 0 0\n"),
        "FAIL swap: /etc/fstab mounts swap /swapfile",
    ),
    "tool": (lambda n: (n.bin / "nsenter").unlink(), "FAIL tool nsenter: not installed"),
    "containerd-inactive": (
        lambda n: n.vars.update(FAKE_CONTAINERD_INACTIVE="3"),
        "FAIL containerd: service is not active",
    ),
    "cgroupfs": (
        lambda n: _edit_dump(n, "SystemdCgroup = true", "SystemdCgroup = false"),
        "FAIL containerd: runc options lack SystemdCgroup = true",
    ),
    "debian-cni-dir": (
        lambda n: _edit_dump(n, 'bin_dir = "/opt/cni/bin"', 'bin_dir = "/usr/lib/cni"'),
        "FAIL containerd: CNI bin_dir is not /opt/cni/bin",
    ),
    "cri-disabled": (
        lambda n: _edit_dump(n, "disabled_plugins = []", 'disabled_plugins = ["cri"]'),
        "FAIL containerd: the CRI plugin is disabled",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_prereqs_check_names_each_failing_item(node: Env, breakage: str) -> None:
    breaks, line = BREAKAGES[breakage]
    breaks(node)
    result = node.run("prereqs", "check")
    assert result.returncode == 1
    fails = [x for x in result.stdout.splitlines() if x.startswith("FAIL")]
    assert len(fails) == 1 and fails[0].startswith(line), result.stdout
    assert result.stdout.endswith("prereqs: 1 of 21 prerequisites fail\n")


def test_prereqs_check_reports_every_failing_item_at_once(node: Env) -> None:
    for name in ("ip_forward", "swap-active", "cgroupfs"):
        BREAKAGES[name][0](node)
    result = node.run("prereqs", "check")
    assert result.returncode == 1
    assert len([x for x in result.stdout.splitlines() if x.startswith("FAIL")]) == 3


def test_prereqs_apply_refuses_without_root(node: Env) -> None:
    if os.geteuid() == 0:
        node.fake("id", "echo 1000")  # apply must not touch this machine: pretend to be a user
    result = node.run("prereqs", "apply")
    assert result.returncode == 1
    assert result.stderr == "prereqs: must run as root\n"
