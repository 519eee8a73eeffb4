"""Where the time of ``user_bench.py``'s ``open_loop`` workers goes: a timeline per worker.

``user_bench.py`` reports one number per run (the slowest worker). This script runs the same
loop (the same moto server, emulated 30 ms / 100 Mbit/s link, 64 KiB objects and
``fsspec.open`` + ``read()`` per file, worker i reading files i, i+N, ...) and prints, for each
worker, when its first files were done, its median and longest gap between two files, and the
CPU time it used (all its threads), so that start-up (imports, the backend client, the first
round trips) can be told apart from the steady part of the loop::

    .venv/bin/python bench/open_loop_trace.py --client edgecache --start spawn
    .venv/bin/python bench/open_loop_trace.py --client s3fs --start fork --workers 4

Nothing is written to ``results/``: it explains a ``user_bench.py`` result, it is not one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict
from typing import Any

import user_bench as ub
from _common import compile_like_installed


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _worker(spec_json: str, keys: list[str], ready: Any, go: Any, done: Any) -> None:
    try:
        spec = ub.Spec(**json.loads(spec_json))
        ready.put(os.getpid())
        go.wait()
        started, cpu = time.perf_counter(), _cpu_seconds()
        finished = []
        for key in keys:
            ub.read_url(spec, key)
            finished.append(time.perf_counter() - started)
        done.put(("ok", (finished, _cpu_seconds() - cpu)))
    except BaseException as exc:
        done.put(("error", f"{type(exc).__name__}: {exc}"[:2000]))


def _report(finished: list[float], cpu: float) -> str:
    gaps = [b - a for a, b in zip([0.0, *finished], finished, strict=False)]
    longest = max(range(len(gaps)), key=gaps.__getitem__)
    first = " ".join(f"{t * 1000:.0f}" for t in finished[:5])
    return (
        f"first files done at {first} ms; last {finished[-1]:.2f} s; gap median "
        f"{statistics.median(gaps) * 1000:.0f} ms, longest {gaps[longest] * 1000:.0f} ms "
        f"(file {longest}); CPU {cpu:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", choices=("edgecache", "s3fs"), default="edgecache")
    parser.add_argument("--start", choices=("spawn", "fork"), default="spawn")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--keep-alive", action="store_true", help="moto keeps connections open")
    args = parser.parse_args()
    compile_like_installed()
    sizes = ub.Sizes(small_files=args.files)
    with ub.environment(["open_loop"], sizes, keep_alive=args.keep_alive) as runner:
        for run in range(args.runs):
            cache_dir = os.path.join(runner.scratch, f"cache-{run}")
            spec = ub.Spec(
                "open_loop",
                args.client,
                runner.link.endpoint,
                cache_dir,
                asdict(runner.layout),
                {},
                dict(ub.CASES["open_loop"].options),
            )
            ub.read_url(spec, runner.layout.probe_key)  # as the bench's parent does
            outcomes, wall, _ = ub.run_workers(
                spec,
                runner.layout.small_keys(),
                workers=args.workers,
                start=args.start,
                target=_worker,
            )
            counted = runner.link.counters()
            print(
                f"{args.client}, {args.workers} workers ({args.start}), run {run}: {wall:.2f} s "
                f"(link so far: {counted['connections']} connections)"
            )
            for finished, cpu in outcomes:
                print("  " + _report(finished, cpu))


if __name__ == "__main__":
    main()
