"""Leader election on a ``coordination.k8s.io/v1`` Lease: one replica acts, the others wait.

client-go's algorithm, in asyncio: a candidate takes the Lease when it does not exist, is
released (no holder), or has not been renewed for ``lease_duration`` by the candidate's own
clock (time since it last saw the record change, so clock skew between replicas does not
matter); every write is a PUT with the Lease's resourceVersion, so of two candidates racing only
one wins (the other gets 409). The leader renews every ``retry_period``; when it cannot renew
within ``renew_deadline`` it steps down before anyone else may take over (``renew_deadline`` <
``lease_duration``). Stopping releases the Lease, so a standby takes over within one
``retry_period`` instead of a whole ``lease_duration``.

Why not ``kubernetes.leaderelection``: it runs in blocking threads with no way to stop a
campaign, uses the process-wide default client configuration rather than ours, and never
releases the Lease on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edgecache.k8s.api import LEASE, Kube, KubeError, KubeUnavailableError
from edgecache.metrics import CONTROLLER_LEADER

__all__ = ["LeaderElector", "LeaderSettings", "default_identity"]

log = logging.getLogger(__name__)
JSONObject = dict[str, Any]


def default_identity() -> str:
    """``<hostname>_<random>``: unique per process even for two replicas on one host."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass
class LeaderSettings:
    """Leader election; the defaults are client-go's (15 s / 10 s / 2 s)."""

    enabled: bool = True
    """Off: act at once without a Lease (a single replica, or tests of one controller)."""
    lease_name: str = "edgecache-controller"
    lease_namespace: str = "edgecache-system"
    """Namespace of the Lease; in a pod the default is the pod's own namespace."""
    identity: str = field(default_factory=default_identity)
    lease_duration_seconds: float = 15.0
    """How long a standby waits after the last renewal it saw before taking over."""
    renew_deadline_seconds: float = 10.0
    """How long the leader keeps trying to renew before it steps down; < lease duration."""
    retry_period_seconds: float = 2.0
    """Between attempts to take or renew the Lease."""


def _micro_time(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Campaigns for, holds and releases one Lease."""

    def __init__(self, kube: Kube, settings: LeaderSettings) -> None:
        self.kube = kube
        self.settings = settings
        self.is_leader = False
        self.holder: str = ""
        """The holder last seen (ours or another replica's), for /readyz and logs."""
        self.reachable = False
        """Whether the last attempt got an answer from the API server."""
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0

    async def _try(self) -> bool:
        """One attempt to take or renew the Lease."""
        s = self.settings
        now = time.time()
        try:
            lease = await self.kube.get(LEASE, s.lease_name, s.lease_namespace)
        except KubeUnavailableError:
            self.reachable = False
            return False
        self.reachable = True
        spec_out: JSONObject = {
            "holderIdentity": s.identity,
            "leaseDurationSeconds": max(1, round(s.lease_duration_seconds)),
            "acquireTime": _micro_time(now),
            "renewTime": _micro_time(now),
            "leaseTransitions": 0,
        }
        try:
            if lease is None:
                await self.kube.create(
                    LEASE,
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": s.lease_name, "namespace": s.lease_namespace},
                        "spec": spec_out,
                    },
                )
                self.holder = s.identity
                return True
            spec = lease.get("spec") or {}
            holder = str(spec.get("holderIdentity") or "")
            record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"))
            if record != self._observed:
                self._observed, self._observed_at = record, time.monotonic()
            self.holder = holder
            duration = float(spec.get("leaseDurationSeconds") or s.lease_duration_seconds)
            held = holder and holder != s.identity
            if held and time.monotonic() < self._observed_at + duration:
                return False
            transitions = int(spec.get("leaseTransitions") or 0)
            if holder == s.identity:
                spec_out["acquireTime"] = spec.get("acquireTime") or spec_out["acquireTime"]
                spec_out["leaseTransitions"] = transitions
            else:
                spec_out["leaseTransitions"] = transitions + 1
            lease["spec"] = {**spec, **spec_out}
            await self.kube.replace(LEASE, lease)
        except KubeError as exc:
            if exc.status not in (404, 409):
                log.warning("leader election: %s", exc)
            return False
        except KubeUnavailableError:
            self.reachable = False
            return False
        self.holder = s.identity
        return True

    def _set_leader(self, leading: bool) -> None:
        if leading != self.is_leader:
            log.warning(
                "%s %s the lease %s/%s",
                self.settings.identity,
                "acquired" if leading else "lost",
                self.settings.lease_namespace,
                self.settings.lease_name,
            )
        self.is_leader = leading
        CONTROLLER_LEADER.set(1 if leading else 0)

    async def acquire(self) -> None:
        """Return once this replica leads."""
        while not await self._try():  # noqa: ASYNC110 (polling the API is the algorithm)
            await asyncio.sleep(self.settings.retry_period_seconds)
        self._set_leader(True)

    async def hold(self) -> None:
        """Renew until a renewal fails for ``renew_deadline``; then return (leadership lost)."""
        s = self.settings
        last_renewal = time.monotonic()
        while True:
            await asyncio.sleep(s.retry_period_seconds)
            if await self._try():
                last_renewal = time.monotonic()
            elif self.holder != s.identity and self.reachable:
                break  # someone else holds it now: step down at once
            elif time.monotonic() - last_renewal >= s.renew_deadline_seconds:
                break
        self._set_leader(False)

    async def release(self) -> None:
        """Give the Lease up (if still ours) so a standby takes over without waiting."""
        s = self.settings
        was_leader = self.is_leader
        self._set_leader(False)
        if not was_leader:
            return
        try:
            lease = await self.kube.get(LEASE, s.lease_name, s.lease_namespace)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != s.identity:
                return
            now = _micro_time(time.time())
            lease["spec"] = {
                **lease["spec"],
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "renewTime": now,
            }
            await self.kube.replace(LEASE, lease)
        except (KubeError, KubeUnavailableError) as exc:
            log.warning("could not release the lease: %s", exc)
