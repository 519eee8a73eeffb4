"""How users call edgecache, over an emulated WAN: each call path against its peers in one run.

Command::

    .venv/bin/python bench/user_bench.py                       # every case, median of 3 runs
    .venv/bin/python bench/user_bench.py --only open_loop,link_cut --runs 5
    .venv/bin/python bench/user_bench.py --quick               # smaller data, 1 run (smoke test)

Users do not hold one filesystem object: a training loop's ``Dataset.__getitem__`` calls
``fsspec.open(url, "rb", s3={...}, edgecache={...})`` once per file, pandas and pyarrow get
``storage_options``, zarr gets a URL, DataLoader workers are separate processes. This benchmark
measures those paths, cold over the emulated link (30 ms RTT, 100 Mbit/s: moto and the WAN
emulator as separate processes, :mod:`_wan`) and warm from the cache directory, each against
its peers (plain s3fs, fsspec ``simplecache``) in the same run. Cases (``--only``):

- ``open_loop``: ``fsspec.open`` + ``read()`` once per file over 200 x 64 KiB objects, in one
  process and in 4 worker processes (``spawn`` and ``fork``, like a PyTorch DataLoader: worker
  ``i`` reads files ``i, i+4, ...``; the parent opened one other file first, as a Dataset's set-up
  would). Timed from "go" to the last worker done; worker start-up is reported apart.
- ``parquet_file``: ``pandas.read_parquet(url, storage_options=...)`` of one parquet file;
  ``parquet_dataset``: ``pyarrow.dataset`` over a directory of parquet files (the filesystem from
  ``fsspec.core.url_to_fs(url, **storage_options)``, as pandas does). Cold and then warm.
- ``zarr``: ``zarr.open_array(url, storage_options=...)[:]`` of an array of 400 chunks. Cold, warm.
- Sparse ranges (``cat_file``/``cat_ranges``) and ``find``/``glob`` over a zarr-like tree are
  measured by ``wan_bench.py`` (``--only sparse_cat,sparse_ranges,find,glob``), not here.
- ``link_cut``: the link is reset (connections refused) after one read: time from the cut to the
  first failure of an uncached read (and of the next one), then from the restore to the first
  successful uncached read, retrying every 50 ms with ``fsspec.open`` as a user's retry loop
  would (target: <= 1 s + one RTT).
- ``link_hung``: three files are read and cached (metadata TTL 2 s), then the link hangs
  (blackhole: nothing answered, nothing reset); after the TTL, ``fsspec.open`` + ``read()`` of a
  cached file: the first, then the following ones (target: one timeout per process, then local
  speed), and an uncached read until it fails.

Every run is a fresh child process (nothing cached in memory, new connections), and every cold run
a fresh cache directory; a warm run is a fresh process on the directory its cold run filled. The
times are measured inside the child (imports and process start excluded; building filesystems
included, since every ``fsspec.open`` does). Peers are interleaved round by round
(:func:`_common.interleave`), each case runs ``--runs`` times and the table reports the median,
the ratio to the reference peer in the same run, the WAN bytes and the load average. Every read
is checked against the bytes put into moto. Results (merged per case, so ``--only`` keeps the
other cases): ``bench/results/<--output>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsspec
import fsspec.core
import xxhash
from _common import (
    RESULTS_DIR,
    MiB,
    compile_like_installed,
    interleave,
    machine,
    print_table,
    ratio,
    scratch_dir,
    write_results,
)
from _wan import KEY, SECRET, Link, moto_server, s3_client
from edgecache_testservers.wan import LINK_30MS_100MBIT

from edgecache.backends.objectstore import RequestLimits

BUCKET = "user-bench"
SCRIPT = os.path.abspath(__file__)
RETRY_SECONDS = 0.05
"""Pause between attempts of the retry loop in ``link_cut`` (a user's loop; the resolution)."""
HUNG_TTL_SECONDS = 2.0
"""``metadata_ttl`` in ``link_hung``: the cached files' metadata is stale when the link hangs."""
GIVE_UP_SECONDS = 200.0
"""A child stops waiting for one call after this long and reports it as not finished."""
WORKERS_GIVE_UP_SECONDS = 120.0
"""``open_loop`` declares its workers hung after this long (plain s3fs needs ~10 s)."""


# --- the data in the bucket -------------------------------------------------------------------
@dataclass
class Sizes:
    """How much data each case reads (``--quick`` shrinks it)."""

    small_files: int = 200
    small_bytes: int = 64 * 1024
    parquet_rows: int = 1_000_000
    """4 float64 columns: 32 MB."""
    dataset_files: int = 16
    dataset_rows: int = 65_536
    """Rows per file of the dataset directory (2 MB each)."""
    zarr_side_chunks: int = 20
    """The zarr array is this many chunks of 128 x 128 float32 (64 KiB) along each side."""
    link_files: int = 12


@dataclass
class Layout:
    """Where the data of each case lives and what it must read back as (the manifest)."""

    sizes: Sizes
    digests: dict[str, str] = field(default_factory=dict)
    """xxh3-64 of each small object, by key."""
    parquet_hash: int = 0
    dataset_hash: int = 0
    zarr_seed: int = 9

    probe_key: str = "probe/p0"
    pq_file_key: str = "pq/one.parquet"
    pq_dir_key: str = "pqdir"
    zarr_key: str = "zarr/arr"

    def small_keys(self) -> list[str]:
        return [f"small/f{i:04d}" for i in range(self.sizes.small_files)]

    def link_keys(self) -> list[str]:
        return [f"link/f{i:04d}" for i in range(self.sizes.link_files)]

    @property
    def zarr_shape(self) -> tuple[int, int]:
        side = 128 * self.sizes.zarr_side_chunks
        return side, side


def _frame_hash(frame: Any) -> int:
    """An order-independent digest of a DataFrame's rows (to check what pandas/pyarrow read)."""
    import pandas as pd  # type: ignore[import-untyped]

    return int(pd.util.hash_pandas_object(frame, index=False).sum())


def _zarr_data(layout: Layout) -> Any:
    import numpy as np

    return np.random.default_rng(layout.zarr_seed).random(layout.zarr_shape, dtype=np.float32)


def seed(endpoint: str, cases: Sequence[str], sizes: Sizes) -> Layout:
    """Put what ``cases`` read into moto directly (not through the WAN); returns the manifest."""
    import concurrent.futures

    layout = Layout(sizes)
    client = s3_client(endpoint)
    client.create_bucket(Bucket=BUCKET)

    def put(key: str, body: bytes) -> None:
        client.put_object(Bucket=BUCKET, Key=key, Body=body)

    small: dict[str, bytes] = {}
    if "open_loop" in cases:
        small[layout.probe_key] = os.urandom(sizes.small_bytes)
        small.update((k, os.urandom(sizes.small_bytes)) for k in layout.small_keys())
    if {"link_cut", "link_hung"} & set(cases):
        small.update((k, os.urandom(sizes.small_bytes)) for k in layout.link_keys())
    layout.digests = {k: xxhash.xxh3_64_hexdigest(v) for k, v in small.items()}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: put(*item), small.items()))
    if {"parquet_file", "parquet_dataset"} & set(cases):
        import numpy as np
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        rng = np.random.default_rng(7)

        def table(rows: int) -> Any:
            return pa.table({c: rng.random(rows) for c in ("a", "b", "c", "d")})

        def parquet_bytes(tbl: Any) -> bytes:
            buffer = io.BytesIO()
            pq.write_table(tbl, buffer, row_group_size=131_072)
            return buffer.getvalue()

        if "parquet_file" in cases:
            one = table(sizes.parquet_rows)
            layout.parquet_hash = _frame_hash(one.to_pandas())
            put(layout.pq_file_key, parquet_bytes(one))
        if "parquet_dataset" in cases:
            parts = [table(sizes.dataset_rows) for _ in range(sizes.dataset_files)]
            layout.dataset_hash = sum(_frame_hash(p.to_pandas()) for p in parts) % 2**64
            for i, part in enumerate(parts):
                put(f"{layout.pq_dir_key}/part-{i:03d}.parquet", parquet_bytes(part))
    if "zarr" in cases:
        import zarr

        store = zarr.storage.FsspecStore.from_url(
            f"s3://{BUCKET}/{layout.zarr_key}",
            storage_options={"endpoint_url": endpoint, "key": KEY, "secret": SECRET},
            read_only=False,
        )
        array = zarr.create_array(store, shape=layout.zarr_shape, chunks=(128, 128), dtype="f4")
        array[:] = _zarr_data(layout)
    return layout


