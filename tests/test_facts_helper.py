"""The facts helper tells the verifier only what the checks need (issue #13).

The helper (cloudinit/verify-facts.sh.j2) is rendered from the local inventory and run here with
sh: its path verbs refuse every path outside hardening.FACTS_HELPER_PATHS (and what valid_path
already refused), and its docker-inspect verb passes `docker inspect` through INSPECT_FILTER,
which keeps only the fields the container rules read. The filter runs on the recorded inspect
output (tests/data/verify-docker-inspect.json) with secrets planted in it; the rules give the same
verdicts on the raw and the filtered output, and every field they read is kept. The verifier's
authorized key carries `restrict`, and the suite's SSH session works under it (a real sshd).
"""

from __future__ import annotations

import copy
import inspect
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml

from provision.baseline import hardening
from provision.boundary import ssh
from provision.boundary.process import Result, run
from provision.config import inventory
from provision.desired import seed
from provision.verify import containers as crt
from provision.verify.backend import host as pinned_host
from provision.verify.suite import check_containers
from tests.helpers import LOCAL, OSLO, ROOT, VERIFIER_KEY, render_inv
from tests.sshd import HOST, running_sshd

DATA = Path(__file__).parent / "data"
SECRET = "hunter2-s3cret"
ROOT_PATH_LINE = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"


def _helper_text() -> str:
    r = render_inv(inventory.load(LOCAL)).nodes[0]
    files = {
        f["path"]: f["content"] for f in yaml.safe_load(r.seed.user_data.reveal())["write_files"]
    }
    text: str = files[hardening.FACTS_HELPER]
    return text


HELPER_TEXT = _helper_text()


@pytest.fixture(scope="module")
def helper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("helper") / "verify-facts"
    path.write_text(HELPER_TEXT)
    return path


def _run(helper: Path, *args: str) -> Result:
    return run(["sh", str(helper), *args], check=False)


# --- refusals --------------------------------------------------------------------------------

REFUSED = [
    ([], "usage: verify-facts VERB"),
    (["bogus"], "unknown verb"),
    (["STAT", "/etc/docker/x"], "unknown verb"),
    (["stat"], "usage: stat PATH..."),
    (["stat-ids"], "usage: stat-ids PATH..."),
    (["exists"], "usage: exists PATH..."),
    # Outside the paths the suite reads (each a root-only secret or metadata it never needs).
    (["stat", "/etc/shadow"], "stat: /etc/shadow is not a path the verification suite reads"),
    (["stat-ids", "/root/.ssh"], "stat-ids: /root/.ssh is not a path the verification suite"),
    (["exists", "/root/.ssh/id_ed25519"], "exists: /root/.ssh/id_ed25519 is not a path the"),
    (["exists", "/home/app/.docker/config.json"], "exists: /home/app/.docker/config.json is"),
    # A directory entry stands for what is below it, not for the directory itself...
    (["stat", "/etc/docker"], "stat: /etc/docker is not a path the verification suite reads"),
    (["stat", "/etc/docker/"], "stat: /etc/docker/ is not a path the verification suite reads"),
    # ... and an exact entry for that path only.
    (["stat", "/etc/systemd/system/kubelet.service.bak"], "is not a path the verification"),
    (["stat", "/etc/systemd/system/kubelet.serviced/x"], "is not a path the verification"),
    (["stat", "/var/lib/dockerx/y"], "is not a path the verification suite reads"),
    # One refused path refuses the whole call.
    (["stat", "/etc/docker/daemon.json", "/etc/shadow"], "stat: /etc/shadow is not a path"),
    (["exists", "/var/lib/docker/x", "/etc/gshadow"], "exists: /etc/gshadow is not a path"),
    # valid_path's own checks come first and still hold, inside the allowed prefixes too.
    (["stat", "/etc/docker/../shadow"], "stat: invalid path"),
    (["stat-ids", "/var/lib/docker/../../../etc/shadow"], "stat-ids: invalid path"),
    (["exists", "/etc/docker/.."], "exists: invalid path"),
    (["exists", "/etc/docker/x\n/etc/shadow"], "exists: invalid path"),
    (["stat", "/etc/docker/x\n"], "stat: invalid path"),
    (["stat", "etc/docker/x"], "stat: invalid path"),
    (["stat", "-L"], "stat: invalid path"),
    (["stat", "/etc/docker/*"], "stat: invalid path"),
    (["stat", "/etc/docker/$(id)"], "stat: invalid path"),
    (["stat", "/etc/docker/a b"], "stat: invalid path"),
    # The other verbs that take an argument.
    (["docker-inspect"], "usage: docker-inspect rootful|rootless"),
    (["docker-inspect", "rootful", "rootless"], "usage: docker-inspect rootful|rootless"),
    (["docker-inspect", "root"], "docker-inspect: rootful or rootless"),
    (["docker-inspect", "rootful\n"], "docker-inspect: rootful or rootless"),
    (["docker-inspect", "--all"], "docker-inspect: rootful or rootless"),
    (["docker-inspect", "rootless;id"], "docker-inspect: rootful or rootless"),
    (["docker-probe", "other"], "docker-probe: rootful or rootless"),
    (["find-stat", "/etc"], "find-stat: not one of the fixed directories"),
    (["find-stat", "/etc/kubernetes/pki/.."], "find-stat: not one of the fixed directories"),
    (["sshd", "root;id"], "sshd: invalid user name"),
    (["sshd", "verifier\nroot"], "sshd: invalid user name"),
    (["sysctl", "-w"], "sysctl takes no arguments"),
    (["rootless-config", "/etc/shadow"], "rootless-config takes no arguments"),
]


