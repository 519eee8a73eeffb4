"""pandas and pyarrow the way users call them: a chained URL and ``storage_options``, writing
and reading parquet and CSV on S3 (moto) through edgecache, each call building its own
filesystem instance, all of them reaching one engine."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import fsspec
import fsspec.core
import pandas as pd
import pyarrow.parquet as pq
from enginetestlib import Bucket

from edgecache.engine import open_engines


def _options(bucket: Bucket, cache: Path) -> dict[str, Any]:
    return {"s3": bucket.s3_options, "edgecache": {"cache_dir": str(cache)}}


def test_to_parquet_then_read_parquet_and_csv_through_storage_options(
    bucket: Bucket, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    options = _options(bucket, cache)
    frame = pd.DataFrame({"id": range(2000), "name": [f"row-{i}" for i in range(2000)]})
    url = f"edgecache::s3://{bucket.name}/tables/rows.parquet"
    # pandas may add keys to the dicts it is given: a copy per call, as a loop would pass them.
    frame.to_parquet(url, storage_options=copy.deepcopy(options))
    frame.to_csv(
        url.replace(".parquet", ".csv"), index=False, storage_options=copy.deepcopy(options)
    )
    assert pd.read_parquet(url, storage_options=copy.deepcopy(options)).equals(frame)
    assert pd.read_csv(
        url.replace(".parquet", ".csv"), storage_options=copy.deepcopy(options)
    ).equals(frame)
    # The objects are in the store, as plain parquet and CSV.
    stored = bucket.client().get_object(Bucket=bucket.name, Key="tables/rows.csv")  # type: ignore[attr-defined]
    assert stored["Body"].read().decode().splitlines()[:2] == ["id,name", "0,row-0"]
    engines = [e for e in open_engines() if e.store.directory == str(cache.resolve())]
    assert len(engines) == 1, engines
    # A rewrite is seen at once by the next read (the cache forgot the replaced version).
    frame.head(5).to_parquet(url, storage_options=copy.deepcopy(options))
    assert pd.read_parquet(url, storage_options=copy.deepcopy(options)).equals(frame.head(5))
    fs, _ = fsspec.core.url_to_fs(url, **copy.deepcopy(options))
    assert fs.engine is engines[0]
    assert pq.read_metadata(f"{bucket.name}/tables/rows.parquet", filesystem=fs).num_rows == 5
