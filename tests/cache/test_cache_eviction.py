"""Eviction: S3-FIFO against LRU on a hot set plus a one-off scan, watermarks, pins."""

from __future__ import annotations

import asyncio
import errno
import sqlite3

import pytest
from cachetestlib import BS, ObjectSpec, Source, audit, block_files, read_object

from edgecache.cache import BlockKey
from edgecache.cache._blockfile import uncompressed_file_bytes
from edgecache.cache._index import open_index
from edgecache.cache.eviction import LRUPolicy, S3FIFOPolicy, policy_by_name
from edgecache.cache.memory import MemoryTier
from edgecache.errors import PinError

BLOCK_FILE = uncompressed_file_bytes(BS)  # stored size of an incompressible block


def _key(name: str, i: int) -> BlockKey:
    return BlockKey("mem|test", name, "v1", i, BS)


# --- MEM tier (MemoryPolicyStore) ---------------------------------------------------------------


def _hot_set_hits_after_scan(policy_name: str) -> int:
    tier = MemoryTier(quota_bytes=100 * 1024, policy=policy_by_name(policy_name))
    hot = [_key("hot", i) for i in range(40)]
    for _ in range(3):
        for k in hot:
            if tier.get(k.digest) is None:
                tier.put(k, b"h" * 1024)
    for i in range(300):  # a one-off scan three times the tier's size
        k = _key("scan", i)
        assert tier.get(k.digest) is None
        tier.put(k, b"s" * 1024)
        assert tier.usage_bytes <= tier.quota_bytes
    return sum(tier.get(k.digest) is not None for k in hot)


def test_s3fifo_keeps_the_hot_set_through_a_scan_in_memory_lru_loses_it() -> None:
    s3fifo = _hot_set_hits_after_scan("s3fifo")
    lru = _hot_set_hits_after_scan("lru")
    assert s3fifo == 40
    assert lru == 0


def test_s3fifo_beats_lru_on_a_scan_mix_trace() -> None:
    # Hot accesses interleaved with a long scan: the hot keys' reuse distance exceeds the
    # capacity, which defeats LRU but not S3-FIFO.
    def hit_ratio(policy_name: str) -> float:
        tier = MemoryTier(quota_bytes=100 * 1024, policy=policy_by_name(policy_name))
        hits = reads = 0
        scan = 0
        for rnd in range(30):
            for j in range(40):
                k = _key("hot", j)
                reads += 1
                if tier.get(k.digest) is not None:
                    hits += 1
                else:
                    tier.put(k, b"h" * 1024)
                if rnd > 0:
                    for _ in range(3):
                        s = _key("scan", scan)
                        scan += 1
                        reads += 1
                        if tier.get(s.digest) is None:
                            tier.put(s, b"s" * 1024)
        return hits / reads

    assert hit_ratio("s3fifo") > hit_ratio("lru") + 0.15


def test_memory_tier_returns_what_it_evicts_for_demotion() -> None:
    tier = MemoryTier(quota_bytes=4 * BS, policy=S3FIFOPolicy())
    evicted = []
    for i in range(10):
        evicted += tier.put(_key("x", i), bytes([i]) * BS)
        assert tier.usage_bytes <= 4 * BS
    assert len(evicted) == 6
    assert all(data == bytes([k.index]) * BS for k, data in evicted)


def test_policy_names() -> None:
    assert isinstance(policy_by_name("lru"), LRUPolicy)
    assert isinstance(policy_by_name("s3fifo"), S3FIFOPolicy)


# --- SSD tier (the policy over the sqlite index) --------------------------------------------------


