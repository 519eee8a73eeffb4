"""The backend conformance suite: one set of tests every backend (file, memory, s3, oss) passes.

Sits beside the backends it checks (:mod:`edgecache.backends`, ``plugins/*``), in the style of
``fsspec.tests.abstract``: :class:`BackendConformance` is a mixin of test methods; a backend's
test module subclasses it and overrides two fixtures::

    class TestS3Conformance(BackendConformance):
        @pytest.fixture
        def backend(self, moto_endpoint): return S3Backend("s3", {...})

        @pytest.fixture
        def seed(self, backend, bucket): ...  # returns put(name, data) -> backend path

and optionally ``secrets`` (strings that must never appear in the backend's identity or repr).

Backend coroutines run on fsspec's I/O loop (the loop :class:`EdgeCacheFileSystem` uses too), so
backends whose clients bind to one event loop (s3fs, ossfs) behave as they do in production.
The tests are synchronous on purpose: pytest-asyncio's per-test loops would not be that loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import gc
import glob
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import fsspec
import pytest
from fsspec.asyn import get_loop, sync

from edgecache.backends import Backend, ObjectChangedError, get_backend
from edgecache.errors import BackendUnavailableError
from edgecache.fs import EdgeCacheFileSystem

if TYPE_CHECKING:
    from edgecache_testservers.wan import WANEmulator

__all__ = [
    "OFFLINE_MISS",
    "BackendConformance",
    "RemoteBackendWANConformance",
    "Seed",
    "assert_one_line_failure",
    "closed_port",
    "edgecache_cli",
    "open_sessions",
    "run",
]

T = TypeVar("T")

Seed = Callable[[str, bytes], str]
"""``put(name, data) -> path``: store ``data`` as object ``name`` in this test's own place
(overwriting it if it exists) and return the path the backend uses for it."""

BLOCK = 4096
"""Block size of the edgecache filesystems the suite builds (the smallest the cache allows)."""

OFFLINE_MISS = r"is not cached: backend .* is unreachable since"
"""What a read of uncached data says while the backend is offline (a ``pytest.raises`` match)."""


def run(coro_fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
    """Run a backend coroutine on fsspec's I/O loop and return its result."""
    result: T = sync(get_loop(), coro_fn, *args, **kwargs)
    return result


_NOT_FOLLOWED = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    types.CodeType,
    types.FrameType,
    asyncio.AbstractEventLoop,
    threading.Thread,
)


def open_sessions(root: object, *, limit: int = 1_000_000) -> int:
    """The aiohttp sessions reachable from ``root`` through its data (its client, the client's
    connection pools...) that are not closed: what a backend's :meth:`~Backend.close` must
    leave at 0. Functions, modules, classes and event loops are not followed: through their
    globals and callbacks everything else of the process is reachable."""
    seen: set[int] = set()
    frontier, found, visited = [root], 0, 0
    while frontier and visited < limit:
        obj = frontier.pop()
        if id(obj) in seen or isinstance(obj, _NOT_FOLLOWED):
            continue
        seen.add(id(obj))
        visited += 1
        if isinstance(obj, aiohttp.ClientSession):
            found += not obj.closed
            continue
        frontier.extend(gc.get_referents(obj))
    return found


def edgecache_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """Run the real ``edgecache`` command (``python -m edgecache``) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "edgecache", *args], capture_output=True, timeout=timeout
    )


def _dash_o(options: dict[str, Any]) -> list[str]:
    """``options`` as the CLI's ``-o KEY=VALUE`` flags."""
    return [arg for k, v in options.items() for arg in ("-o", f"{k}={v}")]


def assert_one_line_failure(
    done: subprocess.CompletedProcess[bytes], *, code: int, says: str, never: str = ""
) -> str:
    """The CLI failed as users must see it: exit ``code``, one ``edgecache: error:`` line on
    stderr saying ``says`` (and never ``never``), no traceback. Returns the line."""
    err = done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.startswith("edgecache: error: "), err
    assert done.returncode == code, err
    assert says in err, err
    if never:
        assert never not in err, err
    return err


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _data(size: int, seed: int = 0) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < size:
        out += f"[{seed}:{i:07d}]".encode()
        i += 1
    return bytes(out[:size])


