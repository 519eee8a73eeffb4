"""SparsePlanner: small random misses fetch pages; sequential, large or dense use whole blocks."""

from __future__ import annotations

from edgecache.engine._sparse import Pages, SparsePlanner

KiB, MiB = 1024, 1024 * 1024


def test_small_random_reads_fetch_the_pages_they_cover() -> None:
    planner = SparsePlanner(page_size=16 * KiB, fine_page_size=4 * KiB)
    assert not planner.read("p", "v1", 100_000, 104_096)
    # A 4 KiB read is fetched on the 4 KiB grid: the two pages it straddles (8 KiB, where the
    # 16 KiB grid would fetch 16 KiB here and 32 KiB across a boundary).
    assert planner.pages(
        "p", "v1", 0, 100_000, 104_096, block_size=4 * MiB, sequential=False
    ) == Pages(4 * KiB, range(24, 26))
    assert planner.pages(
        "p", "v1", 1, 5 * MiB - 10, 5 * MiB + 10, block_size=4 * MiB, sequential=False
    ) == Pages(4 * KiB, range(1279, 1281))
    # Past half a page, the 16 KiB grid: fewer pages (index rows) for a larger read.
    assert planner.pages(
        "p", "v1", 1, 5 * MiB - 10, 5 * MiB + 12 * KiB, block_size=4 * MiB, sequential=False
    ) == Pages(16 * KiB, range(319, 321))
    assert planner.page_sizes(4 * KiB) == (4 * KiB, 16 * KiB)
    assert planner.page_sizes(12 * KiB) == (16 * KiB,)
    # Cold first reads (nothing known of the object) are cut the same way.
    assert planner.first_reads([(100_000, 104_096), (0, None)], block_size=4 * MiB) == [
        (0, 4 * MiB, 0),
        (98_304, 106_496, 4 * KiB),
    ]
    one_grid = SparsePlanner(page_size=16 * KiB, fine_page_size=0)
    assert one_grid.pages(
        "p", "v1", 0, 100_000, 104_096, block_size=4 * MiB, sequential=False
    ) == Pages(16 * KiB, range(6, 7))


def test_sequential_large_and_dense_reads_widen_to_the_block() -> None:
    planner = SparsePlanner(page_size=16 * KiB, dense_reads=3)
    assert not planner.read("p", "v", 0, 4096)
    assert planner.read("p", "v", 4096, 8192)  # continues the previous read
    assert planner.pages("p", "v", 0, 4096, 8192, block_size=4 * MiB, sequential=True) is None
    assert (
        planner.pages("p", "v", 0, 0, 256 * KiB + 1, block_size=4 * MiB, sequential=False) is None
    )
    got = [
        planner.pages("p", "v", 2, 9 * MiB, 9 * MiB + 10, block_size=4 * MiB, sequential=False)
        for _ in range(4)
    ]
    assert got[:3] == [Pages(4 * KiB, range(2304, 2305))] * 3 and got[3] is None
    # Another version of the object starts afresh.
    assert (
        planner.pages("p", "v2", 2, 9 * MiB, 9 * MiB + 10, block_size=4 * MiB, sequential=False)
        is not None
    )
    assert sorted(planner.forget("p")) == [("v", 2), ("v2", 2)]


def test_small_blocks_have_no_pages() -> None:
    planner = SparsePlanner(page_size=16 * KiB)
    assert planner.paged(4 * MiB) and planner.paged(128 * KiB)
    assert not planner.paged(64 * KiB) and not planner.paged(100_000)
    assert planner.pages("p", "v", 0, 0, 10, block_size=64 * KiB, sequential=False) is None
