"""Directory-scan detection: which files to fetch ahead while a loop reads a directory in order.

A training loop opens the files of a directory one after another in name order; each of N
DataLoader workers opens every N-th of them. Once three opens in a row each moved the same
number of names forward (the stride: 1 for one reader, N for a worker),
:class:`ScanDetector` names the next ``ahead`` files at that stride so the
read engine (:mod:`edgecache.engine`) can fetch their first blocks in the background: the
link stays busy instead of waiting a round trip per file. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from edgecache.engine._metadata import CachedInfo, parent_of

__all__ = ["ScanDetector"]

_MAX_DIRECTORIES = 1024
"""Directories tracked at once; past it the state starts afresh (a scan only loses its streak)."""
_STREAK = 2
"""Consecutive opens at one stride (after the first) that make a scan."""
_MAX_HANDED_OUT = 65536
"""Handed-out indices remembered per directory scan."""
_MAX_STRIDE = 32
"""Largest stride taken for a scan (more workers than this per directory is not a pattern we
plan for, and a random order is then less likely to look like one)."""


@dataclass
class _Scan:
    """Where a name-ordered scan of one directory has got to."""

    position: int
    """Index, in the directory's sorted file names, of the file opened last."""
    stride: int = 0
    """How many names the last open moved forward (0: not forward)."""
    streak: int = 0
    """How many opens in a row each moved forward by ``stride``."""
    handed_out: set[int] = field(default_factory=set)
    """Indices of the files already handed out for fetching ahead (each is handed out once)."""
    ahead_to: int = -1
    """The farthest index this run of opens at ``stride`` looked at: everything before it on
    the run's stride was handed out, so the next open only looks past it."""


class ScanDetector:
    """Per-directory scan state of one read engine (every filesystem of the process shares it)."""

    def __init__(self, ahead: int = 16) -> None:
        self.ahead = ahead
        self._scans: dict[str, _Scan] = {}
        self._unlisted: dict[str, str] = {}
        """Directory -> the file opened last while the directory had no listing yet."""
        self._sorted: dict[str, tuple[list[CachedInfo], list[str], dict[str, CachedInfo]]] = {}

    def opened_unlisted(self, path: str) -> None:
        """``path`` was opened while its directory had no listing (its first open there: the
        engine lists a directory on the second): remembered, so that the open that brings the
        listing already counts as one step of a scan and fetching ahead starts an open earlier
        (a file's round trips earlier for each DataLoader worker)."""
        if len(self._unlisted) > _MAX_DIRECTORIES:
            self._unlisted.clear()
        self._unlisted[parent_of(path)] = path

    def opened(
        self, path: str, listing: list[CachedInfo], *, ahead: int | None = None
    ) -> list[CachedInfo]:
        """``path`` (listed in its parent's ``listing``) was opened: the entries to fetch ahead
        (up to ``ahead`` files past it; default: the detector's own ``ahead``)."""
        ahead = self.ahead if ahead is None else ahead
        if ahead <= 0:
            return []
        parent = parent_of(path)
        names, by_name = self._sorted_files(parent, listing)
        scan = self._scans.get(parent)
        # Most opens of a scan are of the file one stride on: no search for it.
        position = scan.position + scan.stride if scan is not None and scan.stride else -1
        if not (0 <= position < len(names) and names[position] == path):
            position = bisect.bisect_left(names, path)
            if position >= len(names) or names[position] != path:
                return []
        if scan is None:
            if len(self._scans) > _MAX_DIRECTORIES:
                self._scans.clear()
            scan = self._scans[parent] = _Scan(position=position)
            before = self._unlisted.pop(parent, None)
            earlier = bisect.bisect_left(names, before) if before is not None else len(names)
            if earlier < len(names) and names[earlier] == before:
                step = position - earlier
                if 0 < step <= _MAX_STRIDE:
                    scan.stride, scan.streak = step, 1
            return []
        step = position - scan.position
        if 0 < step <= _MAX_STRIDE and step == scan.stride:
            scan.streak += 1
        elif 0 < step <= _MAX_STRIDE:
            scan.streak, scan.stride, scan.ahead_to = 1, step, -1
        else:
            scan.streak, scan.stride, scan.ahead_to = 0, 0, -1
        scan.position = position
        if scan.streak < _STREAK:
            return []
        # A warm loop opens thousands of files at one stride: only the file entering the
        # window is new (the window's other files were looked at by the opens before).
        first = max(position + step, scan.ahead_to + step)
        last = min(position + step * ahead, len(names) - 1)
        scan.ahead_to = max(scan.ahead_to, last - (last - position) % step)
        handed_out = scan.handed_out
        if first == last:  # the steady state: one file enters the window
            if first in handed_out:
                return []  # a warm loop's second pass: everything was handed out in the first
            wanted = [first]
        else:
            wanted = [p for p in range(first, last + 1, step) if p not in handed_out]
            if not wanted:
                return []
        if len(handed_out) > _MAX_HANDED_OUT:
            handed_out.clear()  # at worst a file is fetched ahead twice (a cache hit)
        handed_out.update(wanted)
        return [by_name[names[p]] for p in wanted]

    def _sorted_files(
        self, parent: str, listing: list[CachedInfo]
    ) -> tuple[list[str], dict[str, CachedInfo]]:
        # Once per listing object, not per open: sorting a 10,000-file directory on each open
        # cost 5 ms per file, which made a warm small-file loop O(files^2).
        memo = self._sorted.get(parent)
        if memo is not None and memo[0] is listing:
            return memo[1], memo[2]
        by_name = {str(e.info["name"]): e for e in listing if e.info.get("type") != "directory"}
        names = sorted(by_name)
        if len(self._sorted) > _MAX_DIRECTORIES:
            self._sorted.clear()
        self._sorted[parent] = (listing, names, by_name)
        return names, by_name