# --- what one child process runs ---------------------------------------------------------------
@dataclass
class Spec:
    """One run of one peer of one case, handed to a fresh child process as JSON."""

    case: str
    client: str
    """``edgecache``, ``s3fs`` (plain) or ``simplecache``."""
    endpoint: str
    cache_dir: str
    layout: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    """Extra edgecache options (beyond ``cache_dir``)."""


def _layout(spec: Spec) -> Layout:
    data = dict(spec.layout)
    sizes = Sizes(**data.pop("sizes"))
    return Layout(sizes, **data)


def url(spec: Spec, key: str) -> str:
    """The URL a user writes for ``key`` with this client."""
    prefix = {"edgecache": "edgecache::", "simplecache": "simplecache::", "s3fs": ""}[spec.client]
    return f"{prefix}s3://{BUCKET}/{key}"


def storage_options(spec: Spec) -> dict[str, Any]:
    """What a user passes as ``storage_options`` (or as keywords to ``fsspec.open``); a new dict
    per call, since zarr and pandas add keys to what they are given."""
    s3 = {"endpoint_url": spec.endpoint, "key": KEY, "secret": SECRET}
    if spec.client == "edgecache":
        return {"s3": s3, "edgecache": {"cache_dir": spec.cache_dir, **spec.options}}
    if spec.client == "simplecache":
        return {"s3": s3, "simplecache": {"cache_storage": spec.cache_dir}}
    return s3


