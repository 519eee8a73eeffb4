"""Shared helpers of the benchmarks: timing, scratch directories, tables and JSON results.

Every benchmark under ``bench/`` prints its numbers as a table (absolute values and ratios
against peers measured in the same run) and writes the same numbers to
``bench/results/<name>.json`` together with a description of the machine, so two runs can be
compared later. These helpers are the one implementation of that; benchmarks are scripts, not
tests, and never import from ``tests/``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

__all__ = [
    "RESULTS_DIR",
    "MiB",
    "compare",
    "compile_like_installed",
    "interleave",
    "machine",
    "print_table",
    "ratio",
    "scratch_dir",
    "write_results",
]

MiB = 1024 * 1024
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
T = TypeVar("T")
_OURS = ("edgecache", "edgecache_s3", "edgecache_oss", "edgecache_testservers")
"""The packages of this repository (editable installs: compiled only if something does)."""


def interleave(
    cases: Mapping[str, Callable[[], T]],
    *,
    rounds: int,
    setup: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, list[T]]:
    """Run each case once per round, ``rounds`` times, interleaved (A B C, A B C...).

    Returns, per case, what each of its runs returned. Interleaving spreads the load of other
    processes on the machine over all cases instead of penalising whichever ran during a busy
    spell. ``setup[name]`` runs before each run of ``name``. For cases that measure themselves
    (a child process reporting its own timings); :func:`compare` times plain callables.
    """
    results: dict[str, list[T]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            if setup and name in setup:
                setup[name]()
            results[name].append(fn())
    return results


def compare(
    cases: Mapping[str, Callable[[], object]],
    *,
    rounds: int,
    setup: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, tuple[float, list[float]]]:
    """Time each case once per round, ``rounds`` times, interleaved (:func:`interleave`).

    Returns, per case, (fastest wall time in seconds, every time); best-of-N measures what the
    code can do here. ``setup[name]`` runs before each timed run of ``name``, untimed. The
    garbage collector is paused while timing.
    """

    def timed(fn: Callable[[], object]) -> Callable[[], float]:
        def run() -> float:
            gc.collect()
            gc.disable()
            try:
                started = time.perf_counter()
                fn()
                return time.perf_counter() - started
            finally:
                gc.enable()

        return run

    times = interleave({name: timed(fn) for name, fn in cases.items()}, rounds=rounds, setup=setup)
    return {name: (min(t), t) for name, t in times.items()}


def ratio(value: float, reference: float) -> float | None:
    """``value / reference``, or None when the reference is zero."""
    return value / reference if reference else None


def compile_like_installed(packages: Sequence[str] = _OURS) -> None:
    """Compile ``packages`` to bytecode (``__pycache__``, ignored by git), as ``pip install``
    does for a wheel: the clients they are compared with (s3fs, botocore) come compiled from
    their wheels, while a checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (as here) compiles
    edgecache from source in every fresh process, ~0.3-0.7 s of CPU per spawned worker that no
    installed copy pays."""
    import compileall
    import importlib.util

    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                compileall.compile_dir(location, quiet=1)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[str]:
    """A fresh directory under /tmp, removed (with everything in it) afterwards."""
    path = tempfile.mkdtemp(prefix=f"edgecache-bench-{prefix}-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print an aligned plain-text table (first column left-aligned, the rest right-aligned)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print(f"\n{title}")

    def render(values: Sequence[str]) -> str:
        pairs = enumerate(zip(values, widths, strict=True))
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in pairs)

    line = render(headers)
    print(line)
    print("-" * len(line))
    for row in cells:
        print(render(row))


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    cpu = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "git_commit": commit,
    }


def write_results(name: str, results: dict[str, Any]) -> str:
    """Write ``results`` (plus the machine description) to ``bench/results/<name>.json``."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    payload = {"benchmark": name, "machine": machine(), **results}
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=False)
        f.write("\n")
    print(f"\nresults written to {os.path.relpath(path, REPO_DIR)}")
    return path
