"""Fixtures of the cache tests: caches on fresh directories, closed after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cachetestlib import settings

from edgecache.cache import TieredCache


@pytest.fixture
def make_cache(tmp_path: Path) -> Iterator[Callable[..., TieredCache]]:
    """``make_cache(**options)``: a TieredCache on ``tmp_path/cache`` (closed at teardown)."""
    opened: list[TieredCache] = []

    def make(**options: Any) -> TieredCache:
        options.setdefault("cache_dir", str(tmp_path / "cache"))
        cache = TieredCache(settings(**options))
        opened.append(cache)
        return cache

    yield make
    for cache in opened:
        cache.close()