def read_url(spec: Spec, key: str) -> bytes:
    """What ``Dataset.__getitem__`` does: ``fsspec.open`` + ``read()``."""
    with fsspec.open(url(spec, key), "rb", **storage_options(spec)) as f:
        data: bytes = f.read()
    return data


def _check(layout: Layout, key: str, data: bytes) -> None:
    if xxhash.xxh3_64_hexdigest(data) != layout.digests[key]:
        raise AssertionError(f"{key}: read {len(data)} bytes that differ from the object")


def _read_files(spec: Spec, keys: Sequence[str]) -> int:
    layout = _layout(spec)
    total = 0
    for key in keys:
        data = read_url(spec, key)
        _check(layout, key, data)
        total += len(data)
    return total


def _worker(spec_json: str, keys: list[str], ready: Any, go: Any, done: Any) -> None:
    """A DataLoader-like worker: reads its share of the files once told to go."""
    try:
        spec = Spec(**json.loads(spec_json))
        ready.put(os.getpid())
        go.wait()
        done.put(("ok", _read_files(spec, keys)))
    except BaseException as exc:
        done.put(("error", f"{type(exc).__name__}: {exc}"[:2000]))


WorkerTarget = Callable[[str, list[str], Any, Any, Any], None]
"""A worker process's function: (spec JSON, its keys, ready queue, go event, done queue); it puts
its pid on ready, waits for go, and puts ("ok", result) or ("error", detail) on done."""


def run_workers(
    spec: Spec, keys: Sequence[str], *, workers: int, start: str, target: WorkerTarget = _worker
) -> tuple[list[Any], float, float]:
    """Start ``workers`` processes (``start``: spawn or fork) running ``target`` on every
    ``workers``-th key, let them go at once when all are ready; returns their results, the
    seconds from go to the last result, and the seconds the workers took to be ready. Raises
    if a worker fails or hangs."""
    context = multiprocessing.get_context(start)
    ready, done, go = context.Queue(), context.Queue(), context.Event()
    spec_json = json.dumps(asdict(spec))
    launched = time.perf_counter()
    processes = [
        context.Process(target=target, args=(spec_json, list(keys[i::workers]), ready, go, done))
        for i in range(workers)
    ]
    try:
        for process in processes:
            process.start()
        for _ in processes:
            ready.get(timeout=WORKERS_GIVE_UP_SECONDS)
        started = time.perf_counter()
        go.set()
        outcomes = []
        for _ in processes:
            left = started + WORKERS_GIVE_UP_SECONDS - time.perf_counter()
            try:
                outcomes.append(done.get(timeout=max(left, 0.1)))
            except queue.Empty:
                raise TimeoutError(
                    f"{workers - len(outcomes)} of {workers} {start}ed workers "
                    f"had not finished after {WORKERS_GIVE_UP_SECONDS:.0f} s (hung)"
                ) from None
        seconds = time.perf_counter() - started
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    errors = [detail for status, detail in outcomes if status != "ok"]
    if errors:
        raise RuntimeError(f"{len(errors)} of {workers} workers failed: {errors[0]}")
    return [detail for _, detail in outcomes], seconds, started - launched


