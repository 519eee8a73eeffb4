"""Reading through edgecache: only the blocks a read needs, read-ahead, and warm reads.

Objects are cut in 4 KiB blocks here so that a few dozen KiB make many blocks; the counting
backends (see ``conftest.py``) log every block the cache asks the backend for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fstestlib import KiB, pattern

from edgecache.fs import EdgeCacheFileSystem

BS = 4 * KiB
SIZE = 16 * BS + 100  # 17 blocks, the last one short

MakeFs = Callable[..., EdgeCacheFileSystem]


@pytest.fixture
def blob(data_dir: Path) -> tuple[str, bytes]:
    content = pattern(SIZE)
    path = data_dir / "blob.bin"
    path.write_bytes(content)
    return str(path), content


def test_seek_and_read_fetch_only_the_blocks_covered(make_fs: MakeFs, blob: Any) -> None:
    path, content = blob
    fs = make_fs("countfile", block_size="4KiB")
    with fs.open(path, "rb") as f:
        f.seek(5 * BS + 10)
        assert f.read(100) == content[5 * BS + 10 : 5 * BS + 110]
        f.seek(12 * BS - 50)  # straddles blocks 11 and 12
        assert f.read(100) == content[12 * BS - 50 : 12 * BS + 50]
    assert sorted(fs.backend.blocks_fetched(BS)) == [5, 11, 12]
    assert fs.cache.backend_fetches == 3


def test_ranged_cat_file_fetches_only_the_blocks_covered(make_fs: MakeFs, blob: Any) -> None:
    path, content = blob
    fs = make_fs("countfile", block_size="4KiB")
    assert fs.cat_file(path, start=3 * BS + 1, end=5 * BS - 1) == content[3 * BS + 1 : 5 * BS - 1]
    assert sorted(fs.backend.blocks_fetched(BS)) == [3, 4]
    assert fs.cat_file(path, start=-50) == content[-50:]  # the short last block
    assert sorted(fs.backend.blocks_fetched(BS)) == [3, 4, 16]
    # Each block is asked for with its own bounds, never past the end of the object.
    assert all(end - start <= BS and end <= SIZE for _, start, end in fs.backend.fetched)


def test_cat_ranges_fetches_only_the_blocks_covered(make_fs: MakeFs, blob: Any) -> None:
    path, content = blob
    fs = make_fs("countfile", block_size="4KiB")
    starts, ends = [0, 7 * BS + 5, 15 * BS], [10, 7 * BS + 6, 15 * BS + 2]
    out = fs.cat_ranges([path] * 3, starts, ends)
    assert out == [content[s:e] for s, e in zip(starts, ends, strict=True)]
    assert sorted(fs.backend.blocks_fetched(BS)) == [0, 7, 15]


def test_random_reads_start_no_read_ahead(make_fs: MakeFs, blob: Any) -> None:
    path, _ = blob
    fs = make_fs("countfile", block_size="4KiB")
    with fs.open(path, "rb") as f:
        for block in (9, 2, 14, 6):
            f.seek(block * BS)
            f.read(10)
    time.sleep(0.2)  # read-ahead, had there been any, runs in the background
    assert sorted(fs.backend.blocks_fetched(BS)) == [2, 6, 9, 14]


def test_sequential_reads_fetch_blocks_ahead(make_fs: MakeFs, blob: Any) -> None:
    path, content = blob
    fs = make_fs("countfile", block_size="4KiB", readahead_blocks=4)
    with fs.open(path, "rb") as f:
        got = f.read(BS) + f.read(BS) + f.read(BS)
        assert got == content[: 3 * BS]
        deadline = time.monotonic() + 10
        while max(fs.backend.blocks_fetched(BS)) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        ahead = {b for b in fs.backend.blocks_fetched(BS) if b >= 3}
        assert ahead, "no block past the read position was fetched"
        assert max(ahead) <= 2 + 4  # no further than the read-ahead window
        # The rest of the stream uses the blocks read ahead instead of fetching them again.
        assert f.read() == content[3 * BS :]
    assert sorted(fs.backend.blocks_fetched(BS)) == list(range(17))


def test_second_read_is_served_from_cache(make_fs: MakeFs, blob: Any) -> None:
    path, content = blob
    fs = make_fs("countfile", block_size="4KiB")
    assert fs.cat_file(path) == content
    assert fs.cache.backend_fetches == 17
    calls = len(fs.backend.calls)
    assert fs.cat_file(path) == content
    with fs.open(path, "rb") as f:
        assert f.read() == content
    assert fs.cat_file(path, start=100, end=9000) == content[100:9000]
    assert fs.cache.backend_fetches == 17
    assert len(fs.backend.calls) == calls  # no info round trip either (metadata is cached)


def test_second_read_from_a_new_filesystem_on_the_same_cache_dir(
    make_fs: MakeFs, blob: Any, tmp_path: Path
) -> None:
    path, content = blob
    cache_dir = str(tmp_path / "shared")
    first = make_fs("countfile", block_size="4KiB", cache_dir=cache_dir)
    assert first.cat_file(path) == content
    fetched = len(first.backend.fetched)
    second = make_fs("countfile", block_size="4KiB", cache_dir=cache_dir, metadata_ttl=30)
    # Another instance with other read settings reaches the same engine, hence the same caches.
    assert second is not first and second.engine is first.engine
    assert second.cat_file(path) == content
    assert second.backend.fetched[fetched:] == []


_READER = """
import hashlib, json, sys
import fsspec
url, cache_dir = sys.argv[1], sys.argv[2]
of = fsspec.open(url, edgecache={"cache_dir": cache_dir, "block_size": "4KiB"})
with of as f:
    data = f.read()