def _ssd_hot_refetches(make_cache, tmp_path, policy: str) -> int:
    cache = make_cache(
        cache_dir=str(tmp_path / policy),
        eviction_policy=policy,
        mem_quota=0,
        ssd_quota=100 * BLOCK_FILE,
        ssd_high=1.0,
        ssd_low=0.95,
        compression="none",
    )
    hot = ObjectSpec("hot", 40 * BS, compressible=False)
    scan = [ObjectSpec(f"scan/{i}", 10 * BS, compressible=False) for i in range(30)]
    source = Source.of([hot, *scan])

    async def run() -> int:
        for _ in range(3):
            assert await read_object(cache, source, hot.path) == hot.data()
        cache.flush()  # hits reach the index in batches; make them count now
        for s in scan:
            assert await read_object(cache, source, s.path) == s.data()
            assert audit(cache.settings).used[0] <= 100 * BLOCK_FILE
        before = source.total_fetches
        # The read buffer still holds the last hot blocks read; the question is what the SSD
        # tier kept.
        cache.mem.clear_read_buffer()
        assert await read_object(cache, source, hot.path) == hot.data()
        return source.total_fetches - before

    return asyncio.run(run())


def test_s3fifo_keeps_the_hot_set_through_a_scan_on_ssd_lru_loses_it(make_cache, tmp_path) -> None:
    assert _ssd_hot_refetches(make_cache, tmp_path, "s3fifo") == 0
    assert _ssd_hot_refetches(make_cache, tmp_path, "lru") == 40


@pytest.mark.parametrize(("first", "then"), [("s3fifo", "lru"), ("lru", "s3fifo")])
def test_changing_the_policy_of_a_full_cache_dir_keeps_evicting(
    make_cache, tmp_path, first: str, then: str
) -> None:
    opts = {"mem_quota": 0, "ssd_quota": 20 * BLOCK_FILE, "compression": "none"}
    hot = ObjectSpec("hot", 15 * BS, compressible=False)
    scan = [ObjectSpec(f"scan/{i}", 10 * BS, compressible=False) for i in range(6)]
    source = Source.of([hot, *scan])
    before = make_cache(eviction_policy=first, **opts)
    for _ in range(3):
        asyncio.run(read_object(before, source, hot.path))
    before.flush()
    asyncio.run(read_object(before, source, scan[0].path))  # hot blocks move to S3-FIFO's main
    before.close()
    after = make_cache(eviction_policy=then, **opts)
    for s in scan * 2:
        assert asyncio.run(read_object(after, source, s.path)) == s.data()
    # The scan is stored (the cache did not wedge full of the other policy's blocks).
    fetched = source.total_fetches
    assert asyncio.run(read_object(after, source, scan[-1].path)) == scan[-1].data()
    assert source.total_fetches == fetched
    audit(after.settings).assert_consistent()


@pytest.mark.parametrize("policy", ["s3fifo", "lru"])
def test_past_high_watermark_usage_drops_to_low(make_cache, policy: str) -> None:
    quota = 50 * BLOCK_FILE
    cache = make_cache(
        eviction_policy=policy,
        mem_quota=0,
        ssd_quota=quota,
        ssd_high=0.8,
        ssd_low=0.5,
        compression="none",
    )
    spec = ObjectSpec("stream", 200 * BS, compressible=False)
    source = Source.of([spec])
    evictions = 0
    peaks = []
    for key in source.keys(spec.path):
        cache.put(key, source.block(key))
        st = cache.stats()["tiers"]["ssd"]
        assert st["used_bytes"] <= 0.8 * quota
        if st["evictions"] > evictions:
            evictions = st["evictions"]
            assert st["used_bytes"] <= 0.5 * quota
            peaks.append(st["used_bytes"])
        assert st["used_bytes"] == audit(cache.settings).file_sum[0]
    # Evictions come in batches (high -> low), not one per insert.
    assert 5 <= len(peaks) <= 200 // 10