def run_open_loop(spec: Spec) -> dict[str, Any]:
    layout = _layout(spec)
    keys = layout.small_keys()
    workers = int(spec.params.get("workers", 0))
    if not workers:
        started = time.perf_counter()
        total = _read_files(spec, keys)
        return {"seconds": time.perf_counter() - started, "bytes": total}
    # The parent touches the filesystem before starting workers, as a Dataset's set-up does.
    _check(layout, layout.probe_key, read_url(spec, layout.probe_key))
    totals, seconds, start_seconds = run_workers(
        spec, keys, workers=workers, start=spec.params["start"]
    )
    return {"seconds": seconds, "worker_start_seconds": start_seconds, "bytes": sum(totals)}


def run_parquet_file(spec: Spec) -> dict[str, Any]:
    import pandas as pd

    layout = _layout(spec)
    started = time.perf_counter()
    frame = pd.read_parquet(url(spec, layout.pq_file_key), storage_options=storage_options(spec))
    seconds = time.perf_counter() - started
    if _frame_hash(frame) != layout.parquet_hash:
        raise AssertionError("read_parquet returned other rows than were written")
    return {"seconds": seconds, "rows": len(frame)}


def run_parquet_dataset(spec: Spec) -> dict[str, Any]:
    import pyarrow.dataset as ds  # type: ignore[import-untyped]

    layout = _layout(spec)
    started = time.perf_counter()
    fs, root = fsspec.core.url_to_fs(url(spec, layout.pq_dir_key), **storage_options(spec))
    table = ds.dataset(root, filesystem=fs, format="parquet").to_table()
    seconds = time.perf_counter() - started
    if _frame_hash(table.to_pandas()) % 2**64 != layout.dataset_hash:
        raise AssertionError("the dataset returned other rows than were written")
    return {"seconds": seconds, "rows": table.num_rows}


def run_zarr(spec: Spec) -> dict[str, Any]:
    import numpy as np
    import zarr

    layout = _layout(spec)
    started = time.perf_counter()
    array = zarr.open_array(
        url(spec, layout.zarr_key), mode="r", storage_options=storage_options(spec)
    )
    data: Any = array[:]
    seconds = time.perf_counter() - started
    if not np.array_equal(data, _zarr_data(layout)):
        raise AssertionError("zarr returned other values than were written")
    return {"seconds": seconds, "bytes": int(data.nbytes)}


def _link(command: str) -> None:
    """Ask the parent to cut or restore the link; returns once it is done."""
    print(json.dumps({"link": command}), flush=True)
    if sys.stdin.readline().strip() != "ok":
        raise RuntimeError(f"the parent did not confirm {command!r}")


