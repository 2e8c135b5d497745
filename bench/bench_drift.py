"""Fleet-scale guest drift against Ansible, pyinfra and a naive floor (by hand only, never in CI).

A simulated fleet on this machine: N sshd processes on 127.0.0.1 (one per port from
BASE_PORT up, key-only, each with its own ed25519 host key, the one provision stores for that
node) stand in for N "already provisioned" nodes, so only layer 2 (the guest) is checked. Every
node's ForceCommand is a fake facts helper: it answers the commands drift sends (one per verb
of provision.drift.guest.VERBS: `sudo -n FACTS_HELPER snapshot`, `... tree`, `... drift`) with
what a real node answered (ANSWERS), and refuses anything else (exit 127, logged). Each tool runs
the very same commands on every node, so every tool moves the same bytes:

- drift: `provision drift -i INV --layer guest --json --concurrency C` (one connection per node,
  the commands on channels of their own, at once);
- ansible: a playbook of one `raw` task per command (no Python on the node: raw runs a command
  as it is), forks 5 and 50, host keys pinned (StrictHostKeyChecking=yes, our known_hosts
  only), no ControlMaster/ControlPersist (a cold run like the others: a connection per task),
  facts not gathered; `--ansible-persist` adds Ansible's default ControlPersist;
- pyinfra: `pyinfra INV fact server.Command ...` for each command (one connection per node),
  strict host key checking against our known_hosts;
- floor: a thread per node, one paramiko connection each, the commands on channels at once.

The inventory is inventories/local.yaml's shape with its state under the temp dir: each node's
host key, the verifier key and known_hosts are created there as `provision up` would, and the
golden image's small files are copied from IMAGE_STORE (drift compares packages and files with
its manifest).

Every run is checked before it counts: the fake nodes log each answer they serve, and each node
must have served every command exactly once and refused nothing; where the tool hands back the
output (all but drift, which must name every node in its report), every node's answers must have
the recorded lengths. A failed run is reported as FAILED with its reason, never timed as fast.

Memory: the peak of the summed RSS of the tool's process tree (sampled every SAMPLE_S; Ansible's
forks and ssh clients included, the fake nodes not), divided by N. Pages the forks share are
counted in each, so Ansible's figure is an upper bound. CPU: the tool's tree (its reaped
children included) and the fake nodes' (every connection's sshd, PAM, shell and cat), both on
this machine's cores: at 200 nodes the floor is CPU-bound, half of it the nodes' own share.

Once per machine (as root):

    useradd --system --shell /bin/sh --no-create-home verifier   # the bench does this if absent
    python3 -m venv /work/bench-venv
    /work/bench-venv/bin/pip install 'ansible-core==2.19.14' 'pyinfra==3.10.0'

(ansible-core 2.20+ needs Python 3.12; the tools stay out of the project's venv.) Then:

    .venv/bin/python bench/bench_drift.py [--sizes 50,200] [--repeat 3] [--concurrency 16,all]
        [--forks 5,50] [--ansible-persist] [--skip-drift] [--skip-ansible] [--skip-pyinfra]
        [--skip-floor] [--tools-venv DIR] [--json FILE] [--keep]

Drift, pyinfra and the floor run --repeat times (the median is shown, with the fastest and
slowest); Ansible, a minute per run at 200 nodes, once. Each N gets a table: tool, setting,
wall s, ratio vs drift, peak RSS MiB, RSS per node KiB; then best Ansible / drift (target >= 10)
and drift / floor (target <= 1.2), as measured.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pwd
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import yaml

# This checkout's provision, the one `python -m provision.cli drift` runs below (cwd=ROOT), not
# whichever the venv's editable install points at.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from provision.baseline import hardening  # noqa: E402
from provision.boundary import ssh  # noqa: E402
from provision.config import inventory as inventory_file  # noqa: E402
from provision.core.model import ImageSpec  # noqa: E402
from provision.desired import seed  # noqa: E402
from provision.drift import guest  # noqa: E402
from provision.image import files as image_files  # noqa: E402
from provision.image import image, store  # noqa: E402
from provision.state import keys, paths, workspace  # noqa: E402

RECORDED = ROOT / "tests" / "data" / "snapshot"
# What each helper verb drift sends answers, as recorded on a real node. No tree.txt yet: the
# tree verb answers a generated placeholder (PLACEHOLDER_TREE_LINES lines) until it is recorded.
ANSWERS = {
    "snapshot": RECORDED / "snapshot.json",
    "tree": RECORDED / "tree.txt",
    "drift": RECORDED / "drift.txt",
}
# The golden image drift compares packages and files with: its small files (manifest, SBOM,
# file list) are copied into the bench's state dir; the disk, kernel and initrd are not needed.
IMAGE_STORE = Path("/var/lib/provision-test/images")
# An image built before drift had no file list: the one recorded with the tree stands in for it.
RECORDED_IMAGE_FILES = ROOT / "tests" / "data" / "drift" / image_files.FILES_ARTIFACT
IMAGE_FILE_MAX = 8 * 2**20
TOOLS_VENV = Path("/work/bench-venv")
SSHD = Path("/usr/sbin/sshd")
HOST = "127.0.0.1"
BASE_PORT = 20000
COMMANDS = {verb: shlex.join(guest.command(verb)) for verb in guest.VERBS}  # what drift sends
VERBS = tuple(COMMANDS)
USER = hardening.VERIFIER_USER
SAMPLE_S = 0.1
RUN_TIMEOUT_S = 1800
PLACEHOLDER_TREE_LINES = 500


@dataclass(frozen=True)
class Fleet:
    tmp: Path
    inventory: Path  # the YAML file
    state_dir: Path
    ports: dict[str, int]  # node name -> sshd port
    identity: Path  # the verifier's private key
    known_hosts: Path  # provision's, pinning every node's host key
    logs: Path  # served.log / refused.log, written by the fake nodes
    answers: dict[str, bytes]  # verb -> the recorded answer
    sshd_pids: tuple[int, ...]  # the listeners: their children's CPU is the nodes' share

    @property
    def size(self) -> int:
        return len(self.ports)


@dataclass(frozen=True)
class Run:
    tool: str
    setting: str
    seconds: float
    peak_rss: int  # bytes, summed over the process tree
    tool_cpu: float  # CPU seconds of the tool's process tree
    nodes_cpu: float  # CPU seconds the fake nodes spent serving it (sshd, PAM, sh, cat)
    error: str | None = None  # why the run does not count
    runs: int = 1
    fastest: float = 0.0  # of the runs, whose median is `seconds`
    slowest: float = 0.0


# --- the fleet ------------------------------------------------------------------------------


def ensure_verifier_user() -> None:
    """The fake nodes' login user must exist here, as on a real node."""
    try:
        pwd.getpwnam(USER)
    except KeyError:
        cmd = ["useradd", "--system", "--shell", "/bin/sh", "--no-create-home", USER]
        subprocess.run(cmd, check=True)
        print(f"created the system user {USER!r} ({shlex.join(cmd)})", file=sys.stderr)


