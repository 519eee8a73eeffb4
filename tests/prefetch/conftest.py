"""Fixtures of the prefetch tests: a local dataset and test backends that count or fail."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgecache.backends import _registry, register_backend
from edgecache.backends.local import LocalBackend


class CountingBackend(LocalBackend):
    """Local files, logging block fetches; paths containing ``broken`` fail to fetch; the link
    can be cut (every call raises ConnectionError)."""

    protocols = ("pfile",)
    online = True

    def __init__(self, protocol: str, options: Any) -> None:
        super().__init__(protocol, options)
        self.fetched: list[tuple[str, int]] = []

    async def fetch_range(self, path: str, start: int, end: int, version: str) -> bytes:
        if not self.online:
            raise ConnectionError("link down")
        if "broken" in path:
            raise PermissionError(13, "access denied by the test backend", path)
        self.fetched.append((path, start))
        return await super().fetch_range(path, start, end, version)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if not self.online:
            raise ConnectionError("link down")
        return await super().call(method, *args, **kwargs)


@pytest.fixture(autouse=True)
def counting_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_registered", dict(_registry._registered))
    register_backend("pfile", CountingBackend)


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    """train/: 40 small files and 2 multi-block files; val/: 5 files."""
    root = tmp_path / "data"
    (root / "train" / "shards").mkdir(parents=True)
    (root / "val").mkdir()
    for i in range(40):
        (root / "train" / f"img{i:03d}.jpg").write_bytes(os.urandom(1000 + 37 * i))
    for i in range(2):
        (root / "train" / "shards" / f"shard{i}.bin").write_bytes(os.urandom(300_000 + i))
    for i in range(5):
        (root / "val" / f"v{i}.jpg").write_bytes(os.urandom(2000))
    return root


@pytest.fixture
def cache_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "cache"
    yield path
