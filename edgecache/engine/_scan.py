"""Directory-scan detection: which files to fetch ahead while a loop reads a directory in order.

A training loop opens the files of a directory one after another in name order. Once three opens
in a row each took the next name, :class:`ScanDetector` names the next ``ahead`` files so the
read engine (:mod:`edgecache.engine`) can fetch their first blocks in the background: the
link stays busy instead of waiting a round trip per file. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from edgecache.engine._metadata import CachedInfo, _parent

__all__ = ["ScanDetector"]

_MAX_DIRECTORIES = 1024
"""Directories tracked at once; past it the state starts afresh (a scan only loses its streak)."""
_STREAK = 2
"""Consecutive next-name opens (after the first) that make a scan."""


@dataclass
class _Scan:
    """Where a name-ordered scan of one directory has got to."""

    position: int
    """Index, in the directory's sorted file names, of the file opened last."""
    streak: int = 0
    """How many opens in a row each took the next name."""
    prefetched_until: int = 0
    """Files before this index were already handed out for fetching ahead."""


class ScanDetector:
    """Per-directory scan state of one read engine (every filesystem of the process shares it)."""

    def __init__(self, ahead: int = 16) -> None:
        self.ahead = ahead
        self._scans: dict[str, _Scan] = {}
        self._sorted: dict[str, tuple[list[CachedInfo], list[str], dict[str, CachedInfo]]] = {}

    def opened(
        self, path: str, listing: list[CachedInfo], *, ahead: int | None = None
    ) -> list[CachedInfo]:
        """``path`` (listed in its parent's ``listing``) was opened: the entries to fetch ahead
        (up to ``ahead`` files past it; default: the detector's own ``ahead``)."""
        ahead = self.ahead if ahead is None else ahead
        if ahead <= 0:
            return []
        parent = _parent(path)
        names, by_name = self._sorted_files(parent, listing)
        position = bisect.bisect_left(names, path)
        if position >= len(names) or names[position] != path:
            return []
        scan = self._scans.get(parent)
        if scan is None:
            if len(self._scans) > _MAX_DIRECTORIES:
                self._scans.clear()
            self._scans[parent] = _Scan(position=position)
            return []
        scan.streak = scan.streak + 1 if position == scan.position + 1 else 0
        scan.position = position
        if scan.streak < _STREAK:
            return []
        start = max(position + 1, scan.prefetched_until)
        stop = min(position + 1 + ahead, len(names))
        if start >= stop:
            return []
        scan.prefetched_until = stop
        return [by_name[name] for name in names[start:stop]]

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
