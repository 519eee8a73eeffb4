"""Membership from Leases: one ``coordination.k8s.io/v1`` Lease per node, through the hub.

::

    every renew_seconds:
      PUT  <namespace>/edgecache-pool-<node>   holder = node, renewTime = now,
           labels: apps.openyurt.io/nodepool=<pool>, data.edgecache.io/role=pool-peer
           annotations: data.edgecache.io/peer-address=HOST:PORT, data.edgecache.io/pool=<pool>
      LIST <namespace> leases with those labels -> members = the Leases renewed lately

A Lease is fresh while its ``renewTime`` was seen to change within ``duration_seconds`` by this
node's own clock (so clock skew between nodes does not matter), or, the first time it is seen,
if its ``renewTime`` is that recent; a node that stops renewing is dropped within about
``duration_seconds``, and one that stops cleanly deletes its Lease, which drops it at the
next listing.

Through the node's edge hub the listing is answered from the hub's record while the WAN is
down, but nobody can renew then (writes get 503): so while our own renewal fails, the members
last seen are kept as they are (the site goes on sharing), and a peer that really died is left
out by its failures (the readers' cooldown), not by its Lease's age.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from edgecache.k8s.api import LEASE, Kube, KubeError, KubeUnavailableError
from edgecache.k8s.objects import NODEPOOL_LABEL
from edgecache.pool._members import Member, Membership
from edgecache.pool._settings import LeaseSettings

__all__ = [
    "ADDRESS_ANNOTATION",
    "POOL_ANNOTATION",
    "ROLE_LABEL",
    "LeaseMembership",
    "lease_name",
]

log = logging.getLogger(__name__)
JSONObject = dict[str, Any]

ROLE_LABEL = "data.edgecache.io/role"
"""Label every pool Lease carries (value ``pool-peer``), so listings select only them."""
ADDRESS_ANNOTATION = "data.edgecache.io/peer-address"
POOL_ANNOTATION = "data.edgecache.io/pool"


def lease_name(node: str) -> str:
    """The Lease of ``node``'s agent (node names are DNS subdomains, and so is this)."""
    return f"edgecache-pool-{node}"[:253]


def _micro_time(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class LeaseMembership(Membership):
    """Members of ``pool()``'s pool from their Leases (see module docstring). ``pool`` is
    asked every round: None (the Node's label not known yet) renews and lists nothing."""

    def __init__(
        self,
        me: Member,
        kube: Kube,
        *,
        pool: Callable[[], str | None],
        settings: LeaseSettings,
        cooldown_seconds: float,
    ) -> None:
        super().__init__(me, cooldown_seconds=cooldown_seconds)
        self.kube = kube
        self.pool = pool
        self.settings = settings
        self.renewing = False
        """Whether our last renewal was accepted (False: API unreachable, the view is kept)."""
        self._seen: dict[str, tuple[object, float]] = {}
        """Lease name -> (renewTime last seen, monotonic time it was seen to change)."""
        self._task: asyncio.Task[None] | None = None
        self._rounds = 0
        self.round_done = asyncio.Event()
        """Set after each round (tests wait on it instead of sleeping)."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # Leave at once rather than after a Lease duration (best effort: offline it waits).
        with contextlib.suppress(KubeError, KubeUnavailableError):
            async with asyncio.timeout(2):
                await self.kube.delete(LEASE, lease_name(self.me.name), self.settings.namespace)

    async def _run(self) -> None:
        while True:
            pool = self.pool()
            if pool:
                try:
                    await self.round(pool)
                except Exception:  # a round must never end membership
                    log.exception("pool membership round failed")
            self.round_done.set()
            await asyncio.sleep(self.settings.renew_seconds)

    async def round(self, pool: str) -> None:
        """Renew our Lease, then list the pool's and update the members."""
        self.renewing = await self._renew(pool)
        try:
            listed = await self.kube.list(
                LEASE,
                self.settings.namespace,
                label_selector=f"{ROLE_LABEL}=pool-peer,{NODEPOOL_LABEL}={pool}",
            )
        except (KubeError, KubeUnavailableError) as exc:
            log.info("pool %s: cannot list the Leases (%s); keeping the members seen", pool, exc)
            return
        members = self._fresh(listed.get("items") or [], pool)
        if self.renewing:
            self.set_members(members.values())
        # else: nobody can renew while the API is away, so age proves nothing: keep whom we had.

    def _fresh(self, items: list[JSONObject], pool: str) -> dict[str, Member]:
        now_mono, now_wall = time.monotonic(), time.time()
        found: dict[str, Member] = {}
        seen_names = set()
        for item in items:
            meta = item.get("metadata") or {}
            spec = item.get("spec") or {}
            annotations = meta.get("annotations") or {}
            name, holder = str(meta.get("name") or ""), str(spec.get("holderIdentity") or "")
            address = str(annotations.get(ADDRESS_ANNOTATION) or "")
            if not holder or not address or annotations.get(POOL_ANNOTATION) != pool:
                continue
            seen_names.add(name)
            renewed = spec.get("renewTime")
            duration = float(spec.get("leaseDurationSeconds") or self.settings.duration_seconds)
            previous = self._seen.get(name)
            if previous is None:
                # First sight: as fresh as its renewTime says (a long-dead node's Lease is not).
                at = _parse_time(renewed)
                age = max(0.0, now_wall - at) if at is not None else duration
                self._seen[name] = (renewed, now_mono - age)
            elif previous[0] != renewed:
                self._seen[name] = (renewed, now_mono)
            if now_mono - self._seen[name][1] <= duration:
                found[holder] = Member(holder, address)
        for gone in set(self._seen) - seen_names:
            del self._seen[gone]
        return found

    async def _renew(self, pool: str) -> bool:
        s, me = self.settings, self.me
        now = _micro_time(time.time())
        labels = {ROLE_LABEL: "pool-peer", NODEPOOL_LABEL: pool}
        annotations = {ADDRESS_ANNOTATION: me.address, POOL_ANNOTATION: pool}
        spec = {
            "holderIdentity": me.name,
            "leaseDurationSeconds": max(1, round(s.duration_seconds)),
            "renewTime": now,
        }
        name = lease_name(me.name)
        try:
            lease = await self.kube.get(LEASE, name, s.namespace)
            if lease is None:
                await self.kube.create(
                    LEASE,
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {
                            "name": name,
                            "namespace": s.namespace,
                            "labels": labels,
                            "annotations": annotations,
                        },
                        "spec": {**spec, "acquireTime": now},
                    },
                )
                return True
            meta = lease.setdefault("metadata", {})
            meta["labels"] = {**(meta.get("labels") or {}), **labels}
            meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
            lease["spec"] = {**(lease.get("spec") or {}), **spec}
            await self.kube.replace(LEASE, lease)
            return True
        except KubeError as exc:
            if exc.status != 409:  # 409: a racing write of our own; the next round wins
                log.info("pool %s: renewing %s: %s", pool, name, exc)
            return exc.status == 409
        except KubeUnavailableError as exc:
            log.info("pool %s: renewing %s: %s", pool, name, exc)
            return False