def test_every_ssd_directory_keeps_its_own_quota(make_cache, tmp_path) -> None:
    quotas = [30 * BLOCK_FILE, 10 * BLOCK_FILE]
    cache = make_cache(
        ssd_dirs=[(str(tmp_path / "big"), quotas[0]), (str(tmp_path / "small"), quotas[1])],
        mem_quota=0,
        compression="none",
    )
    spec = ObjectSpec("s", 300 * BS, compressible=False)
    source = Source.of([spec])
    for key in source.keys(spec.path):
        cache.put(key, source.block(key))
        a = audit(cache.settings)
        for i, q in enumerate(quotas):
            assert a.file_sum[i] <= q
    a.assert_consistent()
    assert all(a.file_sum[i] > 0.5 * quotas[i] for i in range(2))


# --- pins --------------------------------------------------------------------------------------


def test_pinned_blocks_survive_eviction_and_unpin_releases_them(make_cache) -> None:
    cache = make_cache(mem_quota=0, ssd_quota=40 * BLOCK_FILE, compression="none")
    keep = ObjectSpec("datasets/keep/a", 10 * BS, compressible=False)
    scan = [ObjectSpec(f"scan/{i}", 10 * BS, compressible=False) for i in range(20)]
    source = Source.of([keep, *scan])
    cache.pin("keep", backend=source.backend, prefix="datasets/keep/", reserve_bytes=10 * BS)

    async def scan_all() -> None:
        for s in scan:
            assert await read_object(cache, source, s.path) == s.data()

    asyncio.run(read_object(cache, source, keep.path))
    asyncio.run(scan_all())
    files = block_files(cache.settings.cache_dir)
    assert all(k.digest in files for k in source.keys(keep.path))
    st = cache.stats()
    assert st["tiers"]["ssd"]["directories"][0]["pinned_bytes"] == 10 * BLOCK_FILE
    assert [p["name"] for p in st["pins"]] == ["keep"]
    assert cache.unpin("keep") is True
    assert cache.unpin("keep") is False
    asyncio.run(scan_all())
    files = block_files(cache.settings.cache_dir)
    assert not any(k.digest in files for k in source.keys(keep.path))
    audit(cache.settings).assert_consistent()


def test_pinning_existing_blocks_marks_them(make_cache) -> None:
    cache = make_cache(mem_quota=0, compression="none")
    spec = ObjectSpec("ds/x", 3 * BS, compressible=False)
    source = Source.of([spec])
    asyncio.run(read_object(cache, source, spec.path))
    cache.pin("ds", backend=source.backend, prefix="ds/", reserve_bytes=0)
    assert audit(cache.settings).pinned[0] == 3 * BLOCK_FILE
    # Another backend's blocks under the same path are not covered.
    other = BlockKey("s3|http://elsewhere", "ds/x", "v1", 0, BS)
    cache.put(other, b"o" * BS)
    assert audit(cache.settings).pinned[0] == 3 * BLOCK_FILE
    cache.unpin("ds")
    assert audit(cache.settings).pinned[0] == 0


