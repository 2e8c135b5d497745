"""The offline evaluator against the pytest runner, per node, on the recorded node (by hand).

Both judge tests/data/snapshot/: `runner.run_suite` (pytest in-process, what `provision verify`
does after its SSH round trips) and `evaluate.evaluate` (what `provision drift` does with the
snapshot it collected). Collection is done once before timing, as a fleet run would. Prints
each one's median and best of N runs and the ratio.

    .venv/bin/python bench/bench_evaluate.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provision.verify import evaluate, runner
from tests.recording import SNAPSHOT, TODAY, RecordedNode, Recording, recorded_profile


def timed(fn: object, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    profile = recorded_profile()
    version = Recording().server_version
    t0 = time.perf_counter()
    evaluate.collect()
    print(f"collect (once per process): {time.perf_counter() - t0:.3f} s")

    def suite() -> None:
        runner.run_suite(RecordedNode(), profile, (), TODAY)  # type: ignore[arg-type]

    def offline() -> None:
        evaluate.evaluate(profile, SNAPSHOT, (), TODAY, version)

    suite()  # warm: imports, the suite's modules
    offline()
    # Interleaved, so a busy machine slows both alike.
    s: list[float] = []
    e: list[float] = []
    for _ in range(args.runs):
        s += timed(suite, 1)
        e += timed(offline, 1)
    for name, ts in (("run_suite", s), ("evaluate", e)):
        print(f"{name:9}: median {statistics.median(ts):.4f} s, best {min(ts):.4f} s per node")
    print(
        f"ratio run_suite/evaluate: median {statistics.median(s) / statistics.median(e):.1f}x, "
        f"best {min(s) / min(e):.1f}x"
    )


if __name__ == "__main__":
    main()
