"""Golden-image benchmark (run by hand, never in CI): cold build, cached rebuild, size, and the
per-node overlay against a full copy of the base image, measured in one run.

    .venv/bin/python bench/bench_image.py [--store DIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from provision.boundary.process import run
from provision.config import inventory
from provision.image import image

ROOT = Path(__file__).resolve().parent.parent


def timed(fn: object, *args: object, **kwargs: object) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", type=Path, default=Path(tempfile.mkdtemp(prefix="bench-img-")))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    spec = inventory.load(ROOT / "inventories" / "local.yaml").image
    # A distinct epoch gives a distinct cache key, so the cold build really is cold.
    spec = dataclasses.replace(spec, source_date_epoch=spec.source_date_epoch + int(time.time()))
    cold, _ = timed(image.build_image, spec, args.store)
    warm = [timed(image.build_image, spec, args.store)[0] for _ in range(args.repeat)]
    directory = image.image_dir(args.store, spec)
    base = directory / "rootfs.qcow2"
    size = base.stat().st_size
    overlay_t, copy_t = [], []
    with tempfile.TemporaryDirectory(dir=args.store) as tmp:
        for i in range(args.repeat):
            ov = Path(tmp) / f"ov{i}.qcow2"
            overlay_t.append(
                timed(
                    run,
                    [
                        "qemu-img",
                        "create",
                        "-q",
                        "-f",
                        "qcow2",
                        "-b",
                        base,
                        "-F",
                        "qcow2",
                        ov,
                        "8G",
                    ],
                )[0]
            )
            cp = Path(tmp) / f"cp{i}.qcow2"
            copy_t.append(timed(run, ["cp", "--reflink=never", base, cp])[0])
            cp.unlink()
    o, c = statistics.median(overlay_t), statistics.median(copy_t)
    print(f"cold build:            {cold:8.1f} s")
    print(
        f"cached rebuild:        {statistics.median(warm) * 1000:8.1f} ms (median of {args.repeat})"
    )
    print(f"rootfs.qcow2 size:     {size / 2**20:8.1f} MiB")
    print(f"overlay create:        {o * 1000:8.1f} ms (median)")
    print(f"full copy of the base: {c * 1000:8.1f} ms (median)")
    print(f"copy / overlay:        {c / o:8.1f}x")


if __name__ == "__main__":
    main()
