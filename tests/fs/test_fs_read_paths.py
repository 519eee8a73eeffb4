"""The read paths a user takes give exact bytes: ``f.read(n)``/``readinto`` of every size at every
offset, ``cat_file`` and ``cat_ranges``, warm from MEM or from the SSD tier alone; sparse misses
fetch pages, and sequential reads of the same object then whole blocks; a block file damaged on
disk between two opens is caught on the next read from disk, never returned."""

from __future__ import annotations

import functools
import itertools
import random
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fstestlib import pattern
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecache.metrics import REGISTRY

KiB = 1024
BS = 256 * KiB
"""Blocks of 256 KiB: 16 pages of 16 KiB each, so sparse reads use pages."""
PAGE = 16 * KiB
FINE_PAGE = 4 * KiB
"""The page grid of reads of at most half a page (a 4 KiB read fetches 4-8 KiB)."""

_names = itertools.count()


def _write(directory: Path, size: int) -> tuple[str, bytes]:
    data = pattern(size, seed=next(_names))
    path = directory / f"obj-{next(_names)}.bin"
    path.write_bytes(data)
    return str(path), data


@pytest.fixture(scope="module")
def cache_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {quota: str(tmp_path_factory.mktemp(f"cache-{quota}")) for quota in ("0", "64MiB")}