def _bounded(call: Callable[[], bytes]) -> tuple[float | None, bytes | BaseException | None]:
    """Time ``call`` in a thread; (seconds, result or exception), or (None, None) when it has not
    finished after ``GIVE_UP_SECONDS`` (the thread is left behind; the child exits soon)."""
    outcome: list[bytes | BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    started = time.perf_counter()
    thread.start()
    thread.join(GIVE_UP_SECONDS)
    if not outcome:
        return None, None
    return time.perf_counter() - started, outcome[0]


def _expect_failure(spec: Spec, key: str) -> tuple[float | None, str]:
    seconds, outcome = _bounded(lambda: read_url(spec, key))
    if not isinstance(outcome, BaseException):
        if seconds is None:
            return None, ""
        raise AssertionError(f"reading {key} over a cut link succeeded")
    return seconds, f"{type(outcome).__name__}: {outcome}"


def run_link_cut(spec: Spec) -> dict[str, Any]:
    layout = _layout(spec)
    keys = layout.link_keys()
    _check(layout, keys[0], read_url(spec, keys[0]))  # online: a client, a connection, a listing
    _link("cut reset")
    to_failure, error = _expect_failure(spec, keys[1])
    next_failure, _ = _expect_failure(spec, keys[2])
    _link("restore")
    restored = time.perf_counter()
    attempts = 0
    while True:
        attempts += 1
        try:
            data = read_url(spec, keys[1])
            break
        except Exception:
            if time.perf_counter() - restored > 60:
                raise
            time.sleep(RETRY_SECONDS)
    to_success = time.perf_counter() - restored
    _check(layout, keys[1], data)
    return {
        "cut_to_failure": to_failure,
        "next_failure": next_failure,
        "restore_to_success": to_success,
        "attempts": attempts,
        "error": error[:600],
        "error_chars": len(error),
    }


def run_link_hung(spec: Spec) -> dict[str, Any]:
    layout = _layout(spec)
    keys = layout.link_keys()
    cached = keys[:3] if spec.client != "s3fs" else []
    for key in cached:
        _check(layout, key, read_url(spec, key))
    _link("cut blackhole")
    time.sleep(HUNG_TTL_SECONDS + 0.5)  # the scenario: the cached metadata has expired
    opens: list[float | None] = []
    for key in cached:
        seconds, outcome = _bounded(lambda key=key: read_url(spec, key))  # type: ignore[misc]
        if isinstance(outcome, BaseException):
            raise AssertionError(f"cached {key} over a hung link: {outcome}") from outcome
        if outcome is not None:
            _check(layout, key, outcome)
        opens.append(seconds)
        if seconds is None:
            break  # it hangs: the next ones would too
    result: dict[str, Any] = {}
    if cached:
        result["first_cached_open"] = opens[0]
        following = [s for s in opens[1:] if s is not None]
        result["following_cached_open"] = statistics.median(following) if following else None
    if spec.client != "simplecache":
        result["uncached_failure"], error = _expect_failure(spec, keys[-1])
        result["error"] = error[:600]
    return result


CHILD_RUNS: dict[str, Callable[[Spec], dict[str, Any]]] = {
    "open_loop": run_open_loop,
    "parquet_file": run_parquet_file,
    "parquet_dataset": run_parquet_dataset,
    "zarr": run_zarr,
    "link_cut": run_link_cut,
    "link_hung": run_link_hung,
}


def child_main(spec_json: str) -> None:
    spec = Spec(**json.loads(spec_json))
    try:
        result: dict[str, Any] = {"result": CHILD_RUNS[spec.case](spec)}
    except BaseException as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"[:3000]}
    print(json.dumps(result), flush=True)
    sys.stdout.flush()
    os._exit(0)  # threads left behind by a hung call must not keep the child alive


# --- the cases, as the parent runs them --------------------------------------------------------
@dataclass(frozen=True)
class Peer:
    """One line of a case's table: a client with its parameters."""

    name: str
    client: str
    params: dict[str, Any] = field(default_factory=dict)
    warm: bool = False
    """Also run warm: a fresh process on the cache directory the cold run filled."""


@dataclass(frozen=True)
class Target:
    """A goal from issue #9: ``metric`` of ``peer`` against ``reference`` (speed ratio, at least
    ``value``) or, without a reference, an absolute bound in seconds (at most ``value``)."""

    metric: str
    peer: str
    value: float
    reference: str | None = None
    phase: str = "cold"


@dataclass(frozen=True)
class Case:
    title: str
    peers: tuple[Peer, ...]
    metrics: tuple[str, ...] = ("seconds",)
    targets: tuple[Target, ...] = ()
    reference: str = "s3fs"
    """The peer each line's ratio is against (by client name prefix)."""
    options: dict[str, Any] = field(default_factory=dict)
    timeout: float = 900.0
    """The parent kills a child that runs longer than this."""


def _loop_peers() -> tuple[Peer, ...]:
    peers = []
    for label, params in (
        ("1 process", {}),
        ("4 workers, spawn", {"workers": 4, "start": "spawn"}),
        ("4 workers, fork", {"workers": 4, "start": "fork"}),
    ):
        for client in ("edgecache", "s3fs"):
            peers.append(Peer(f"{client}, {label}", client, params))
    return tuple(peers)


def _rtt() -> float:
    return LINK_30MS_100MBIT.rtt_ms / 1000


CASES: dict[str, Case] = {
    "open_loop": Case(
        "fsspec.open + read() per file, 64 KiB objects, cold",
        _loop_peers(),
        targets=tuple(
            Target("seconds", f"edgecache, {label}", 3.0, f"s3fs, {label}")
            for label in ("1 process", "4 workers, spawn", "4 workers, fork")
        ),
    ),
    "parquet_file": Case(
        "pandas.read_parquet(url, storage_options=...) of one parquet file",
        (
            Peer("edgecache", "edgecache", warm=True),
            Peer("s3fs", "s3fs", warm=True),
            Peer("simplecache", "simplecache", warm=True),
        ),
    ),
    "parquet_dataset": Case(
        "pyarrow.dataset over a directory of parquet files (url_to_fs + storage_options)",
        (
            Peer("edgecache", "edgecache", warm=True),
            Peer("s3fs", "s3fs", warm=True),
            Peer("simplecache", "simplecache", warm=True),
        ),
    ),
    "zarr": Case(
        "zarr.open_array(url, storage_options=...)[:] of an array of 64 KiB chunks",
        (Peer("edgecache", "edgecache", warm=True), Peer("s3fs", "s3fs", warm=True)),
    ),
    "link_cut": Case(
        "link reset after one read, then restored; uncached reads with fsspec.open",
        (Peer("edgecache", "edgecache"), Peer("s3fs", "s3fs")),
        metrics=("cut_to_failure", "next_failure", "restore_to_success"),
        targets=(Target("restore_to_success", "edgecache", 1.0 + _rtt()),),
    ),
    "link_hung": Case(
        "link hangs (blackhole) after 3 files were cached; fsspec.open after the metadata TTL",
        (
            Peer("edgecache", "edgecache"),
            Peer("simplecache", "simplecache"),
            Peer("s3fs", "s3fs"),
        ),
        metrics=("first_cached_open", "following_cached_open", "uncached_failure"),
        targets=(
            # "One bounded wait per node": one read timeout (RequestLimits: 10 s by default)
            # and the round trips around it, not the 30 s x 3 attempts of before.
            Target("first_cached_open", "edgecache", RequestLimits().read_timeout_seconds + 1.0),
            # "then cached data is served at local speed" (simplecache: ~5 ms here).
            Target("following_cached_open", "edgecache", 0.05),
        ),
        options={"metadata_ttl": HUNG_TTL_SECONDS},
        timeout=1800.0,
    ),
}


@dataclass
class Run:
    """What the parent saw of one child run."""

    result: dict[str, Any] | None
    error: str | None
    load_average: float
    wan_bytes_down: int
    connections: int


class Runner:
    """Starts children against the link, relaying their cut/restore requests to it."""

    def __init__(self, link: Link, layout: Layout, scratch: str) -> None:
        self.link = link
        self.layout = layout
        self.scratch = scratch

    def run(self, case: str, peer: Peer, cache_dir: str) -> Run:
        spec = Spec(
            case,
            peer.client,
            self.link.endpoint,
            cache_dir,
            asdict(self.layout),
            dict(peer.params),
            dict(CASES[case].options),
        )
        load = os.getloadavg()[0]
        self.link.reset()
        connections = self.link.counters()["connections"]
        log_path = os.path.join(self.scratch, "child-stderr.log")
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [sys.executable, SCRIPT, "--child", json.dumps(asdict(spec))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,  # its worker processes too can be ended as one group
            )
            killer = threading.Timer(CASES[case].timeout, _end_group, (process.pid,))
            killer.start()
            reply: dict[str, Any] = {}
            try:
                assert process.stdout is not None and process.stdin is not None
                for line in process.stdout:
                    try:
                        message = json.loads(line)
                    except ValueError:
                        continue  # a library printed something
                    if "link" in message:
                        command = message["link"]
                        if command == "restore":
                            self.link.restore()
                        else:
                            self.link.cut(command.split()[1])
                        process.stdin.write("ok\n")
                        process.stdin.flush()
                    else:
                        reply = message
                        break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=60)
            finally:
                killer.cancel()
                _end_group(process.pid)  # workers a hung run left behind
                process.wait()
                if case.startswith("link_"):
                    self.link.restore()  # whatever the child did, the next run starts online
        counters = self.link.counters()
        error = reply.get("error")
        if not reply:
            with open(log_path) as log:
                tail = log.read()[-1500:]
            error = f"child ended without a result (exit {process.returncode}): {tail}"
        return Run(
            reply.get("result"),
            error,
            round(load, 2),
            counters["down"],
            counters["connections"] - connections,
        )


