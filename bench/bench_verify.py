"""`provision verify` of one running node against its floor (by hand only, never in CI).

Measured in one run, on a node that is already up (`provision up -i INV` first):

- verify: `provision verify -i INV NODE --json`, wall time, with its phases and round trips;
- snapshot: the facts helper's `snapshot` verb alone, over the verifier's pinned session;
- probes: the two container probes alone, at the same time on two channels of one session;
- floor: one `ssh true` (connect included) plus the snapshot command, run directly over that
  one session: what a verification from one snapshot cannot go below.

It prints the ratio verify/floor. `--record DIR` also writes the snapshot, `sudo -n -l` and
both probes' answers as the verifier saw them (tests/data/snapshot/ takes them from a clean
node).

    .venv/bin/python bench/bench_verify.py -i INV [NODE] [--record DIR]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from provision.baseline import hardening
from provision.boundary import ssh
from provision.config import inventory as inventory_file
from provision.state import workspace
from provision.verify.runner import verifier_target


def helper(verb: str, *args: str) -> list[str]:
    return ["sudo", "-n", hardening.FACTS_HELPER, verb, *args]


def timed_verify(inv_path: str, node: str) -> tuple[float, dict[str, object]]:
    argv = [sys.executable, "-m", "provision.cli", "verify", "-i", inv_path, node, "--json"]
    t0 = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - t0
    doc = json.loads(out.stdout) if out.stdout.strip() else {"nodes": [{}]}
    report: dict[str, object] = doc["nodes"][0]
    return seconds, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-i", "--inventory", required=True)
    ap.add_argument("node", nargs="?")
    ap.add_argument("--record", type=Path, help="write the recording here")
    opts = ap.parse_args()

    inv = inventory_file.load(Path(opts.inventory))
    nodes = tuple(n for n in inv.nodes if opts.node in (None, n.name))[:1]
    rendered, _ = workspace.render_inventory(inv, nodes)
    workspace.write_known_hosts(inv, rendered)
    r = rendered.nodes[0]
    target = verifier_target(inv, r)

    # The floor: connect, `true`, then the snapshot, on one session.
    t0 = time.monotonic()
    with ssh.connect(target) as session:
        session.run(["true"])
        t1 = time.monotonic()
        snap = session.run(helper("snapshot"), timeout=600)
        floor = time.monotonic() - t0
        snapshot_alone = time.monotonic() - t1
        sudo_l = session.run(["sudo", "-n", "-l"], check=False)

        probes: dict[str, float] = {}
        probe_out: dict[str, str] = {}

        def probe(mode: str) -> None:
            p0 = time.monotonic()
            out = session.run(helper("docker-probe", mode), check=False, timeout=600)
            probes[mode] = time.monotonic() - p0
            probe_out[mode] = out.stdout

        p0 = time.monotonic()
        threads = [threading.Thread(target=probe, args=(m,)) for m in ("rootful", "rootless")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        probes_alone = time.monotonic() - p0
        a0 = time.monotonic()
        aide = session.run(helper("aide-check"), check=False, timeout=900)
        aide_alone = time.monotonic() - a0

    if opts.record:
        opts.record.mkdir(parents=True, exist_ok=True)
        (opts.record / "snapshot.json").write_text(snap.stdout)
        (opts.record / "sudo-l.txt").write_text(sudo_l.stdout)
        for mode, text in probe_out.items():
            (opts.record / f"probe-{mode}.txt").write_text(text)
        (opts.record / "aide-check.txt").write_text(aide.stdout)

    verify_s, report = timed_verify(opts.inventory, r.node.name)
    doc = json.loads(snap.stdout)
    print(f"node {r.node.name}  ({shlex.join(helper('snapshot'))})")
    print(f"  verify           {verify_s:7.1f} s  {report.get('totals')}")
    print(f"    phases         {report.get('phases')}")
    print(f"    fetches        {report.get('fetches')}")
    print(f"    round trips    {report.get('round_trips')}")
    print(f"  snapshot alone   {snapshot_alone:7.1f} s  (on the node: {doc.get('seconds')} s)")
    print(f"  probes alone     {probes_alone:7.1f} s  (both at once: {probes})")
    print(f"  aide-check alone {aide_alone:7.1f} s  (exit {aide.returncode})")
    print(f"  floor            {floor:7.1f} s  (ssh true + snapshot, one session)")
    print(f"  verify/floor     {verify_s / floor:7.2f}")


if __name__ == "__main__":
    main()
