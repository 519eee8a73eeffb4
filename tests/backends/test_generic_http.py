"""The generic fsspec backend over http (fsspec's HTTPFileSystem), against a real HTTP server on
127.0.0.1: it reads, and "not found", "unreachable" and "bad option" stay three different
answers. fsspec's http ``info`` turns every failure into ``FileNotFoundError``; the backend
must not pass that on as "not found" when the server could not be reached."""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fsspec
import pytest

from edgecache.backends import Backend, get_backend
from edgecache.errors import BackendUnavailableError, ConfigError
from edgecache.testing.backend_suite import (
    assert_one_line_failure,
    closed_port,
    edgecache_cli,
    open_sessions,
    run,
)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, directory it serves)."""
    root = tmp_path / "served"
    root.mkdir()
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_backend() -> Iterator[Callable[..., Backend]]:
    """``get_backend("http", options)``, each closed when the test ends: a session left open
    is reported unclosed by whichever later test the garbage collector runs in."""
    made: list[Backend] = []

    def make(**options: str) -> Backend:
        made.append(get_backend("http", options))
        return made[-1]

    yield make
    for backend in made:
        run(backend.close)


def test_reads_through_the_cache_by_url_chaining(
    http_root: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = http_root
    (root / "x.bin").write_bytes(b"over http" * 1000)
    cache = {"cache_dir": str(tmp_path / "cache")}
    with fsspec.open(f"edgecache::{base}/x.bin", "rb", edgecache=cache) as f:
        assert f.read() == b"over http" * 1000


def test_a_process_that_read_over_http_exits_with_its_session_closed(
    http_root: tuple[str, Path], tmp_path: Path
) -> None:
    # The engine's client lives as long as the process: its session is closed at exit, not
    # left to the interpreter's last collection (aiohttp: "Unclosed client session").
    base, root = http_root
    (root / "x.bin").write_bytes(b"exit" * 1000)
    # The check is registered first, so it runs last of the exit functions: what is still
    # open then is left to the interpreter's last collection.
    script = (
        "import atexit, gc, sys, aiohttp\n"
        "def unclosed():\n"
        "    found = [o for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession)]\n"
        "    print('Unclosed:', sum(not s.closed for s in found), file=sys.stderr)\n"
        "atexit.register(unclosed)\n"
        "import fsspec\n"
        "with fsspec.open(sys.argv[1], 'rb', edgecache={'cache_dir': sys.argv[2]}) as f:\n"
        "    assert f.read() == b'exit' * 1000\n"
    )
    url, cache = f"edgecache::{base}/x.bin", str(tmp_path / "cache")
    done = subprocess.run(
        [sys.executable, "-c", script, url, cache], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Unclosed: 0\n" in done.stderr, done.stderr
    assert "Unclosed client session" not in done.stderr, done.stderr


def test_an_engine_replaced_after_its_store_closed_closes_its_session(
    http_root: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = http_root
    (root / "x.bin").write_bytes(b"again" * 1000)
    cache = {"cache_dir": str(tmp_path / "cache")}
    with fsspec.open(f"edgecache::{base}/x.bin", "rb", edgecache=cache) as f:
        assert f.read() == b"again" * 1000
        first = f.fs.engine
    session = first.backend.fs._session
    assert session is not None and not session.closed
    first.close()
    with fsspec.open(f"edgecache::{base}/x.bin", "rb", edgecache=cache) as f:
        assert f.read() == b"again" * 1000
        assert f.fs.engine is not first
    deadline = time.monotonic() + 10
    while not session.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert session.closed, "the replaced engine's session was left open"


def test_close_releases_the_session_and_a_later_call_opens_one_again(
    http_root: tuple[str, Path], http_backend: Callable[..., Backend]
) -> None:
    # The backend conformance suite's close test, for the generic backend (which the suite
    # cannot run whole: http has no writes).
    base, root = http_root
    (root / "closing.bin").write_bytes(b"c" * 100)
    backend = http_backend()
    assert run(backend.call, "info", f"{base}/closing.bin")["size"] == 100
    assert open_sessions(backend) == 1  # what close has to release
    run(backend.close)
    assert open_sessions(backend) == 0
    assert run(backend.call, "info", f"{base}/closing.bin")["size"] == 100
    assert open_sessions(backend) == 1
    run(backend.close)
    run(backend.close)  # twice: nothing left to close
    assert open_sessions(backend) == 0


def test_missing_is_not_found(
    http_root: tuple[str, Path], tmp_path: Path, http_backend: Callable[..., Backend]
) -> None:
    base, _ = http_root
    backend = http_backend()
    with pytest.raises(FileNotFoundError):
        run(backend.call, "info", f"{base}/absent.bin")
    done = edgecache_cli("cat", f"{base}/absent.bin", "--cache-dir", str(tmp_path / "c"))
    assert_one_line_failure(done, code=1, says="not found", never="unreachable")


def test_refused_connection_is_unreachable(
    tmp_path: Path, http_backend: Callable[..., Backend]
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/x"
    backend = http_backend()
    with pytest.raises(BackendUnavailableError, match="unreachable") as caught:
        run(backend.call, "info", url)
    assert backend.is_unreachable(caught.value)
    done = edgecache_cli("cat", url, "--cache-dir", str(tmp_path / "c"))
    assert_one_line_failure(done, code=1, says="unreachable", never="not found")


def test_an_option_the_client_refuses_is_a_config_error_naming_it(
    http_root: tuple[str, Path], tmp_path: Path, http_backend: Callable[..., Backend]
) -> None:
    base, root = http_root
    (root / "x.bin").write_bytes(b"x")
    backend = http_backend(nosuchoption="1")
    with pytest.raises(ConfigError, match="'nosuchoption'"):
        run(backend.call, "info", f"{base}/x.bin")
    done = edgecache_cli(
        "cat", f"{base}/x.bin", "-o", "nosuchoption=1", "--cache-dir", str(tmp_path / "c")
    )
    assert_one_line_failure(done, code=2, says="'nosuchoption'", never="not found")