@pytest.mark.parametrize(("args", "message"), REFUSED, ids=[repr(a) for a, _ in REFUSED])
def test_the_helper_refuses(helper: Path, args: list[str], message: str) -> None:
    r = _run(helper, *args)
    assert r.returncode == 64, r
    assert message in r.stderr
    assert r.stdout == ""


def _allowed_examples() -> list[str]:
    return [p + "x" if p.endswith("/") else p for p in hardening.FACTS_HELPER_PATHS]


@pytest.mark.parametrize("path", _allowed_examples())
def test_every_allowed_path_is_answered(helper: Path, path: str) -> None:
    """`exists` only tests (nothing here has these paths); `stat` of one that is absent fails
    as stat fails, which stat_paths reads as "absent", never as a refusal."""
    r = _run(helper, "exists", path)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout in ("", f"{path}\n")
    if not r.stdout:
        r = _run(helper, "stat", path)
        assert r.returncode == 1
        assert "No such file or directory" in r.stderr


def test_the_allowed_paths_are_plain_absolute_paths() -> None:
    """Each is a case pattern in the helper: valid_path's characters only, no glob character,
    no `..`; a directory entry ends in / (anything below it)."""
    paths = hardening.FACTS_HELPER_PATHS
    assert len(set(paths)) == len(paths)
    for p in paths:
        assert re.fullmatch(r"/[A-Za-z0-9_./@:+-]*", p), p
        assert "/../" not in f"/{p}/" and "//" not in p, p
    block = HELPER_TEXT.split("allowed_path() {", 1)[1].split("\n}\n", 1)[0]
    patterns = re.findall(r"^ {4}(\S+)\) return 0 ;;$", block, re.M)
    assert patterns == [p + "?*" if p.endswith("/") else p for p in paths]


def _allowed(helper: Path, *paths: str) -> bool:
    return _run(helper, "exists", *paths).returncode != 64


