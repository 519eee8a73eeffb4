"""SparsePlanner: small random misses fetch pages; sequential, large or dense use whole blocks."""

from __future__ import annotations

from edgecache.engine._sparse import SparsePlanner

KiB, MiB = 1024, 1024 * 1024


def test_small_random_reads_fetch_the_pages_they_cover() -> None:
    planner = SparsePlanner(block_size=4 * MiB, page_size=16 * KiB)
    assert not planner.read("p", "v1", 100_000, 104_096)
    assert planner.pages("p", "v1", 0, 100_000, 104_096, sequential=False) == range(6, 7)
    # Straddling a page boundary: both pages.
    assert planner.pages("p", "v1", 1, 5 * MiB - 10, 5 * MiB + 10, sequential=False) == range(
        319, 321
    )


def test_sequential_large_and_dense_reads_widen_to_the_block() -> None:
    planner = SparsePlanner(block_size=4 * MiB, page_size=16 * KiB, dense_reads=3)
    assert not planner.read("p", "v", 0, 4096)
    assert planner.read("p", "v", 4096, 8192)  # continues the previous read
    assert planner.pages("p", "v", 0, 4096, 8192, sequential=True) is None
    assert planner.pages("p", "v", 0, 0, 256 * KiB + 1, sequential=False) is None
    got = [planner.pages("p", "v", 2, 9 * MiB, 9 * MiB + 10, sequential=False) for _ in range(4)]
    assert got[:3] == [range(576, 577)] * 3 and got[3] is None
    # Another version of the object starts afresh.
    assert planner.pages("p", "v2", 2, 9 * MiB, 9 * MiB + 10, sequential=False) is not None
    assert sorted(planner.forget("p")) == [("v", 2), ("v2", 2)]


def test_small_blocks_have_no_pages() -> None:
    assert not SparsePlanner(block_size=64 * KiB, page_size=16 * KiB).enabled
    assert not SparsePlanner(block_size=100_000, page_size=16 * KiB).enabled
    planner = SparsePlanner(block_size=64 * KiB, page_size=16 * KiB)
    assert planner.pages("p", "v", 0, 0, 10, sequential=False) is None
