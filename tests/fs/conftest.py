"""Fixtures of the fs-layer tests: edgecache filesystems on fresh cache directories.

fsspec caches filesystem instances by their arguments and the read engine's registry keeps one
store per cache directory, so every filesystem here gets its own ``cache_dir`` (a fresh
temporary directory) and ``skip_instance_cache=True``: no test sees another test's blocks or
metadata.

The test backends of ``fstestlib`` are registered with
:func:`edgecache.backends.register_backend` for the duration of each test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from fstestlib import (
    CountingLocalBackend,
    CountingMemoryBackend,
    HangingLocalBackend,
    LinkedLocalFileSystem,
    SwitchableLocalBackend,
    close_fs,
)

from edgecache.backends import _registry, register_backend
from edgecache.fs import EdgeCacheFileSystem


@pytest.fixture(autouse=True)
def test_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test backends, registered for this test only (the registry is restored after)."""
    monkeypatch.setattr(_registry, "_registered", dict(_registry._registered))
    register_backend("countfile", CountingLocalBackend)
    register_backend("countmem", CountingMemoryBackend)
    register_backend("switchfile", SwitchableLocalBackend)
    register_backend("hangfile", HangingLocalBackend)
    for protocol in LinkedLocalFileSystem.protocol:
        fsspec.register_implementation(protocol, LinkedLocalFileSystem, clobber=True)


@pytest.fixture
def make_fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    """``make_fs(target_protocol="file", target_options=None, **cache_options)``.

    Each call gets a new cache directory unless ``cache_dir`` is given; all are closed at
    teardown.
    """
    opened: list[EdgeCacheFileSystem] = []

    def make(
        target_protocol: str = "file",
        target_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> EdgeCacheFileSystem:
        options.setdefault("cache_dir", str(tmp_path_factory.mktemp("cache")))
        fs = fsspec.filesystem(
            "edgecache",
            target_protocol=target_protocol,
            target_options=target_options or {},
            skip_instance_cache=True,
            **options,
        )
        assert isinstance(fs, EdgeCacheFileSystem)
        opened.append(fs)
        return fs

    yield make
    closed: set[str] = set()
    for fs in opened:
        if fs.settings.cache_dir not in closed:
            closed.add(fs.settings.cache_dir)
            close_fs(fs)


@pytest.fixture
def clean_memory() -> Iterator[None]:
    """An empty process-wide ``memory://`` store before and after the test."""
    _clear_memory()
    yield
    _clear_memory()


def _clear_memory() -> None:
    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs.clear()
    MemoryFileSystem.pseudo_dirs.append("")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A directory of source objects, separate from any cache directory."""
    path = tmp_path / "data"
    path.mkdir()
    return path