def free_ports(n: int, base: int) -> list[int]:
    """The first n ports from base up that nothing listens on."""
    ports: list[int] = []
    port = base
    while len(ports) < n:
        if port > 65535:
            raise SystemExit(f"not {n} free ports from {base} up")
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
                ports.append(port)
            except OSError:
                pass
        port += 1
    return ports


def write_inventory(tmp: Path, ports: Sequence[int]) -> Path:
    """inventories/local.yaml's shape, its state under tmp, one user-mode node per port."""
    doc = yaml.safe_load((ROOT / "inventories" / "local.yaml").read_text())
    doc["name"] = "drift-bench"
    doc["state_dir"] = str(tmp / "state")
    doc["playbooks"] = [str(ROOT / "playbooks" / "post-boot.yaml")]
    doc["hypervisors"]["local"]["pool_name"] = "provision-drift-bench"
    doc["hypervisors"]["local"]["pool_path"] = str(tmp / "pool")  # never created: layer 1 skipped
    doc["nodes"] = {f"bench-n{i:04d}": {"ssh_port": port} for i, port in enumerate(ports)}
    path = tmp / "fleet.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def fake_helper(answers: dict[str, Path], logs: Path) -> str:
    """The fake node's ForceCommand: the recorded answer to each of the two commands, else 127."""
    cases = "".join(
        # provision's SSH boundary gives a command without input /dev/null (ssh.NO_STDIN)
        f"  {shlex.quote(COMMANDS[verb])}|{shlex.quote(COMMANDS[verb] + ssh.NO_STDIN)})\n"
        f'    echo "$port {verb}" >> {shlex.quote(str(logs / "served.log"))}\n'
        f"    exec cat {shlex.quote(str(answers[verb]))} ;;\n"
        for verb in VERBS
    )
    refused = shlex.quote(str(logs / "refused.log"))
    return (
        "#!/bin/sh\n"
        "# A bench node's facts helper: recorded answers only, and a log of what it served.\n"
        'port="${SSH_CONNECTION##* }"\n'
        'case "$SSH_ORIGINAL_COMMAND" in\n'
        f"{cases}"
        "  *)\n"
        f'    printf "%s %s\\n" "$port" "$SSH_ORIGINAL_COMMAND" >> {refused}\n'
        '    echo "bench node: refused: $SSH_ORIGINAL_COMMAND" >&2\n'
        "    exit 127 ;;\n"
        "esac\n"
    )