def test_the_paths_the_suite_asks_at_run_time_are_allowed(helper: Path) -> None:
    """The suite asks the helper only for paths the snapshot cannot list in advance."""
    # HN-DKR-02: the rootful daemon's remapped root (Docker's DockerRootDir), as recorded.
    snapshot = json.loads((DATA / "snapshot" / "snapshot.json").read_text())
    root = json.loads(snapshot["verbs"]["docker-info"]["stdout"])["DockerRootDir"]
    assert _allowed(helper, root)
    # HN-FS-08: kubelet.service and its drop-in where our bundle installs them, or the package.
    bundle = (ROOT / "cloudinit" / "k8s" / "bundle").read_text()
    units = set(re.findall(r"/(?:etc|lib)/systemd/system/kubelet\.service[\w/.-]*", bundle))
    assert len(units) == 4, units
    for unit in units:
        assert _allowed(helper, unit), unit
        assert _allowed(helper, unit.replace("/lib/", "/usr/lib/", 1)), unit
    # HN-FS-06: Docker's TLS files, where the docs keep them.
    assert _allowed(helper, "/etc/docker/ca.pem", "/etc/docker/certs/server-key.pem")


# --- docker-inspect: only the fields the checks read -----------------------------------------


def _filter_program() -> str:
    """The helper's INSPECT_FILTER assignment, as the shell sees it."""
    m = re.search(r"^INSPECT_FILTER='\n.*?\n'$", HELPER_TEXT, re.S | re.M)
    assert m is not None, "the helper has no INSPECT_FILTER='...' assignment"
    return m.group(0)


def inspect_filter(text: str) -> Result:
    """Run the filter exactly as the docker-inspect verb does: python3 -I -c "$INSPECT_FILTER"."""
    script = _filter_program() + '\nexec python3 -I -c "$INSPECT_FILTER"\n'
    return run(["sh", "-c", script], input=text, check=False)


def _filtered(doc: Any) -> Any:
    r = inspect_filter(json.dumps(doc))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def recorded() -> list[dict[str, Any]]:
    """The recorded `docker inspect` of two containers (good and careless), with secrets planted
    where Docker keeps them and where a later Docker might add a field."""
    doc: list[dict[str, Any]] = json.loads((DATA / "verify-docker-inspect.json").read_text())
    for c in doc:
        c["Config"]["Env"] = [f"DB_PASSWORD={SECRET}", "PATH=/usr/bin"]
        c["Config"]["Labels"] = {"token": SECRET}
        c["Args"] = [f"--token={SECRET}"]
        c["State"]["Health"] = {"Log": [{"Output": SECRET}]}
        c["HostConfig"]["FutureField"] = SECRET
        c["FutureSection"] = {"User": SECRET}
        for bindings in c["HostConfig"]["PortBindings"].values():
            for b in bindings:
                b["Future"] = SECRET
    doc[1]["Mounts"][0]["Name"] = SECRET
    return doc


def variants() -> list[dict[str, Any]]:
    """The recorded containers and a few edits of them that take the rules' other branches."""
    good, bad = recorded()
    more = []
    for edit in (
        lambda c: c["HostConfig"].update(CapAdd=["SYS_ADMIN"], CapDrop=["CHOWN"]),
        lambda c: c["HostConfig"].update(SecurityOpt=["systempaths=unconfined"], CpuQuota=5),
        lambda c: c["HostConfig"].update(Sysctls={"net.ipv4.tcp_syncookies": "1"}, Memory=0),
        lambda c: c["HostConfig"].update(PortBindings={"53/udp": [{"HostIp": "::"}]}),
        lambda c: c.update(Mounts=[{"Source": "/run/docker.sock"}, {"Source": "/srv/"}]),
        lambda c: c["Config"].update(User="0:0"),
        lambda c: c.update(Name="", AppArmorProfile=""),
    ):
        c = copy.deepcopy(good)
        edit(c)
        more.append(c)
    return [good, bad, *more]


# Every field the filter passes on: Sysctls' values are not read (null), nothing else exists.
KEPT_FIELDS = {
    "Id",
    "Name",
    "AppArmorProfile",
    "State.Pid",
    "Config.User",
    "Mounts[].Source",
    "HostConfig.Privileged",
    "HostConfig.CapAdd",
    "HostConfig.CapDrop",
    "HostConfig.SecurityOpt",
    "HostConfig.ReadonlyRootfs",
    "HostConfig.MaskedPaths",
    "HostConfig.Sysctls.*",
    "HostConfig.NetworkMode",
    "HostConfig.PidMode",
    "HostConfig.IpcMode",
    "HostConfig.UTSMode",
    "HostConfig.UsernsMode",
    "HostConfig.Memory",
    "HostConfig.CpuShares",
    "HostConfig.NanoCpus",
    "HostConfig.CpuQuota",
    "HostConfig.PidsLimit",
    "HostConfig.PortBindings.*[].HostIp",
    "HostConfig.PortBindings.*[].HostPort",
}
MAPS = {"HostConfig.Sysctls", "HostConfig.PortBindings"}  # keyed by name, not by field