def _end_group(pid: int) -> None:
    """End the process group of child ``pid`` (the child and the workers it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_case(runner: Runner, name: str, rounds: int) -> dict[str, Any]:
    """``rounds`` interleaved runs of every peer of case ``name`` (cold, then warm if asked)."""
    case = CASES[name]
    print(f"\n{name}: {case.title} ({rounds} runs)", flush=True)
    load_before = os.getloadavg()
    warm_runs: dict[str, list[Run]] = {p.name: [] for p in case.peers}

    def once(peer: Peer) -> Callable[[], Run]:
        def run() -> Run:
            cache_dir = tempfile.mkdtemp(dir=runner.scratch, prefix="cache-")
            try:
                cold = runner.run(name, peer, cache_dir)
                _progress(name, peer.name, "cold", cold, case.metrics)
                if peer.warm:
                    warm = runner.run(name, peer, cache_dir)
                    _progress(name, peer.name, "warm", warm, case.metrics)
                    warm_runs[peer.name].append(warm)
                return cold
            finally:
                shutil.rmtree(cache_dir, ignore_errors=True)

        return run

    cold_runs = interleave({p.name: once(p) for p in case.peers}, rounds=rounds)
    phases = {"cold": cold_runs, "warm": {k: v for k, v in warm_runs.items() if v}}
    summary: dict[str, Any] = {
        "title": case.title,
        "runs": rounds,
        "command": "python bench/user_bench.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "options": case.options,
        "peers": {},
    }
    for phase, by_peer in phases.items():
        for peer_name, runs in by_peer.items():
            entry = summary["peers"].setdefault(peer_name, {})
            entry[phase] = {
                "median": {m: _median(runs, m) for m in case.metrics if _measured(runs, m)},
                "runs": [asdict(r) for r in runs],
                "wan_bytes_down_median": statistics.median(r.wan_bytes_down for r in runs),
            }
    summary["targets"] = [_verdict(summary, t) for t in case.targets]
    _print_case(name, case, summary)
    return summary


def _measured(runs: list[Run], metric: str) -> bool:
    """Whether this peer measures ``metric`` at all (plain s3fs has no cached file to open)."""
    return any(r.result is not None and metric in r.result for r in runs)


def _median(runs: list[Run], metric: str) -> float | None:
    """The median, or None when a run failed or a call in it did not finish (no honest median)."""
    values = [r.result.get(metric) for r in runs if r.result is not None]
    numbers = [v for v in values if isinstance(v, int | float)]
    if len(numbers) < len(runs):
        return None  # a run failed or did not finish: no honest median
    return statistics.median(numbers)


def _progress(case: str, peer: str, phase: str, run: Run, metrics: Sequence[str]) -> None:
    if run.error:
        shown = f"ERROR {run.error[:300]}"
    else:
        assert run.result is not None
        shown = "  ".join(f"{m} {_seconds(run.result[m])}" for m in metrics if m in run.result)
    print(
        f"  {case:<15} {peer:<32} {phase}  {shown}  "
        f"WAN {run.wan_bytes_down / MiB:.1f} MiB  load {run.load_average:.1f}",
        flush=True,
    )


def _seconds(value: Any) -> str:
    if value is None:
        return f"> {GIVE_UP_SECONDS:.0f} s (not finished)"
    return f"{value:.3f} s" if isinstance(value, int | float) else str(value)


def _reference(case: Case, peer: Peer) -> str | None:
    """The peer whose median this line's ratio is taken against (same parameters, ``s3fs``)."""
    if peer.client == case.reference:
        return None
    for other in case.peers:
        if other.client == case.reference and other.params == peer.params:
            return other.name
    return None


