"""One read engine per process per (cache directory, backend), whichever way a user gets there.

fsspec builds a filesystem instance per distinct set of arguments, and URL chaining passes the
target path as an argument: every test here goes through ``fsspec.open``/``fsspec.filesystem``
the way users call them and checks that node-level state (engine, caches, listings) is shared.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem

from edgecache.backends import _registry, register_backend
from edgecache.backends.local import LocalBackend
from edgecache.config import CacheSettings
from edgecache.engine import ReadEngine, engine_for, open_engines
from edgecache.fs import EdgeCacheFileSystem

KiB = 1024


class CountingBackend(LocalBackend):
    """Local files, counting metadata calls and block fetches."""

    protocols = ("enginefile",)

    listing_seconds = 0.0
    """How long a listing takes (a WAN round trip and a loaded store), 0: as long as it does."""

    def __init__(self, protocol: str, options: object) -> None:
        super().__init__(protocol, options)  # type: ignore[arg-type]
        self.calls: list[str] = []
        self.fetches = 0

    async def call(self, method: str, *args: object, **kwargs: object) -> object:
        self.calls.append(method)
        if method == "ls" and self.listing_seconds:
            await asyncio.sleep(self.listing_seconds)
        return await super().call(method, *args, **kwargs)

    async def fetch_range(self, path: str, start: int, end: int, version: str) -> bytes:
        self.fetches += 1
        return await super().fetch_range(path, start, end, version)


class EngineLocalFileSystem(LocalFileSystem):
    """What fsspec needs to parse ``enginefile://`` URLs (the bytes come from the backend)."""

    protocol = ("enginefile",)

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        path = str(path)
        if path.startswith("enginefile://"):
            path = path[len("enginefile://") :]
        stripped: str = super()._strip_protocol(path)
        return stripped


@pytest.fixture(autouse=True)
def counting_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_registered", dict(_registry._registered))
    register_backend("enginefile", CountingBackend)
    # URL chaining asks fsspec to parse the inner URL: it must know the protocol too.
    fsspec.register_implementation("enginefile", EngineLocalFileSystem, clobber=True)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    for i in range(100):
        (root / f"f{i:03d}.bin").write_bytes(bytes([i]) * (3 * KiB + i))
    return root


def _open(url: str, cache_dir: Path, **options: object) -> fsspec.core.OpenFile:
    return fsspec.open(
        f"edgecache::enginefile://{url}", "rb", edgecache={"cache_dir": str(cache_dir), **options}
    )


