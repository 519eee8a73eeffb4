"""8 threads and 4 processes read the same uncached objects at once through one cache dir.

Every reader must get exact bytes, and across all of them each block is fetched from the
"backend" once: the fetch function appends the block's digest to a log file opened with
O_APPEND, which every process writes to.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cachetestlib import (
    BS,
    WORKER,
    Source,
    audit,
    fetch_log,
    fetching_pids,
    make_objects,
    read_object,
    read_object_sync,
    settings,
)

from edgecache.cache import TieredCache

THREADS = 8
PROCESSES = 4


def _start_processes(config: dict, tmp_path: Path, n: int) -> list[subprocess.Popen[str]]:
    procs = []
    for i in range(n):
        cfg = dict(config, seed=100 + i, out_path=str(tmp_path / f"out{i}.json"))
        procs.append(
            subprocess.Popen(
                [sys.executable, WORKER, "read", json.dumps(cfg)],
                stdout=subprocess.PIPE,
                text=True,
                cwd=os.path.dirname(WORKER),
            )
        )
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
    return procs


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(3))
def test_threads_and_processes_fetch_each_block_once(tmp_path: Path, round_: int) -> None:
    cache_dir = str(tmp_path / "cache")
    log_path = str(tmp_path / "fetches.log")
    go_path = str(tmp_path / "go")
    specs = make_objects(8, blocks=6, seed=round_)
    opts = {"cache_dir": cache_dir, "mem_quota": 8 * BS, "ssd_quota": 256 * BS}
    config = {
        "settings": opts,
        "objects": [[s.path, s.size, s.compressible] for s in specs],
        "log_path": log_path,
        "go_path": go_path,
        "delay_seconds": 0.002,
    }
    cache = TieredCache(settings(**opts))
    source = Source.of(specs, log_path=log_path, delay_seconds=0.002)
    procs = _start_processes(config, tmp_path, PROCESSES)

    barrier = threading.Barrier(THREADS + 1)
    results: dict[int, list[bool]] = {}
    errors: list[BaseException] = []

    def reader(i: int) -> None:
        order = list(specs)
        random.Random(i).shuffle(order)
        barrier.wait()
        try:
            if i % 2:
                results[i] = [read_object_sync(cache, source, s.path) == s.data() for s in order]
            else:

                async def run() -> list[bool]:
                    got = await asyncio.gather(*(read_object(cache, source, s.path) for s in order))
                    return [g == s.data() for g, s in zip(got, order, strict=True)]

                results[i] = asyncio.run(run())
        except BaseException as exc:  # reported below, with the thread's index
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    Path(go_path).touch()
    barrier.wait()
    for t in threads:
        t.join(60)
    for p in procs:
        assert p.wait(60) == 0
    assert not errors, errors
    assert all(all(r) for r in results.values()) and len(results) == THREADS
    for i in range(PROCESSES):
        out = json.loads((tmp_path / f"out{i}.json").read_text())
        assert out["ok"], out
    counts = fetch_log(log_path)
    all_digests = {k.digest for k in source.all_keys()}
    assert set(counts) == all_digests
    duplicated = {d: n for d, n in counts.items() if n != 1}
    assert not duplicated, f"blocks fetched more than once: {duplicated}"
    # Who fetched is up to the scheduler (on a loaded machine one process may win every
    # race); printed so a run shows how the fetches were shared out.
    print(f"fetching processes: {len(fetching_pids(log_path))}")
    st = cache.stats()
    assert st["tiers"]["backend"]["fetches"] == len(all_digests)
    cache.close()
    audit(settings(**opts)).assert_consistent()
    assert st["tiers"]["ssd"]["corrupt_blocks"] == 0


def test_threads_of_one_process_share_one_fetch(make_cache) -> None:
    # Slow fetches, all readers on the same first blocks: the single-flight map, not the SSD
    # re-check, is what keeps it to one fetch here.
    specs = make_objects(2, blocks=3, seed=9)
    source = Source.of(specs, delay_seconds=0.05)
    cache = make_cache(ssd_quota=64 * BS)
    barrier = threading.Barrier(THREADS)
    got: list[bytes] = []

    def reader() -> None:
        barrier.wait()
        got.append(asyncio.run(read_object(cache, source, specs[0].path)))

    threads = [threading.Thread(target=reader) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert got == [specs[0].data()] * THREADS
    assert set(source.fetches.values()) == {1}
    assert len(source.fetches) == len(source.keys(specs[0].path))


def test_readers_racing_eviction_never_see_wrong_bytes(make_cache) -> None:
    specs = make_objects(20, blocks=3, seed=11)
    source = Source.of(specs)
    cache = make_cache(mem_quota=2 * BS, ssd_quota=8 * BS, ssd_high=0.9, ssd_low=0.5)
    keys = source.all_keys()
    wrong: list[str] = []
    barrier = threading.Barrier(4)

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        barrier.wait()
        for _ in range(150):
            key = rng.choice(keys)
            data = cache.get_cached(key)
            if data is None:
                expected = len(source.block(key))
                data = asyncio.run(cache.get(key, source.fetcher(key), expected_size=expected))
            if data != source.block(key):
                wrong.append(key.digest)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not wrong
    assert cache.stats()["tiers"]["ssd"]["evictions"] > 0
    a = audit(cache.settings)
    a.assert_consistent()
    assert a.file_sum[0] <= 8 * BS


@pytest.mark.slow
def test_processes_filling_and_evicting_one_small_cache_keep_it_consistent(tmp_path: Path) -> None:
    # Four processes and a quota a fraction of their data: every write evicts blocks other
    # processes are reading or writing at that moment.
    opts = {
        "cache_dir": str(tmp_path / "c"),
        "mem_quota": 2 * BS,
        "ssd_quota": 12 * BS,
        "ssd_high": 0.9,
        "ssd_low": 0.6,
    }
    specs = make_objects(30, blocks=3, seed=12)
    procs = []
    for i in range(PROCESSES):
        cfg = {
            "settings": opts,
            "objects": [[s.path, s.size, s.compressible] for s in specs],
            "seed": i,
            "steps": 300,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, WORKER, "fill", json.dumps(cfg)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=os.path.dirname(WORKER),
            )
        )
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * PROCESSES, outs
    assert not any("MISMATCH" in o for o in outs)
    # A healthy shared directory never takes the SSD tier out of service in any process.
    assert not any("unusable" in o for o in outs), outs
    s = settings(**opts)
    a = audit(s)
    a.assert_consistent()
    assert a.used[0] <= s.ssd_quota
    cache = TieredCache(s)
    try:
        st = cache.stats()
        assert st["tiers"]["ssd"]["evictions"] > 0
        source = Source.of(specs)
        for spec in specs:
            assert read_object_sync(cache, source, spec.path) == spec.data()
    finally:
        cache.close()


@pytest.mark.slow
def test_cache_dir_deleted_and_recreated_under_a_running_process(tmp_path: Path) -> None:
    # Process B fills the cache; the directory is deleted and a new cache (this process) starts
    # on it at once. B's writes meant for its old, deleted index must not land in the new
    # directory unaccounted, and every read on both sides stays exact.
    opts = {"cache_dir": str(tmp_path / "c"), "mem_quota": 2 * BS, "ssd_quota": 48 * BS}
    specs = make_objects(30, blocks=3, seed=13)
    cfg = {"settings": opts, "objects": [[s.path, s.size, s.compressible] for s in specs]}
    b = subprocess.Popen(
        [sys.executable, WORKER, "fill", json.dumps(dict(cfg, seed=1))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=os.path.dirname(WORKER),
    )
    try:
        assert b.stdout is not None
        assert b.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        for _ in range(50):  # B keeps writing while the tree goes away
            shutil.rmtree(opts["cache_dir"], ignore_errors=True)
            if not os.path.exists(opts["cache_dir"]):
                break
        cache = TieredCache(settings(**opts))
        try:
            source = Source.of(specs)
            rng = random.Random(2)
            deadline = time.monotonic() + 3.0  # B notices the deletion within ~2 s
            while time.monotonic() < deadline:
                spec = rng.choice(specs)
                assert read_object_sync(cache, source, spec.path) == spec.data()
            assert b.poll() is None, b.communicate()[0]
        finally:
            b.kill()
            out = b.communicate(timeout=30)[0]
            cache.flush()
        assert "MISMATCH" not in out
        audit(settings(**opts)).assert_consistent(allow_orphan_rows=True)
        cache.close()
    finally:
        if b.poll() is None:
            b.kill()
            b.wait(10)
