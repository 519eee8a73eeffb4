"""zarr's async API and the sync API in one process, in either order, on one S3 backend.

zarr 3 opens ``edgecache::s3://...`` with ``asynchronous=True`` and awaits the filesystem's
coroutines on its own event loop; everything else runs on fsspec's I/O loop. The engine runs all
backend I/O on one loop, so neither order may leave a client "attached to a different loop" (or
mark a healthy backend offline). Each order runs in a fresh process, as a user's script would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from enginetestlib import Bucket

_SCRIPT = r"""
import json, sys
import fsspec, numpy as np, zarr

endpoint, bucket, cache, order = sys.argv[1:]

def options():  # zarr may add keys to the dicts it is given: a fresh copy per call
    return {"s3": {"endpoint_url": endpoint, "key": "k", "secret": "s"},
            "edgecache": {"cache_dir": cache, "block_size": "64KiB"}}

def zarr_read():
    array = zarr.open_array(f"edgecache::s3://{bucket}/arr.zarr", mode="r",
                            storage_options=options())
    return int(np.asarray(array[:]).sum())

def zarr_write():
    array = zarr.open_array(f"edgecache::s3://{bucket}/out.zarr", mode="w", shape=(100,),
                            chunks=(10,), dtype="i4", storage_options=options())
    array[:] = np.arange(100, dtype="i4")

def sync_calls():
    with fsspec.open(f"edgecache::s3://{bucket}/plain.bin", "rb", **options()) as f:
        data = f.read()
    fs, _ = fsspec.core.url_to_fs(f"edgecache::s3://{bucket}/plain.bin", **options())
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(bucket, detail=False))
    return len(data), names, fs.health.online

steps = [zarr_read, zarr_write, sync_calls] if order == "zarr-first" else [
    sync_calls, zarr_read, zarr_write]
out = {}
for step in steps + steps:  # and again, each after the other
    out.setdefault(step.__name__, []).append(step())
print(json.dumps(out))
"""


@pytest.mark.parametrize("order", ["zarr-first", "sync-first"])
def test_zarr_async_and_sync_calls_share_a_process(
    bucket: Bucket, tmp_path: Path, order: str
) -> None:
    # Written and read back locally and copied with boto3: zarr's own s3fs client (async, on
    # zarr's loop) is never closed and would be reported unclosed at exit.
    source = zarr.open_array(
        tmp_path / "arr.zarr", mode="w", shape=(200, 50), chunks=(20, 50), dtype="i8"
    )
    values = np.arange(200 * 50, dtype="i8").reshape(200, 50)
    source[:] = values
    bucket.put_tree("arr.zarr", tmp_path / "arr.zarr")
    bucket.put("plain.bin", b"p" * 100_000)

    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, bucket.endpoint, bucket.name, str(tmp_path / "c"), order],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["zarr_read"] == [int(values.sum())] * 2
    for size, names, online in out["sync_calls"]:
        assert size == 100_000 and online
        assert "arr.zarr" in names and "plain.bin" in names
    written = zarr.open_array(bucket.get_tree("out.zarr", tmp_path / "out.zarr"), mode="r")
    assert list(written[:]) == list(range(100))