def _leaves(value: Any, path: str = "") -> set[str]:
    """The paths of the scalars (and lists of scalars) in a container: `*` a map's value, `[]`
    a list item; an empty object or list has none."""
    if isinstance(value, dict):
        parts = [
            _leaves(v, f"{path}.*" if path in MAPS else (f"{path}.{k}" if path else k))
            for k, v in value.items()
        ]
        return set().union(*parts)
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return set().union(*(_leaves(v, f"{path}[]") for v in value))
    return {path}


def test_the_filter_drops_config_env_and_every_field_not_read() -> None:
    raw = recorded()
    r = inspect_filter(json.dumps(raw))
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout and "DB_PASSWORD" not in r.stdout
    filtered = json.loads(r.stdout)
    assert isinstance(filtered, list) and len(filtered) == len(raw)
    for c in filtered:
        assert "Env" not in c["Config"]
        assert _leaves(c) <= KEPT_FIELDS, _leaves(c) - KEPT_FIELDS
    assert set().union(*(_leaves(c) for c in filtered)) == KEPT_FIELDS
    assert filtered[1]["HostConfig"]["Sysctls"] == {"kernel.msgmax": None}


def _rules() -> dict[str, Callable[[crt.Container], object]]:
    """Every reader of one container in containers.py (found by signature: a rule added later
    is covered without editing this test), and the suite's main_status."""
    found: dict[str, Callable[[crt.Container], object]] = {
        n: f
        for n, f in vars(crt).items()
        if inspect.isfunction(f)
        and f.__module__ == crt.__name__
        and not n.startswith("_")
        and list(inspect.signature(f).parameters) == ["c"]
    }
    assert {"privileged", "capabilities", "open_port_bindings", "name"} <= set(found)
    assert len(found) >= 12
    found["main_status"] = lambda c: check_containers.main_status(_Host(), c)  # type: ignore[arg-type]
    return found


@dataclass
class _File:
    path: str
    exists: bool = True
    content_string: str = "Seccomp:\t2\nNoNewPrivs:\t1\nCapEff:\t0\n"


class _Host:
    """The `host` main_status reads /proc/PID/status through: it says which path was asked."""

    def file(self, path: str) -> _File:
        return _File(path, content_string=f"Asked:\t{path}\n")


def test_the_rules_give_the_same_verdicts_on_the_filtered_output() -> None:
    raw = variants()
    filtered = _filtered(raw)
    for rule_name, rule in _rules().items():
        got = [rule(c) for c in filtered]
        assert got == [rule(c) for c in raw], rule_name
    verdicts = {n: {r(c) is None for c in raw} for n, r in _rules().items()}
    for n in ("privileged", "capabilities", "sensitive_mounts", "open_port_bindings"):
        assert verdicts[n] == {True, False}, f"{n}: the variants must both pass and fail it"
    names = [crt.name(c) for c in crt.parse_inspect(json.dumps(filtered))]
    assert names == [crt.name(c) for c in crt.parse_inspect(json.dumps(raw))]


# A reading spy: every field a rule reads, by path, so that a rule reading a field the filter
# drops fails here even when the recorded output happens to give the same verdict without it.


