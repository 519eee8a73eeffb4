"""An object replaced while it is read: re-planned (whole reads) or reported (a handle that has
already returned bytes), never mixed, never a bare ``OSError``; and one message per failure when
the backend is unreachable."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import fsspec
import pytest

from edgecache.backends import _registry, register_backend
from edgecache.backends.local import LocalBackend
from edgecache.errors import BackendUnavailableError, ObjectChangedError

KiB = 1024
BLOCK = 16 * KiB


class ReplacingBackend(LocalBackend):
    """Local files, without the version check on reads (as a generic backend), that replace
    ``victim`` with ``replacement`` once, right after the first block of it was read."""

    protocols = ("replacing",)
    victim: str = ""
    replacement: bytes = b""

    async def fetch_range(self, path: str, start: int, end: int, version: str) -> bytes:
        data = await asyncio.to_thread(_pread, path, start, end)
        if path == type(self).victim:
            type(self).victim = ""
            await asyncio.to_thread(Path(path).write_bytes, type(self).replacement)
        return data


class CuttableBackend(LocalBackend):
    """Local files behind a link that ``down`` cuts (every call raises ConnectionError)."""

    protocols = ("cuttable",)
    down = False

    async def fetch_range(self, path: str, start: int, end: int, version: str) -> bytes:
        if type(self).down:
            raise ConnectionError(f"connect to the store failed while reading {path}")
        return await super().fetch_range(path, start, end, version)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if type(self).down:
            raise ConnectionError("connect to the store failed")
        return await super().call(method, *args, **kwargs)

    async def probe(self) -> None:
        if type(self).down:
            raise BackendUnavailableError("still down")


def _pread(path: str, start: int, end: int) -> bytes:
    with open(path, "rb") as f:
        return os.pread(f.fileno(), end - start, start)


@pytest.fixture(autouse=True)
def backends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_registered", dict(_registry._registered))
    register_backend("replacing", ReplacingBackend)
    register_backend("cuttable", CuttableBackend)
    CuttableBackend.down = False


def _fs(protocol: str, tmp_path: Path, **options: Any) -> Any:
    return fsspec.filesystem(
        "edgecache",
        target_protocol=protocol,
        cache_dir=str(tmp_path / "cache"),
        block_size=BLOCK,
        readahead_blocks=0,
        **options,
    )


def test_a_whole_read_of_an_object_replaced_midway_returns_the_new_version(
    tmp_path: Path,
) -> None:
    path = tmp_path / "obj.bin"
    old, new = b"o" * (5 * BLOCK + 100), b"n" * (3 * BLOCK + 7)
    path.write_bytes(old)
    fs = _fs("replacing", tmp_path, fetch_concurrency=1)
    assert fs.info(str(path))["size"] == len(old)
    ReplacingBackend.victim, ReplacingBackend.replacement = str(path), new
    # Blocks after the first come back short (the new object is smaller): that is a change of
    # the object, not an I/O error, and the read is planned again on the new version.
    assert fs.cat_file(str(path)) == new
    assert fs.cat_file(str(path)) == new


def test_cat_ranges_of_an_object_replaced_midway_read_the_new_version(tmp_path: Path) -> None:
    path = tmp_path / "obj.bin"
    old = bytes(range(256)) * (6 * BLOCK // 256)
    new = bytes(reversed(range(256))) * (4 * BLOCK // 256) + b"tail"
    path.write_bytes(old)
    fs = _fs("replacing", tmp_path, fetch_concurrency=1)
    assert fs.info(str(path))["size"] == len(old)
    ReplacingBackend.victim, ReplacingBackend.replacement = str(path), new
    # The first block fetched is of the old object; the next come back short: every range is
    # read again from the one new plan made for all of them, none mixes the two versions.
    starts = [0, BLOCK + 5, 3 * BLOCK + 1, 2 * BLOCK]
    ends = [10, 2 * BLOCK + 9, 4 * BLOCK + 3, 2 * BLOCK + 100]
    got = fs.cat_ranges([str(path)] * len(starts), starts, ends)
    assert got == [new[s:e] for s, e in zip(starts, ends, strict=True)]


def test_a_handle_that_returned_old_bytes_reports_the_change(tmp_path: Path) -> None:
    path = tmp_path / "obj.bin"
    path.write_bytes(b"o" * (4 * BLOCK))
    fs = _fs("file", tmp_path)
    with fs.open(str(path), "rb") as f:
        assert f.read(BLOCK) == b"o" * BLOCK
        path.write_bytes(b"n" * (4 * BLOCK + 1))  # replaced (new inode, new size)
        with pytest.raises(ObjectChangedError) as caught:
            f.read(BLOCK)
    assert type(caught.value) is ObjectChangedError and caught.value.errno is not None
    with fs.open(str(path), "rb") as f:  # a new handle reads the new version, whole
        assert f.read() == b"n" * (4 * BLOCK + 1)


def test_one_offline_message_per_failure(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a", "b", "c"):
        (data / name).write_bytes(name.encode() * 1000)
    fs = _fs("cuttable", tmp_path, metadata_ttl=3600)
    for name in ("a", "b", "c"):
        fs.info(str(data / name))
    CuttableBackend.down = True
    messages = []
    for name in ("a", "b", "c"):
        with pytest.raises(BackendUnavailableError) as caught:
            fs.cat_file(str(data / name))
        messages.append(str(caught.value))
    first, *later = messages
    assert first.startswith(f"block 0 of {data / 'a'} is not cached: backend file is unreachable")
    for name, message in zip("bc", later, strict=True):
        # What was asked, since when, and the first error: once each, nothing nested.
        assert message.startswith(f"block 0 of {data / name} is not cached: ")
        assert re.search(r"unreachable since \d\d:\d\d:\d\d \(", message)
        assert message.count("is not cached") == 1
        assert message.count("connect to the store failed") == 1
        assert message.count("unreachable") == 1
