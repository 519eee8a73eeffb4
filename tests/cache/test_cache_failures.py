"""Failures around the cache: backends failing mid-read, damaged SSD files, unusable directories.

The rule in every case: the reader gets exact bytes or the backend's own error, never zeros or
another block's bytes, and nothing is left marked present that is not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import fsspec
import pytest
from cachetestlib import (
    BS,
    ObjectSpec,
    Source,
    audit,
    block_files,
    make_objects,
    metric,
    read_object,
    read_object_sync,
    settings,
)
from edgecache_testservers.waiting import wait_for

from edgecache.cache import BlockKey, OpenBlock, TieredCache
from edgecache.cache._blockfile import HEADER_SIZE
from edgecache.errors import TierUnavailableError

CORRUPT = "edgecache_cache_corrupt_blocks_total"
MISSING = "edgecache_cache_missing_blocks_total"


def _found_as(damage: str) -> tuple[str, str]:
    """(metric, stats counter) a damage is counted under: a deleted file is missing, not
    corrupt (it is what a race with an evicting process looks like, too)."""
    if damage == "delete":
        return MISSING, "missing_blocks"
    return CORRUPT, "corrupt_blocks"


def _bypass_total() -> float:
    return sum(
        metric("edgecache_cache_bypass_total", {"reason": r})
        for r in ("disk_full", "permission", "directory_missing", "index_error", "io_error")
    )


# --- a backend failing mid-read -------------------------------------------------------------------


class FlakySource(Source):
    """Fails every fetch of block ``fail_from`` and later while ``failing`` is set."""

    failing = True
    fail_from = 3

    def fetcher(self, key: BlockKey):  # type: ignore[no-untyped-def]
        good = super().fetcher(key)

        async def fetch() -> bytes:
            await asyncio.sleep(0.001)
            if self.failing and key.index >= self.fail_from:
                raise ConnectionResetError(f"backend dropped the connection at {key.index}")
            return await good()

        return fetch


async def test_failed_fetch_surfaces_and_leaves_nothing_marked_present(make_cache) -> None:
    spec = ObjectSpec("big", 6 * BS, compressible=False)
    source = FlakySource.of([spec])
    cache = make_cache()
    errors_before = metric("edgecache_backend_errors_total", {"backend": "mem"})
    with pytest.raises(ConnectionResetError):
        await read_object(cache, source, spec.path)
    assert metric("edgecache_backend_errors_total", {"backend": "mem"}) == errors_before + 1
    keys = source.keys(spec.path)
    for key in keys[:3]:
        assert cache.get_cached(key) == source.block(key)
    for key in keys[3:]:
        assert cache.get_cached(key) is None
        assert not cache.ssd.contains(key)
    assert set(block_files(cache.settings.cache_dir)) == {k.digest for k in keys[:3]}
    assert cache.stats()["tiers"]["ssd"]["directories"][0]["blocks"] == 3
    audit(cache.settings).assert_consistent()
    # The backend recovers: exact bytes, the good blocks are not fetched again.
    source.failing = False
    assert await read_object(cache, source, spec.path) == spec.data()
    assert [source.fetches[k.digest] for k in keys] == [1] * 6
    cache.mem.clear()
    assert read_object_sync(cache, source, spec.path) == spec.data()
    audit(cache.settings).assert_consistent()


async def test_every_waiter_of_a_failed_flight_gets_the_error_then_a_retry_works(
    make_cache,
) -> None:
    spec = ObjectSpec("o", 4 * BS, compressible=True)
    source = FlakySource.of([spec])
    source.fail_from = 0
    cache = make_cache()
    key = source.keys(spec.path)[2]
    results = await asyncio.gather(
        *(cache.get(key, source.fetcher(key), expected_size=BS) for _ in range(10)),
        return_exceptions=True,
    )
    assert all(isinstance(r, ConnectionResetError) for r in results), results
    assert cache.get_cached(key) is None
    source.failing = False
    assert await cache.get(key, source.fetcher(key), expected_size=BS) == source.block(key)


def test_failure_in_one_thread_does_not_poison_other_threads(make_cache) -> None:
    import threading

    spec = ObjectSpec("o", 4 * BS, compressible=False)
    source = FlakySource.of([spec])
    source.fail_from = 0
    cache = make_cache()
    outcomes: list[object] = []
    barrier = threading.Barrier(8)

    def reader() -> None:
        barrier.wait()
        try:
            outcomes.append(asyncio.run(read_object(cache, source, spec.path)))
        except ConnectionResetError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(outcomes) == 8
    assert all(isinstance(o, ConnectionResetError) for o in outcomes)
    source.failing = False
    assert read_object_sync(cache, source, spec.path) == spec.data()


async def test_a_follower_giving_up_does_not_break_the_fetch_others_wait_for(make_cache) -> None:
    spec = ObjectSpec("o", BS, compressible=False)
    source = Source.of([spec], delay_seconds=0.2)
    cache = make_cache()
    key = source.keys(spec.path)[0]
    leader = asyncio.create_task(cache.get(key, source.fetcher(key), expected_size=BS))
    await asyncio.sleep(0.02)
    other = asyncio.create_task(cache.get(key, source.fetcher(key), expected_size=BS))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(cache.get(key, source.fetcher(key), expected_size=BS), 0.05)
    assert await leader == source.block(key)
    assert await other == source.block(key)
    assert source.fetches[key.digest] == 1


async def test_a_cancelled_leader_does_not_cancel_its_followers(make_cache) -> None:
    spec = ObjectSpec("o", BS, compressible=False)
    source = Source.of([spec], delay_seconds=0.2)
    cache = make_cache()
    key = source.keys(spec.path)[0]
    leader = asyncio.create_task(cache.get(key, source.fetcher(key), expected_size=BS))
    await asyncio.sleep(0.02)
    follower = asyncio.create_task(cache.get(key, source.fetcher(key), expected_size=BS))
    await asyncio.sleep(0.02)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    # The follower was not cancelled: it must get the block (fetching it itself).
    assert await follower == source.block(key)
    assert cache.get_cached(key) == source.block(key)


# --- damaged SSD files ------------------------------------------------------------------------


def _block_path(cache: TieredCache, key: BlockKey) -> Path:
    return Path(cache.settings.cache_dir) / "blocks" / key.digest[:2] / key.digest


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset % len(raw)] ^= 0x5A
    path.write_bytes(bytes(raw))


DAMAGE = {
    "flip_payload_first": lambda p: _flip(p, 48),
    "flip_payload_last": lambda p: _flip(p, -1),
    "flip_magic": lambda p: _flip(p, 0),
    "flip_length_field": lambda p: _flip(p, 16),
    "flip_checksum_field": lambda p: _flip(p, 24),
    "flip_digest_field": lambda p: _flip(p, 40),
    "truncate_half": lambda p: os.truncate(p, p.stat().st_size // 2),
    "truncate_to_header": lambda p: os.truncate(p, 48),
    "truncate_inside_header": lambda p: os.truncate(p, 20),
    "truncate_empty": lambda p: os.truncate(p, 0),
    "append_garbage": lambda p: p.write_bytes(p.read_bytes() + b"\0\0\0"),
    "delete": lambda p: p.unlink(),
    "zero_fill": lambda p: p.write_bytes(b"\0" * p.stat().st_size),
}


@pytest.mark.parametrize("compressible", [True, False], ids=["lz4", "raw"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
async def test_damaged_block_is_detected_refetched_and_counted(
    make_cache, damage: str, compressible: bool
) -> None:
    spec = ObjectSpec("victim", 3 * BS, compressible=compressible)
    source = Source.of([spec])
    cache = make_cache()
    assert await read_object(cache, source, spec.path) == spec.data()
    key = source.keys(spec.path)[1]
    path = _block_path(cache, key)
    assert path.stat().st_size < BS if compressible else path.stat().st_size > BS
    DAMAGE[damage](path)
    cache.mem.clear()
    metric_name, stat_name = _found_as(damage)
    other_name = "missing_blocks" if stat_name == "corrupt_blocks" else "corrupt_blocks"
    before = metric(metric_name)
    before_stats = cache.stats()["tiers"]["ssd"]
    assert cache.get_cached(key) is None  # never the damaged bytes
    assert await read_object(cache, source, spec.path) == spec.data()
    assert source.fetches[key.digest] == 2
    assert sum(source.fetches.values()) == 4  # only the damaged block was fetched again
    assert metric(metric_name) == before + 1
    after_stats = cache.stats()["tiers"]["ssd"]
    assert after_stats[stat_name] == before_stats[stat_name] + 1
    assert after_stats[other_name] == before_stats[other_name]
    # The re-fetched block was stored again, whole and verified.
    cache.mem.clear()
    assert cache.get_cached(key) == source.block(key)
    audit(cache.settings).assert_consistent()


async def test_block_file_moved_onto_another_blocks_name(make_cache) -> None:
    spec = ObjectSpec("o", 3 * BS, compressible=False)
    source = Source.of([spec])
    cache = make_cache()
    await read_object(cache, source, spec.path)
    a, b = source.keys(spec.path)[:2]
    os.replace(_block_path(cache, a), _block_path(cache, b))
    cache.mem.clear()
    before = cache.stats()["tiers"]["ssd"]
    assert cache.get_cached(b) is None  # holds a's bytes: refused
    assert cache.get_cached(a) is None  # gone
    after = cache.stats()["tiers"]["ssd"]
    assert after["corrupt_blocks"] == before["corrupt_blocks"] + 1
    assert after["missing_blocks"] == before["missing_blocks"] + 1
    assert await read_object(cache, source, spec.path) == spec.data()
    assert source.fetches[a.digest] == 2 and source.fetches[b.digest] == 2
    audit(cache.settings).assert_consistent()


async def test_same_bytes_under_another_key_are_refused(make_cache) -> None:
    # Two keys of identical content: a copied file is still the wrong block for its name.
    cache = make_cache()
    data = b"same" * 1024
    k1 = BlockKey("mem|test", "one", "v1", 0, BS)
    k2 = BlockKey("mem|test", "two", "v1", 0, BS)
    cache.put(k1, data)
    cache.put(k2, data)
    shutil.copyfile(_block_path(cache, k1), _block_path(cache, k2))
    cache.mem.clear()
    assert cache.get_cached(k1) == data
    assert cache.get_cached(k2) is None


@pytest.mark.parametrize(
    "garbage", [b"", b"not a database at all" * 100, b"SQLite format 3\0" + b"\xff" * 4000]
)
def test_garbage_index_is_moved_aside_and_rebuilt_from_the_block_files(
    tmp_path: Path, garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings(str(tmp_path / "cache"))
    specs = make_objects(4, blocks=3, seed=4)
    source = Source.of(specs)
    cache = TieredCache(s)
    for spec in specs:
        asyncio.run(read_object(cache, source, spec.path))
    cache.close()
    index = tmp_path / "cache" / "index.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    index.write_bytes(garbage)
    with caplog.at_level(logging.WARNING):
        cache = TieredCache(s)
    try:
        if garbage:
            assert (tmp_path / "cache" / "index.sqlite.corrupt").read_bytes() == garbage
            assert "damaged" in caplog.text and "rebuilt from the" in caplog.text
        # The block files describe themselves: the new index accounts for every one of them
        # (an empty file is a new database to sqlite: the same rebuild).
        assert set(block_files(s.cache_dir)) == {
            k.digest for sp in specs for k in source.keys(sp.path)
        }
        assert cache.stats()["ssd_available"]
        fetched = source.total_fetches
        for spec in specs:
            assert asyncio.run(read_object(cache, source, spec.path)) == spec.data()
        assert source.total_fetches == fetched, "blocks of the damaged index were fetched again"
        cache.mem.clear()
        for spec in specs:
            assert read_object_sync(cache, source, spec.path) == spec.data()
        audit(s).assert_consistent()
    finally:
        cache.close()


# --- unusable directories ---------------------------------------------------------------------


def test_cache_dir_that_cannot_be_created_bypasses_to_the_backend(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Root ignores permission bits, so make the directory impossible instead: its parent is a
    # regular file (mkdir fails with NotADirectoryError, as it does for root too).
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    bypass = _bypass_total()
    with caplog.at_level(logging.WARNING):
        cache = TieredCache(settings(str(blocker / "cache")))
    try:
        specs = make_objects(3, blocks=3, seed=5)
        source = Source.of(specs)
        for spec in specs:
            assert asyncio.run(read_object(cache, source, spec.path)) == spec.data()
            assert read_object_sync(cache, source, spec.path) == spec.data()
        assert "unusable" in caplog.text
        # Every miss served around the tier is counted, not only the failure itself (the
        # second reads were MEM hits).
        misses = sum(len(source.keys(spec.path)) for spec in specs)
        assert source.total_fetches == misses
        assert _bypass_total() >= bypass + misses
        st = cache.stats()
        assert st["ssd_available"] is False
        assert st["tiers"]["ssd"]["used_bytes"] == 0
        cache.flush()
    finally:
        cache.close()
    assert blocker.read_text() == "a file, not a directory"


def test_new_mem_settings_apply_while_the_ssd_tier_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"  # the cache directory's parent is a file (see above)
    blocker.write_text("a file, not a directory")
    s = settings(str(blocker / "cache"), mem_quota=16 * BS)
    cache = TieredCache(s)
    try:
        specs = make_objects(6, blocks=4, seed=6)
        source = Source.of(specs)
        for spec in specs:
            assert asyncio.run(read_object(cache, source, spec.path)) == spec.data()
        held = cache.mem.usage_bytes
        assert held > 2 * BS
        lower = dataclasses.replace(s.store, mem_quota=2 * BS, eviction_policy="lru")
        with pytest.raises(TierUnavailableError):
            cache.apply(lower)
        assert cache.mem.quota_bytes == 2 * BS
        assert 0 < cache.mem.usage_bytes <= 2 * BS < held
        assert cache.settings.store == lower
    finally:
        cache.close()


def test_a_failed_cache_dir_is_tried_again_after_ssd_retry_seconds(tmp_path: Path) -> None:
    # The storage option, as a user passes it: the tier comes back once the directory can be
    # made, within the option's delay (by default 30 s, far beyond this test's wait).
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(3 * BS))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    options = {"cache_dir": str(blocker / "cache"), "block_size": BS, "ssd_retry_seconds": "0.2"}
    with fsspec.open(f"edgecache::file://{data}", "rb", edgecache=options) as f:
        assert f.read() == data.read_bytes()
        blocks = f.fs.engine.blocks
    assert blocks.stats()["ssd_available"] is False
    blocker.unlink()
    blocker.mkdir()
    wait_for(lambda: blocks.stats()["ssd_available"], timeout_seconds=5, what="the tier back")


def test_cache_dir_deleted_underneath_keeps_serving_exact_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    specs = make_objects(8, blocks=3, seed=6)
    source = Source.of(specs)
    s = settings(str(tmp_path / "cache"), mem_quota=2 * BS)
    cache = TieredCache(s)
    try:
        for spec in specs:
            assert asyncio.run(read_object(cache, source, spec.path)) == spec.data()
        bypass = _bypass_total()
        more = make_objects(8, blocks=3, seed=16, prefix="more")
        source.objects.update({m.path: m.data() for m in more})
        with caplog.at_level(logging.WARNING):
            shutil.rmtree(s.cache_dir)
            deadline = time.monotonic() + 2.5  # past the tier's 2 s check of its index file
            while time.monotonic() < deadline:
                for spec in specs + more:
                    assert read_object_sync(cache, source, spec.path) == spec.data()
                    assert asyncio.run(read_object(cache, source, spec.path)) == spec.data()
                time.sleep(0.05)
        assert _bypass_total() > bypass
        assert "unusable" in caplog.text
        cache.stats()
    finally:
        cache.close()
    # Whatever is on disk now is accounted for, and a new cache on the directory works.
    again = TieredCache(s)
    try:
        for spec in specs + more:
            assert read_object_sync(again, source, spec.path) == spec.data()
        assert again.stats()["ssd_available"]
        again.flush()
        audit(s).assert_consistent()
    finally:
        again.close()


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_bypasses_to_the_backend(
    tiny_tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Quota far above what the 256 KiB file system holds: block or index writes hit ENOSPC.
    s = settings(str(tiny_tmpfs / "cache"), ssd_quota=64 * 1024 * 1024, mem_quota=2 * BS)
    specs = [
        ObjectSpec(x.path, x.size, compressible=False) for x in make_objects(40, blocks=4, seed=8)
    ]
    source = Source.of(specs)
    full = metric("edgecache_cache_bypass_total", {"reason": "disk_full"})
    with caplog.at_level(logging.WARNING):
        cache = TieredCache(s)
        try:
            assert cache.stats()["ssd_available"]  # it starts fine, then fills up
            for _ in range(2):
                for spec in specs:
                    assert asyncio.run(read_object(cache, source, spec.path)) == spec.data()
                    assert read_object_sync(cache, source, spec.path) == spec.data()
            assert metric("edgecache_cache_bypass_total", {"reason": "disk_full"}) > full
            assert "disk_full" in caplog.text
            cache.stats()
        finally:
            cache.close()
    # Nothing half-written is left where a later run could mistake it for a block.
    again = TieredCache(s)
    try:
        for spec in specs:
            assert read_object_sync(again, source, spec.path) == spec.data()
    finally:
        again.close()


async def test_zero_quota_serves_from_the_backend_and_stores_nothing(make_cache) -> None:
    cache = make_cache(ssd_quota=0, mem_quota=0)
    specs = make_objects(3, blocks=2, seed=9)
    source = Source.of(specs)
    for _ in range(2):
        for spec in specs:
            assert await read_object(cache, source, spec.path) == spec.data()
    assert source.total_fetches == 2 * len(source.all_keys())
    assert block_files(cache.settings.cache_dir) == {}
    assert cache.stats()["tiers"]["ssd"]["used_bytes"] == 0


@pytest.mark.parametrize("mem_quota", [0, 64 * BS], ids=["ssd_direct", "via_mem"])
@pytest.mark.parametrize("compressible", [True, False], ids=["lz4", "raw"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_get_cached_into_never_fills_a_buffer_from_a_damaged_block(
    make_cache, damage: str, compressible: bool, mem_quota: int
) -> None:
    spec = ObjectSpec("victim", 3 * BS, compressible=compressible)
    source = Source.of([spec])
    cache = make_cache(mem_quota=mem_quota)
    asyncio.run(read_object(cache, source, spec.path))
    key = source.keys(spec.path)[1]
    out = bytearray(BS)
    cache.mem.clear()
    assert cache.get_cached_into(key, memoryview(out)) is True
    assert bytes(out) == source.block(key)
    cache.mem.clear()
    DAMAGE[damage](_block_path(cache, key))
    _, stat_name = _found_as(damage)
    found = cache.stats()["tiers"]["ssd"][stat_name]
    assert cache.get_cached_into(key, memoryview(bytearray(BS))) is False
    assert cache.stats()["tiers"]["ssd"][stat_name] == found + 1
    assert cache.holds(key) is False
    assert asyncio.run(read_object(cache, source, spec.path)) == spec.data()
    cache.mem.clear()
    out = bytearray(BS)
    assert cache.get_cached_into(key, memoryview(out)) is True
    assert bytes(out) == source.block(key)
    audit(cache.settings).assert_consistent()


async def test_block_read_from_disk_is_verified_once_then_served_from_memory(make_cache) -> None:
    # mem_quota=0: only the read buffer keeps a block in memory.
    spec = ObjectSpec("held", 3 * BS, compressible=False)
    source = Source.of([spec])
    cache = make_cache(mem_quota=0)
    assert await read_object(cache, source, spec.path) == spec.data()
    key = source.keys(spec.path)[1]
    hits = cache.stats()["tiers"]["ssd"]["hits"]
    assert cache.get_cached(key) == source.block(key)  # read from disk and verified...
    assert cache.stats()["tiers"]["ssd"]["hits"] == hits + 1
    # ... then held: the block file can change under it without a disk read noticing.
    DAMAGE["flip_payload_last"](_block_path(cache, key))
    for _ in range(3):
        assert cache.get_cached(key) == source.block(key)
    assert cache.stats()["tiers"]["ssd"]["hits"] == hits + 1
    # The next read from disk (the buffer let it go, as in another process) catches it.
    cache.mem.clear_read_buffer()
    corrupt = cache.stats()["tiers"]["ssd"]["corrupt_blocks"]
    assert cache.get_cached(key) is None
    assert cache.stats()["tiers"]["ssd"]["corrupt_blocks"] == corrupt + 1
    assert await read_object(cache, source, spec.path) == spec.data()
    assert source.fetches[key.digest] == 2


SEGMENTED_BS = 256 * 1024
"""Blocks this large are stored segmented (16 KiB segments here), smaller ones whole."""


@pytest.mark.parametrize("compressible", [True, False], ids=["lz4", "raw"])
@pytest.mark.parametrize("bs", [BS, SEGMENTED_BS])
@pytest.mark.parametrize("fraction", [0, 0.25, 0.5, 1])
async def test_an_open_block_reads_every_part_exactly(
    make_cache, compressible: bool, bs: int, fraction: float
) -> None:
    part = {0: 1000, 0.25: bs // 4 + 1, 0.5: bs // 2 - 1, 1: bs}[fraction]
    spec = ObjectSpec("parts", 2 * bs + 123, compressible=compressible)
    source = Source.of([spec], block_size=bs)
    cache = make_cache(mem_quota=0, block_size=bs, ssd_quota=16 * bs)
    assert await read_object(cache, source, spec.path) == spec.data()
    for key in source.keys(spec.path):
        block = source.block(key)
        if not compressible:  # big blocks are stored segmented, small ones whole
            stored = _block_path(cache, key).stat().st_size
            assert (stored > len(block) + HEADER_SIZE) == (len(block) >= 64 * 1024)
        opened = cache.open_block(key)
        assert opened is not None and opened.length == len(block)
        starts = range(0, len(block), part)
        parts = [opened.read(lo, min(lo + part, len(block))) for lo in starts]
        assert b"".join(p or b"!" for p in parts) == block
        out = bytearray(len(block))
        for lo in starts:
            assert opened.read_into(lo, memoryview(out)[lo : lo + part])
        assert out == block
        assert opened.read(3, len(block) - 1) == block[3:-1]  # across segment boundaries
        assert opened.read(len(block) - 1, len(block)) == block[-1:]
        opened.close()


@pytest.mark.parametrize("compressible", [True, False], ids=["lz4", "raw"])
@pytest.mark.parametrize("bs", [BS, SEGMENTED_BS])
@pytest.mark.parametrize(
    "damage", ["flip_payload_first", "flip_payload_last", "append_garbage", "truncate_half"]
)
async def test_an_open_block_never_returns_bytes_damaged_on_disk(
    make_cache, compressible: bool, bs: int, damage: str
) -> None:
    """Damage after a handle opened a block: the handle returns only verified bytes (a
    segmented block file is read and checked part by part, so it may find the damage itself);
    by the time a second handle has read every part, the damage was found and counted."""
    spec = ObjectSpec("victim", 2 * bs, compressible=compressible)
    source = Source.of([spec], block_size=bs)
    cache = make_cache(mem_quota=0, block_size=bs, ssd_quota=16 * bs)
    assert await read_object(cache, source, spec.path) == spec.data()
    key = source.keys(spec.path)[0]
    block = source.block(key)
    step = bs // 4 - 1
    corrupt = cache.stats()["tiers"]["ssd"]["corrupt_blocks"]
    first = cache.open_block(key)
    assert first is not None
    DAMAGE[damage](_block_path(cache, key))

    def read_every_part(opened: OpenBlock | None) -> None:
        for lo in range(0, bs, step) if opened is not None else ():
            got = opened.read(lo, min(lo + step, bs))
            assert got is None or got == block[lo : lo + step]
        if opened is not None:
            opened.close()

    read_every_part(first)
    read_every_part(cache.open_block(key))
    assert cache.stats()["tiers"]["ssd"]["corrupt_blocks"] == corrupt + 1
    assert cache.open_block(key) is None  # removed: the next read fetches it again
    assert await read_object(cache, source, spec.path) == spec.data()
    assert source.fetches[key.digest] == 2