class _Spy(dict[str, Any]):
    def __init__(self, data: dict[str, Any], path: tuple[str, ...], reads: set[Any]) -> None:
        super().__init__(data)
        self._path, self._reads = path, reads

    def _at(self, key: str) -> tuple[str, ...]:
        return (*self._path, key)

    def get(self, key: str, default: Any = None) -> Any:
        self._reads.add(("value", self._at(key)))
        if key not in self:
            return default
        return _wrap(super().__getitem__(key), self._at(key), self._reads)

    def __getitem__(self, key: str) -> Any:
        self._reads.add(("value", self._at(key)))
        return _wrap(super().__getitem__(key), self._at(key), self._reads)

    def __iter__(self) -> Iterator[str]:
        self._reads.add(("keys", self._path))
        return super().__iter__()

    def keys(self) -> Any:
        self._reads.add(("keys", self._path))
        return super().keys()

    def items(self) -> Any:
        self._reads.add(("keys", self._path))
        return [(k, _wrap(v, self._at("*"), self._reads)) for k, v in super().items()]

    def values(self) -> Any:
        return [v for _, v in self.items()]


def _wrap(value: Any, path: tuple[str, ...], reads: set[Any]) -> Any:
    if isinstance(value, dict):
        return _Spy(value, path, reads)
    if isinstance(value, list):
        return [_wrap(v, (*path, "[]"), reads) for v in value]
    return value


ABSENT = object()


def _pairs(raw: Any, filtered: Any, path: tuple[str, ...]) -> Iterator[tuple[Any, Any]]:
    """(raw, filtered) values at a read path, `*` over a map's values, `[]` over a list."""
    if not path:
        yield raw, filtered
        return
    head, rest = path[0], path[1:]
    if head == "[]":
        assert isinstance(filtered, list) and len(filtered) == len(raw)
        for r, f in zip(raw, filtered, strict=True):
            yield from _pairs(r, f, rest)
    elif isinstance(raw, dict):
        assert isinstance(filtered, dict)
        keys = list(raw) if head == "*" else [head]
        for k in keys:
            yield from _pairs(raw.get(k, ABSENT), filtered.get(k, ABSENT), rest)


def _same(raw: Any, filtered: Any) -> bool:
    """What a reader sees: the same scalar, an object (its fields checked on their own), or a
    list of as many items of the same kind."""
    if isinstance(raw, dict):
        return isinstance(filtered, dict)
    if isinstance(raw, list):
        return (
            isinstance(filtered, list)
            and len(raw) == len(filtered)
            and all(_same(r, f) for r, f in zip(raw, filtered, strict=True))
        )
    return bool(raw == filtered) and type(raw) is type(filtered)


def test_every_field_a_rule_reads_is_kept() -> None:
    raw = variants()
    filtered = _filtered(raw)
    for rule_name, rule in _rules().items():
        for r, f in zip(raw, filtered, strict=True):
            reads: set[Any] = set()
            rule(_Spy(r, (), reads))
            assert reads, rule_name
            for kind, path in reads:
                for rv, fv in _pairs(r, f, path):
                    if kind == "keys":
                        assert rv is ABSENT or fv is not ABSENT, (rule_name, path, "dropped")
                        assert (rv is ABSENT) == (fv is ABSENT), (rule_name, path)
                        assert rv is ABSENT or list(rv) == list(fv), (rule_name, path)
                    else:
                        assert _same(rv, fv), (rule_name, path, rv, fv)


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ([{"Name": "/x", "Config": {"User": {"secret": SECRET}}}], "[0].Config.User is a dict"),
        ([{"Name": {"n": SECRET}}], "[0].Name is a dict"),
        ([{"HostConfig": ["Privileged"]}], "[0].HostConfig is a list"),
        ([{"Mounts": {"Source": SECRET}}], "[0].Mounts is a dict"),
        ([{"HostConfig": {"CapAdd": [{"c": SECRET}]}}], "[0].HostConfig.CapAdd is a list"),
        ([{"HostConfig": {"Sysctls": [SECRET]}}], "[0].HostConfig.Sysctls is a list"),
        ([SECRET], "[0] is a str"),
    ],
)
def test_a_field_of_another_shape_is_an_error_not_passed_on(doc: Any, where: str) -> None:
    r = inspect_filter(json.dumps(doc))
    assert r.returncode == 1
    assert f"verify-facts: docker-inspect: {where}" in r.stderr
    assert SECRET not in r.stdout + r.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [('{"Id": "x"}', "did not return a JSON array"), ("[{", "JSONDecodeError")],
)
def test_what_is_not_an_inspect_array_is_an_error(text: str, message: str) -> None:
    r = inspect_filter(text)
    assert r.returncode == 1
    assert message in r.stderr
    assert r.stdout == ""


