"""Which view file holds which object version: the pool serves blocks of views from them.

Place in the flow::

    DatasetView: a file renamed into the view -> ViewCopies.add(backend, object path, version)
                 a file unlinked or replaced  -> ViewCopies.discard(...)
    a pool peer asks this node for a block  -> PoolNode's holder (Agent.held_block)
                                            -> ViewCopies.read_block(plan, index)

A view file is the node's copy of a complete object version (its blocks left the block cache
when it was renamed in), so without this a peer asking the owner for a block of it would make
the owner fetch it from the cloud again. Only the exact (backend, object path, version) a view
holds is served, and only whole blocks of the right length. The views' manifests keep each
file's backend and object path, so a restarted agent serves them before listing anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgecache.engine import ReadPlan

__all__ = ["ViewCopies"]

CopyKey = tuple[str, str, str]
"""(backend identity, object path, version)."""


class ViewCopies:
    """The view files by the object version they hold (a dict: O(1) per block asked)."""

    def __init__(self) -> None:
        self._files: dict[CopyKey, Path] = {}

    def add(self, backend: str, object_path: str, version: str, path: Path) -> None:
        self._files[(backend, object_path, version)] = path

    def discard(self, backend: str, object_path: str, version: str) -> None:
        self._files.pop((backend, object_path, version), None)

    def holds(self, plan: ReadPlan) -> Path | None:
        """The view file holding exactly ``plan``'s object version, or None."""
        return self._files.get((plan.backend, plan.path, plan.version))

    def read_block(self, plan: ReadPlan, index: int) -> bytes | None:
        """Block ``index`` of ``plan`` from its view file (blocking), or None when no view
        holds that version or the file is not what it should be (evicted, replaced)."""
        path = self.holds(plan)
        if path is None:
            return None
        length = plan.block_length(index)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size != plan.size:
                return None
            data = os.pread(fd, length, plan.block_start(index))
        except OSError:
            return None
        finally:
            os.close(fd)
        return data if len(data) == length else None