print(json.dumps({"sha": hashlib.sha256(data).hexdigest(), "size": len(data),
                  "fetches": of.fs.cache.backend_fetches}))
"""


def _read_in_new_process(url: str, cache_dir: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _READER, url, cache_dir],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_second_read_from_a_new_process_is_served_from_cache(blob: Any, tmp_path: Path) -> None:
    import hashlib

    path, content = blob
    cache_dir = str(tmp_path / "cache")
    url = f"edgecache::file://{path}"
    cold = _read_in_new_process(url, cache_dir)
    warm = _read_in_new_process(url, cache_dir)
    sha = hashlib.sha256(content).hexdigest()
    assert cold == {"sha": sha, "size": SIZE, "fetches": 17}
    assert warm == {"sha": sha, "size": SIZE, "fetches": 0}


def test_read_whole_file_through_get(make_fs: MakeFs, blob: Any, tmp_path: Path) -> None:
    path, content = blob
    fs = make_fs("countfile", block_size="4KiB")
    fs.get(path, str(tmp_path / "copy.bin"))
    assert (tmp_path / "copy.bin").read_bytes() == content
    fs.get(path, str(tmp_path / "copy2.bin"))
    assert (tmp_path / "copy2.bin").read_bytes() == content
    assert fs.cache.backend_fetches == 17


@pytest.mark.parametrize("protocol", ["file", "memory"])
def test_missing_object_is_file_not_found(
    make_fs: MakeFs, data_dir: Path, clean_memory: None, protocol: str
) -> None:
    fs = make_fs(protocol)
    missing = str(data_dir / "nope") if protocol == "file" else "/nope"
    with pytest.raises(FileNotFoundError):
        fs.cat_file(missing)
    with pytest.raises(FileNotFoundError):
        fs.info(missing)
    with pytest.raises(FileNotFoundError):
        fs.open(missing, "rb")
    assert not fs.exists(missing)


def test_missing_object_through_a_url_is_file_not_found(data_dir: Path, tmp_path: Path) -> None:
    of = fsspec.open(
        f"edgecache::file://{data_dir}/nope", edgecache={"cache_dir": str(tmp_path / "cache")}
    )
    with pytest.raises(FileNotFoundError), of as f:
        f.read()


@pytest.mark.parametrize("protocol", ["file", "memory"])
def test_cat_of_a_directory_is_is_a_directory_error(
    make_fs: MakeFs, data_dir: Path, clean_memory: None, protocol: str
) -> None:
    fs = make_fs(protocol)
    if protocol == "file":
        directory = str(data_dir / "sub")
        os.makedirs(directory)
    else:
        directory = "/sub"
        fsspec.filesystem("memory").pipe("/sub/file", b"x")
    with pytest.raises(IsADirectoryError):
        fs.cat_file(directory)
    with pytest.raises(IsADirectoryError):
        fs.open(directory, "rb")
    assert fs.isdir(directory)


def test_unusable_cache_dir_still_reads(
    make_fs: MakeFs, blob: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache directory that cannot be created (its parent is a file): reads go straight to
    the backend, with a warning, never an error."""
    path, content = blob
    (tmp_path / "a-file").write_bytes(b"")
    with caplog.at_level("WARNING"):
        fs = make_fs("countfile", block_size="4KiB", cache_dir=str(tmp_path / "a-file" / "cache"))
        assert fs.cat_file(path) == content
        assert fs.cat_file(path, start=10, end=20) == content[10:20]
        with fs.open(path, "rb") as f:
            assert f.read() == content
    assert "unusable" in caplog.text
    assert fs.cache.backend_fetches == 17  # the MEM tier still serves the second reads