def test_a_pin_that_cannot_fit_is_refused(make_cache) -> None:
    quota = 40 * BLOCK_FILE
    cache = make_cache(ssd_quota=quota)
    with pytest.raises(PinError, match="big"):
        cache.pin("big", backend="mem|test", prefix="a/", reserve_bytes=quota + 1)
    cache.pin("half", backend="mem|test", prefix="a/", reserve_bytes=quota // 2)
    with pytest.raises(PinError, match="half"):  # names the pins holding the rest
        cache.pin("more", backend="mem|test", prefix="b/", reserve_bytes=quota // 2 + 1)
    cache.pin("more", backend="mem|test", prefix="b/", reserve_bytes=quota // 2)
    # Re-pinning a name replaces its reservation rather than adding to it.
    cache.pin("half", backend="mem|test", prefix="a/", reserve_bytes=quota // 2)
    assert sorted(p["name"] for p in cache.stats()["pins"]) == ["half", "more"]
    cache.unpin("half")
    cache.pin("more", backend="mem|test", prefix="b/", reserve_bytes=quota)


def test_pinned_data_filling_the_quota_still_serves_exact_bytes(make_cache) -> None:
    cache = make_cache(mem_quota=0, ssd_quota=10 * BLOCK_FILE, compression="none")
    pinned = ObjectSpec("p/all", 12 * BS, compressible=False)
    other = ObjectSpec("q/x", 4 * BS, compressible=False)
    source = Source.of([pinned, other])
    cache.pin("p", backend=source.backend, prefix="p/", reserve_bytes=10 * BLOCK_FILE)
    for _ in range(2):
        assert asyncio.run(read_object(cache, source, pinned.path)) == pinned.data()
        assert asyncio.run(read_object(cache, source, other.path)) == other.data()
    a = audit(cache.settings)
    a.assert_consistent()
    assert a.used[0] <= 10 * BLOCK_FILE
    assert a.pinned[0] == a.used[0] == 10 * BLOCK_FILE


def test_a_stored_block_that_no_longer_fits_leaves_no_unaccounted_file(tmp_path) -> None:
    # A block stored LZ4-compressed (small) in a directory full of pinned blocks is stored again
    # after compression was turned off: the raw block cannot fit. Its old file must not stay
    # behind without a row.
    from cachetestlib import payload, settings

    from edgecache.cache import TieredCache

    quota = 10 * BLOCK_FILE
    opts = {"mem_quota": 0, "ssd_quota": quota, "ssd_high": 1.0, "ssd_low": 1.0}
    first = TieredCache(settings(str(tmp_path / "c"), compression="lz4", **opts))
    first.pin("p", backend="mem|test", prefix="p/", reserve_bytes=quota)
    for i in range(9):
        first.put(_key("p/full", i), payload(f"f{i}", BS, compressible=False))
    first.put(_key("p/half", 0), payload("h", BS // 2, compressible=False))
    x = _key("p/x", 0)
    x_data = payload("x", BS, compressible=True)
    first.put(x, x_data)
    assert block_files(first.settings.cache_dir)[x.digest] < BS // 2
    first.close()
    second = TieredCache(settings(str(tmp_path / "c"), compression="none", **opts))
    try:
        second.put(x, x_data)
        audit(second.settings).assert_consistent()
        second.mem.clear()
        got = second.get_cached(x)
        assert got is None or got == x_data
    finally:
        second.close()


def _index_sql(cache_dir: str, sql: str, *args: object) -> int:
    """Run ``sql`` on the SSD index through a connection of its own (another process's view);
    the first column of its first row, or 0 for a statement that returns none."""
    db = sqlite3.connect(f"{cache_dir}/index.sqlite", timeout=30)
    try:
        with db:
            row = db.execute(sql, args).fetchone()
    finally:
        db.close()
    return int(row[0]) if row else 0


def _freq(cache_dir: str, key: BlockKey) -> int:
    return _index_sql(cache_dir, "SELECT freq FROM blocks WHERE digest=?", key.digest)


def _set_freq(cache_dir: str, key: BlockKey, freq: int) -> None:
    _index_sql(cache_dir, "UPDATE blocks SET freq=? WHERE digest=?", freq, key.digest)


def test_hits_of_a_block_at_its_saturated_frequency_are_not_written_until_it_is_stored_again(
    make_cache, tmp_path
) -> None:
    # A warm loop over thousands of files under S3-FIFO: once a block's frequency is at its
    # cap a hit changes nothing, and noting it cost the flusher a row look-up per file. Seen
    # from outside: while the block is settled, a lower frequency written by someone else (an
    # eviction pass in another process) is not raised again by this process's hits.
    cache_dir = str(tmp_path / "c")
    cache = make_cache(cache_dir=cache_dir, mem_quota=0, compression="none")
    spec = ObjectSpec("f", BS // 4, compressible=False)
    source = Source.of([spec])
    (key,) = source.keys("f")
    assert asyncio.run(read_object(cache, source, "f")) == spec.data()
    for _ in range(S3FIFOPolicy.max_freq):
        assert cache.get_cached(key, hold=False) == spec.data()
    cache.flush()
    assert _freq(cache_dir, key) == S3FIFOPolicy.max_freq

    _set_freq(cache_dir, key, 1)
    for _ in range(2):
        assert cache.get_cached(key, hold=False) == spec.data()
    cache.flush()
    assert _freq(cache_dir, key) == 1, "a settled block's hits were written"

    # Stored again (a new row): its hits count from the first one.
    cache.ssd.discard(key)
    assert asyncio.run(read_object(cache, source, "f")) == spec.data()
    assert source.total_fetches == 2
    for _ in range(2):
        assert cache.get_cached(key, hold=False) == spec.data()
    cache.flush()
    assert _freq(cache_dir, key) == 2


def test_under_lru_every_hit_is_still_written(make_cache, tmp_path) -> None:
    cache_dir = str(tmp_path / "c")
    cache = make_cache(cache_dir=cache_dir, mem_quota=0, compression="none", eviction_policy="lru")
    specs = [ObjectSpec(f"f{i}", BS // 4, compressible=False) for i in range(3)]
    source = Source.of(specs)
    keys = [source.keys(s.path)[0] for s in specs]

    def seq(key: BlockKey) -> int:
        return _index_sql(cache_dir, "SELECT seq FROM blocks WHERE digest=?", key.digest)

    for s in specs:
        assert asyncio.run(read_object(cache, source, s.path)) == s.data()
    for _ in range(3):  # each round moves f0 behind the others
        for key in keys[1:] + keys[:1]:
            assert cache.get_cached(key, hold=False) is not None
        cache.flush()
        assert seq(keys[0]) > max(seq(k) for k in keys[1:])
        keys = keys[1:] + keys[:1]


def test_a_writer_whose_row_was_evicted_while_it_wrote_never_puts_its_file_in_place(
    tmp_path,
) -> None:
    # Two writers under a quota of one block: the second one's reservation evicts the first
    # one's row while the first is still writing. The first writer's rename is asked for
    # only inside the transaction that confirms its row, so it never runs: a file in place
    # without a row would be outside the quota (and left there for good if the writer was
    # killed before it noticed).
    index, _ = open_index(
        str(tmp_path / "index.sqlite"),
        quotas=[BLOCK_FILE],
        policy=policy_by_name("s3fifo"),
        found_blocks=list,
        repair_lock=str(tmp_path / "index.lock"),
    )
    evicted: list[str] = []
    placed: list[str] = []

    def reserve(digest: str, token: str) -> bool:
        return index.reserve(
            digest,
            dir_id=0,
            size=BLOCK_FILE,
            raw=BS,
            backend="mem|test",
            path="p",
            high=1.0,
            low=1.0,
            unlink=lambda victim, _dir: evicted.append(victim),
            token=token,
        )

    try:
        assert reserve("a" * 32, "first")
        assert reserve("b" * 32, "second")
        assert evicted == ["a" * 32]
        assert not index.complete("a" * 32, "first", place=lambda: placed.append("a"))
        assert index.complete("b" * 32, "second", place=lambda: placed.append("b"))
        assert placed == ["b"]
        # The same digest reserved again by another writer: the earlier writer's file is not
        # the one the row accounts for, so it is not placed either.
        assert reserve("c" * 32, "old") and reserve("c" * 32, "new")
        assert not index.complete("c" * 32, "old", place=lambda: placed.append("c old"))

        # A rename that fails rolls the confirmation back: the row stays this writer's.
        def fail() -> None:
            raise OSError(errno.EROFS, "read-only file system")

        with pytest.raises(OSError):
            index.complete("c" * 32, "new", place=fail)
        assert index.forget("c" * 32, token="new")
        assert placed == ["b"]
    finally:
        index.close()
