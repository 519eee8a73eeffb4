"""Charges and limits of the SSD index: bytes kept outside the block files (the agent's views)
counted as pinned usage by every process on the directory, and the one quota an owner sets.

Real cache directories and sqlite files; a second process where the point is another process.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cachetestlib import (
    BS,
    Source,
    audit,
    block_files,
    make_objects,
    metric,
    payload,
    read_object,
    settings,
)

from edgecache.cache import TieredCache
from edgecache.cache._index import SCHEMA_VERSION, file_identity, open_index
from edgecache.cache.eviction import policy_by_name
from edgecache.config import StoreSettings

QUOTA = 64 * BS


def _objects(count: int, prefix: str) -> Source:
    """``count`` incompressible objects of two whole blocks (no LZ4 saving hides bytes)."""
    return Source(
        {
            f"{prefix}/{i:03d}": payload(f"{prefix}{i}", 2 * BS, compressible=False)
            for i in range(count)
        }
    )


def _fill(cache: TieredCache, source: Source) -> None:
    for path in source.objects:
        asyncio.run(read_object(cache, source, path))


def _on_disk(cache_dir: str) -> int:
    return sum(block_files(cache_dir).values())


def test_a_charge_evicts_unpinned_blocks_to_the_low_watermark(tmp_path: Path) -> None:
    s = settings(str(tmp_path / "c"), mem_quota=0, ssd_high=0.9, ssd_low=0.5)
    source = _objects(40, "obj")
    cache = TieredCache(s)
    try:
        _fill(cache, source)
        before = _on_disk(s.cache_dir)
        assert before > 0.6 * QUOTA  # blocks fill the cache, nothing charged yet
        assert cache.charge("view:default/images", 30 * BS)
        # Blocks + charge passed the high watermark: evicted down to the low one.
        assert _on_disk(s.cache_dir) + 30 * BS <= 0.5 * QUOTA
        usage = cache.stats()["tiers"]["ssd"]
        assert usage["charged_bytes"] == 30 * BS
        # New blocks are stored only beside the charge: blocks + charge stay in the quota.
        _fill(cache, _objects(40, "more"))
        assert _on_disk(s.cache_dir) + 30 * BS <= QUOTA
        audit(s).assert_consistent()
    finally:
        cache.close()


def test_a_charge_that_pinned_blocks_leave_no_room_for_is_refused_and_the_old_one_kept(
    tmp_path: Path,
) -> None:
    s = settings(str(tmp_path / "c"), mem_quota=0)
    source = _objects(20, "obj")
    cache = TieredCache(s)
    try:
        cache.pin("keep", backend=source.backend, prefix="", reserve_bytes=0)
        _fill(cache, source)
        pinned = _on_disk(s.cache_dir)
        assert cache.charge("view:a", 8 * BS)
        assert not cache.charge("view:a", QUOTA - pinned + BS)  # pinned blocks stay
        assert cache.ssd.charges() == {"view:a": 8 * BS}
        assert _on_disk(s.cache_dir) == pinned
        assert cache.charge("view:a", 0)  # shrinking (here: removing) always fits
        assert cache.ssd.charges() == {}
        audit(s).assert_consistent()
    finally:
        cache.close()


def test_pins_and_charges_share_the_quota(tmp_path: Path) -> None:
    from edgecache.errors import PinError

    s = settings(str(tmp_path / "c"), mem_quota=0)
    cache = TieredCache(s)
    try:
        assert cache.charge("view:a", 40 * BS)
        with pytest.raises(PinError, match="charged to views"):
            cache.pin("big", backend="mem|test", prefix="", reserve_bytes=30 * BS)
        cache.pin("small", backend="mem|test", prefix="", reserve_bytes=20 * BS)
    finally:
        cache.close()


_READER = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from cachetestlib import Source, payload, read_object, settings, BS
from edgecache.cache import TieredCache
cache = TieredCache(settings(sys.argv[2], mem_quota=0, ssd_quota=int(sys.argv[3])))
source = Source({f"r/{i}": payload(f"r{i}", 2 * BS, compressible=False) for i in range(60)})
for path in source.objects:
    asyncio.run(read_object(cache, source, path))
print(json.dumps(cache.stats()["tiers"]["ssd"]["quota_bytes"]))
cache.close()
"""


def test_limits_hold_every_process_to_the_owners_quota(tmp_path: Path) -> None:
    s = settings(str(tmp_path / "c"), mem_quota=0)
    owner = TieredCache(s)
    try:
        owner.apply(StoreSettings(cache_dir=s.cache_dir, ssd_quota=QUOTA), for_every_process=True)
        assert owner.charge("view:a", 16 * BS)
        # A reader in another process asks for four times the quota: the limit holds it.
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                _READER,
                str(Path(__file__).parent),
                s.cache_dir,
                str(4 * QUOTA),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert int(proc.stdout) == QUOTA
        assert _on_disk(s.cache_dir) + 16 * BS <= QUOTA
        assert _on_disk(s.cache_dir) > 0.5 * QUOTA  # it did cache, up to the quota
        audit(s).assert_consistent()
    finally:
        owner.close()


