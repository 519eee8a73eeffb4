"""TieredCache through its public calls: hits per tier, persistence, keys, LZ4 on disk, stats."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from cachetestlib import (
    BS,
    ObjectSpec,
    Source,
    audit,
    block_files,
    make_objects,
    payload,
    read_object,
    read_object_sync,
    settings,
)

from edgecache.cache import BlockKey, TieredCache, tiered
from edgecache.cache._blockfile import uncompressed_file_bytes


async def test_miss_then_mem_then_ssd_hits_return_exact_bytes(make_cache) -> None:
    specs = make_objects(6, blocks=4)
    source = Source.of(specs)
    cache = make_cache()
    for s in specs:
        assert await read_object(cache, source, s.path) == s.data()
    fetched = source.total_fetches
    assert fetched == len(source.all_keys())
    # MEM holds some, SSD holds all: a second pass fetches nothing.
    for s in specs:
        assert await read_object(cache, source, s.path) == s.data()
    assert source.total_fetches == fetched
    cache.mem.clear()
    for s in specs:
        assert read_object_sync(cache, source, s.path) == s.data()
    assert source.total_fetches == fetched
    st = cache.stats()
    assert st["tiers"]["ssd"]["hits"] > 0 and st["tiers"]["mem"]["hits"] > 0
    assert st["tiers"]["backend"]["fetches"] == fetched
    audit(cache.settings).assert_consistent()


async def test_blocks_survive_a_restart(make_cache) -> None:
    specs = make_objects(4, blocks=3, seed=1)
    source = Source.of(specs)
    first = make_cache()
    for s in specs:
        await read_object(first, source, s.path)
    first.close()
    second = make_cache()
    for s in specs:
        assert read_object_sync(second, source, s.path) == s.data()
    assert source.total_fetches == len(source.all_keys())


def test_close_waits_for_the_background_writes_it_was_given(make_cache, caplog) -> None:
    # Pages of a sparse read go to disk behind the reader's back (put_soon); closing the cache
    # right after (engine close, interpreter exit) must store them, not drop them or log
    # errors about a closed index.
    pages = [
        (BlockKey("mem://", f"obj{i}", "v1", 0, BS), payload(f"obj{i}", BS, compressible=False))
        for i in range(48)
    ]
    first = make_cache()
    first.put_soon(pages)
    with caplog.at_level("WARNING"):
        first.close()
    # (Only the cache's own records: a collected object of an earlier test may log too.)
    assert not [r for r in caplog.records if r.name.startswith("edgecache")]
    second = make_cache()
    assert [key.path for key, data in pages if second.get_cached(key) != data] == []


def test_pages_given_close_together_are_written_later_in_one_batch(make_cache, monkeypatch) -> None:
    # The pages of sparse reads wait before their SSD write (the reader is sending its next
    # request then), and the pages given meanwhile join that write: 20 reads' pages keep one
    # I/O thread busy, not 20. They are served from memory at once all the same.
    monkeypatch.setattr(tiered, "_PAGE_WRITE_DELAY_SECONDS", 0.5)
    batches = [
        [
            (
                BlockKey("mem://", f"obj{i}", "v1", p, 4096),
                payload(f"obj{i}-{p}", 4096, compressible=False),
            )
            for p in (0, 1)
        ]
        for i in range(20)
    ]
    cache = make_cache(block_size=16 * BS)  # a read buffer (4 blocks) that holds all the pages
    before = set(_io_threads())
    for batch in batches:
        cache.put_soon(batch)
    assert len(set(_io_threads()) - before) == 1
    pages = [page for batch in batches for page in batch]
    assert [key.path for key, data in pages if cache.get_cached(key) != data] == []
    assert [key for key, _ in pages if cache.ssd.contains(key)] == []
    cache.close()
    second = make_cache(block_size=16 * BS)
    assert [key.path for key, data in pages if second.ssd.read(key) != data] == []


def _io_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("edgecache-io")]


def test_get_cached_never_fetches(make_cache) -> None:
    cache = make_cache()
    key = BlockKey("mem|test", "a", "v1", 0, BS)
    assert cache.get_cached(key) is None
    cache.put(key, b"x" * 100)
    assert cache.get_cached(key) == b"x" * 100


async def test_keys_keep_endpoints_versions_and_block_sizes_apart(make_cache) -> None:
    cache = make_cache()
    variants = [
        BlockKey("s3|http://10.0.0.1:9000", "b/k", "v1", 0, BS),
        BlockKey("s3|http://10.0.0.2:9000", "b/k", "v1", 0, BS),
        BlockKey("s3|http://10.0.0.1:9000", "b/k", "v2", 0, BS),
        BlockKey("s3|http://10.0.0.1:9000", "b/k", "v1", 0, 2 * BS),
        BlockKey("s3|http://10.0.0.1:9000", "b/k", "v1", 1, BS),
        BlockKey("s3|http://10.0.0.1:9000", "b/k\0v1", "", 0, BS),
    ]
    assert len({k.digest for k in variants}) == len(variants)
    for i, key in enumerate(variants):
        data = bytes([i]) * 64

        async def fetch(data: bytes = data) -> bytes:
            return data

        assert await cache.get(key, fetch) == data
    cache.mem.clear()
    for i, key in enumerate(variants):
        assert cache.get_cached(key) == bytes([i]) * 64


def test_on_disk_names_are_hashes_inside_the_cache_dir(make_cache, tmp_path) -> None:
    cache = make_cache()
    evil = BlockKey("file", "../../../../etc/passwd", "v1", 0, BS)
    cache.put(evil, b"not a password")
    for root, _dirs, files in os.walk(tmp_path):
        for name in files:
            assert "passwd" not in name
            assert os.path.realpath(root).startswith(os.path.realpath(tmp_path))
    assert list(block_files(cache.settings.cache_dir)) == [evil.digest]


async def test_wrong_length_from_backend_is_refused_and_not_cached(make_cache) -> None:
    cache = make_cache()
    key = BlockKey("mem|test", "changing", "v1", 0, BS)

    async def short() -> bytes:
        return b"x" * 10

    with pytest.raises(OSError, match="expected 4096"):
        await cache.get(key, short, expected_size=BS)
    assert cache.get_cached(key) is None
    assert block_files(cache.settings.cache_dir) == {}


async def test_invalidate_drops_both_tiers(make_cache) -> None:
    specs = make_objects(2, blocks=3, seed=2)
    source = Source.of(specs)
    cache = make_cache()
    for s in specs:
        await read_object(cache, source, s.path)
    cache.invalidate(source.keys(specs[0].path))
    for key in source.keys(specs[0].path):
        assert cache.get_cached(key) is None
    for key in source.keys(specs[1].path):
        assert cache.get_cached(key) == source.block(key)
    audit(cache.settings).assert_consistent()


def test_stats_report_every_tier_and_directory(make_cache, tmp_path) -> None:
    cache = make_cache(
        ssd_dirs=[(str(tmp_path / "a"), 32 * BS), (str(tmp_path / "b"), 16 * BS)],
    )
    specs = make_objects(8, blocks=2, seed=3)
    source = Source.of(specs)
    for s in specs:
        assert read_object_sync(cache, source, s.path) == s.data()
    st = cache.stats()
    dirs = st["tiers"]["ssd"]["directories"]
    assert [d["quota_bytes"] for d in dirs] == [32 * BS, 16 * BS]
    assert sum(d["blocks"] for d in dirs) == len(source.all_keys())
    # Placement is weighted by quota: both directories get blocks.
    assert all(d["blocks"] > 0 for d in dirs)
    assert st["tiers"]["ssd"]["used_bytes"] == sum(d["used_bytes"] for d in dirs)
    assert st["ssd_available"] is True
    a = audit(cache.settings)
    a.assert_consistent()
    assert a.file_sum == {i: d["used_bytes"] for i, d in enumerate(dirs)}


# --- LZ4 on the SSD tier ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "lz4"])
@pytest.mark.parametrize("block_size", [BS, 64 * 1024, 256 * 1024])
def test_compressible_blocks_are_stored_smaller_random_ones_raw(
    make_cache, mode: str, block_size: int
) -> None:
    cache = make_cache(compression=mode, block_size=block_size, ssd_quota=64 * block_size)
    text = BlockKey("mem|test", "text", "v1", 0, block_size)
    noise = BlockKey("mem|test", "noise", "v1", 0, block_size)
    text_data = payload("t", block_size, compressible=True)
    noise_data = payload("n", block_size, compressible=False)
    cache.put(text, text_data)
    cache.put(noise, noise_data)
    files = block_files(cache.settings.cache_dir)
    assert files[text.digest] < block_size * 0.5
    # The raw payload plus the header and its segment table (a checksum per 16-64 KiB).
    assert files[noise.digest] <= block_size * 1.025 + 64
    cache.mem.clear()
    assert cache.get_cached(text) == text_data
    assert cache.get_cached(noise) == noise_data


def test_compression_none_never_compresses(make_cache) -> None:
    cache = make_cache(compression="none")
    key = BlockKey("mem|test", "text", "v1", 0, BS)
    data = b"\0" * BS
    cache.put(key, data)
    assert block_files(cache.settings.cache_dir)[key.digest] >= BS
    cache.mem.clear()
    assert cache.get_cached(key) == data


def test_compression_kept_only_when_it_saves_the_configured_ratio(make_cache) -> None:
    # Half zeros, half noise: LZ4 saves about 50%. A 60% minimum saving stores it raw.
    data = b"\0" * (BS // 2) + payload("n", BS // 2, compressible=False)
    strict = make_cache(compression="lz4", compression_min_saving=0.6)
    key = BlockKey("mem|test", "half", "v1", 0, BS)
    strict.put(key, data)
    assert block_files(strict.settings.cache_dir)[key.digest] >= BS
    strict.mem.clear()
    assert strict.get_cached(key) == data


def test_compression_setting_can_change_between_runs(tmp_path) -> None:
    d = str(tmp_path / "c")
    key_a = BlockKey("mem|test", "a", "v1", 0, BS)
    key_b = BlockKey("mem|test", "b", "v1", 0, BS)
    data = payload("a", BS, compressible=True)
    first = TieredCache(settings(d, compression="lz4"))
    first.put(key_a, data)
    first.close()
    second = TieredCache(settings(d, compression="none"))
    try:
        second.put(key_b, data)
        assert second.get_cached(key_a) == data
        assert second.get_cached(key_b) == data
    finally:
        second.close()


async def test_many_objects_interleaved_tasks_in_one_loop(make_cache) -> None:
    specs = [ObjectSpec(f"p/{i}", 5 * BS + i, compressible=i % 3 == 0) for i in range(12)]
    source = Source.of(specs, delay_seconds=0.001)
    cache = make_cache(ssd_quota=256 * BS)
    results = await asyncio.gather(*(read_object(cache, source, s.path) for s in specs * 3))
    assert results == [s.data() for s in specs * 3]
    assert max(source.fetches.values()) == 1


async def test_ssd_hits_promote_to_mem_and_mem_evictions_demote_to_ssd(make_cache) -> None:
    cache = make_cache(
        mem_quota=4 * BS,
        ssd_quota=6 * uncompressed_file_bytes(BS),
        ssd_high=1.0,
        ssd_low=1.0,
        compression="none",
        eviction_policy="lru",  # plain recency makes which MEM block leaves predictable
    )
    a = ObjectSpec("a", 2 * BS, compressible=False)
    b = ObjectSpec("b", 6 * BS, compressible=False)
    c = ObjectSpec("c", 4 * BS, compressible=False)
    source = Source.of([a, b, c])
    a_keys = source.keys(a.path)
    assert await read_object(cache, source, a.path) == a.data()
    # SSD-only writes push a's blocks out of the SSD tier; MEM still has them.
    for key in source.keys(b.path):
        cache.ssd.write(key, source.block(key))
    assert not any(cache.ssd.contains(k) for k in a_keys)
    assert all(cache.mem.get(k.digest) is not None for k in a_keys)
    # Reading c fills MEM: a's blocks are evicted from MEM and demoted to SSD.
    assert await read_object(cache, source, c.path) == c.data()
    assert all(cache.mem.get(k.digest) is None for k in a_keys)
    assert all(cache.ssd.contains(k) for k in a_keys)
    fetched = source.total_fetches

    def ssd_hits() -> int:
        return int(cache.stats()["tiers"]["ssd"]["hits"])

    before = ssd_hits()
    for k in a_keys:
        # A first read from SSD is verified once and held in the read buffer: the reads that
        # follow are served from memory, not from disk...
        assert cache.get_cached(k) == source.block(k)
        assert cache.get_cached(k) == source.block(k)
    assert ssd_hits() == before + len(a_keys)
    # ... but it is not kept in MEM: once the buffer lets it go, it is read from disk again,
    # and that second read from disk promotes it to MEM.
    cache.mem.clear_read_buffer()
    for k in a_keys:
        assert cache.get_cached(k) == source.block(k)
    assert ssd_hits() == before + 2 * len(a_keys)
    cache.mem.clear_read_buffer()
    for k in a_keys:
        assert cache.get_cached(k) == source.block(k)
    assert ssd_hits() == before + 2 * len(a_keys)
    assert source.total_fetches == fetched
    audit(cache.settings).assert_consistent()


def test_a_block_read_into_a_buffer_twice_is_kept_in_mem(make_cache) -> None:
    # What a whole-file read does (get_cached_into per block): the first read from disk goes
    # straight into the buffer, the second is kept in MEM and the third is a MEM hit.
    spec = ObjectSpec("twice", 2 * BS, compressible=False)
    source = Source.of([spec])
    cache = make_cache(mem_quota=8 * BS)
    assert asyncio.run(read_object(cache, source, spec.path)) == spec.data()
    key = source.keys(spec.path)[1]
    cache.mem.clear()

    def read_into() -> bytes:
        out = bytearray(BS)
        assert cache.get_cached_into(key, memoryview(out)) is True
        return bytes(out)

    def hits(tier: str) -> int:
        return int(cache.stats()["tiers"][tier]["hits"])

    ssd, mem = hits("ssd"), hits("mem")
    assert read_into() == source.block(key)
    assert len(cache.mem) == 0 and hits("ssd") == ssd + 1
    assert read_into() == source.block(key)
    assert len(cache.mem) == 1 and cache.mem.usage_bytes == BS
    assert hits("ssd") == ssd + 2
    assert read_into() == source.block(key)
    assert hits("ssd") == ssd + 2 and hits("mem") == mem + 1


async def test_prometheus_metrics_follow_reads(make_cache) -> None:
    from cachetestlib import metric

    spec = ObjectSpec("m", 3 * BS, compressible=False)
    source = Source.of([spec])
    cache = make_cache(mem_quota=64 * BS)
    before = {
        "miss": metric("edgecache_cache_misses_total"),
        "mem": metric("edgecache_cache_hits_total", {"tier": "mem"}),
        "ssd": metric("edgecache_cache_hits_total", {"tier": "ssd"}),
        "wan": metric("edgecache_backend_read_bytes_total", {"backend": "mem"}),
        "from_backend": metric("edgecache_cache_read_bytes_total", {"source": "backend"}),
        "latency": metric("edgecache_backend_fetch_seconds_count", {"backend": "mem"}),
    }
    await read_object(cache, source, spec.path)  # 3 misses
    await read_object(cache, source, spec.path)  # 3 MEM hits
    cache.mem.clear()
    await read_object(cache, source, spec.path)  # 3 SSD hits
    assert metric("edgecache_cache_misses_total") == before["miss"] + 3
    assert metric("edgecache_cache_hits_total", {"tier": "mem"}) == before["mem"] + 3
    assert metric("edgecache_cache_hits_total", {"tier": "ssd"}) == before["ssd"] + 3
    assert metric("edgecache_backend_read_bytes_total", {"backend": "mem"}) == (
        before["wan"] + spec.size
    )
    assert metric("edgecache_cache_read_bytes_total", {"source": "backend"}) == (
        before["from_backend"] + spec.size
    )
    assert metric("edgecache_backend_fetch_seconds_count", {"backend": "mem"}) == (
        before["latency"] + 3
    )
    used = cache.stats()["tiers"]["ssd"]["used_bytes"]
    assert metric("edgecache_cache_usage_bytes", {"tier": "ssd"}) == used
    assert metric("edgecache_cache_quota_bytes", {"tier": "ssd"}) == cache.settings.ssd_quota
    st = cache.stats()
    assert st["tiers"]["mem"]["hits"] == 3 and st["tiers"]["ssd"]["hits"] == 3
    assert st["hit_ratio"] == pytest.approx(6 / 9)


def test_an_index_from_before_the_writing_column_is_upgraded(tmp_path) -> None:
    import sqlite3

    s = settings(str(tmp_path / "c"))
    specs = make_objects(3, blocks=2, seed=21)
    source = Source.of(specs)
    first = TieredCache(s)
    for spec in specs:
        read_object_sync(first, source, spec.path)
    first.close()
    db = sqlite3.connect(str(tmp_path / "c" / "index.sqlite"))
    db.execute("ALTER TABLE blocks DROP COLUMN writing")
    db.commit()
    db.close()
    second = TieredCache(s)
    try:
        fetched = source.total_fetches
        second.mem.clear()
        for spec in specs:
            assert read_object_sync(second, source, spec.path) == spec.data()
        assert source.total_fetches == fetched  # the old blocks are still served
        more = ObjectSpec("more", 2 * BS, compressible=False)
        source.objects[more.path] = more.data()
        assert read_object_sync(second, source, more.path) == more.data()
        audit(s).assert_consistent()
    finally:
        second.close()


async def test_a_follower_given_the_block_early_can_wait_until_it_is_stored(make_cache) -> None:
    # The leader of a fetch hands the bytes to the other readers of the block before storing
    # them; prefetch, which must report what is on disk, waits for the store (settled).
    cache = make_cache()
    key = BlockKey("mem|test", "early", "v1", 0, BS)
    data = payload("early", BS, compressible=False)
    fetched = asyncio.Event()

    async def fetch() -> bytes:
        await fetched.wait()
        return data

    leader = asyncio.create_task(cache.get(key, fetch, expected_size=BS))
    await asyncio.sleep(0)
    follower = asyncio.create_task(cache.get(key, fetch, expected_size=BS))
    await asyncio.sleep(0)
    fetched.set()
    assert await follower == data
    await cache.settled(key)
    assert cache.ssd.has_file(key)
    assert await leader == data
    await cache.settled(key)  # no flight: returns at once


def test_a_read_of_several_blocks_returns_only_once_no_thread_writes_into_its_buffer(
    make_cache,
) -> None:
    # The pieces are views of a bytes being filled in place (filled_bytes): the caller frees it
    # when a block is missing, so no I/O thread may still be writing into it by then.
    cache = make_cache()
    missing, slow = object(), object()
    written = threading.Event()

    def get_cached_into(key: object, out: memoryview) -> bool:
        if key is missing:
            return False
        time.sleep(0.2)  # a block file still being read while the other piece failed
        out[:] = b"x" * len(out)
        written.set()
        return True

    cache.get_cached_into = get_cached_into
    buffer = memoryview(bytearray(8))
    assert cache.get_cached_many_into([(missing, buffer[:4]), (slow, buffer[4:])]) is False
    assert written.is_set(), "returned while an I/O thread was still writing into the buffer"
