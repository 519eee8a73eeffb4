"""Metadata through edgecache: trusted for ``metadata_ttl`` seconds, then asked again.

Objects are changed behind the filesystem's back (straight on disk or in the memory store),
which is what another writer at the far end of the WAN does. Within the TTL edgecache may serve
the old answer; after it, the new one; and never bytes of two versions in one read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import fsspec
import pytest
from fstestlib import KiB, pattern

from edgecache.errors import ObjectChangedError
from edgecache.fs import EdgeCacheFileSystem

BS = 4 * KiB
SIZE = 8 * BS

MakeFs = Callable[..., EdgeCacheFileSystem]


def replace_behind_the_back(path: Path, content: bytes) -> None:
    """Replace ``path`` atomically with ``content`` and an mtime clearly different from before."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    mtime = os.stat(path).st_mtime + 10 if path.exists() else time.time()
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)


def test_within_ttl_the_old_info_is_served(make_fs: MakeFs, data_dir: Path) -> None:
    path = data_dir / "obj"
    path.write_bytes(b"old")
    fs = make_fs("countfile")
    assert fs.info(str(path))["size"] == 3
    assert fs.cat_file(str(path)) == b"old"
    replace_behind_the_back(path, b"new, longer")
    calls = len(fs.backend.calls)
    assert fs.info(str(path))["size"] == 3
    assert fs.cat_file(str(path)) == b"old"
    assert fs.size(str(path)) == 3
    assert len(fs.backend.calls) == calls  # all from the metadata cache


def test_after_ttl_the_new_content_is_read(make_fs: MakeFs, data_dir: Path) -> None:
    path = data_dir / "obj"
    old, new = pattern(SIZE, seed=1), pattern(SIZE + 5, seed=2)
    path.write_bytes(old)
    fs = make_fs("countfile", block_size="4KiB", metadata_ttl=0.2)
    assert fs.cat_file(str(path)) == old
    replace_behind_the_back(path, new)
    time.sleep(0.3)
    assert fs.info(str(path))["size"] == SIZE + 5
    assert fs.cat_file(str(path)) == new
    with fs.open(str(path), "rb") as f:
        assert f.read() == new


@pytest.mark.parametrize("ttl", [60.0, 0.2])
def test_never_a_mix_of_old_and_new_blocks(make_fs: MakeFs, data_dir: Path, ttl: float) -> None:
    """Block 0 cached from the old version, the rest fetched after the change: a read of the
    whole object returns one version, whole (the new one: the old rest is gone)."""
    path = data_dir / "obj"
    old, new = pattern(SIZE, seed=1), pattern(SIZE, seed=2)  # same size: only the version differs
    path.write_bytes(old)
    fs = make_fs("countfile", block_size="4KiB", metadata_ttl=ttl)
    assert fs.cat_file(str(path), start=0, end=100) == old[:100]
    replace_behind_the_back(path, new)
    time.sleep(0.3)
    assert fs.cat_file(str(path)) == new
    assert fs.cat_file(str(path), start=0, end=100) == new[:100]


def test_open_file_keeps_reading_the_version_it_opened(make_fs: MakeFs, data_dir: Path) -> None:
    """A handle opened on the old version either returns old bytes or fails: never new ones."""
    path = data_dir / "obj"
    old, new = pattern(SIZE, seed=1), pattern(SIZE, seed=2)
    path.write_bytes(old)
    fs = make_fs("countfile", block_size="4KiB", readahead_blocks=0)
    with fs.open(str(path), "rb") as f:
        assert f.read(BS) == old[:BS]
        replace_behind_the_back(path, new)
        try:
            rest = f.read()
        except ObjectChangedError:
            pass  # reported as a change of the object, never as a bare OSError
        else:
            assert rest == old[BS:]


def test_memory_backend_never_mixes_versions(make_fs: MakeFs, clean_memory: None) -> None:
    mem = fsspec.filesystem("memory")
    old, new = pattern(SIZE, seed=1), pattern(SIZE, seed=2)
    mem.pipe_file("/obj", old)
    fs = make_fs("countmem", block_size="4KiB")
    assert fs.cat_file("/obj", start=0, end=100) == old[:100]
    time.sleep(0.01)  # a distinct creation time for the new object
    mem.pipe_file("/obj", new)
    assert fs.cat_file("/obj") == new


def test_listings_are_cached_within_ttl(make_fs: MakeFs, data_dir: Path) -> None:
    (data_dir / "a").write_bytes(b"a")
    (data_dir / "sub").mkdir()
    (data_dir / "sub" / "b.txt").write_bytes(b"b")
    fs = make_fs("countfile", metadata_ttl=60)
    root = str(data_dir)
    before = {
        "ls": sorted(fs.ls(root, detail=False)),
        "find": fs.find(root),
        "glob": fs.glob(root + "/**/*.txt"),
    }
    calls = len(fs.backend.calls)
    (data_dir / "c").write_bytes(b"c")
    (data_dir / "sub" / "d.txt").write_bytes(b"d")
    assert sorted(fs.ls(root, detail=False)) == before["ls"]
    assert fs.find(root) == before["find"]
    assert fs.glob(root + "/**/*.txt") == before["glob"]
    assert len(fs.backend.calls) == calls