_ops = st.lists(
    st.tuples(
        st.sampled_from(["read", "readinto", "cat_file", "seek_read"]),
        st.floats(0, 1.05),
        st.sampled_from([0, 1, 100, 4 * KiB, 64 * KiB, BS // 4, BS - 1, BS, BS + 7, 3 * BS, -1]),
    ),
    min_size=1,
    max_size=12,
)


@pytest.mark.parametrize("mem_quota", ["0", "64MiB"], ids=["ssd-only", "mem"])
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(size=st.sampled_from([0, 1, PAGE - 1, BS, BS + 1, 3 * BS + 12345]), ops=_ops)
def test_every_read_size_and_offset_gives_the_exact_bytes(
    make_fs: Any,
    tmp_path_factory: pytest.TempPathFactory,
    cache_dirs: dict[str, str],
    mem_quota: str,
    size: int,
    ops: Any,
) -> None:
    # One cache directory for all examples (each reads a new object: cold, then warm).
    fs = make_fs("file", block_size=BS, mem_quota=mem_quota, cache_dir=cache_dirs[mem_quota])
    path, data = _write(tmp_path_factory.mktemp("src"), size)
    for warm in (False, True):  # cold (fetching), then every block cached
        with fs.open(path, "rb") as f:
            for op, where, length in ops:
                offset = int(where * size)
                if op == "cat_file":
                    end = None if length < 0 else offset + length
                    assert fs.cat_file(path, start=offset, end=end) == data[offset:end], warm
                    continue
                if op == "seek_read":
                    f.seek(offset)
                loc = f.tell()
                want = data[loc:] if length < 0 else data[loc : loc + length]
                if op == "readinto":
                    buffer = bytearray(max(length, 0) if length >= 0 else size + 10)
                    got = bytes(buffer[: f.readinto(buffer)])
                else:
                    got = f.read(length)
                assert got == want, (warm, op, loc, length)
                assert f.tell() == loc + len(want)
        starts = [int(w * size) for _, w, _ in ops]
        ends = [s + max(n, 0) for s, (_, _, n) in zip(starts, ops, strict=True)]
        assert fs.cat_ranges([path] * len(ops), starts, ends) == [
            data[s:e] for s, e in zip(starts, ends, strict=True)
        ]


def test_sparse_reads_fetch_pages_then_sequential_reads_fetch_blocks(
    make_fs: Any, tmp_path: Path
) -> None:
    fs = make_fs("countfile", block_size=BS)
    path, data = _write(tmp_path, 6 * BS + 999)
    rng = random.Random(5)
    ranges = [(s, s + 4 * KiB) for s in (rng.randrange(len(data) - 4 * KiB) for _ in range(5))]
    for start, end in ranges:
        assert fs.cat_file(path, start=start, end=end) == data[start:end]
    fetched = list(fs.backend.fetched)
    # Each 4 KiB read fetched the one or two 4 KiB pages it covers, not its 256 KiB block
    # (nor 16 KiB pages).
    assert sum(end - start for _, start, end in fetched) <= len(ranges) * 2 * FINE_PAGE
    assert all(start % FINE_PAGE == 0 for _, start, _ in fetched)
    # The same ranges again, and all of them at once: served from the pages kept.
    assert fs.cat_ranges([path] * 5, [r[0] for r in ranges], [r[1] for r in ranges]) == [
        data[s:e] for s, e in ranges
    ]
    assert fs.backend.fetched == fetched
    # A sequential read of the whole object: whole blocks, exact bytes (pages are no blocks).
    with fs.open(path, "rb") as f:
        chunks = iter(lambda: f.read(64 * KiB), b"")
        assert b"".join(chunks) == data
    blocks = [(s, e) for _, s, e in fs.backend.fetched[len(fetched) :]]
    assert sorted(blocks) == [(i * BS, min((i + 1) * BS, len(data))) for i in range(7)]
    for start, end in ranges:
        assert fs.cat_file(path, start=start, end=end) == data[start:end]


def test_a_cold_small_cat_file_does_not_open_the_block_it_misses(
    make_fs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before going to the loop, cat_file looks for the range in the tiers. For part of a block
    # that no tier holds, that look costs a stat: reading it from the SSD tier (an open that
    # fails, then an index query to tell a lost block from one never stored) came before,
    # once per cold 4 KiB read.
    fs = make_fs("countfile", block_size=BS)
    path, data = _write(tmp_path, 4 * BS)
    assert fs.cat_file(path, start=0, end=10) == data[:10]  # the plan is cached from here on
    opened: list[Any] = []
    ssd = fs.cache.ssd
    read = ssd.read
    monkeypatch.setattr(ssd, "read", lambda key: opened.append(key) or read(key))
    for start in (BS + 5, 2 * BS + 7 * KiB, 3 * BS + 100):
        assert fs.cat_file(path, start=start, end=start + 4 * KiB) == data[start : start + 4 * KiB]
    assert opened == []
    # A block the SSD tier holds is still read from it.
    fs.cat_file(path, start=0, end=BS)
    fs.cache.mem.clear()
    fs.cache.mem.clear_read_buffer()
    assert fs.cat_file(path, start=5, end=4 * KiB) == data[5 : 4 * KiB]
    assert opened and {key.index for key in opened} == {0}


def test_small_sequential_reads_of_a_cold_object_fetch_whole_blocks(
    make_fs: Any, tmp_path: Path
) -> None:
    fs = make_fs("countfile", block_size=BS)
    path, data = _write(tmp_path, 2 * BS)
    with fs.open(path, "rb") as f:
        assert b"".join(iter(lambda: f.read(4 * KiB), b"")) == data
    # At most the first read took a page; everything after it came in whole blocks.
    sizes = [end - start for _, start, end in fs.backend.fetched]
    assert sizes.count(BS) == 2 and sum(sizes) <= 2 * BS + PAGE


def test_dense_small_reads_of_one_block_widen_to_the_block(make_fs: Any, tmp_path: Path) -> None:
    fs = make_fs("countfile", block_size=BS)
    path, data = _write(tmp_path, BS)
    for i in range(8):
        start = (i * 37 + 3) * KiB % (BS - KiB)
        assert fs.cat_file(path, start=start, end=start + 100) == data[start : start + 100]
    assert (0, BS) in [(s, e) for _, s, e in fs.backend.fetched]
    before = len(fs.backend.fetched)
    assert fs.cat_file(path, start=BS - 50, end=BS) == data[-50:]
    assert len(fs.backend.fetched) == before


def _corrupt_blocks() -> float:
    return REGISTRY.get_sample_value("edgecache_cache_corrupt_blocks_total") or 0.0


def test_block_damaged_on_disk_between_two_opens_is_caught(tmp_path: Path) -> None:
    path, data = _write(tmp_path, 8 * BS)
    cache_dir = tmp_path / "cache"
    options = {"cache_dir": str(cache_dir), "block_size": BS, "mem_quota": "0"}
    url = f"edgecache::file://{path}"
    with fsspec.open(url, "rb", edgecache=options) as f:
        assert f.read() == data
    for block in (cache_dir / "blocks").rglob("*"):
        if block.is_file():
            raw = bytearray(block.read_bytes())
            raw[-1] ^= 0xFF
            block.write_bytes(bytes(raw))
    before = _corrupt_blocks()
    for size in (BS, 64 * KiB, -1):
        with fsspec.open(url, "rb", edgecache=options) as f:
            got = b"".join(iter(functools.partial(f.read, size), b"")) if size > 0 else f.read()
        assert got == data
    # Blocks held in memory since they were verified may be served from there; every block
    # read from disk again was refused and fetched anew (never the damaged bytes).
    assert _corrupt_blocks() >= before + 4


def test_a_small_file_damaged_on_disk_between_two_opens_is_caught(tmp_path: Path) -> None:
    # A file of one block read whole takes the short way (one cache look-up): it verifies too.
    path, data = _write(tmp_path, BS // 2)
    cache_dir = tmp_path / "cache"
    options = {"cache_dir": str(cache_dir), "block_size": BS, "mem_quota": "0"}
    url = f"edgecache::file://{path}"
    for _ in range(2):
        with fsspec.open(url, "rb", edgecache=options) as f:
            assert f.read() == data
    (block,) = (b for b in (cache_dir / "blocks").rglob("*") if b.is_file())
    raw = bytearray(block.read_bytes())
    raw[-1] ^= 0xFF
    block.write_bytes(bytes(raw))
    before = _corrupt_blocks()
    with fsspec.open(url, "rb", edgecache=options) as f:
        assert f.read() == data
    assert _corrupt_blocks() == before + 1
    with fsspec.open(url, "rb", edgecache=options) as f:
        assert f.read() == data  # fetched again and stored: read from the new file
    assert _corrupt_blocks() == before + 1


@pytest.mark.parametrize("call", ["read", "readinto"])
@pytest.mark.parametrize("read_size", [BS, BS // 4], ids=["whole-blocks", "quarters"])
def test_a_damaged_middle_segment_is_caught_by_each_read_path(
    tmp_path: Path, call: str, read_size: int
) -> None:
    """One byte flipped in a middle segment of every block file (256 KiB blocks are stored in
    64 KiB segments): a whole-block read (checked by the header's checksum) and a handle's
    reads of parts (each segment checked as it is read, ``read`` and ``readinto``) refuse it,
    count it once per block, remove the file, and return the backend's bytes instead."""
    path, data = _write(tmp_path, 4 * BS)
    fs = fsspec.filesystem(
        "edgecache",
        target_protocol="file",
        target_options={},
        cache_dir=str(tmp_path / "cache"),
        block_size=BS,
        mem_quota="0",
        compression="none",
        skip_instance_cache=True,
    )
    with fs.open(path, "rb") as f:
        assert f.read() == data
    files = [b for b in (tmp_path / "cache" / "blocks").rglob("*") if b.is_file()]
    assert len(files) == 4
    for block in files:
        raw = bytearray(block.read_bytes())
        raw[len(raw) - BS // 2] ^= 0xFF  # the first byte of segment 2 of 4
        block.write_bytes(bytes(raw))
    fs.cache.mem.clear_read_buffer()  # so that every block is read from its file
    before = _corrupt_blocks()

    def read_all() -> bytes:
        with fs.open(path, "rb") as f:
            if call == "read":
                return b"".join(iter(functools.partial(f.read, read_size), b""))
            got = bytearray()
            out = bytearray(read_size)
            while n := f.readinto(out):
                got += out[:n]
            return bytes(got)

    assert read_all() == data
    assert _corrupt_blocks() == before + 4
    fs.cache.mem.clear_read_buffer()
    assert read_all() == data  # the blocks fetched again were stored whole and sound
    assert _corrupt_blocks() == before + 4


@pytest.mark.parametrize("compression", ["none", "lz4"])
@pytest.mark.parametrize("read_size", [PAGE, 64 * KiB, BS])
def test_block_damaged_on_disk_while_a_handle_reads_it_is_caught(
    tmp_path: Path, compression: str, read_size: int
) -> None:
    """A handle that opened a block (a segmented block file is read part by part; an LZ4 one
    was decoded and verified once) returns only verified bytes after the file is damaged, and
    the damage is caught by that handle or by the next open, never returned."""
    path, data = _write(tmp_path, 4 * BS)
    options = {
        "cache_dir": str(tmp_path / "cache"),
        "block_size": BS,
        "mem_quota": "0",
        "compression": compression,
    }
    url = f"edgecache::file://{path}"
    with fsspec.open(url, "rb", edgecache=options) as f:
        assert f.read() == data
    before = _corrupt_blocks()
    with fsspec.open(url, "rb", edgecache=options) as f:
        assert f.read(PAGE) == data[:PAGE]  # the handle has block 0 open now
        for block in (tmp_path / "cache" / "blocks").rglob("*"):
            if block.is_file():
                raw = bytearray(block.read_bytes())
                raw[-1] ^= 0xFF
                block.write_bytes(bytes(raw))
        got = b"".join(iter(functools.partial(f.read, read_size), b""))
        assert got == data[PAGE:]
    with fsspec.open(url, "rb", edgecache=options) as f:
        assert f.read() == data
    assert _corrupt_blocks() >= before + 4