def test_a_lowered_quota_evicts_at_once_and_a_raised_one_lets_more_in(tmp_path: Path) -> None:
    s = settings(str(tmp_path / "c"), mem_quota=0, ssd_high=0.9, ssd_low=0.8)
    cache = TieredCache(s)
    try:
        _fill(cache, _objects(40, "obj"))
        assert _on_disk(s.cache_dir) > 32 * BS
        lower = StoreSettings(cache_dir=s.cache_dir, ssd_quota=32 * BS, ssd_high=0.9, ssd_low=0.8)
        cache.apply(lower, for_every_process=True)
        assert _on_disk(s.cache_dir) <= 0.8 * 32 * BS
        assert cache.stats()["tiers"]["ssd"]["quota_bytes"] == 32 * BS
        higher = StoreSettings(cache_dir=s.cache_dir, ssd_quota=128 * BS)
        cache.apply(higher, for_every_process=True)
        _fill(cache, _objects(60, "b"))
        assert _on_disk(s.cache_dir) > QUOTA
        audit(s).assert_consistent()
    finally:
        cache.close()


def test_a_new_mem_bound_and_eviction_policy_apply_to_the_open_cache(tmp_path: Path) -> None:
    s = settings(str(tmp_path / "c"), mem_quota=16 * BS)
    source = _objects(8, "obj")
    cache = TieredCache(s)
    try:
        _fill(cache, source)
        assert cache.mem.usage_bytes == 16 * BS
        fetched = source.total_fetches
        smaller = StoreSettings(
            cache_dir=s.cache_dir, ssd_quota=QUOTA, mem_quota=4 * BS, eviction_policy="lru"
        )
        cache.apply(smaller)
        assert cache.mem.usage_bytes <= 4 * BS
        for tier in ("mem", "ssd"):
            assert metric("edgecache_cache_eviction_policy", {"tier": tier, "policy": "lru"}) == 1
            assert (
                metric("edgecache_cache_eviction_policy", {"tier": tier, "policy": "s3fifo"}) == 0
            )
        for path, data in source.objects.items():  # what MEM let go of is read from SSD
            assert asyncio.run(read_object(cache, source, path)) == data
        assert source.total_fetches == fetched
        assert cache.mem.usage_bytes <= 4 * BS
    finally:
        cache.close()


def _downgrade_to_schema_1(index: Path) -> None:
    db = sqlite3.connect(str(index))
    with db:
        db.execute("DROP TABLE charges")
        db.execute("DROP TABLE limits")
        db.execute("UPDATE meta SET value=1 WHERE key='schema'")
    db.close()


def test_an_index_of_schema_1_is_upgraded_in_place(tmp_path: Path) -> None:
    s = settings(str(tmp_path / "c"), mem_quota=0)
    specs = make_objects(6, blocks=2, seed=6)
    source = Source.of(specs)
    first = TieredCache(s)
    _fill(first, source)
    first.close()
    index = tmp_path / "c" / "index.sqlite"
    _downgrade_to_schema_1(index)
    inode = file_identity(str(index))
    second = TieredCache(s)
    try:
        fetched = source.total_fetches
        _fill(second, source)
        assert source.total_fetches == fetched  # the blocks of the old index still serve
        assert second.charge("view:a", 4 * BS)
        assert second.ssd.charges() == {"view:a": 4 * BS}
        audit(s).assert_consistent()
    finally:
        second.close()
    assert file_identity(str(index)) == inode  # upgraded, not rebuilt
    assert not (tmp_path / "c" / "index.sqlite.corrupt").exists()
    db = sqlite3.connect(str(index))
    try:
        assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == (
            SCHEMA_VERSION,
        )
    finally:
        db.close()


def test_a_damaged_charge_or_limit_is_dropped_not_trusted(tmp_path: Path) -> None:
    s = settings(str(tmp_path / "c"), mem_quota=0)
    cache = TieredCache(s)
    cache.apply(StoreSettings(cache_dir=s.cache_dir, ssd_quota=32 * BS), for_every_process=True)
    assert cache.charge("view:a", 8 * BS) and cache.charge("view:b", 4 * BS)
    cache.close()
    db = sqlite3.connect(os.path.join(s.cache_dir, "index.sqlite"))
    with db:  # stray writes: the values change, the checksums do not
        db.execute("UPDATE charges SET bytes=1 WHERE name='view:a'")
        db.execute("UPDATE limits SET quota=1")
    db.close()
    cache = TieredCache(s)
    try:
        assert cache.ssd.charges() == {"view:b": 4 * BS}
        assert cache.stats()["tiers"]["ssd"]["quota_bytes"] == QUOTA  # the opener's own
        assert cache.charge("view:b", 6 * BS)
        assert cache.ssd.charges() == {"view:b": 6 * BS}
    finally:
        cache.close()


def test_a_rebuilt_index_keeps_the_charges_and_limits_that_verify(tmp_path: Path) -> None:
    s = settings(str(tmp_path / "c"), mem_quota=0)
    cache = TieredCache(s)
    cache.apply(StoreSettings(cache_dir=s.cache_dir, ssd_quota=48 * BS), for_every_process=True)
    assert cache.charge("view:a", 8 * BS)
    cache.close()
    path = os.path.join(s.cache_dir, "index.sqlite")
    index, report = open_index(
        path,
        quotas=[QUOTA],
        policy=policy_by_name("s3fifo"),
        found_blocks=list,
        repair_lock=os.path.join(s.cache_dir, "locks", "index.lock"),
        damaged=file_identity(path),
    )
    try:
        assert report is not None
        assert index.charges() == {"view:a": 8 * BS}
        assert index.limits() == [48 * BS]
    finally:
        index.close()
