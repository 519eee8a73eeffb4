"""Offline: the backend is cut off (every call raises ``ConnectionError``).

What was cached (blocks, infos, listings, even past their TTL) is still served; anything else
fails with :class:`BackendUnavailableError`, which is a ``ConnectionError`` (so plain Python code
can catch it) and says the backend is unreachable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fstestlib import KiB, SwitchableLocalBackend, pattern

from edgecache.errors import BackendUnavailableError, TemporaryError
from edgecache.fs import EdgeCacheFileSystem

BS = 4 * KiB
MakeFs = Callable[..., EdgeCacheFileSystem]


@pytest.fixture
def tree(data_dir: Path) -> Path:
    (data_dir / "sub").mkdir()
    for name in ("a", "b", "sub/c"):
        (data_dir / name).write_bytes(pattern(4 * BS, seed=len(name)))
    return data_dir


def switch(fs: EdgeCacheFileSystem) -> SwitchableLocalBackend:
    backend = fs.backend
    assert isinstance(backend, SwitchableLocalBackend)
    return backend


def test_cached_data_and_metadata_are_served_offline(make_fs: MakeFs, tree: Path) -> None:
    fs = make_fs("switchfile", block_size="4KiB")
    a = str(tree / "a")
    content = fs.cat_file(a)
    info = fs.info(a)
    listing = fs.ls(str(tree), detail=False)
    found = fs.find(str(tree))

    switch(fs).online = False
    assert fs.cat_file(a) == content
    assert fs.cat_file(a, start=BS + 1, end=2 * BS + 7) == content[BS + 1 : 2 * BS + 7]
    with fs.open(a, "rb") as f:
        f.seek(3 * BS)
        assert f.read() == content[3 * BS :]
    assert fs.info(a) == info
    assert fs.ls(str(tree), detail=False) == listing
    assert fs.find(str(tree)) == found
    assert fs.exists(a)


def test_expired_metadata_is_served_offline(make_fs: MakeFs, tree: Path) -> None:
    fs = make_fs("switchfile", block_size="4KiB", metadata_ttl=0.2)
    a = str(tree / "a")
    content = fs.cat_file(a)
    listing = fs.ls(str(tree), detail=False)
    switch(fs).online = False
    time.sleep(0.3)  # past the TTL: online, these would be asked again
    assert fs.info(a)["size"] == len(content)
    assert fs.ls(str(tree), detail=False) == listing
    assert fs.cat_file(a) == content


def test_uncached_data_raises_backend_unavailable(make_fs: MakeFs, tree: Path) -> None:
    fs = make_fs("switchfile", block_size="4KiB")
    a = str(tree / "a")
    assert fs.cat_file(a, start=0, end=10)  # info and block 0 cached, blocks 1-3 not
    switch(fs).online = False
    with pytest.raises(BackendUnavailableError, match="unreachable") as caught:
        fs.cat_file(a)
    assert isinstance(caught.value, ConnectionError)
    assert isinstance(caught.value, TemporaryError)
    with pytest.raises(ConnectionError, match="unreachable"), fs.open(a, "rb") as f:
        f.seek(2 * BS)
        f.read(10)


def test_uncached_metadata_raises_backend_unavailable(make_fs: MakeFs, tree: Path) -> None:
    fs = make_fs("switchfile", block_size="4KiB")
    switch(fs).online = False
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        fs.info(str(tree / "b"))
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        fs.cat_file(str(tree / "b"))
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        fs.ls(str(tree / "sub"))
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        fs.open(str(tree / "b"), "rb")


def test_cache_survives_a_restart_while_offline(
    make_fs: MakeFs, tree: Path, tmp_path: Path
) -> None:
    """A new filesystem (as after a process restart) on the same cache dir, backend down."""
    cache_dir = str(tmp_path / "cache")
    first = make_fs("switchfile", block_size="4KiB", cache_dir=cache_dir)
    content = first.cat_file(str(tree / "a"))
    second = make_fs("switchfile", block_size="4KiB", cache_dir=cache_dir, metadata_ttl=0.5)
    switch(second).online = False
    assert second.cat_file(str(tree / "a")) == content
    assert second.info(str(tree / "a"))["size"] == len(content)
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        second.cat_file(str(tree / "b"))


def test_missing_object_is_still_file_not_found_online(make_fs: MakeFs, tree: Path) -> None:
    """Not found is a per-object answer, not a sign of an unreachable backend."""
    fs = make_fs("switchfile", block_size="4KiB")
    with pytest.raises(FileNotFoundError):
        fs.cat_file(str(tree / "nope"))
    assert fs.cat_file(str(tree / "a"))  # the backend was not marked unreachable


def test_get_of_a_cached_object_works_offline(make_fs: MakeFs, tree: Path, tmp_path: Path) -> None:
    fs = make_fs("switchfile", block_size="4KiB")
    content = fs.cat_file(str(tree / "a"))
    switch(fs).online = False
    fs.get(str(tree / "a"), str(tmp_path / "copy"))
    assert (tmp_path / "copy").read_bytes() == content
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        fs.get(str(tree / "b"), str(tmp_path / "copy-b"))


WRITES = {
    "pipe_file": lambda fs, a, local: fs.pipe_file(a, b"new"),
    "put_file": lambda fs, a, local: fs.put_file(local, a),
    "cp": lambda fs, a, local: fs.cp(a + "-other", a),
    "rm": lambda fs, a, local: fs.rm(a),
    "mkdir": lambda fs, a, local: fs.mkdir(a + "-dir"),
}


@pytest.mark.parametrize("write", sorted(WRITES))
def test_write_while_offline_is_refused_and_keeps_the_cache(
    make_fs: MakeFs, tree: Path, tmp_path: Path, write: str
) -> None:
    """Writes cannot be cached: offline they fail with BackendUnavailableError, and the failed
    write leaves the cached object readable (the store still holds it)."""
    fs = make_fs("switchfile", block_size="4KiB")
    a = str(tree / "a")
    (tree / "a-other").write_bytes(b"other")
    (tmp_path / "local").write_bytes(b"local")
    content = fs.cat_file(a)
    listing = fs.ls(str(tree), detail=False)
    switch(fs).online = False
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        WRITES[write](fs, a, str(tmp_path / "local"))
    assert (tree / "a").read_bytes() == content  # nothing was written
    assert fs.cat_file(a) == content
    assert fs.info(a)["size"] == len(content)
    assert fs.ls(str(tree), detail=False) == listing


def test_uncached_listings_raise_instead_of_looking_empty(make_fs: MakeFs, tree: Path) -> None:
    """Issue #10, item 11: with the metadata of a tree not cached, offline ``find``, ``glob``,
    ``walk``, ``du`` and ``isdir`` raise as s3fs does when it cannot list, never ``[]``, 0 or
    False, which would look like a real, empty answer."""
    fs = make_fs("switchfile", block_size="4KiB")
    switch(fs).online = False
    root = str(tree)
    calls: dict[str, Callable[[], object]] = {
        "find": lambda: fs.find(root),
        "glob": lambda: fs.glob(root + "/**"),
        "walk": lambda: list(fs.walk(root)),
        "du": lambda: fs.du(root),
        "isdir": lambda: fs.isdir(root + "/sub"),
    }
    for name, call in calls.items():
        with pytest.raises(BackendUnavailableError, match="unreachable"):
            pytest.fail(f"offline {name} answered {call()!r}")


def test_a_miss_is_a_negative_entry_of_that_key_alone(make_fs: MakeFs, tree: Path) -> None:
    """Issue #10, item 11 (Build: "a miss is recorded as a miss of that key alone, a negative
    entry with the TTL"): probing a missing key online keeps the cached listing of its
    directory (offline, ``ls`` and reads of what was cached still answer), the miss itself is
    answered offline as a miss, and after the TTL the key is asked again."""
    fs = make_fs("switchfile", block_size="4KiB", metadata_ttl=0.5)
    root = str(tree)
    listed = fs.ls(root, detail=False)
    data = fs.cat_file(root + "/a")
    assert not fs.exists(root + "/_metadata")  # pyarrow's probe of a parquet directory
    switch(fs).online = False
    assert fs.ls(root, detail=False) == listed
    assert fs.cat_file(root + "/a") == data
    assert not fs.exists(root + "/_metadata")  # the negative entry, offline
    switch(fs).online = True
    (tree / "_metadata").write_bytes(b"new")
    time.sleep(0.6)  # the TTL under test, not a synchronisation
    assert fs.cat_file(root + "/_metadata") == b"new"
