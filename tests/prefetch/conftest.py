"""Fixtures of the prefetch tests: a local dataset and test backends that count or fail."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefetchlib import CountingBackend

from edgecache.backends import _registry, register_backend


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