def _value(summary: dict[str, Any], peer: str, phase: str, metric: str) -> float | None:
    entry = summary["peers"].get(peer, {}).get(phase)
    value = entry["median"].get(metric) if entry else None
    return value if isinstance(value, int | float) else None


def _verdict(summary: dict[str, Any], target: Target) -> dict[str, Any]:
    mine = _value(summary, target.peer, target.phase, target.metric)
    if target.reference is not None:
        theirs = _value(summary, target.reference, target.phase, target.metric)
        value = ratio(theirs, mine) if mine and theirs else None
        goal = f">= {target.value:g}x {target.reference}"
        met = value is not None and value >= target.value
    else:
        value, goal = mine, f"<= {target.value:g} s"
        met = value is not None and value <= target.value
    return {
        "peer": target.peer,
        "metric": target.metric,
        "phase": target.phase,
        "target": goal,
        "value": None if value is None else round(value, 3),
        "met": met,
    }


def _print_case(name: str, case: Case, summary: dict[str, Any]) -> None:
    rows = []
    for peer in case.peers:
        reference = _reference(case, peer)
        for phase in ("cold", "warm"):
            entry = summary["peers"].get(peer.name, {}).get(phase)
            if entry is None:
                continue
            runs = [Run(**r) for r in entry["runs"]]
            loads = [r.load_average for r in runs]
            for metric in case.metrics:
                if not any(r.error or metric in (r.result or {}) for r in runs):
                    continue  # not measured for this peer
                median = entry["median"].get(metric)
                theirs = _value(summary, reference, phase, metric) if reference else None
                every = ["err" if r.result is None else _short(r.result.get(metric)) for r in runs]
                rows.append(
                    [
                        peer.name,
                        phase if len(case.metrics) == 1 else metric,
                        median,
                        " ".join(every),
                        ratio(theirs, median) if theirs and median else None,
                        entry["wan_bytes_down_median"] / MiB,
                        f"{min(loads):.1f}-{max(loads):.1f}",
                    ]
                )
    print_table(
        f"{name}: {case.title} (median of {summary['runs']}; x ref = reference's time / this)",
        ["peer", "what", "median s", "runs", f"x {case.reference}", "WAN MiB", "load"],
        rows,
    )
    errors = {
        r["error"]
        for p in summary["peers"].values()
        for phase in p.values()
        for r in phase["runs"]
        if r["error"]
    }
    for error in errors:
        print(f"  error: {error[:500]}")
    for peer in summary["peers"].values():
        for run in peer.get("cold", {}).get("runs", [])[:1]:
            if run["result"] and run["result"].get("error"):
                print(f"  message of a failed read: {run['result']['error'][:300]}")
    for verdict in summary["targets"]:
        print(
            f"  target: {verdict['peer']} {verdict['metric']} {verdict['target']}: "
            f"{verdict['value']} -> {'met' if verdict['met'] else 'NOT met'}"
        )