class _Counter:
    """Counts what an edgecache filesystem asks its backend for."""

    def __init__(self, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fetches: list[tuple[str, int, int]] = []
        self.calls: list[str] = []
        fetch_range, call = backend.fetch_range, backend.call

        async def counting_fetch(path: str, start: int, end: int, version: str) -> bytes:
            self.fetches.append((path, start, end))
            return await fetch_range(path, start, end, version)

        async def counting_call(method: str, *args: Any, **kwargs: Any) -> Any:
            self.calls.append(method)
            return await call(method, *args, **kwargs)

        monkeypatch.setattr(backend, "fetch_range", counting_fetch)
        monkeypatch.setattr(backend, "call", counting_call)
        if backend.reads_tell_info:
            # A cold read's first GET, which brings the object's info along.
            fetch_with_info = backend.fetch_range_and_info

            async def counting_fetch_with_info(
                path: str, start: int, end: int
            ) -> tuple[bytes, dict[str, Any]]:
                self.fetches.append((path, start, end))
                return await fetch_with_info(path, start, end)

            monkeypatch.setattr(backend, "fetch_range_and_info", counting_fetch_with_info)


class BackendConformance:
    """Tests every backend passes; subclasses override :meth:`backend` and :meth:`seed`."""

    # --- fixtures subclasses override ----------------------------------------------------------
    @pytest.fixture
    def backend(self) -> Backend:
        """The configured backend under test."""
        raise NotImplementedError("override the backend fixture")

    @pytest.fixture
    def seed(self, backend: Backend) -> Seed:
        """See :data:`Seed`."""
        raise NotImplementedError("override the seed fixture")

    @pytest.fixture
    def secrets(self) -> list[str]:
        """Secret strings in the backend's options (none for file and memory)."""
        return []

    @pytest.fixture
    def url_options(self) -> dict[str, str]:
        """Plain options that reach the same store from a URL: ``-o KEY=VALUE`` on the CLI and
        ``fsspec.open("edgecache::<proto>://...", <proto>={...})`` (none for file and memory)."""
        return {}

    @pytest.fixture
    def another_backend(self, backend: Backend) -> Iterator[Backend]:
        """A second backend built from the same protocol and options (identity must match),
        closed after the test like ``backend``."""
        another = type(backend)(backend.protocol, backend.options)
        yield another
        run(another.close)

    # --- helpers -------------------------------------------------------------------------------
    @pytest.fixture
    def edgecache_fs(
        self, backend: Backend, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[EdgeCacheFileSystem]:
        """An edgecache filesystem over ``backend``, with a fresh cache directory."""
        fs = EdgeCacheFileSystem(
            backend=backend,
            cache_dir=str(tmp_path_factory.mktemp("suite-cache")),
            block_size=BLOCK,
            skip_instance_cache=True,
        )
        yield fs
        fs.engine.close()

    @pytest.fixture(autouse=True)
    def _backend_closed_after_each_test(self, backend: Backend) -> Iterator[None]:
        """Each test's backend is closed after it, as an engine closes its own."""
        yield
        run(backend.close)

    @staticmethod
    def info(backend: Backend, path: str) -> dict[str, Any]:
        result: dict[str, Any] = run(backend.call, "info", path)
        return result

    @staticmethod
    def fetch(backend: Backend, path: str, start: int, end: int, version: str) -> bytes:
        return run(backend.fetch_range, path, start, end, version)

    # --- metadata and versions -----------------------------------------------------------------
    def test_info_is_a_file_with_its_size(self, backend: Backend, seed: Seed) -> None:
        path = seed("info.bin", _data(1000))
        info = self.info(backend, path)
        assert info["type"] == "file"
        assert info["size"] == 1000
        assert backend.strip(info["name"]) == backend.strip(path)

    def test_ls_lists_seeded_objects(self, backend: Backend, seed: Seed) -> None:
        first = seed("dir/a.bin", b"a" * 10)
        second = seed("dir/b.bin", b"b" * 20)
        parent = backend.strip(first).rsplit("/", 1)[0]
        entries = run(backend.call, "ls", parent, detail=True)
        sizes = {backend.strip(e["name"]): e["size"] for e in entries if e["type"] == "file"}
        assert sizes == {backend.strip(first): 10, backend.strip(second): 20}

    def test_version_is_stable(self, backend: Backend, seed: Seed) -> None:
        path = seed("stable.bin", _data(5000))
        first = backend.version(self.info(backend, path))
        assert first
        assert backend.version(self.info(backend, path)) == first
        parent = backend.strip(path).rsplit("/", 1)[0]
        listed = [
            e
            for e in run(backend.call, "ls", parent, detail=True)
            if backend.strip(e["name"]) == backend.strip(path)
        ]
        assert len(listed) == 1
        assert backend.version(listed[0]) == first, "ls and info must agree on the version"

    def test_version_changes_when_replaced(self, backend: Backend, seed: Seed) -> None:
        path = seed("replaced.bin", _data(3000, seed=1))
        parent = backend.strip(path).rsplit("/", 1)[0]
        # List first: a listing cache inside the backend's filesystem must not hide the change
        # (edgecache keeps metadata itself, with a TTL).
        run(backend.call, "ls", parent, detail=True)
        before = backend.version(self.info(backend, path))
        seed("replaced.bin", _data(3001, seed=2))
        after = backend.version(self.info(backend, path))
        assert after != before
        listed = [
            e
            for e in run(backend.call, "ls", parent, detail=True)
            if backend.strip(e["name"]) == backend.strip(path)
        ]
        assert [backend.version(e) for e in listed] == [after]

    # --- block fetches -------------------------------------------------------------------------
    @pytest.mark.parametrize(
        ("start", "end"),
        [(0, 10_000), (0, 1), (9_999, 10_000), (1234, 5678), (4095, 4097), (5000, 5000)],
        ids=["whole", "first-byte", "last-byte", "middle", "across-block", "empty"],
    )
    def test_fetch_range_exact(self, backend: Backend, seed: Seed, start: int, end: int) -> None:
        data = _data(10_000, seed=3)
        path = seed("range.bin", data)
        version = backend.version(self.info(backend, path))
        assert self.fetch(backend, path, start, end, version) == data[start:end]

    def test_fetch_range_of_a_large_object_is_whole(self, backend: Backend, seed: Seed) -> None:
        # Larger than any client's network chunk: a body read in pieces must come back whole.
        data = _data(3 * 1024 * 1024 + 17, seed=11)
        path = seed("large.bin", data)
        version = backend.version(self.info(backend, path))
        assert self.fetch(backend, path, 0, len(data), version) == data
        assert self.fetch(backend, path, 1_000_000, 3_000_000, version) == data[1_000_000:3_000_000]

    def test_fetch_range_past_the_end_returns_the_tail(self, backend: Backend, seed: Seed) -> None:
        data = _data(1000, seed=4)
        path = seed("tail.bin", data)
        version = backend.version(self.info(backend, path))
        assert self.fetch(backend, path, 900, 4096, version) == data[900:]

    def test_fetch_range_refuses_a_replaced_object(self, backend: Backend, seed: Seed) -> None:
        path = seed("changing.bin", _data(4000, seed=5))
        old = backend.version(self.info(backend, path))
        seed("changing.bin", _data(4001, seed=6))
        with pytest.raises(ObjectChangedError):
            self.fetch(backend, path, 0, 100, old)

    def test_missing_object_is_file_not_found(self, backend: Backend, seed: Seed) -> None:
        present = seed("present.bin", b"x")
        missing = backend.strip(present).rsplit("/", 1)[0] + "/absent.bin"
        with pytest.raises(FileNotFoundError):
            self.info(backend, missing)
        with pytest.raises(FileNotFoundError):
            self.fetch(backend, missing, 0, 1, backend.version(self.info(backend, present)))

    def test_close_releases_the_clients_sessions_and_a_later_call_opens_them_again(
        self, backend: Backend, seed: Seed
    ) -> None:
        path = seed("closing.bin", b"c" * 100)
        assert self.info(backend, path)["size"] == 100
        if backend.remote:
            assert open_sessions(backend) >= 1  # what close has to release
        run(backend.close)
        assert open_sessions(backend) == 0
        assert self.info(backend, path)["size"] == 100
        run(backend.close)

    # --- health and identity -------------------------------------------------------------------
    def test_probe_succeeds(self, backend: Backend, seed: Seed) -> None:
        seed("probe.bin", b"p")
        run(backend.probe)

    def test_identity_is_stable_and_has_no_secret(
        self, backend: Backend, another_backend: Backend, secrets: list[str]
    ) -> None:
        assert backend.identity
        assert another_backend.identity == backend.identity
        shown = " ".join([backend.identity, repr(backend), str(backend), repr(backend.options)])
        for secret in secrets:
            assert secret not in shown

    # --- through the edgecache filesystem ------------------------------------------------------
    def test_edgecache_reads_exact_bytes_then_from_cache(
        self,
        backend: Backend,
        seed: Seed,
        edgecache_fs: EdgeCacheFileSystem,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        data = _data(3 * BLOCK + 123, seed=7)
        path = seed("through.bin", data)
        counter = _Counter(backend, monkeypatch)
        assert edgecache_fs.cat_file(path) == data
        assert sorted(start for _, start, _ in counter.fetches) == [0, BLOCK, 2 * BLOCK, 3 * BLOCK]
        fetched, called = len(counter.fetches), len(counter.calls)
        assert edgecache_fs.cat_file(path) == data
        assert edgecache_fs.cat_file(path, start=BLOCK - 5, end=BLOCK + 5) == data[BLOCK - 5 :][:10]
        assert (len(counter.fetches), len(counter.calls)) == (fetched, called), (
            "a second read must not reach the backend"
        )

    def test_edgecache_open_seek_read(
        self, backend: Backend, seed: Seed, edgecache_fs: EdgeCacheFileSystem
    ) -> None:
        data = _data(2 * BLOCK + 7, seed=8)
        path = seed("seek.bin", data)
        with edgecache_fs.open(path, "rb") as f:
            f.seek(BLOCK + 3)
            assert f.read(BLOCK) == data[BLOCK + 3 : 2 * BLOCK + 3]
            f.seek(0)
            assert f.read() == data

    def test_edgecache_serves_the_new_object_after_replacement(
        self, backend: Backend, seed: Seed, edgecache_fs: EdgeCacheFileSystem
    ) -> None:
        path = seed("fresh.bin", _data(BLOCK + 10, seed=9))
        assert edgecache_fs.cat_file(path) == _data(BLOCK + 10, seed=9)
        new = _data(BLOCK + 20, seed=10)
        seed("fresh.bin", new)
        edgecache_fs.invalidate_cache(path)  # what the metadata TTL passing amounts to
        assert edgecache_fs.cat_file(path) == new

    def test_edgecache_missing_object_is_file_not_found(
        self, backend: Backend, seed: Seed, edgecache_fs: EdgeCacheFileSystem
    ) -> None:
        present = seed("here.bin", b"x")
        with pytest.raises(FileNotFoundError):
            edgecache_fs.cat_file(backend.strip(present).rsplit("/", 1)[0] + "/nowhere.bin")

    # --- as users reach it ---------------------------------------------------------------------
    def test_fsspec_url_chaining_reads_exact_bytes_and_ranges(
        self, backend: Backend, seed: Seed, url_options: dict[str, str], tmp_path: Any
    ) -> None:
        data = _data(50_000, seed=7)
        url = f"{backend.protocol}://{seed('chained.bin', data)}"
        cache = {"cache_dir": str(tmp_path / "cache"), "block_size": "16KiB"}
        chained = {backend.protocol: url_options, "edgecache": cache}
        with fsspec.open(f"edgecache::{url}", "rb", **chained) as f:
            assert f.read() == data
        with fsspec.open(f"edgecache::{url}", "rb", **chained) as f:
            f.seek(20_000)
            assert f.read(100) == data[20_000:20_100]

    def test_cli_cat_reads_exact_bytes_cold_then_from_the_cache(
        self, backend: Backend, seed: Seed, url_options: dict[str, str], tmp_path: Any
    ) -> None:
        if backend.protocol == "memory":
            pytest.skip("memory:// lives in one process; the CLI is another")
        data = _data(300_000, seed=8)
        url = f"{backend.protocol}://{seed('cli.bin', data)}"
        options = [arg for k, v in url_options.items() for arg in ("-o", f"{k}={v}")]
        cache = str(tmp_path / "cache")
        for _ in range(2):  # cold, then from the cache
            done = edgecache_cli("cat", url, *options, "--cache-dir", cache)
            assert done.returncode == 0, done.stderr.decode()
            assert done.stdout == data
        stats = edgecache_cli("stats", "--json", "--cache-dir", cache)
        assert json.loads(stats.stdout)["tiers"]["ssd"]["hits"] >= 1

    def test_cli_missing_object_is_not_found_never_unreachable(
        self, backend: Backend, seed: Seed, url_options: dict[str, str], tmp_path: Any
    ) -> None:
        if backend.protocol == "memory":
            pytest.skip("memory:// lives in one process; the CLI is another")
        present = seed("present.bin", b"x")
        url = f"{backend.protocol}://{present.rsplit('/', 1)[0]}/absent.bin"
        done = edgecache_cli(
            "cat", url, *_dash_o(url_options), "--cache-dir", str(tmp_path / "cache")
        )
        assert_one_line_failure(done, code=1, says="not found", never="unreachable")

    def test_writes_through_edgecache_replace_what_was_cached(
        self, backend: Backend, seed: Seed, url_options: dict[str, str], tmp_path: Any
    ) -> None:
        path = seed("written.bin", b"first version")
        with _edgecache_over(backend.protocol, url_options, tmp_path) as fs:
            url = f"{backend.protocol}://{path}"
            assert fs.cat_file(url) == b"first version"
            fs.pipe_file(url, b"second, longer version")
            assert fs.cat_file(url) == b"second, longer version"
            stored = run(backend.call, "cat_file", path)
            assert stored == b"second, longer version"

    def _chained(
        self, backend: Backend, url_options: dict[str, str], tmp_path: Any
    ) -> dict[str, Any]:
        """``fsspec.open`` options for ``edgecache::<proto>://...`` (a copy per call: fsspec
        may add keys to the dicts it is given)."""
        return {
            backend.protocol: dict(url_options),
            "edgecache": {"cache_dir": str(tmp_path / "cache")},
        }

    def test_open_for_writing_with_fsspec_open_replaces_the_object(
        self, backend: Backend, seed: Seed, url_options: dict[str, str], tmp_path: Any
    ) -> None:
        path = seed("opened.bin", b"first version")
        url = f"edgecache::{backend.protocol}://{path}"
        with fsspec.open(url, "rb", **self._chained(backend, url_options, tmp_path)) as f:
            assert f.read() == b"first version"  # now cached
        with fsspec.open(url, "wb", **self._chained(backend, url_options, tmp_path)) as f:
            f.write(b"second, ")
            f.write(memoryview(b"longer version"))
        with fsspec.open(url, "rb", **self._chained(backend, url_options, tmp_path)) as f:
            assert f.read() == b"second, longer version"
        assert run(backend.call, "cat_file", path) == b"second, longer version"
        text = url.replace("opened.bin", "opened.txt")
        with fsspec.open(text, "w", **self._chained(backend, url_options, tmp_path)) as f:
            f.write("line one\nline two\n")
        with fsspec.open(text, "r", **self._chained(backend, url_options, tmp_path)) as f:
            assert f.read().splitlines() == ["line one", "line two"]

    def test_an_error_while_writing_an_object_leaves_the_old_one(
        self, backend: Backend, seed: Seed, url_options: dict[str, str], tmp_path: Any
    ) -> None:
        if backend.has_sync_client:
            pytest.skip("a synchronous client's own file object writes in place")
        path = seed("kept.bin", b"the old object")
        url = f"{backend.protocol}://{path}"
        spools = set(_upload_spools())
        with _edgecache_over(backend.protocol, url_options, tmp_path) as fs:
            assert fs.cat_file(url) == b"the old object"
            with pytest.raises(ZeroDivisionError), fs.open(url, "wb") as f:
                f.write(b"half of the new")
                1 / 0  # noqa: B018 - the writer fails midway
            assert fs.cat_file(url) == b"the old object"
            assert run(backend.call, "cat_file", path) == b"the old object"
            with pytest.raises(ValueError, match="mode 'wb'"):
                fs.open(url, "ab")
        assert set(_upload_spools()) == spools, "a temporary upload file was left behind"

    def test_modified_and_rmdir_go_through_the_engine(
        self, backend: Backend, seed: Seed, url_options: dict[str, str], tmp_path: Any
    ) -> None:
        path = seed("stamped.bin", b"x")
        with _edgecache_over(backend.protocol, url_options, tmp_path) as fs:
            stamp = fs.modified(f"{backend.protocol}://{path}")
            assert isinstance(stamp, datetime.datetime | int | float), stamp
            with pytest.raises((FileNotFoundError, NotImplementedError)):
                fs.rmdir(f"{backend.protocol}://{path.rsplit('/', 1)[0]}/no-such-dir")


@contextlib.contextmanager
def _edgecache_over(protocol: str, options: dict[str, Any], tmp_path: Any) -> Iterator[Any]:
    """An edgecache filesystem over ``protocol`` with ``options``, on a cache directory of the
    test's own, its engine closed afterwards."""
    fs = fsspec.filesystem(
        "edgecache",
        target_protocol=protocol,
        target_options=options,
        cache_dir=str(tmp_path / "cache"),
        skip_instance_cache=True,
    )
    try:
        yield fs
    finally:
        fs.engine.close()


def _upload_spools() -> list[str]:
    return glob.glob(os.path.join(tempfile.gettempdir(), "edgecache-upload-*"))


class RemoteBackendWANConformance:
    """Network failures every remote backend (s3, oss) must survive, through the WAN emulator.

    Subclasses override :meth:`upstream` (the store's endpoint on 127.0.0.1),
    :meth:`options_for` (the backend's options for an endpoint, plus extra settings) and
    :meth:`seed` (as in :class:`BackendConformance`). A link cut mid-read gives
    :class:`~edgecache.errors.BackendUnavailableError` in bounded time and never wrong bytes; a
    blackholed request costs one timeout, not one per attempt; cached data is served at local
    speed while the link is down. Through ``fsspec.open`` with a URL per file, as users read: a
    cut link fails uncached reads fast with the "unreachable ... not cached" error and the very
    next read after it comes back succeeds; a hung link costs the process one timeout, after
    which cached files are served at local speed and uncached ones fail within the timeout.

    Time bounds are generous (several times what is expected) but below what the behaviour they
    guard against costs: they tell "one timeout" from "a timeout per attempt or per file".
    """

    protocol: str = ""
    """The URL protocol of the backend under test."""
    slow_link = {"rtt_ms": 10, "mbit": 16}
    """The emulated link (``WANProfile`` fields): 8 MiB take about 4 s, long enough to cut the
    link in the middle of a read."""

    @pytest.fixture
    def upstream(self) -> str:
        """Endpoint URL of the store (on 127.0.0.1)."""
        raise NotImplementedError("override the upstream fixture")

    @pytest.fixture
    def options_for(self) -> Callable[..., dict[str, Any]]:
        """``options_for(endpoint, **extra)``: the backend's options to reach ``endpoint``."""
        raise NotImplementedError("override the options_for fixture")

    @pytest.fixture
    def seed(self) -> Seed:
        """See :data:`Seed`."""
        raise NotImplementedError("override the seed fixture")

    @pytest.fixture
    def wan(self, upstream: str) -> Iterator[WANEmulator]:
        # The WAN emulator is the project's test server, not part of edgecache: imported here,
        # so that the suite of plain backends is usable where it is not installed.
        from edgecache_testservers.wan import WANEmulator, WANProfile

        with WANEmulator(upstream, WANProfile(**self.slow_link)) as emulator:
            yield emulator

    @pytest.fixture
    def backends(self) -> Iterator[Callable[[dict[str, Any]], Backend]]:
        """``backends(options)``: a backend of :attr:`protocol`, closed after the test (its
        client's session would be left to the garbage collector, which reports it unclosed)."""
        made: list[Backend] = []

        def make(options: dict[str, Any]) -> Backend:
            made.append(get_backend(self.protocol, options))
            return made[-1]

        yield make
        for backend in made:
            run(backend.close)

    def test_cut_mid_read_then_restore(
        self,
        wan: WANEmulator,
        seed: Seed,
        options_for: Callable[..., dict[str, Any]],
        backends: Callable[[dict[str, Any]], Backend],
    ) -> None:
        data = _data(8 * 1024 * 1024, seed=11)
        path = seed("big.bin", data)
        backend = backends(options_for(wan.endpoint, read_timeout=5))
        version = backend.version(run(backend.call, "info", path))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            reading = pool.submit(run, backend.fetch_range, path, 0, len(data), version)
            deadline = time.monotonic() + 10
            while wan.bytes_down < 1024 * 1024 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not reading.done(), "the read finished before the cut: slow the link down"
            wan.cut("reset")
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError, match=rf"{self.protocol}://.*big\.bin"):
                reading.result(timeout=30)
            assert time.monotonic() - started < 15
        wan.restore()
        assert run(backend.fetch_range, path, 0, len(data), version) == data

    def test_cached_data_is_served_while_the_link_is_down(
        self,
        wan: WANEmulator,
        seed: Seed,
        options_for: Callable[..., dict[str, Any]],
        tmp_path: Any,
    ) -> None:
        data = _data(300_000, seed=12)
        path = seed("warm.bin", data)
        with _edgecache_over(self.protocol, options_for(wan.endpoint, retries=1), tmp_path) as fs:
            url = f"{self.protocol}://{path}"
            assert fs.cat_file(url) == data
            wan.cut("reset")
            started = time.monotonic()
            assert fs.cat_file(url) == data
            assert time.monotonic() - started < 1
            with pytest.raises(ConnectionError):
                fs.cat_file(url.rsplit("/", 1)[0] + "/never-read.bin")

    def test_a_write_while_the_link_is_down_fails_in_one_line_and_keeps_the_object(
        self,
        wan: WANEmulator,
        seed: Seed,
        options_for: Callable[..., dict[str, Any]],
        tmp_path: Any,
    ) -> None:
        path = seed("kept-offline.bin", b"the old object")
        spools = set(_upload_spools())
        with _edgecache_over(self.protocol, options_for(wan.endpoint, retries=1), tmp_path) as fs:
            url = f"{self.protocol}://{path}"
            assert fs.cat_file(url) == b"the old object"
            wan.cut("reset")
            f = fs.open(url, "wb")
            f.write(b"a new object nobody will see")
            with pytest.raises(BackendUnavailableError) as caught:
                f.close()
            message = str(caught.value)
            assert "\n" not in message and "kept-offline.bin" in message, message
            assert message.count("is unreachable") == 1, message
            assert fs.cat_file(url) == b"the old object"  # the cache kept it
            wan.restore()
            assert run(fs.engine.backend.call, "cat_file", path) == b"the old object"
        assert set(_upload_spools()) == spools, "a temporary upload file was left behind"

    def test_a_blackholed_request_costs_one_timeout_not_one_per_attempt(
        self,
        wan: WANEmulator,
        seed: Seed,
        options_for: Callable[..., dict[str, Any]],
        backends: Callable[[dict[str, Any]], Backend],
    ) -> None:
        data = _data(4 * 1024 * 1024, seed=13)
        path = seed("hole.bin", data)
        timeout = 2.0
        options = options_for(
            wan.endpoint, connect_timeout=timeout, read_timeout=timeout, retries=3
        )
        backend = backends(options)
        version = backend.version(run(backend.call, "info", path))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            reading = pool.submit(run, backend.fetch_range, path, 0, len(data), version)
            deadline = time.monotonic() + 10
            while wan.bytes_down < 512 * 1024 and time.monotonic() < deadline:
                time.sleep(0.02)
            wan.cut("blackhole")
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError, match="read_timeout"):
                reading.result(timeout=60)
            # One timeout (the 3 attempts would take three).
            assert time.monotonic() - started < 2.5 * timeout
        wan.restore()
        # The same backend recovers (a part of the object is enough to show it).
        assert run(backend.fetch_range, path, 1000, 300_000, version) == data[1000:300_000]
        # And a request that gets no answer at all is not repeated either.
        wan.cut("blackhole")
        try:
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                run(backend.call, "info", path)
            assert time.monotonic() - started < 2.5 * timeout
        finally:
            wan.restore()

    def _open(
        self,
        wan: WANEmulator,
        options_for: Callable[..., dict[str, Any]],
        path: str,
        *,
        backend_options: dict[str, Any],
        **cache: Any,
    ) -> Any:
        """``fsspec.open`` of one object, as a user's loop does it (a new URL each time)."""
        return fsspec.open(
            f"edgecache::{self.protocol}://{path}",
            "rb",
            **{
                self.protocol: options_for(wan.endpoint, **backend_options),
                "edgecache": dict(cache),
            },
        )

    def _read(self, *args: Any, **kwargs: Any) -> bytes:
        with self._open(*args, **kwargs) as f:
            data: bytes = f.read()
        return data

    def test_a_cut_link_fails_fast_and_is_used_again_by_the_next_read(
        self,
        wan: WANEmulator,
        seed: Seed,
        options_for: Callable[..., dict[str, Any]],
        tmp_path: Any,
    ) -> None:
        warm, cold = _data(200_000, seed=14), _data(200_000, seed=15)
        warm_path, cold_path = seed("cut-warm.bin", warm), seed("cut-cold.bin", cold)
        recheck = 0.5
        # No background probe in time: only the read itself can find the link back.
        settings = {
            "cache_dir": str(tmp_path / "cache"),
            "backend_recheck_after": recheck,
            "backend_probe_interval": 600,
        }

        def read(path: str) -> bytes:
            return self._read(wan, options_for, path, backend_options={}, **settings)

        assert read(warm_path) == warm
        wan.cut("reset")
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError, match=OFFLINE_MISS):
            read(cold_path)
        assert time.monotonic() - started < 5
        assert read(warm_path) == warm  # cached: served while the link is down
        health = self._open(wan, options_for, warm_path, backend_options={}, **settings).fs.health
        assert not health.online

        wan.restore()
        time.sleep(recheck)  # the age rule: the last probe (the failure above) is old enough now
        assert not health.online  # nothing but the next read can bring it back
        assert read(cold_path) == cold
        assert health.online

    def test_a_hung_link_costs_one_timeout_then_cached_files_are_local(
        self,
        wan: WANEmulator,
        seed: Seed,
        options_for: Callable[..., dict[str, Any]],
        tmp_path: Any,
    ) -> None:
        contents = [_data(50_000, seed=20 + i) for i in range(4)]
        paths = [seed(f"hung{i}.bin", data) for i, data in enumerate(contents)]
        cold_path = seed("hung-cold.bin", b"never read before the link hung")
        timeout, ttl = 3.0, 0.5
        backend_options = {
            "connect_timeout": timeout,
            "read_timeout": timeout,
            "retries": 3,
            "probe_timeout": 1,
        }
        settings = {
            "cache_dir": str(tmp_path / "cache"),
            "metadata_ttl": ttl,
            "backend_probe_interval": 600,
        }

        def read(path: str) -> bytes:
            return self._read(wan, options_for, path, backend_options=backend_options, **settings)

        for path, data in zip(paths, contents, strict=True):
            assert read(path) == data
        time.sleep(ttl + 0.1)  # past the TTL: opening a file asks the backend again
        wan.cut("blackhole")
        try:
            started = time.monotonic()
            assert read(paths[0]) == contents[0]
            # One timeout, then served from the cache (a retry after it would cost another).
            assert time.monotonic() - started < 2.5 * timeout
            connections = wan.connections_accepted
            for path, data in zip(paths[1:], contents[1:], strict=True):
                started = time.monotonic()
                assert read(path) == data  # a new fsspec.open, and no wait on the link
                assert time.monotonic() - started < 0.5 * timeout
            assert wan.connections_accepted == connections, "a cached file asked the backend"
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError, match=OFFLINE_MISS):
                read(cold_path)
            assert time.monotonic() - started < timeout  # at most one probe (1 s) waits
        finally:
            wan.restore()

    def test_cli_refused_connection_is_unreachable_never_not_found(
        self, seed: Seed, options_for: Callable[..., dict[str, Any]], tmp_path: Any
    ) -> None:
        path = seed("somewhere.bin", b"x")
        closed = f"http://127.0.0.1:{closed_port()}"
        done = edgecache_cli(
            "cat",
            f"{self.protocol}://{path}",
            *_dash_o(options_for(closed, retries=1)),
            "--cache-dir",
            str(tmp_path / "cache"),
        )
        assert_one_line_failure(done, code=1, says="unreachable", never="not found")

    def test_cli_unknown_option_is_refused_naming_it(
        self, upstream: str, seed: Seed, options_for: Callable[..., dict[str, Any]], tmp_path: Any
    ) -> None:
        path = seed("opt.bin", b"x")
        done = edgecache_cli(
            "cat",
            f"{self.protocol}://{path}",
            *_dash_o(options_for(upstream, nosuchoption=1)),
            "--cache-dir",
            str(tmp_path / "cache"),
        )
        err = assert_one_line_failure(done, code=2, says="'nosuchoption'")
        assert "endpoint" in err, "the accepted options are listed"
