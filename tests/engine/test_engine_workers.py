"""DataLoader-style worker processes, forked or spawned, read exact bytes.

A PyTorch ``Dataset`` holds a filesystem made in the parent; ``DataLoader`` workers get it by
fork (inherited as it is, with the parent's engine, loop thread, sqlite connections and sockets
in its memory) or by spawn (pickled). Either way a worker must build its own engine and never use
what it inherited; the other common pattern, ``fsspec.open`` per item, must work too.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from typing import Any

import fsspec
import pytest
from enginetestlib import Bucket

from edgecache.fs import EdgeCacheFileSystem

FILES = 24


class Dataset:
    """What a training script's dataset looks like: a filesystem and the paths it reads."""

    def __init__(self, fs: EdgeCacheFileSystem, paths: list[str]) -> None:
        self.fs = fs
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> bytes:
        with self.fs.open(self.paths[i], "rb") as f:
            data: bytes = f.read()
        return data


_INHERITED: Dataset | None = None
"""The parent's dataset, as a forked worker inherits it (not pickled)."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_inherited(indices: list[int]) -> list[str]:
    assert _INHERITED is not None
    return [_digest(_INHERITED[i]) for i in indices]


def _read_pickled(dataset: Dataset, indices: list[int]) -> list[str]:
    return [_digest(dataset[i]) for i in indices]


def _read_urls(urls: list[str], options: dict[str, Any]) -> list[str]:
    out = []
    for url in urls:
        with fsspec.open(url, "rb", **options) as f:
            out.append(_digest(f.read()))
    return out


def _content(i: int) -> bytes:
    return bytes([i % 251]) * (20_000 + 997 * i)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_workers_read_exact_bytes(bucket: Bucket, tmp_path: Any, method: str) -> None:
    global _INHERITED
    for i in range(FILES):
        bucket.put(f"train/f{i:03d}.bin", _content(i))
    options = {
        "s3": bucket.s3_options,
        "edgecache": {"cache_dir": str(tmp_path / "cache"), "block_size": "16KiB"},
    }
    urls = [f"edgecache::s3://{bucket.name}/train/f{i:03d}.bin" for i in range(FILES)]
    fs, _ = fsspec.core.url_to_fs(urls[0], **options)
    assert isinstance(fs, EdgeCacheFileSystem)
    dataset = Dataset(fs, [u.split("::", 1)[1] for u in urls])
    # The parent reads first: its engine, loop, connections and index are live when it forks.
    expected = [_digest(_content(i)) for i in range(FILES)]
    assert [_digest(dataset[i]) for i in range(0, FILES, 3)] == expected[::3]
    _INHERITED = dataset

    halves = [list(range(0, FILES, 2)), list(range(1, FILES, 2))]
    context = multiprocessing.get_context(method)
    with context.Pool(2) as pool:
        if method == "fork":
            by_object = pool.map(_read_inherited, halves)
        else:
            by_object = pool.starmap(_read_pickled, [(dataset, h) for h in halves])
        by_url = pool.starmap(_read_urls, [([urls[i] for i in h], options) for h in halves])
    for got in (by_object, by_url):
        assert got == [[expected[i] for i in h] for h in halves]
    # The parent still works after its children used the same cache directory.
    assert [_digest(dataset[i]) for i in range(FILES)] == expected
    _INHERITED = None
