"""Nodepool membership: which nodes share this node's pool, for the topology filter.

While online the hub lists the nodes labelled with the pool (its own request, with its own
credentials) every ``node_refresh_seconds`` and records the names, so that offline, and after a
restart while offline, the filter still knows the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from urllib.parse import quote

from edgecache.hub._config import FilterSettings
from edgecache.hub._store import HubStore, RawResponse
from edgecache.hub._upstream import Upstream, UpstreamUnavailableError, read_body

__all__ = ["NodePoolMembership"]

log = logging.getLogger(__name__)

_COMPONENT = "edgecache-hub"


class NodePoolMembership:
    """The node names of one pool, refreshed from the upstream and kept in the store."""

    def __init__(self, settings: FilterSettings, store: HubStore, upstream: Upstream) -> None:
        assert settings.nodepool, "a nodepool name is required"
        self.settings = settings
        self.store = store
        self.upstream = upstream
        self.nodes: frozenset[str] | None = None
        self._key = f"nodepool:{settings.nodepool}"
        self._task: asyncio.Task[None] | None = None

    def __call__(self) -> frozenset[str] | None:
        return self.nodes

    async def load(self) -> None:
        raw = await self.store.read(self.store.get_raw, _COMPONENT, self._key)
        if raw is not None:
            self.nodes = frozenset(json.loads(raw.body))

    async def refresh(self) -> None:
        selector = quote(f"{self.settings.nodepool_label}={self.settings.nodepool}")
        response = await self.upstream.request(
            "GET",
            f"/api/v1/nodes?labelSelector={selector}",
            headers={"Accept": "application/json", "User-Agent": "edgecache-hub"},
            body=None,
            watch=False,
        )
        try:
            if response.status != 200:
                log.warning(
                    "cannot list nodes of pool %s: HTTP %d", self.settings.nodepool, response.status
                )
                return
            data = json.loads(await read_body(response))
        finally:
            response.release()
        names = sorted(str(item["metadata"]["name"]) for item in data.get("items") or [])
        self.nodes = frozenset(names)
        body = json.dumps(names).encode()
        await self.store.write(
            self.store.put_raw, _COMPONENT, self._key, RawResponse(200, "application/json", body)
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hub-nodepool")

    async def try_refresh(self) -> None:
        """Refresh, keeping the last known membership when the upstream cannot say."""
        with contextlib.suppress(UpstreamUnavailableError, ValueError, KeyError, TypeError):
            await self.refresh()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.node_refresh_seconds)
            await self.try_refresh()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
