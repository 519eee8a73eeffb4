"""Property-based: random reads, pins, unpins, invalidations and restarts under small quotas.

After every step, on real files: every read returned exactly the source bytes; no SSD directory
holds more than its quota (measured on disk, not only as the index believes); the MEM tier stays
under its quota; the index accounts for exactly the files on disk; blocks covered by a pin that
were cached are still cached; a pin is refused (PinError) exactly when its reservation does not
fit next to the other pins.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile

import pytest
from cachetestlib import BS, ObjectSpec, Source, audit, block_files, read_object, settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from edgecache.cache import BlockKey, TieredCache
from edgecache.cache._blockfile import (
    HEADER_SIZE,
    CorruptBlockError,
    decode_block,
    encode_block,
    uncompressed_file_bytes,
)
from edgecache.cache.eviction import policy_by_name
from edgecache.cache.memory import MemoryTier
from edgecache.errors import PinError

PREFIXES = ["a/", "b/", "c/"]
BLOCK_FILE = uncompressed_file_bytes(BS)


class CacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="edgecache-prop-")
        self.cache: TieredCache | None = None
        self.other: TieredCache | None = None
        """A second cache on the same directories: another process, as far as the index sees."""
        self.pins: dict[str, int] = {}  # name (= prefix) -> reserved bytes
        self.pinned_cached: set[str] = set()

    @initialize(
        quotas=st.lists(st.integers(0, 24), min_size=1, max_size=3),
        mem_blocks=st.integers(0, 6),
        high=st.sampled_from([1.0, 0.9, 0.7]),
        low_fraction=st.sampled_from([1.0, 0.8, 0.5]),
        compression=st.sampled_from(["auto", "lz4", "none"]),
        policy=st.sampled_from(["s3fifo", "lru"]),
        shape=st.lists(
            st.tuples(st.integers(1, 5), st.integers(1, BS), st.booleans()),
            min_size=3,
            max_size=12,
        ),
    )
    def setup(
        self,
        quotas: list[int],
        mem_blocks: int,
        high: float,
        low_fraction: float,
        compression: str,
        policy: str,
        shape: list[tuple[int, int, bool]],
    ) -> None:
        dirs = [(f"{self.tmp}/d{i}", q * BLOCK_FILE) for i, q in enumerate(quotas)]
        self.settings = settings(
            dirs[0][0],
            ssd_dirs=dirs,
            mem_quota=mem_blocks * BS,
            ssd_high=high,
            ssd_low=high * low_fraction,
            compression=compression,
            eviction_policy=policy,
        )
        self.specs = [
            ObjectSpec(f"{PREFIXES[i % 3]}{i}", (n - 1) * BS + tail, compressible=c)
            for i, (n, tail, c) in enumerate(shape)
        ]
        self.source = Source.of(self.specs)
        self.cache = TieredCache(self.settings)
        self.other = TieredCache(self.settings)

    def _pick(self, which: int) -> TieredCache:
        cache = self.other if which else self.cache
        assert cache is not None
        return cache

    def teardown(self) -> None:
        for cache in (self.cache, self.other):
            if cache is not None:
                cache.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- rules -------------------------------------------------------------------------------
    @precondition(lambda self: self.cache is not None)
    @rule(data=st.data(), how=st.sampled_from(["async", "sync", "gather"]), which=st.integers(0, 1))
    def read(self, data: st.DataObject, how: str, which: int) -> None:
        spec = data.draw(st.sampled_from(self.specs))
        cache, source = self._pick(which), self.source
        if how == "async":
            got = [asyncio.run(read_object(cache, source, spec.path))]
        elif how == "gather":

            async def both() -> list[bytes]:
                return list(
                    await asyncio.gather(
                        read_object(cache, source, spec.path),
                        read_object(cache, source, spec.path),
                    )
                )

            got = asyncio.run(both())
        else:
            parts = []
            for key in source.keys(spec.path):
                block = cache.get_cached(key)
                if block is not None:
                    assert block == source.block(key)
                else:
                    block = asyncio.run(
                        cache.get(key, source.fetcher(key), expected_size=len(source.block(key)))
                    )
                parts.append(block)
            got = [b"".join(parts)]
        assert all(g == spec.data() for g in got)

    @precondition(lambda self: self.cache is not None)
    @rule(prefix=st.sampled_from(PREFIXES), blocks=st.integers(0, 40))
    def pin(self, prefix: str, blocks: int) -> None:
        assert self.cache is not None
        reserve = blocks * BLOCK_FILE
        total = sum(d.quota_bytes for d in self.settings.ssd_directories)
        others = sum(r for name, r in self.pins.items() if name != prefix)
        try:
            self.cache.pin(
                prefix, backend=self.source.backend, prefix=prefix, reserve_bytes=reserve
            )
        except PinError as exc:
            assert others + reserve > total
            assert prefix in str(exc)
        else:
            assert others + reserve <= total
            self.pins[prefix] = reserve

    @precondition(lambda self: self.cache is not None)
    @rule(prefix=st.sampled_from(PREFIXES))
    def unpin(self, prefix: str) -> None:
        assert self.cache is not None
        assert self.cache.unpin(prefix) is (prefix in self.pins)
        self.pins.pop(prefix, None)
        self.pinned_cached = {d for d in self.pinned_cached if self._pinned(self._key_of(d))}

    @precondition(lambda self: self.cache is not None)
    @rule(data=st.data(), which=st.integers(0, 1))
    def invalidate(self, data: st.DataObject, which: int) -> None:
        cache = self._pick(which)
        spec = data.draw(st.sampled_from(self.specs))
        keys = self.source.keys(spec.path)
        cache.invalidate(keys)
        self.pinned_cached -= {k.digest for k in keys}
        for key in keys:
            assert cache.get_cached(key) is None

    @precondition(lambda self: self.cache is not None)
    @rule(which=st.integers(0, 1))
    def restart(self, which: int) -> None:
        self._pick(which).close()
        if which:
            self.other = TieredCache(self.settings)
        else:
            self.cache = TieredCache(self.settings)

    # --- invariants --------------------------------------------------------------------------
    def _key_of(self, digest: str) -> str:
        return self._paths[digest]

    @property
    def _paths(self) -> dict[str, str]:
        return {k.digest: k.path for k in self.source.all_keys()}

    def _pinned(self, path: str) -> bool:
        return any(path.startswith(p) for p in self.pins)

    @precondition(lambda self: self.cache is not None)
    @invariant()
    def within_quotas_and_accounted(self) -> None:
        assert self.cache is not None
        a = audit(self.settings)
        a.assert_consistent()
        for i, d in enumerate(self.settings.ssd_directories):
            assert a.file_sum[i] <= d.quota_bytes
            assert a.used[i] <= d.quota_bytes
        assert self.cache.mem.usage_bytes <= self.settings.mem_quota
        assert self._pick(1).mem.usage_bytes <= self.settings.mem_quota
        st_ = self.cache.stats()
        assert st_["tiers"]["ssd"]["used_bytes"] == sum(a.used.values())

    @precondition(lambda self: self.cache is not None)
    @invariant()
    def pinned_blocks_stay_cached(self) -> None:
        on_disk: set[str] = set()
        for d in self.settings.ssd_directories:
            on_disk |= set(block_files(d.path))
        lost = self.pinned_cached - on_disk
        assert not lost, f"pinned blocks evicted: {lost}"
        paths = self._paths
        self.pinned_cached = {d for d in on_disk if d in paths and self._pinned(paths[d])}


CacheMachine.TestCase.settings = hsettings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCacheProperties = CacheMachine.TestCase


# --- smaller properties: the block format and the MEM tier ------------------------------------

DIGEST = "0123456789abcdef0123456789abcdef"


def _decode(blob: bytes) -> bytes:
    return decode_block(blob[:HEADER_SIZE], blob[HEADER_SIZE:], digest=DIGEST, max_raw_len=3 * BS)


block_data = st.one_of(
    st.binary(max_size=3 * BS),
    st.builds(
        lambda unit, n: (unit * n)[: 3 * BS],
        st.binary(min_size=1, max_size=64),
        st.integers(1, 400),
    ),
)


@hsettings(max_examples=200, deadline=None)
@given(
    data=block_data,
    mode=st.sampled_from(["auto", "lz4", "none"]),
    where=st.integers(min_value=0),
    flip=st.integers(1, 255),
)
def test_a_damaged_block_never_decodes_to_other_bytes(
    data: bytes, mode: str, where: int, flip: int
) -> None:
    blob = encode_block(data, digest=DIGEST, compression=mode, min_saving=0.1)
    assert _decode(blob) == data
    damaged = bytearray(blob)
    damaged[where % len(blob)] ^= flip
    if where % len(blob) < HEADER_SIZE:
        with pytest.raises(CorruptBlockError):
            _decode(bytes(damaged))  # every header bit counts: it is checked field by field
    else:
        with contextlib.suppress(CorruptBlockError):
            assert _decode(bytes(damaged)) == data  # LZ4 may decode a flipped bit the same
    with contextlib.suppress(CorruptBlockError):
        assert _decode(blob[: where % len(blob)]) == data
    with pytest.raises(CorruptBlockError):
        decode_block(blob[:HEADER_SIZE], blob[HEADER_SIZE:], digest="f" * 32, max_raw_len=3 * BS)


@hsettings(max_examples=100, deadline=None)
@given(
    ops=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 3 * BS)), max_size=80),
    quota=st.integers(0, 12 * BS),
    policy=st.sampled_from(["s3fifo", "lru"]),
)
def test_mem_tier_stays_under_quota_and_returns_what_was_put(
    ops: list[tuple[int, int]], quota: int, policy: str
) -> None:
    tier = MemoryTier(quota_bytes=quota, policy=policy_by_name(policy))
    truth: dict[str, bytes] = {}
    held: set[str] = set()
    for n, size in ops:
        key = BlockKey("mem|test", f"k{n}", "v1", 0, BS)
        data = truth.setdefault(key.digest, bytes([n]) * size)
        got = tier.get(key.digest)
        if got is None:
            for evicted_key, evicted in tier.put(key, data):
                assert evicted == truth[evicted_key.digest]
                held.discard(evicted_key.digest)
            if len(data) <= quota:
                held.add(key.digest)
        else:
            assert got == data
        assert tier.usage_bytes <= quota
        assert tier.usage_bytes == sum(len(truth[d]) for d in held)
        assert len(tier) == len(held)
