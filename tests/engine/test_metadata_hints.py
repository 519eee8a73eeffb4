"""Listing lookups that are only hints (scan detection on every open) and the database.

A warm ``open`` asks for its directory's listing to detect name-ordered scans; a directory
nobody listed cost a database query on every open. A hint lookup now asks again after a
second; a real lookup (another process's listing read after waiting for its lock) always asks,
and this process's own listings are seen at once.
"""

from __future__ import annotations

import time
import types
from pathlib import Path

import pytest

from edgecache.engine import _metadata
from edgecache.engine._metadata import MetadataCache

ENTRY = ({"name": "/d/a", "size": 1, "type": "file"}, "v1")


def names(entries: list[_metadata.CachedInfo] | None) -> list[str] | None:
    return None if entries is None else [str(e.info["name"]) for e in entries]


def test_a_hint_asks_the_database_again_after_a_second_a_real_lookup_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    clock = types.SimpleNamespace(monotonic=lambda: now[0], time=time.time)
    monkeypatch.setattr(_metadata, "time", clock)
    db = str(tmp_path / "metadata.sqlite")
    ours, other = MetadataCache(db, ttl_seconds=60), MetadataCache(db, ttl_seconds=60)
    assert ours.listing("file", "/d", allow_stale=True, hint=True) is None
    other.put_listing("file", "/d", [ENTRY])  # another process on the directory lists it
    assert ours.listing("file", "/d", allow_stale=True, hint=True) is None
    now[0] += 1.01
    assert names(ours.listing("file", "/d", allow_stale=True, hint=True)) == ["/d/a"]

    assert ours.listing("file", "/e", allow_stale=True, hint=True) is None
    other.put_listing("file", "/e", [({"name": "/e/b", "size": 1, "type": "file"}, "v1")])
    assert names(ours.listing("file", "/e", allow_stale=True)) == ["/e/b"]


def test_this_process_listing_is_a_hint_at_once(tmp_path: Path) -> None:
    cache = MetadataCache(str(tmp_path / "metadata.sqlite"), ttl_seconds=60)
    assert cache.listing("file", "/d", allow_stale=True, hint=True) is None
    cache.put_listing("file", "/d", [ENTRY])
    assert names(cache.listing("file", "/d", allow_stale=True, hint=True)) == ["/d/a"]
