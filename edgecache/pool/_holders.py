"""HolderSource: the read engine's block source for what this node keeps outside its cache.

Place in the data path::

    ReadEngine --miss (MEM, SSD)--> single-flight (after a background block's admission)
      --> HolderSource: this node's block holders (the agent's views), in a worker thread
      --> PeerSource --> BackendSource (WAN)

The peer server looks at the holders before it fetches anything, but a background request
first waits for its turn on the link, inside the engine: while it waits, the node may finish
copying that very file into a view and drop its blocks from the cache (that is what views
do). Asked again here, after the turn came and inside single-flight, the view serves the block
instead of the WAN fetching it a second time. (Three agents materialising their views as
background work carried up to 1.25x the dataset before.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from edgecache.engine import ReadPlan, SourceSkipped
from edgecache.pool._server import BlockHolder

__all__ = ["HolderSource"]


class HolderSource:
    """Serves a block from the first holder that keeps exactly that object version."""

    name = "held"

    def __init__(self, holders: Sequence[BlockHolder]) -> None:
        self._holders = holders
        """The node's list, shared: holders added later count too."""

    async def fetch(self, plan: ReadPlan, index: int) -> bytes:
        if self._holders:
            data = await asyncio.to_thread(self._read, plan, index)
            if data is not None:
                return data
        raise SourceSkipped(f"block {index} of {plan.path}: no holder keeps it")

    def _read(self, plan: ReadPlan, index: int) -> bytes | None:
        length = plan.block_length(index)
        for holder in list(self._holders):
            data = holder(plan, index)
            if data is not None and len(data) == length:
                return data
        return None
