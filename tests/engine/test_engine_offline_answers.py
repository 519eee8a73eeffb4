"""Offline answers from cached metadata (issue #10, item 11), the way users ask: a missing key
probed online is a miss of that key alone, so a parquet directory and a zarr array read online
open and read offline in a new process; what was never cached raises instead of looking empty."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import zarr
from edgecache_testservers.wan import WANEmulator, WANProfile
from enginetestlib import Bucket

ROWS = 500

_OFFLINE = r"""
import json, sys
import fsspec, numpy as np, pyarrow.dataset as ds, zarr

endpoint, bucket, cache = sys.argv[1:]
def options():
    return {"s3": {"endpoint_url": endpoint, "key": "k", "secret": "s"},
            "edgecache": {"cache_dir": cache, "metadata_ttl": 0}}  # every entry expired
fs, _ = fsspec.core.url_to_fs(f"edgecache::s3://{bucket}", **options())
out = {"rows": ds.dataset(f"{bucket}/pqdir", filesystem=fs, format="parquet").to_table().num_rows,
       "exists_metadata": fs.exists(f"{bucket}/pqdir/_metadata"),
       "zarr_sum": int(np.asarray(zarr.open_array(f"edgecache::s3://{bucket}/arr.zarr",
                                                  mode="r", storage_options=options())[:]).sum())}
for name, call in {
    "find": lambda: fs.find(f"{bucket}/never"),
    "glob": lambda: fs.glob(f"{bucket}/never/*"),
    "walk": lambda: list(fs.walk(f"{bucket}/never")),
    "du": lambda: fs.du(f"{bucket}/never"),
    "isdir": lambda: fs.isdir(f"{bucket}/never"),
    "exists": lambda: fs.exists(f"{bucket}/never"),
}.items():
    try:
        out[name] = repr(call())
    except Exception as exc:
        out[name] = type(exc).__name__
print(json.dumps(out))
"""


@pytest.fixture
def link(bucket: Bucket) -> Iterator[WANEmulator]:
    with WANEmulator(bucket.endpoint, WANProfile(rtt_ms=1, mbit=800)) as wan:
        yield wan


def _options(endpoint: str, cache: Path) -> dict[str, Any]:
    return {
        "s3": {"endpoint_url": endpoint, "key": "k", "secret": "s"},
        "edgecache": {"cache_dir": str(cache)},
    }


def test_parquet_and_zarr_read_online_open_offline_in_a_new_process(
    bucket: Bucket, link: WANEmulator, tmp_path: Path
) -> None:
    frame = pd.DataFrame({"x": np.arange(ROWS), "y": np.arange(ROWS) * 0.5})
    for part, rows in enumerate((frame[: ROWS // 2], frame[ROWS // 2 :])):
        buffer = io.BytesIO()
        rows.to_parquet(buffer)
        bucket.put(f"pqdir/part-{part}.parquet", buffer.getvalue())
    values = np.arange(40 * 30, dtype="i8").reshape(40, 30)
    # Written locally and copied with boto3: zarr's own s3fs client (async, on zarr's loop) is
    # never closed and would be reported unclosed at exit.
    array = zarr.open_array(
        tmp_path / "arr.zarr", mode="w", shape=values.shape, chunks=(10, 30), dtype="i8"
    )
    array[:] = values
    bucket.put_tree("arr.zarr", tmp_path / "arr.zarr")

    cache = tmp_path / "cache"
    fs, _ = fsspec.core.url_to_fs(
        f"edgecache::s3://{bucket.name}", **_options(link.endpoint, cache)
    )
    table = ds.dataset(f"{bucket.name}/pqdir", filesystem=fs, format="parquet").to_table()
    assert table.num_rows == ROWS
    assert not fs.exists(f"{bucket.name}/pqdir/_metadata")  # a miss of that key alone
    online = zarr.open_array(
        f"edgecache::s3://{bucket.name}/arr.zarr",
        mode="r",
        storage_options=_options(link.endpoint, cache),
    )
    assert int(np.asarray(online[:]).sum()) == int(values.sum())
    fs.engine.flush()

    link.cut("reset")
    proc = subprocess.run(
        [sys.executable, "-c", _OFFLINE, link.endpoint, bucket.name, str(cache)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rows"] == ROWS
    assert out["exists_metadata"] is False
    assert out["zarr_sum"] == int(values.sum())
    # Never listed, never probed: offline that cannot be known, and says so.
    for name in ("find", "glob", "walk", "du", "isdir", "exists"):
        assert out[name] == "BackendUnavailableError", (name, out[name])
