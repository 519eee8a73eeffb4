"""ScanDetector: which files a name-ordered directory scan fetches ahead (pure logic)."""

from __future__ import annotations

from edgecache.engine._metadata import CachedInfo
from edgecache.engine._scan import ScanDetector


def listing(*names: str) -> list[CachedInfo]:
    entries = [CachedInfo({"name": f"/d/{n}", "type": "file", "size": 1}, "v", 0.0) for n in names]
    entries.append(CachedInfo({"name": "/d/sub", "type": "directory", "size": 0}, "", 0.0))
    return entries


def names(entries: list[CachedInfo]) -> list[str]:
    return [str(e.info["name"]).rsplit("/", 1)[1] for e in entries]


def test_three_opens_in_name_order_start_read_ahead_once_per_file() -> None:
    files = listing(*(f"f{i:02d}" for i in range(20)))
    scan = ScanDetector(ahead=4)
    assert scan.opened("/d/f00", files) == []
    assert scan.opened("/d/f01", files) == []
    assert names(scan.opened("/d/f02", files)) == ["f03", "f04", "f05", "f06"]
    assert names(scan.opened("/d/f03", files)) == ["f07"]  # only what was not handed out yet
    assert names(scan.opened("/d/f04", files)) == ["f08"]


def test_random_order_and_jumps_reset_the_streak() -> None:
    files = listing(*(f"f{i:02d}" for i in range(20)))
    scan = ScanDetector(ahead=4)
    for name in ("f10", "f02", "f11", "f03", "f12"):
        assert scan.opened(f"/d/{name}", files) == []
    assert scan.opened("/d/f13", files) == []  # f12 -> f13 is a streak of one
    assert names(scan.opened("/d/f14", files)) == ["f15", "f16", "f17", "f18"]


def test_end_of_directory_unknown_files_and_disabled() -> None:
    files = listing("a", "b", "c")
    scan = ScanDetector(ahead=8)
    assert [scan.opened(f"/d/{n}", files) for n in ("a", "b", "c")] == [[], [], []]
    assert scan.opened("/d/zzz", files) == []
    off = ScanDetector(ahead=0)
    assert [off.opened(f"/d/{n}", files) for n in ("a", "b", "c")] == [[], [], []]


def test_a_worker_reading_every_nth_file_reads_ahead_at_its_stride() -> None:
    files = listing(*(f"f{i:02d}" for i in range(40)))
    scan = ScanDetector(ahead=3)
    # Worker 1 of 4 (a DataLoader's sampler): files 1, 5, 9, 13...
    assert scan.opened("/d/f01", files) == []
    assert scan.opened("/d/f05", files) == []
    assert names(scan.opened("/d/f09", files)) == ["f13", "f17", "f21"]
    assert names(scan.opened("/d/f13", files)) == ["f25"]
    # A change of stride starts a new streak; what was handed out is not handed out again.
    assert scan.opened("/d/f14", files) == []
    assert names(scan.opened("/d/f15", files)) == ["f16", "f18"]


def test_an_open_before_the_directory_was_listed_counts_as_the_first_step() -> None:
    # The engine lists a directory at its second open there: the first was opened unlisted.
    files = listing(*(f"f{i:02d}" for i in range(40)))
    scan = ScanDetector(ahead=3)
    scan.opened_unlisted("/d/f02")
    assert scan.opened("/d/f06", files) == []
    assert names(scan.opened("/d/f10", files)) == ["f14", "f18", "f22"]
    # An unlisted open that is not a step back or too far away starts nothing.
    other = ScanDetector(ahead=3)
    other.opened_unlisted("/d/f30")
    assert other.opened("/d/f01", files) == []
    assert other.opened("/d/f02", files) == []
    assert names(other.opened("/d/f03", files)) == ["f04", "f05", "f06"]