def test_absent_and_null_fields_stay_so() -> None:
    """`MaskedPaths == []` means unmasked: an absent or null one must not become []."""
    doc = [{"Id": "a", "HostConfig": {"MaskedPaths": None}, "Mounts": None}, {"Id": "b"}]
    assert _filtered(doc) == doc
    assert _filtered([]) == []


# --- docker-inspect end to end: the verb itself, with a stand-in docker and systemctl ---------


def _fake_node(
    tmp_path: Path, inspect_rc: int = 0, active: bool = True, ids: str = "a good\nb bad\n"
) -> Path:
    """The rendered helper with its PATH pointing first at stand-ins for docker and systemctl
    (the only change to it), so the real verb runs here."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "inspect.json").write_text(json.dumps(recorded(), indent=2))
    (tmp_path / "ids").write_text(ids)
    docker = bin_dir / "docker"
    docker.write_text(
        "#!/bin/sh\n"
        '[ "$1 $2" = "-H unix:///var/run/docker.sock" ] || exit 90\n'
        "shift 2\n"
        'case "$*" in\n'
        f"  'ps --no-trunc --format {{{{.ID}}}} {{{{.Names}}}}') cat {tmp_path / 'ids'} ;;\n"
        f"  'inspect a b') cat {tmp_path / 'inspect.json'}; exit {inspect_rc} ;;\n"
        "  *) exit 91 ;;\n"
        "esac\n"
    )
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(
        "#!/bin/sh\n"
        '[ "$*" = "is-active --quiet docker.service" ] || exit 92\n'
        f"exit {0 if active else 3}\n"
    )
    docker.chmod(0o755)
    systemctl.chmod(0o755)
    assert HELPER_TEXT.count(ROOT_PATH_LINE) == 1
    path = tmp_path / "verify-facts"
    path.write_text(HELPER_TEXT.replace(ROOT_PATH_LINE, f"PATH={bin_dir}:/usr/bin:/bin\n"))
    return path


def test_docker_inspect_passes_on_only_the_filtered_fields(tmp_path: Path) -> None:
    r = _run(_fake_node(tmp_path), "docker-inspect", "rootful")
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout
    assert json.loads(r.stdout) == _filtered(recorded())
    containers = crt.parse_inspect(r.stdout)
    assert [crt.name(c) for c in containers] == ["good", "bad"]
    assert crt.violations(containers, crt.privileged) == ["bad: privileged"]


def test_docker_inspect_without_containers_is_an_empty_array(tmp_path: Path) -> None:
    r = _run(_fake_node(tmp_path, ids=""), "docker-inspect", "rootful")
    assert (r.returncode, r.stdout) == (0, "[]\n")


def test_docker_inspect_leaves_out_the_verifiers_own_probes(tmp_path: Path) -> None:
    """docker-probe runs at the same time and removes its container: inspecting it failed the
    whole verb when it was gone between the listing and the inspect (seen on a loaded machine)."""
    ids = "a good\nc provision-probe\nb bad\nd provision-probe-user\n"
    r = _run(_fake_node(tmp_path, ids=ids), "docker-inspect", "rootful")
    assert r.returncode == 0, r.stderr  # the fake docker answers `inspect a b` only


def test_a_failed_docker_inspect_fails_and_passes_nothing_on(tmp_path: Path) -> None:
    """A container gone between `ps` and `inspect`: docker prints the rest and exits 1."""
    r = _run(_fake_node(tmp_path, inspect_rc=1), "docker-inspect", "rootful")
    assert r.returncode == 1
    assert r.stdout == ""


def test_docker_inspect_of_a_daemon_that_is_down_is_no_evidence(tmp_path: Path) -> None:
    r = _run(_fake_node(tmp_path, active=False), "docker-inspect", "rootful")
    assert r.returncode == 3
    assert "docker.service is not active" in r.stderr


def test_the_snapshot_reads_containers_only_through_the_filtered_verb() -> None:
    collector = HELPER_TEXT.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    assert '("docker-inspect", "rootful"), ("docker-inspect", "rootless")' in collector
    assert collector.count("inspect") == 2  # the two verb calls above, nothing else
    verb = HELPER_TEXT.split("  docker-inspect)\n", 1)[1].split("\n    ;;\n", 1)[0]
    assert 'python3 -I -c "$INSPECT_FILTER"' in verb


# --- the verifier's key: restrict ------------------------------------------------------------


def _renders() -> list[Any]:
    return [*render_inv(inventory.load(LOCAL)).nodes, *render_inv(inventory.load(OSLO)).nodes]


@pytest.mark.parametrize("r", _renders(), ids=lambda r: r.node.name)
def test_the_verifier_key_is_restricted_and_the_admin_keys_are_not(r: Any) -> None:
    text = r.seed.user_data.reveal()
    users = {u["name"]: u for u in yaml.safe_load(text)["users"]}
    assert users[hardening.VERIFIER_USER]["ssh_authorized_keys"] == [
        f"restrict {VERIFIER_KEY.public}"
    ]
    admin = users[r.node.admin.name]["ssh_authorized_keys"]
    assert admin and set(r.node.admin.ssh_keys) <= set(admin)  # and the managed key, if any
    for key in admin:
        assert key.split()[0] == "ssh-ed25519", f"an option on the operator's key: {key}"
    [line] = [x for x in text.splitlines() if VERIFIER_KEY.public.split()[1] in x]
    assert f'"restrict {VERIFIER_KEY.public}"' in line
    assert len(re.findall(r"\brestrict ssh-", text)) == 1  # that line alone


def test_the_suite_never_asks_for_a_pty() -> None:
    for source in [*(ROOT / "provision").rglob("*.py")]:
        text = source.read_text()
        for word in ("get_pty", "invoke_shell", "request_forward", "forward_agent"):
            assert word not in text, f"{source}: {word} (the verifier's key is `restrict`)"


def test_the_suite_s_ssh_session_works_under_restrict(tmp_path: Path) -> None:
    """A real sshd with the client key restricted exactly as the verifier's: the pinned session
    and the testinfra backend the suite runs on work, with no terminal; a pty is refused."""
    with running_sshd(tmp_path / "sshd") as sshd:
        keys = sshd.tmp / "authorized_keys"
        keys.write_text(seed.verifier_key_line(keys.read_text().strip()) + "\n")
        target = ssh.Target(HOST, sshd.port, "root", sshd.identity, sshd.known_hosts())
        with ssh.connect(target) as session:
            host = pinned_host(session, "restricted")
            r = host.run("tty; echo ran")
            assert r.stdout == "not a tty\nran\n"
            assert host.file("/etc/hostname").exists
            transport = session._client.get_transport()  # paramiko's, to ask for what is denied
            assert transport is not None
            with transport.open_session() as chan, pytest.raises(paramiko.SSHException):
                chan.get_pty()
        assert sshd.accepted_logins()


def test_the_snapshot_collector_compiles() -> None:
    """The collector only runs on a node: a syntax error would cost a boot to find."""
    collector = HELPER_TEXT.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    compile(collector, "verify-facts snapshot", "exec")
    assert 'units.get("stdout", "").split()' in collector  # kubelet's units stat'ed in it


def test_verify_never_runs_the_tree_verb(helper: Path) -> None:
    """`tree` is drift's (issue #14): the snapshot does not run it, so verify's timing stays."""
    collector = HELPER_TEXT.split("  snapshot)\n", 1)[1].split("\nPY\n", 1)[0]
    assert '("tree",)' not in collector and "tree" not in collector.split("VERBS = (", 1)[1][:900]
    refused = _run(helper, "tree", "/etc")
    assert refused.returncode == 64 and "tree takes no arguments" in refused.stderr