def test_a_hundred_fsspec_opens_reach_one_engine_and_one_listing(
    files: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    engines: set[int] = set()
    instances: set[int] = set()
    for i in range(100):
        of = _open(str(files / f"f{i:03d}.bin"), cache, block_size="4KiB")
        with of as f:
            assert f.read() == bytes([i]) * (3 * KiB + i)
        assert isinstance(of.fs, EdgeCacheFileSystem)
        engines.add(id(of.fs.engine))
        instances.add(id(of.fs))
    assert len(engines) == 1
    assert len(instances) == 1  # ``fo`` is not part of the instance token
    backend = of.fs.backend
    assert isinstance(backend, CountingBackend)
    # A cold open-per-file loop over one directory: one info, then one listing for the rest.
    assert backend.calls.count("ls") == 1
    assert backend.calls.count("info") == 1
    assert backend.fetches == 100


def _open_two(files: Path, cache: Path, first: int, go: Any, out: Any) -> None:
    go.wait()
    calls: list[str] = []
    for i in (first, first + 4):
        of = _open(str(files / f"f{i:03d}.bin"), cache, block_size="4KiB")
        with of as f:
            assert f.read() == bytes([i]) * (3 * KiB + i)
        backend = of.fs.backend
        assert isinstance(backend, CountingBackend)
        calls = backend.calls
    out.put(calls)


# Runs alone (conftest.py): the workers' opens must meet within the listing's half second.
@pytest.mark.exclusive
def test_workers_opening_files_of_one_directory_at_once_list_it_once(
    files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DataLoader workers on one cache directory: each one's second open in the directory
    # wants its listing at the same moment; one process lists it, the others read its answer
    # from the directory's metadata cache instead of asking the store again.
    monkeypatch.setattr(CountingBackend, "listing_seconds", 0.5)
    context = multiprocessing.get_context("fork")
    go, out = context.Event(), context.Queue()
    workers = [
        context.Process(target=_open_two, args=(files, tmp_path / "cache", i, go, out))
        for i in range(4)
    ]
    for worker in workers:
        worker.start()
    go.set()
    calls = [out.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert sum(c.count("ls") for c in calls) == 1, calls


def test_filesystem_url_to_fs_and_open_share_the_engine(files: Path, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    direct = fsspec.filesystem(
        "edgecache", target_protocol="enginefile", cache_dir=cache, metadata_ttl=5
    )
    chained, _ = fsspec.core.url_to_fs(
        f"edgecache::enginefile://{files}/f001.bin", edgecache={"cache_dir": cache}
    )
    opened = _open(str(files / "f002.bin"), Path(cache), readahead_blocks=1).fs
    assert direct.engine is chained.engine is opened.engine
    assert direct.engine in open_engines()


@pytest.mark.parametrize(
    ("setting", "first", "second"),
    [("metadata_ttl", 60, 120), ("block_size", 4 * KiB, 8 * KiB)],
)
def test_other_read_settings_share_the_caches_and_see_each_others_writes(
    files: Path, tmp_path: Path, setting: str, first: int, second: int
) -> None:
    cache = str(tmp_path / "cache")
    one = fsspec.filesystem(
        "edgecache", target_protocol="enginefile", cache_dir=cache, **{setting: first}
    )
    two = fsspec.filesystem(
        "edgecache", target_protocol="enginefile", cache_dir=cache, **{setting: second}
    )
    path = str(files / "f010.bin")
    assert one.cat_file(path) == two.cat_file(path)
    assert one.cache is two.cache and one.metadata is two.metadata
    new = bytes(range(256)) * 64  # several blocks of either size
    one.pipe_file(path, new)
    assert two.cat_file(path) == new
    with two.open(path, "rb") as f:
        assert f.read() == new
    two.pipe_file(path, new[::-1])
    assert one.cat_file(path) == new[::-1]


def test_engines_are_keyed_on_the_real_path_of_the_directory(tmp_path: Path) -> None:
    real = tmp_path / "cache"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    a = engine_for(CacheSettings(cache_dir=str(real)), protocol="enginefile")
    b = engine_for(CacheSettings(cache_dir=str(link), block_size=8 * KiB), protocol="enginefile")
    assert isinstance(a, ReadEngine) and a is b
    c = engine_for(CacheSettings(cache_dir=str(tmp_path / "other")), protocol="enginefile")
    assert c is not a and c.store is not a.store
    a.close()
    assert a.closed
    again = engine_for(CacheSettings(cache_dir=str(real)), protocol="enginefile")
    assert again is not a and not again.closed


def test_other_client_options_get_their_own_engine_on_the_same_store(tmp_path: Path) -> None:
    settings = CacheSettings(cache_dir=str(tmp_path / "cache"))
    plain = engine_for(settings, protocol="enginefile", options={})
    # Options that only bind a client to a loop (zarr adds them) do not make another client...
    assert engine_for(settings, protocol="enginefile", options={"asynchronous": True}) is plain
    # ...other client options (another credential set, say) do, over the same caches.
    other = engine_for(settings, protocol="enginefile", options={"auto_mkdir": True})
    assert other is not plain and other.backend is not plain.backend
    assert other.store is plain.store
    plain.close()


def test_other_store_settings_on_an_open_directory_are_named_as_not_used(
    files: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Store settings (quotas, compression...) are the first opener's: a later filesystem
    asking for others is told which win and why, once, and still reads and sees writes."""
    cache = tmp_path / "cache"
    path = str(files / "f020.bin")
    with _open(path, cache) as f:
        first = f.read()
    assert not [r for r in caplog.records if "not used" in r.getMessage()]
    with caplog.at_level("WARNING", logger="edgecache.engine"):
        for _ in range(3):  # fsspec.open per file, as a loop does: said once
            with _open(path, cache, mem_quota="1MiB", compression="none", block_size=8 * KiB) as f:
                assert f.read() == first
    said = [r.getMessage() for r in caplog.records if "not used" in r.getMessage()]
    assert len(said) == 1, said
    (message,) = said
    assert str(cache.resolve()) in message
    assert f"mem_quota={256 * KiB * KiB}" in message and f"mem_quota={KiB * KiB}" in message
    assert "compression='auto'" in message and "compression='none'" in message
    assert "first opener" in message
    assert "block_size" not in message.split("(read settings")[0]  # a read setting: its own
    # The filesystem that was not heard still shares the store: writes are seen both ways.
    later = fsspec.filesystem(
        "edgecache", target_protocol="enginefile", cache_dir=str(cache), mem_quota="1MiB"
    )
    first_fs = fsspec.filesystem("edgecache", target_protocol="enginefile", cache_dir=str(cache))
    assert later.cache is first_fs.cache
    later.pipe_file(path, b"written by the later one")
    assert first_fs.cat_file(path) == b"written by the later one"


def test_a_relative_cache_dir_names_the_directory_of_the_current_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    monkeypatch.chdir(tmp_path / "one")
    first = engine_for(CacheSettings(cache_dir="cache"), protocol="enginefile")
    monkeypatch.chdir(tmp_path / "two")
    second = engine_for(CacheSettings(cache_dir="cache"), protocol="enginefile")
    assert second is not first
    assert first.store.directory == str((tmp_path / "one" / "cache").resolve())
    assert second.store.directory == str((tmp_path / "two" / "cache").resolve())
    first.close()
    second.close()


def test_other_node_level_read_settings_are_named_as_not_used(
    files: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Fetch concurrency and backend health are the engine's: a later filesystem asking for
    others is told so, once, and keeps reading."""
    cache = tmp_path / "cache"
    path = str(files / "f021.bin")
    with _open(path, cache) as f:
        first = f.read()
    with caplog.at_level("WARNING", logger="edgecache.engine"):
        for _ in range(3):
            with _open(path, cache, fetch_concurrency=64, backend_probe_interval=0.2) as f:
                assert f.read() == first
    said = [r.getMessage() for r in caplog.records if "not used" in r.getMessage()]
    assert len(said) == 1, said
    (message,) = said
    assert "fetch_concurrency=16" in message and "fetch_concurrency=64" in message
    assert "probe_interval_seconds=5.0" in message and "probe_interval_seconds=0.2" in message
    assert "node-level" in message