def _short(value: Any) -> str:
    if value is None:
        return "hung"
    return f"{value:.3g}" if isinstance(value, int | float) else str(value)


# --- main ----------------------------------------------------------------------------------------
def _merge_results(output: str, cases: dict[str, Any]) -> None:
    """Write ``cases`` into ``bench/results/<output>.json``, keeping the cases not run now."""
    path = os.path.join(RESULTS_DIR, f"{output}.json")
    previous: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError), open(path) as f:
        previous = json.load(f).get("cases", {})
    merged = {**previous, **cases}
    targets = [
        {"case": name, **verdict}
        for name, summary in merged.items()
        for verdict in summary.get("targets", [])
    ]
    write_results(
        output,
        {
            "link": {"rtt_ms": LINK_30MS_100MBIT.rtt_ms, "mbit": LINK_30MS_100MBIT.mbit},
            "cases": merged,
            "targets": targets,
        },
    )


@contextlib.contextmanager
def environment(
    cases: Sequence[str], sizes: Sizes, *, keep_alive: bool = False
) -> Iterator[Runner]:
    """moto seeded with the data of ``cases``, behind the emulated link: a :class:`Runner`
    (``keep_alive``: moto keeps connections open, see :func:`_wan.moto_server`)."""
    with moto_server(keep_alive=keep_alive) as (endpoint, _), scratch_dir("user") as scratch:
        print(f"moto at {endpoint}; seeding the data of {', '.join(cases)}", flush=True)
        started = time.monotonic()
        layout = seed(endpoint, cases, sizes)
        print(f"seeded in {time.monotonic() - started:.0f} s: {asdict(sizes)}", flush=True)
        link = Link(endpoint, LINK_30MS_100MBIT)
        try:
            yield Runner(link, layout, scratch)
        finally:
            link.close()


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", default="", help=f"comma-separated cases (of {', '.join(CASES)}; default: all)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per peer (median reported)")
    parser.add_argument("--files", type=int, default=200, help="objects of the open_loop case")
    parser.add_argument("--quick", action="store_true", help="smaller data and one run")
    parser.add_argument("--output", default="user_bench", help="results name under bench/results")
    parser.add_argument(
        "--keep-alive",
        action="store_true",
        help="serve moto over kept HTTP/1.1 connections, as S3 does (default: moto's own "
        "server, which closes the connection after every response)",
    )
    args = parser.parse_args()
    cases = [c for c in args.only.split(",") if c] or list(CASES)
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"--only: unknown case(s) {', '.join(sorted(unknown))}")
    sizes = Sizes(small_files=args.files)
    if args.quick:
        sizes = Sizes(
            small_files=min(args.files, 40),
            parquet_rows=200_000,
            dataset_files=4,
            zarr_side_chunks=6,
        )
        args.runs = 1
    compile_like_installed()  # every child imports edgecache as an installed copy would
    started = time.monotonic()
    results: dict[str, Any] = {}
    with environment(cases, sizes, keep_alive=args.keep_alive) as runner:
        for name in cases:
            results[name] = run_case(runner, name, args.runs)
            results[name]["sizes"] = asdict(sizes)
            results[name]["server_keeps_connections"] = args.keep_alive
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    _merge_results(args.output, results)


if __name__ == "__main__":
    main()
