"""What one warm ``f.read(n)`` pass over a large file costs: wall and CPU time, page faults and
voluntary context switches, per run, for a raw read and edgecache's SSD-tier readers.

Command (issue #9, case 4; an A/B of two checkouts of the code, interleaved)::

    .venv/bin/python bench/read_cost.py --code /path/to/old/checkout --code . --rounds 2

The CPU time (``time.process_time``: every thread of the process), the minor page faults
(``ru_minflt``) and the voluntary context switches (``ru_nvcsw``: waits on another thread) say
where the time goes even on a loaded machine, where wall times move by 2x from run to run.
Each ``--code`` runs in a fresh child process importing edgecache from that directory (its
editable install set aside); rounds alternate between them. Readers: ``raw`` (``open``),
``ssd0`` (one filesystem object, ``mem_quota=0``), ``user1m`` (``fsspec.open`` per pass,
``mem_quota=1MiB``), ``fresh`` (MEM emptied before each pass: what a new process does).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

MiB = 1024 * 1024
SIZES: dict[str, int | None] = {"whole": None, "4MiB": 4 * MiB, "1MiB": MiB, "64KiB": 64 * 1024}


def _child(code: str, work: str, size_mib: int, runs: int) -> dict[str, Any]:
    sys.meta_path[:] = [
        f for f in sys.meta_path if "__editable___edgecache_" not in getattr(f, "__module__", "")
    ]
    sys.path.insert(0, os.path.abspath(code))
    import fsspec

    src = os.path.join(work, "large.bin")
    if not os.path.exists(src):
        with open(src, "wb") as f:
            for _ in range(size_mib // 8):
                f.write(os.urandom(8 * MiB))

    def filesystem(name: str, quota: str) -> Any:
        return fsspec.filesystem(
            "edgecache",
            target_protocol="file",
            target_options={},
            cache_dir=os.path.join(work, name),
            skip_instance_cache=True,
            mem_quota=quota,
        )

    ssd0, fresh = filesystem("ssd", "0"), filesystem("fresh", "512MiB")
    user = {"cache_dir": os.path.join(work, "user"), "mem_quota": "1MiB"}
    readers: dict[str, Callable[[], Any]] = {
        "raw": lambda: open(src, "rb"),  # noqa: SIM115 (opened in a with)
        "ssd0": lambda: ssd0.open(src, "rb"),
        "user1m": lambda: fsspec.open(f"edgecache::file://{src}", "rb", edgecache=user).open(),
        "fresh": lambda: fresh.open(src, "rb"),
    }
    for open_file in readers.values():
        with open_file() as f:
            f.read()
    out: dict[str, Any] = {}
    for mode, chunk in SIZES.items():
        for name, open_file in readers.items():
            runs_out = []
            for _ in range(runs):
                if name == "fresh":
                    fresh.cache.mem.clear()
                before, cpu, wall = resource.getrusage(resource.RUSAGE_SELF), *_clocks()
                with open_file() as f:
                    if chunk is None:
                        f.read()
                    else:
                        while f.read(chunk):
                            pass
                wall_end, cpu_end = time.perf_counter(), time.process_time()
                after = resource.getrusage(resource.RUSAGE_SELF)
                runs_out.append(
                    {
                        "wall_ms": (wall_end - wall) * 1e3,
                        "cpu_ms": (cpu_end - cpu) * 1e3,
                        "minflt": after.ru_minflt - before.ru_minflt,
                        "nvcsw": after.ru_nvcsw - before.ru_nvcsw,
                    }
                )
            out[f"{name} {mode}"] = runs_out
    return out


def _clocks() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", action="append", required=True, help="checkout to import")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5, help="passes per reader and size")
    parser.add_argument("--size", type=int, default=128, help="MiB (a multiple of 8)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.code[0], args.child, args.size, args.runs)))
        return 0
    summary: dict[str, dict[str, list[dict[str, float]]]] = {c: {} for c in args.code}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.rounds):
            for i, code in enumerate(args.code):
                work = os.path.join(scratch, str(i))  # each checkout its own cache directories
                os.makedirs(work, exist_ok=True)
                load = os.getloadavg()[0]
                got = json.loads(
                    subprocess.run(
                        [
                            *(sys.executable, __file__, "--code", code),
                            *("--runs", str(args.runs), "--size", str(args.size), "--child", work),
                        ],
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout
                )
                print(f"{code}: load {load:.1f}", flush=True)
                for case, runs in got.items():
                    summary[code].setdefault(case, []).extend(runs)
    print(f"\nmedian per pass of {args.size} MiB (all rounds): wall ms / CPU ms / minflt / nvcsw")
    cases = list(next(iter(summary.values())))
    print(f"{'case':14s}" + "".join(f"  {c[-28:]:>34s}" for c in args.code))
    for case in cases:
        cells = []
        for code in args.code:
            runs = summary[code][case]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            wall, cpu, faults, waits = (med[k] for k in ("wall_ms", "cpu_ms", "minflt", "nvcsw"))
            cells.append(f"{wall:7.0f} {cpu:7.0f} {faults:7.0f} {waits:6.0f}")
        print(f"{case:14s}" + "".join(f"  {c:>34s}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
