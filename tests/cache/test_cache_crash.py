"""Writers killed with SIGKILL at random moments while they fill and evict under a small quota.

The index must open after every kill, each read must stay exact (the workers check their own
reads against the source and exit 3 on a mismatch), and afterwards the accounting must match the
files on disk: a crash may leave a row without its file (a read re-fetches it), never a file
the quota does not see.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cachetestlib import (
    BS,
    WORKER,
    ObjectSpec,
    Source,
    audit,
    fetch_log,
    make_objects,
    read_object,
    read_object_sync,
    settings,
)

from edgecache.cache import TieredCache


@pytest.mark.slow
def test_sigkill_loop_leaves_a_consistent_cache(tmp_path: Path, reliability: Any) -> None:
    # 20 kills in the normal run (each of the loop's kill kinds several times: 4 rounds with
    # two writers, 5 kills while starting); the former 60 with EDGECACHE_RELIABILITY=long.
    kills = reliability.scale(ci=20, long=60)
    opts = {
        "cache_dir": str(tmp_path / "a"),
        "ssd_dirs": [[str(tmp_path / "a"), 16 * BS], [str(tmp_path / "b"), 10 * BS]],
        "mem_quota": 4 * BS,
        "ssd_high": 0.9,
        "ssd_low": 0.6,
    }
    specs = make_objects(40, blocks=5, seed=7)
    assert sum(s.size for s in specs) > 2 * 26 * BS  # far more data than quota: it evicts
    rng = random.Random(1)
    stderr_path = tmp_path / "stderr.txt"
    started = time.monotonic()
    for i in range(kills):
        # Every fifth round two writers share the directory when the kill comes.
        n = 2 if i % 5 == 4 else 1
        procs = []
        with open(stderr_path, "w") as err:
            for j in range(n):
                cfg = {
                    "settings": opts,
                    "objects": [[s.path, s.size, s.compressible] for s in specs],
                    "seed": i * 10 + j,
                }
                procs.append(
                    subprocess.Popen(
                        [sys.executable, WORKER, "fill", json.dumps(cfg)],
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                        cwd=os.path.dirname(WORKER),
                    )
                )
            if i % 4 == 1:
                # Sometimes while it starts: creating directories, the index, cleaning tmp.
                time.sleep(rng.uniform(0.0, 0.3))
            else:
                for p in procs:
                    assert p.stdout is not None
                    line = p.stdout.readline().strip()
                    assert line == "ready", (line, stderr_path.read_text())
                time.sleep(rng.uniform(0.0, 0.2))
            for p in procs:
                p.send_signal(signal.SIGKILL)
            for p in procs:
                rc = p.wait(30)
                assert p.stdout is not None
                out = p.stdout.read()
                assert rc == -signal.SIGKILL, (i, rc, out, stderr_path.read_text())
                # It never saw a wrong byte (it prints MISMATCH and exits 3 if it does).
                assert "MISMATCH" not in out
    elapsed = time.monotonic() - started
    reliability.iterations = reliability.faults_injected = kills

    s = settings(**opts)
    db = sqlite3.connect(os.path.join(opts["cache_dir"], "index.sqlite"))
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # The writers did evict (S3-FIFO remembers what it evicted from the small queue).
    assert db.execute("SELECT count(*) FROM ghost").fetchone()[0] > 0
    db.close()
    before = audit(s)
    # Only rows may lack their file; no file may be unaccounted; totals match the rows.
    before.assert_consistent(allow_orphan_rows=True)

    cache = TieredCache(s)
    try:
        # Temp files of the killed writers are gone once a cache opens the directory.
        for d in ("a", "b"):
            assert os.listdir(tmp_path / d / "tmp") == []
        # Reads are exact straight away, before any maintenance.
        source = Source.of(specs)
        for spec in specs:
            assert read_object_sync(cache, source, spec.path) == spec.data()
        cache.flush()
        middle = audit(s)
        middle.assert_consistent(allow_orphan_rows=True)
        report = cache.ssd.reconcile()
        print(
            f"\n{kills} kills in {elapsed:.1f}s; after the kills: {len(before.rows)} rows, "
            f"{len(before.orphan_rows)} without a file; after reading everything: "
            f"{len(middle.orphan_rows)} without a file; reconcile: {report}"
        )
        # reconcile() found no file to remove: the crashes never left an unaccounted file.
        assert report == {
            "removed_files": 0,
            "removed_rows": len(middle.orphan_rows),
            "foreign_files": 0,
        }
        after = audit(s)
        after.assert_consistent()
        for i, quota in enumerate(cache.ssd.quotas):
            assert after.used[i] <= quota
        for spec in specs:
            assert read_object_sync(cache, source, spec.path) == spec.data()
    finally:
        cache.close()
    audit(s).assert_consistent()


def test_a_killed_fetcher_does_not_wedge_the_block_for_other_processes(tmp_path: Path) -> None:
    import asyncio

    opts = {"cache_dir": str(tmp_path / "c")}
    spec = ObjectSpec("stuck", 2 * BS, compressible=False)
    log_path = str(tmp_path / "fetches.log")
    cfg = {"settings": opts, "objects": [[spec.path, spec.size, False]], "log_path": log_path}
    p = subprocess.Popen(
        [sys.executable, WORKER, "hang", json.dumps(cfg)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(WORKER),
    )
    source = Source.of([spec], log_path=log_path)
    key = source.keys(spec.path)[0]
    cache = TieredCache(settings(**opts))
    try:
        deadline = time.monotonic() + 20
        while fetch_log(log_path)[key.digest] == 0:  # the worker holds the lock, fetching
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.01)

        async def read_with_timeout(seconds: float) -> bytes:
            return await asyncio.wait_for(read_object(cache, source, spec.path), seconds)

        # While it holds the lock, this process waits rather than fetching a second time...
        with pytest.raises(TimeoutError):
            asyncio.run(read_with_timeout(0.3))
        assert fetch_log(log_path)[key.digest] == 1
        p.kill()
        p.wait(10)
        # ...and once the kernel dropped the dead holder's lock, it fetches the block itself.
        assert asyncio.run(read_with_timeout(5)) == spec.data()
        assert fetch_log(log_path)[key.digest] == 2
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        cache.close()
    audit(settings(**opts)).assert_consistent()