def sshd_config(tmp: Path, port: int, host_key: Path, force: Path) -> str:
    return (
        f"Port {port}\n"
        f"ListenAddress {HOST}\n"
        f"HostKey {host_key}\n"
        f"PidFile {tmp / f'sshd-{port}.pid'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\n"
        "AuthenticationMethods publickey\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin no\n"
        f"AllowUsers {USER}\n"
        "UsePAM yes\n"  # as on a node: the verifier's password is locked, PAM lets keys in
        "StrictModes no\n"  # the files live under /tmp
        f"ForceCommand {force}\n"
        # Ansible at forks 50 and drift at full concurrency open every node's connections at
        # once: never let sshd's startup throttling drop one.
        "MaxStartups 200:30:400\n"
        "MaxSessions 16\n"
        "MaxAuthTries 3\n"
        "LogLevel INFO\n"
    )


def _wait_for_banners(ports: dict[str, int], procs: dict[int, subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 60
    waiting = set(ports.values())
    while waiting and time.monotonic() < deadline:
        for port in sorted(waiting):
            if procs[port].poll() is not None:
                raise SystemExit(f"sshd on port {port} exited ({procs[port].returncode})")
            try:
                with socket.create_connection((HOST, port), timeout=2) as s:
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        waiting.discard(port)
            except OSError:
                pass
        if waiting:
            time.sleep(0.1)
    if waiting:
        raise SystemExit(f"sshd did not answer on ports {sorted(waiting)}")


def _stop(procs: dict[int, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def fleet(n: int, base_port: int, image_store: Path, keep: bool = False) -> Iterator[Fleet]:
    """N fake nodes, their inventory and provision's keys; every sshd is stopped afterwards, and
    the temp dir (private keys included) removed unless `keep`."""
    tmp = Path(tempfile.mkdtemp(prefix="provision-drift-bench-"))
    try:
        yield from _fleet(tmp, n, base_port, image_store)
    finally:
        if keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp)


def copy_image(spec: ImageSpec, source: Path, target: Path) -> None:
    """The built golden image's small files (manifest, SBOM, file lists) into the bench's store:
    what drift compares a node with, without its disk."""
    src, dst = image.image_dir(source, spec), image.image_dir(target, spec)
    if not (src / "manifest.json").exists():
        # Built from other inputs (an older provision): still a real image's packages, which is
        # all the guest layer reads; the nodes answer another node's recording anyway.
        built = sorted(source.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
        if not built:
            print(f"no golden image in {source}: drift will fail (--image-store)", file=sys.stderr)
            return
        print(f"no image {src.name} in {source}: using {built[-1].parent.name}", file=sys.stderr)
        src = built[-1].parent
    dst.mkdir(parents=True, mode=0o700)
    for path in src.iterdir():
        if path.is_file() and path.stat().st_size <= IMAGE_FILE_MAX:
            shutil.copy2(path, dst / path.name)
    if not (dst / image_files.FILES_ARTIFACT).exists():
        shutil.copy2(RECORDED_IMAGE_FILES, dst / image_files.FILES_ARTIFACT)


def _fleet(tmp: Path, n: int, base_port: int, image_store: Path) -> Iterator[Fleet]:
    # sshd reads the authorized keys and runs the ForceCommand as the verifier.
    tmp.chmod(0o755)
    logs = tmp / "logs"
    logs.mkdir()
    os.chown(logs, pwd.getpwnam(USER).pw_uid, -1)
    answer_files = dict(ANSWERS)
    if not answer_files["tree"].exists():
        answer_files["tree"] = tmp / "tree-placeholder.txt"
        answer_files["tree"].write_text(
            "".join(
                f"f 0644 0 0 {i:064x} /etc/bench/placeholder-{i:05d}\n"
                for i in range(PLACEHOLDER_TREE_LINES)
            )
        )
        print(
            f"no {ANSWERS['tree'].relative_to(ROOT)}: tree answers a placeholder", file=sys.stderr
        )
    force = tmp / "provision-facts"
    force.write_text(fake_helper(answer_files, logs))
    force.chmod(0o755)

    names = [f"bench-n{i:04d}" for i in range(n)]
    ports = dict(zip(names, free_ports(n, base_port), strict=True))
    inv_path = write_inventory(tmp, list(ports.values()))
    inv = inventory_file.load(inv_path)
    copy_image(inv.image, image_store, store.images_dir(inv.state_dir))
    # What `provision up` would have left: every node's host key, the verifier key, known_hosts.
    for node in inv.nodes:
        keys.load_or_create(paths.node_host_key(inv, node.name), node.name)
    verifier = keys.load_or_create(paths.verifier_key(inv), f"verifier@{inv.name}")
    rendered, _ = workspace.render_inventory(inv, inv.nodes)
    workspace.write_known_hosts(inv, rendered)
    (tmp / "authorized_keys").write_text(seed.verifier_key_line(verifier.public) + "\n")

    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
    procs: dict[int, subprocess.Popen[bytes]] = {}
    try:
        for i, (name, port) in enumerate(ports.items()):
            config = tmp / f"sshd-{port}.conf"
            config.write_text(sshd_config(tmp, port, paths.node_host_key(inv, name), force))
            if i == 0:  # one check of the shape: a config mistake fails with sshd's message
                subprocess.run([SSHD, "-t", "-f", config], check=True)
            with (tmp / f"sshd-{port}.log").open("w") as log:
                procs[port] = subprocess.Popen([SSHD, "-D", "-e", "-f", config], stderr=log)
        _wait_for_banners(ports, procs)
        yield Fleet(
            tmp=tmp,
            inventory=inv_path,
            state_dir=inv.state_dir,
            ports=ports,
            identity=paths.verifier_key(inv),
            known_hosts=paths.known_hosts(inv),
            logs=logs,
            answers={verb: path.read_bytes() for verb, path in answer_files.items()},
            sshd_pids=tuple(p.pid for p in procs.values()),
        )
    finally:
        _stop(procs)


def reset_logs(f: Fleet) -> None:
    for name in ("served.log", "refused.log"):
        (f.logs / name).unlink(missing_ok=True)


def check_served(f: Fleet) -> str | None:
    """Why the fleet's own log says the run was incomplete, or None: both answers once each."""
    refused_log = f.logs / "refused.log"
    if refused_log.exists() and (refused := refused_log.read_text().splitlines()):
        return f"{len(refused)} command(s) refused, e.g. {refused[0]!r}"
    served_log = f.logs / "served.log"
    served = Counter(served_log.read_text().split("\n") if served_log.exists() else [])
    wrong = [
        f"{port} {verb} x{served[f'{port} {verb}']}"
        for port in f.ports.values()
        for verb in VERBS
        if served[f"{port} {verb}"] != 1
    ]
    if wrong:
        return f"{len(wrong)} answers not served exactly once, e.g. {wrong[:3]}"
    return None


# --- measuring a run ------------------------------------------------------------------------


def _tree_rss(root: int) -> int:
    """Summed RSS of root and its descendants now (processes that vanish mid-walk count 0)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * page
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    todo.extend(int(c) for c in children.read().split())
        except (OSError, ValueError):
            continue
    return total


def _nodes_cpu(pids: Sequence[int]) -> float:
    """CPU seconds of the sshd listeners' finished children (every connection and what it ran)."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    f: Fleet,
    argv: Sequence[str],
    out: Path,
    env: dict[str, str] | None = None,
    after: Callable[[], None] | None = None,
) -> Run:
    """Run argv (stdout to `out`), timed, its process tree's RSS sampled, its CPU and the nodes'
    counted (after `after`, untimed, closed what the tool left open); error set on exit > 0."""
    peak = 0
    cpu0, nodes0 = _children_cpu(), _nodes_cpu(f.sshd_pids)
    done = threading.Event()
    err = out.with_suffix(".err")
    with out.open("wb") as stdout, err.open("wb") as stderr:
        t0 = time.monotonic()
        # Its own session: on a timeout or Ctrl-C the tool and its children (Ansible's forks and
        # ssh clients) are stopped together, by their process group.
        proc = subprocess.Popen(
            argv, stdout=stdout, stderr=stderr, env=env, cwd=ROOT, start_new_session=True
        )

        def sample() -> None:
            nonlocal peak
            while not done.wait(SAMPLE_S):
                peak = max(peak, _tree_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        timed_out = False
        try:
            rc = proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc, timed_out = proc.wait(), True
        except BaseException:  # Ctrl-C: stop the tool before the fleet goes
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            done.set()
        seconds = time.monotonic() - t0
        sampler.join()
    if after is not None:
        after()
    time.sleep(0.2)  # the listeners reap their last connections
    tool_cpu, nodes_cpu = _children_cpu() - cpu0, _nodes_cpu(f.sshd_pids) - nodes0
    error = f"timed out after {RUN_TIMEOUT_S} s" if timed_out else None
    if rc != 0 and not timed_out:
        tail = err.read_text(errors="replace").strip().splitlines()[-3:]
        error = f"exit {rc}: {' | '.join(tail)}"
    return Run("", "", seconds, peak, tool_cpu, nodes_cpu, error)


def _with(run: Run, tool: str, setting: str, error: str | None) -> Run:
    return replace(run, tool=tool, setting=setting, error=run.error or error)


def _lengths_error(f: Fleet, got: dict[str, dict[str, int]], strip: bool = False) -> str | None:
    """Each node must have handed back both answers at their recorded length."""
    want = {verb: len(a.decode().strip() if strip else a.decode()) for verb, a in f.answers.items()}
    bad = [
        f"{node} {verb}: {got.get(node, {}).get(verb)} chars, want {want[verb]}"
        for node in f.ports
        for verb in VERBS
        if got.get(node, {}).get(verb) != want[verb]
    ]
    return f"{len(bad)} wrong answers, e.g. {bad[:2]}" if bad else None


def repeated(runs: int, once: Callable[[], Run]) -> Run:
    """The median of `runs` runs (its RSS the largest): this machine is shared, one run is noisy.
    A failed run is the answer at once."""
    done: list[Run] = []
    for _ in range(runs):
        run = once()
        if run.error is not None:
            return run
        done.append(run)
    done.sort(key=lambda r: r.seconds)
    peak = max(r.peak_rss for r in done)
    mid = done[len(done) // 2]
    return replace(mid, peak_rss=peak, runs=runs, fastest=done[0].seconds, slowest=done[-1].seconds)


# --- the tools ------------------------------------------------------------------------------


def run_drift(f: Fleet, concurrency: int) -> Run:
    reset_logs(f)
    argv = [sys.executable, "-m", "provision.cli", "drift", "-i", str(f.inventory)]
    argv += ["--layer", "guest", "--json", "--concurrency", str(concurrency)]
    out = f.tmp / f"drift-{concurrency}.out"
    run = measure(f, argv, out)
    text = out.read_text(errors="replace")
    # drift exits 2 when it found drift (the recorded snapshot is not these nodes' desired
    # state), 3 when a node was unreachable: with a report on stdout (argparse exits 2 too),
    # the report says what went wrong.
    if run.error and run.error.startswith(("exit 2:", "exit 3:")) and text.lstrip()[:1] == "{":
        run = replace(run, error=None)
    error = check_served(f)
    if error is None and run.error is None:
        error = _report_error(f, text)
    return _with(run, "drift", f"concurrency {concurrency}", error)


def _report_error(f: Fleet, text: str) -> str | None:
    """drift --json must have compared every node: each in `nodes` and `seconds`, none in
    `unreachable`."""
    try:
        doc = json.loads(text)
        unreachable, nodes, seconds = doc["unreachable"], set(doc["nodes"]), set(doc["seconds"])
    except (ValueError, KeyError, TypeError) as exc:
        return f"unreadable report: {exc!r}"
    if unreachable:
        return f"{len(unreachable)} unreachable, e.g. {unreachable[0]}"
    missing = [node for node in f.ports if node not in nodes or node not in seconds]
    return f"{len(missing)} nodes not compared, e.g. {missing[:3]}" if missing else None


ANSIBLE_CALLBACK = '''
"""Counts what each host answered, instead of printing it (the bench's check)."""
import functools
import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "bench_count"

    def __init__(self):
        super().__init__()
        self.seen = {}
        self.failed = []

    def v2_runner_on_ok(self, result):
        verb = result._task.get_name()
        self.seen.setdefault(result._host.get_name(), {})[verb] = len(result._result["stdout"])

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self.failed.append([result._host.get_name(), str(result._result)[:300]])

    def v2_runner_on_unreachable(self, result):
        self.failed.append([result._host.get_name(), str(result._result)[:300]])

    def v2_playbook_on_stats(self, stats):
        with open(os.environ["BENCH_COUNT_OUT"], "w") as out:
            json.dump({"seen": self.seen, "failed": self.failed}, out)
'''


def run_ansible(f: Fleet, forks: int, venv: Path, persist: bool = False) -> Run:
    """Two raw tasks. Cold: no multiplexing, two connections per node. `persist`: Ansible's own
    default (ControlPersist 60s), in a control dir of this run's, so one connection per node
    still starts cold; the masters are stopped afterwards (and their memory is not counted)."""
    reset_logs(f)
    d = f.tmp / "ansible"
    (d / "callbacks").mkdir(parents=True, exist_ok=True)
    (d / "callbacks" / "bench_count.py").write_text(ANSIBLE_CALLBACK)
    inv = {
        "all": {"hosts": {n: {"ansible_host": HOST, "ansible_port": p} for n, p in f.ports.items()}}
    }
    (d / "hosts.yaml").write_text(yaml.safe_dump(inv))
    play = [
        {
            "hosts": "all",
            "gather_facts": False,
            "tasks": [{"name": verb, "raw": COMMANDS[verb]} for verb in VERBS],
        }
    ]
    (d / "drift.yaml").write_text(yaml.safe_dump(play, sort_keys=False))
    control = d / f"control-{forks}"
    multiplex = ["-o ControlMaster=auto", "-o ControlPersist=60s"]
    ssh_args = [
        *(multiplex if persist else ["-o ControlMaster=no"]),
        f"-o UserKnownHostsFile={f.known_hosts}",
        "-o GlobalKnownHostsFile=/dev/null",
        "-o StrictHostKeyChecking=yes",
        "-o HostKeyAlgorithms=ssh-ed25519",
        "-o IdentitiesOnly=yes",
        "-o BatchMode=yes",
    ]
    setting = f"forks {forks}" + (", ControlPersist" if persist else "")
    count = d / f"count-{forks}-{persist}.json"
    count.unlink(missing_ok=True)
    env = {
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "HOME": str(d),
        "ANSIBLE_HOME": str(d / "home"),
        "ANSIBLE_LOCAL_TEMP": str(d / "tmp"),
        "ANSIBLE_CONFIG": str(d / "none.cfg"),  # never a stray ansible.cfg from cwd or ~
        "ANSIBLE_INVENTORY": str(d / "hosts.yaml"),
        "ANSIBLE_FORKS": str(forks),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_ARGS": " ".join(ssh_args),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control),
        "ANSIBLE_SSH_USETTY": "False",  # the verifier key is `restrict`: no pty
        "ANSIBLE_REMOTE_USER": USER,
        "ANSIBLE_PRIVATE_KEY_FILE": str(f.identity),
        "ANSIBLE_GATHERING": "explicit",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_CALLBACK_PLUGINS": str(d / "callbacks"),
        "ANSIBLE_STDOUT_CALLBACK": "bench_count",
        "ANSIBLE_NOCOLOR": "1",
        "BENCH_COUNT_OUT": str(count),
    }
    argv = [str(venv / "bin" / "ansible-playbook"), str(d / "drift.yaml")]

    def stop_masters() -> None:
        for socket_path in control.glob("*"):
            subprocess.run(["ssh", "-O", "exit", "-S", socket_path, "x"], capture_output=True)

    run = measure(f, argv, d / f"forks-{forks}-{persist}.out", env, stop_masters)
    error = check_served(f)
    if error is None:
        if not count.exists():
            error = "no count written"
        else:
            doc = json.loads(count.read_text())
            if doc["failed"]:
                error = f"{len(doc['failed'])} failed, e.g. {doc['failed'][0]}"
            else:
                error = _lengths_error(f, doc["seen"])
    return _with(run, "ansible", setting, error)


def run_pyinfra(f: Fleet, venv: Path) -> Run:
    reset_logs(f)
    d = f.tmp / "pyinfra"
    d.mkdir(exist_ok=True)
    data = {
        "ssh_hostname": HOST,
        "ssh_user": USER,
        "ssh_key": str(f.identity),
        "ssh_known_hosts_file": str(f.known_hosts),
        "ssh_strict_host_key_checking": "yes",
        "ssh_allow_agent": False,
        "ssh_look_for_keys": False,
    }
    hosts = [(name, {**data, "ssh_port": port}) for name, port in f.ports.items()]
    (d / "inventory.py").write_text(f"hosts = {hosts!r}\n")
    argv = [str(venv / "bin" / "pyinfra"), "--json", "-y", "--shell-executable", "None"]
    argv += [str(d / "inventory.py"), "fact"]
    for verb in VERBS:
        argv += ["server.Command", f"command={COMMANDS[verb]}"]
    out = d / "facts.json"
    env = {**os.environ, "HOME": str(d), "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    run = measure(f, argv, out, env)
    error = check_served(f)
    if error is None and run.error is None:
        try:
            doc = json.loads(out.read_text())
            error = _lengths_error(f, _pyinfra_lengths(doc), strip=True)
        except (ValueError, KeyError, TypeError) as exc:
            error = f"unreadable facts output: {exc!r}"
    # pyinfra's default parallelism: 20 hosts per CPU (pyinfra/api/state.py), at most all.
    parallel = min(20 * (os.cpu_count() or 1), f.size)
    return _with(run, "pyinfra", f"parallel {parallel} (default)", error)


def _pyinfra_lengths(doc: dict[str, object]) -> dict[str, dict[str, int]]:
    """pyinfra --json prints {"server.Command (command=...)": {host: output}}: map to verbs."""
    got: dict[str, dict[str, int]] = {}
    for verb, cmd in COMMANDS.items():
        answers = doc[f"server.Command (command={cmd})"]
        assert isinstance(answers, dict)
        for host, value in answers.items():
            if isinstance(value, str):
                got.setdefault(host, {})[verb] = len(value.strip())
    return got


def run_floor(f: Fleet) -> Run:
    reset_logs(f)
    spec = {
        "host": HOST,
        "user": USER,
        "ports": f.ports,
        "identity": str(f.identity),
        "known_hosts": str(f.known_hosts),
        "commands": COMMANDS,
    }
    (f.tmp / "floor.json").write_text(json.dumps(spec))
    (f.tmp / "floor.py").write_text(FLOOR_WORKER)
    out = f.tmp / "floor.out"
    run = measure(f, [sys.executable, str(f.tmp / "floor.py"), str(f.tmp / "floor.json")], out)
    error = check_served(f)
    if error is None and run.error is None:
        error = _lengths_error(f, json.loads(out.read_text()))
    return _with(run, "floor", f"{f.size} threads, paramiko", error)


FLOOR_WORKER = '''
"""The naive floor: a thread per node, one pinned paramiko connection, both commands at once on
two channels, every byte read. Imports paramiko alone. Prints {node: {verb: bytes}}."""
import functools
import json
import sys
import threading

import paramiko

spec = json.loads(open(sys.argv[1]).read())
identity = paramiko.Ed25519Key.from_private_key_file(spec["identity"])
got = {}


def one(node, port):
    client = paramiko.SSHClient()
    client.load_host_keys(spec["known_hosts"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            spec["host"], port, spec["user"], pkey=identity, look_for_keys=False,
            allow_agent=False, timeout=60,
        )
        channels = {}
        for verb, command in spec["commands"].items():
            channels[verb] = client.get_transport().open_session()
            channels[verb].exec_command(command)
        sizes = {}
        for verb, chan in channels.items():
            data = chan.makefile("rb").read()
            if chan.recv_exit_status() == 0:
                sizes[verb] = len(data)
        got[node] = sizes
    except Exception as exc:  # the caller's check reports the node's missing answers
        print(f"{node}: {exc!r}", file=sys.stderr)
    finally:
        client.close()


threads = [threading.Thread(target=one, args=item) for item in spec["ports"].items()]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(got))
'''


# --- the report -----------------------------------------------------------------------------


def table(f: Fleet, runs: Sequence[Run]) -> str:
    drifts = [r for r in runs if r.tool == "drift" and r.error is None]
    drift = min(drifts, key=lambda r: r.seconds, default=None)  # its best setting
    sizes = ", ".join(f"{verb} {len(a)} B" for verb, a in f.answers.items())
    head = ("tool", "setting", "wall s", "vs drift", "peak RSS MiB", "RSS/node KiB")
    head += ("tool CPU s", "nodes CPU s", "runs (fastest-slowest)", "check")
    widths = (8, 26, 8, 9, 13, 13, 11, 12, 23)
    lines = [f"N = {f.size} nodes  (per node: {sizes})", "  " + _row(head, widths)]
    for r in runs:
        cells = (
            r.tool,
            r.setting,
            f"{r.seconds:.2f}",
            f"{r.seconds / drift.seconds:.2f}x" if drift else "-",
            f"{r.peak_rss / 2**20:.1f}",
            f"{r.peak_rss / 1024 / f.size:.0f}",
            f"{r.tool_cpu:.1f}",
            f"{r.nodes_cpu:.1f}",
            f"{r.runs} ({r.fastest:.2f}-{r.slowest:.2f})" if r.runs > 1 else "1",
            "ok" if r.error is None else f"FAILED: {r.error[:240]}",
        )
        lines.append("  " + _row(cells, widths))
    ok = [r for r in runs if r.error is None]
    ansible = min((r.seconds for r in ok if r.tool == "ansible"), default=None)
    floor = next((r.seconds for r in ok if r.tool == "floor"), None)
    if drift and ansible:
        lines.append(f"  best Ansible / drift = {ansible / drift.seconds:.2f}  (target >= 10)")
    if drift and floor:
        lines.append(f"  drift / floor        = {drift.seconds / floor:.2f}  (target <= 1.2)")
    if ansible and floor:
        # What the first target can reach at all: a drift at the floor is this much faster.
        lines.append(f"  best Ansible / floor = {ansible / floor:.2f}")
    return "\n".join(lines)


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    """Text left-aligned in the first two columns, numbers right-aligned, the last as it is."""
    pairs = enumerate(zip(cells[:-1], widths, strict=True))
    out = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs]
    return " ".join([*out, cells[-1]])


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=_ints, default=[50, 200], help="fleet sizes, e.g. 50,200")
    ap.add_argument("--forks", type=_ints, default=[5, 50], help="Ansible forks settings")
    ap.add_argument(
        "--concurrency",
        default="16,all",
        help="drift --concurrency values (16: drift's default; all: N)",
    )
    ap.add_argument(
        "--ansible-persist",
        action="store_true",
        help="also run Ansible with its default ControlPersist (one connection per node)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of drift, floor and pyinfra, whose median is shown (Ansible runs once)",
    )
    ap.add_argument("--tools-venv", type=Path, default=TOOLS_VENV, help="ansible-core, pyinfra")
    ap.add_argument("--base-port", type=int, default=BASE_PORT)
    ap.add_argument(
        "--image-store", type=Path, default=IMAGE_STORE, help="where the built golden image is"
    )
    ap.add_argument("--json", type=Path, help="also write every run here")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (outputs, logs)")
    for tool in ("drift", "ansible", "pyinfra", "floor"):
        ap.add_argument(f"--skip-{tool}", action="store_true")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the fake nodes are sshd processes")
    for tool in ("ansible-playbook", "pyinfra"):
        skip = opts.skip_ansible if tool.startswith("ansible") else opts.skip_pyinfra
        if not skip and not (opts.tools_venv / "bin" / tool).exists():
            raise SystemExit(f"no {tool} in {opts.tools_venv}: see this file's docstring")
    # 200 nodes: every sshd's log, each tool's sockets and ssh clients; raise to the hard limit.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 4 * max(opts.sizes) + 64:
        raise SystemExit(f"open files limit {hard} is too low for {max(opts.sizes)} nodes")
    # Ctrl-C and a kill both unwind through fleet()'s finally, which stops every sshd.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    ensure_verifier_user()

    results: list[dict[str, object]] = []
    for n in opts.sizes:
        with fleet(n, opts.base_port, opts.image_store, opts.keep) as f:
            print(f"fleet of {n} up ({f.tmp})", file=sys.stderr)
            runs: list[Run] = []
            if not opts.skip_floor:
                runs.append(repeated(opts.repeat, lambda: run_floor(f)))
            if not opts.skip_drift:
                for c in opts.concurrency.split(","):
                    conc = n if c == "all" else int(c)
                    runs.append(repeated(opts.repeat, functools.partial(run_drift, f, conc)))
            if not opts.skip_pyinfra:
                runs.append(repeated(opts.repeat, lambda: run_pyinfra(f, opts.tools_venv)))
            if not opts.skip_ansible:
                for persist in (False, True) if opts.ansible_persist else (False,):
                    for forks in opts.forks:
                        runs.append(run_ansible(f, forks, opts.tools_venv, persist))
            print(table(f, runs), flush=True)
            results += [{"nodes": n, **asdict(r)} for r in runs]
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # every sshd was stopped on the way out
