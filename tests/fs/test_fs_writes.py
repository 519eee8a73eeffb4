"""Writes go through edgecache to the backend and invalidate what they replace.

Each test warms the cache (blocks and metadata, with the default 60 s TTL) with the old content,
writes through edgecache, and reads again: the new bytes must come back at once, and listings
must show the change. Run over ``file`` and ``memory``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import fsspec
import pytest
from fstestlib import KiB, close_fs, pattern

from edgecache.fs import EdgeCacheFileSystem

BS = 4 * KiB
OLD, NEW = pattern(3 * BS + 7, seed=1), pattern(2 * BS + 3, seed=2)

MakeFs = Callable[..., EdgeCacheFileSystem]


def listing(fs: EdgeCacheFileSystem, root: str) -> list[str]:
    """Names in ``root``, sorted."""
    return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))


@pytest.fixture(params=["file", "memory"])
def setup(
    request: pytest.FixtureRequest, make_fs: MakeFs, data_dir: Path, clean_memory: None
) -> tuple[EdgeCacheFileSystem, str]:
    """A filesystem (4 KiB blocks) and a root directory holding ``old`` (cached) with OLD.

    ``root/keep`` keeps the root a directory in the memory store, where directories exist only
    as long as something is below them.
    """
    if request.param == "file":
        fs, root = make_fs("file", {"auto_mkdir": True}, block_size="4KiB"), str(data_dir)
    else:
        fs, root = make_fs("memory", block_size="4KiB"), "/root"
    fs.pipe_file(f"{root}/keep", b"keep")
    fs.pipe_file(f"{root}/old", OLD)
    assert fs.cat_file(f"{root}/old") == OLD  # cache the blocks and the info
    assert listing(fs, root) == ["keep", "old"]  # and the listing
    return fs, root


def test_pipe_file_replaces(setup: tuple[EdgeCacheFileSystem, str]) -> None:
    fs, root = setup
    fs.pipe_file(f"{root}/old", NEW)
    assert fs.cat_file(f"{root}/old") == NEW
    assert fs.info(f"{root}/old")["size"] == len(NEW)


def test_open_wb_replaces(setup: tuple[EdgeCacheFileSystem, str]) -> None:
    fs, root = setup
    with fs.open(f"{root}/old", "wb") as f:
        f.write(NEW)
    assert fs.cat_file(f"{root}/old") == NEW
    with fs.open(f"{root}/old", "rb") as f:
        assert f.read() == NEW


def test_open_text_mode_write_replaces(setup: tuple[EdgeCacheFileSystem, str]) -> None:
    fs, root = setup
    with fs.open(f"{root}/old", "w") as f:
        f.write("new text")
    assert fs.cat_file(f"{root}/old") == b"new text"
    with fs.open(f"{root}/old", "r") as f:
        assert f.read() == "new text"


def test_put_file_replaces(setup: tuple[EdgeCacheFileSystem, str], tmp_path: Path) -> None:
    fs, root = setup
    local = tmp_path / "local.bin"
    local.write_bytes(NEW)
    fs.put_file(str(local), f"{root}/old")
    assert fs.cat_file(f"{root}/old") == NEW
    fs.put(str(local), f"{root}/old")
    assert fs.cat_file(f"{root}/old") == NEW


def test_cp_replaces_the_target(setup: tuple[EdgeCacheFileSystem, str]) -> None:
    fs, root = setup
    fs.pipe_file(f"{root}/other", NEW)
    assert fs.cat_file(f"{root}/other") == NEW
    fs.cp(f"{root}/other", f"{root}/old")
    assert fs.cat_file(f"{root}/old") == NEW
    assert fs.cat_file(f"{root}/other") == NEW


def test_cp_to_a_new_name_shows_in_listing(setup: tuple[EdgeCacheFileSystem, str]) -> None:
    fs, root = setup
    fs.cp(f"{root}/old", f"{root}/copy")
    assert listing(fs, root) == ["copy", "keep", "old"]
    assert fs.cat_file(f"{root}/copy") == OLD


def test_rm_forgets(setup: tuple[EdgeCacheFileSystem, str]) -> None:
    fs, root = setup
    fs.rm(f"{root}/old")
    assert not fs.exists(f"{root}/old")
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{root}/old")
    with pytest.raises(FileNotFoundError):
        fs.open(f"{root}/old", "rb")
    assert listing(fs, root) == ["keep"]


def test_rm_recursive_forgets_everything_below(setup: tuple[EdgeCacheFileSystem, str]) -> None:
    fs, root = setup
    fs.pipe_file(f"{root}/sub/deep/x", b"x")
    assert fs.find(root) == [f"{root}/keep", f"{root}/old", f"{root}/sub/deep/x"]
    fs.rm(f"{root}/sub", recursive=True)
    assert fs.find(root) == [f"{root}/keep", f"{root}/old"]
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{root}/sub/deep/x")


def test_mv_moves_and_replaces(setup: tuple[EdgeCacheFileSystem, str]) -> None:
    fs, root = setup
    fs.pipe_file(f"{root}/new", NEW)
    fs.mv(f"{root}/new", f"{root}/old")
    assert fs.cat_file(f"{root}/old") == NEW
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{root}/new")
    assert listing(fs, root) == ["keep", "old"]


def test_mv_to_a_new_name(setup: tuple[EdgeCacheFileSystem, str]) -> None:
    fs, root = setup
    fs.mv(f"{root}/old", f"{root}/moved")
    assert fs.cat_file(f"{root}/moved") == OLD
    assert not fs.exists(f"{root}/old")
    assert listing(fs, root) == ["keep", "moved"]


def test_write_through_one_filesystem_is_seen_by_another_on_the_same_cache(
    make_fs: MakeFs, data_dir: Path
) -> None:
    cache_dir = str(data_dir.parent / "shared-cache")
    writer = make_fs("file", block_size="4KiB", cache_dir=cache_dir)
    reader = make_fs("file", block_size="4KiB", cache_dir=cache_dir)
    path = str(data_dir / "obj")
    writer.pipe_file(path, OLD)
    assert reader.cat_file(path) == OLD
    writer.pipe_file(path, NEW)
    assert reader.cat_file(path) == NEW


def test_makedirs_and_rmdir_show_in_listings(setup: tuple[EdgeCacheFileSystem, str]) -> None:
    fs, root = setup
    fs.makedirs(f"{root}/empty", exist_ok=True)
    assert fs.isdir(f"{root}/empty")
    assert f"{root}/empty" in fs.ls(root, detail=False)
    fs.rmdir(f"{root}/empty")
    assert not fs.exists(f"{root}/empty")
    assert listing(fs, root) == ["keep", "old"]


_READER = """
import sys
import fsspec
url, cache_dir = sys.argv[1], sys.argv[2]
with fsspec.open(url, edgecache={"cache_dir": cache_dir, "block_size": "4KiB"}) as f:
    sys.stdout.buffer.write(f.read())
"""


def test_write_is_seen_by_a_new_process_on_the_same_cache_dir(
    data_dir: Path, tmp_path: Path
) -> None:
    """The write also dropped the persisted metadata and the SSD blocks of the old version, so
    a process that starts later does not serve them within their TTL."""
    cache_dir, path = str(tmp_path / "cache"), str(data_dir / "obj")
    (data_dir / "obj").write_bytes(OLD)
    url = f"edgecache::file://{path}"

    def read_in_new_process() -> bytes:
        return subprocess.run(
            [sys.executable, "-c", _READER, url, cache_dir],
            capture_output=True,
            timeout=60,
            check=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        ).stdout

    assert read_in_new_process() == OLD  # metadata and blocks of OLD now on disk
    fs = fsspec.filesystem(
        "edgecache", target_protocol="file", cache_dir=cache_dir, block_size="4KiB"
    )
    try:
        assert fs.cat_file(path) == OLD
        fs.pipe_file(path, NEW)
    finally:
        close_fs(fs)
    assert read_in_new_process() == NEW