def test_listings_are_asked_again_after_ttl(make_fs: MakeFs, data_dir: Path) -> None:
    (data_dir / "a").write_bytes(b"a")
    (data_dir / "sub").mkdir()
    fs = make_fs("countfile", metadata_ttl=0.2)
    root = str(data_dir)
    assert fs.find(root) == [f"{root}/a"]
    (data_dir / "sub" / "d.txt").write_bytes(b"d")
    time.sleep(0.3)
    assert fs.find(root) == [f"{root}/a", f"{root}/sub/d.txt"]
    assert fs.glob(root + "/**/*.txt") == [f"{root}/sub/d.txt"]
    assert fs.cat_file(f"{root}/sub/d.txt") == b"d"


def test_deleted_behind_the_back_is_not_found_after_ttl(make_fs: MakeFs, data_dir: Path) -> None:
    path = data_dir / "obj"
    path.write_bytes(b"x" * 100)
    fs = make_fs("countfile", metadata_ttl=0.2)
    assert fs.exists(str(path))
    path.unlink()
    time.sleep(0.3)
    assert not fs.exists(str(path))
    with pytest.raises(FileNotFoundError):
        fs.cat_file(str(path))


def test_invalidate_cache_without_a_path_forgets_all_metadata(
    make_fs: MakeFs, data_dir: Path
) -> None:
    (data_dir / "a").write_bytes(b"a")
    fs = make_fs("countfile")
    root = str(data_dir)
    assert fs.ls(root, detail=False) == [f"{root}/a"]
    assert fs.info(f"{root}/a")["size"] == 1
    (data_dir / "b").write_bytes(b"b")
    replace_behind_the_back(data_dir / "a", b"aaa")
    fs.invalidate_cache()
    assert sorted(fs.ls(root, detail=False)) == [f"{root}/a", f"{root}/b"]
    assert fs.info(f"{root}/a")["size"] == 3
    assert fs.cat_file(f"{root}/a") == b"aaa"


def test_invalidate_cache_of_a_directory_forgets_what_is_below(
    make_fs: MakeFs, data_dir: Path
) -> None:
    (data_dir / "sub").mkdir()
    (data_dir / "sub" / "a").write_bytes(b"a")
    (data_dir / "other").write_bytes(b"o")
    fs = make_fs("countfile")
    root = str(data_dir)
    assert fs.find(root) == [f"{root}/other", f"{root}/sub/a"]
    replace_behind_the_back(data_dir / "sub" / "a", b"aaa")
    replace_behind_the_back(data_dir / "other", b"ooo")
    fs.invalidate_cache(f"{root}/sub")
    assert fs.cat_file(f"{root}/sub/a") == b"aaa"
    assert fs.info(f"{root}/other")["size"] == 1  # outside: still within its TTL


def test_zero_ttl_always_asks_the_backend(make_fs: MakeFs, data_dir: Path) -> None:
    path = data_dir / "obj"
    path.write_bytes(b"one")
    fs = make_fs("countfile", metadata_ttl=0)
    assert fs.cat_file(str(path)) == b"one"
    replace_behind_the_back(path, b"two!")
    assert fs.cat_file(str(path)) == b"two!"
    assert fs.info(str(path))["size"] == 4


@pytest.mark.parametrize("new_size", [SIZE - 3 * BS, SIZE, SIZE + 3 * BS + 1])
def test_open_after_a_change_within_ttl_reads_the_new_version(
    make_fs: MakeFs, data_dir: Path, new_size: int
) -> None:
    """The info is cached (listed within the TTL) but no byte of the old version is: the first
    read finds the object changed and reads the new version whole, rather than failing."""
    path = data_dir / "obj"
    old, new = pattern(SIZE, seed=1), pattern(new_size, seed=2)
    path.write_bytes(old)
    fs = make_fs("countfile", block_size="4KiB")
    assert fs.size(str(path)) == SIZE
    replace_behind_the_back(path, new)
    with fs.open(str(path), "rb") as f:
        assert f.read() == new
        assert f.size == new_size
    with fs.open(str(path), "rb") as f:
        assert f.read(BS) + f.read() == new


def test_get_after_a_change_within_ttl_copies_the_new_version(
    make_fs: MakeFs, data_dir: Path, tmp_path: Path
) -> None:
    path = data_dir / "obj"
    old, new = pattern(SIZE, seed=1), pattern(SIZE + 17, seed=2)
    path.write_bytes(old)
    fs = make_fs("countfile", block_size="4KiB")
    assert fs.size(str(path)) == SIZE
    replace_behind_the_back(path, new)
    fs.get(str(path), str(tmp_path / "copy"))
    assert (tmp_path / "copy").read_bytes() == new
