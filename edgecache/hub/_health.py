"""Upstream health: decides whether the hub is online (proxying) or offline (serving the store).

An active probe runs every ``probe_interval_seconds``; failed proxied requests are evidence too
and trigger an immediate probe. Hysteresis: ``failures_to_offline`` consecutive failures switch
to offline, ``successes_to_online`` consecutive successful probes switch back. Every switch calls
the ``on_switch`` callback, which closes in-flight watches (design 2.6) so that clients re-list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from edgecache.hub._config import HealthSettings
from edgecache.metrics import HUB_MODE, HUB_MODE_SWITCHES

__all__ = ["HealthMonitor"]

log = logging.getLogger(__name__)


class HealthMonitor:
    """Tracks the online/offline state. Call :meth:`start` to begin probing."""

    def __init__(
        self,
        settings: HealthSettings,
        *,
        probe: Callable[[], Awaitable[bool]],
        on_switch: Callable[[bool], None],
    ) -> None:
        self.settings = settings
        self._probe = probe
        self._on_switch = on_switch
        self.online = False
        self._failures = 0
        self._successes = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.switches = 0
        self._changed = asyncio.Condition()

    async def start(self, *, wait_seconds: float | None = None) -> bool:
        """Probe once to pick the initial mode, then keep probing in the background.

        With ``wait_seconds``, a first probe still running after that long leaves the hub
        offline for now; its result still counts once it arrives.
        """
        first = asyncio.ensure_future(self._probe())
        try:
            self.online = await asyncio.wait_for(asyncio.shield(first), wait_seconds)
        except TimeoutError:
            self.online = False
            first.add_done_callback(self._late_first_probe)
        HUB_MODE.set(1 if self.online else 0)
        self._task = asyncio.create_task(self._run(), name="hub-health")
        return self.online

    def _late_first_probe(self, probe: asyncio.Future[bool]) -> None:
        if not probe.cancelled() and probe.exception() is None:
            self._observe(probe.result())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def report_failure(self) -> None:
        """A proxied request could not reach the upstream: count it and probe now."""
        if self.online:
            self._observe(False)
            self._wake.set()

    async def wait_for(self, online: bool, *, within_seconds: float) -> None:
        """Wait until the mode is ``online`` (tests and benchmarks use this)."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: self.online == online), timeout=within_seconds
            )

    def _observe(self, healthy: bool) -> None:
        if healthy:
            self._successes += 1
            self._failures = 0
            if not self.online and self._successes >= self.settings.successes_to_online:
                self._switch(True)
        else:
            self._failures += 1
            self._successes = 0
            if self.online and self._failures >= self.settings.failures_to_offline:
                self._switch(False)

    def _switch(self, online: bool) -> None:
        self.online = online
        self.switches += 1
        HUB_MODE.set(1 if online else 0)
        HUB_MODE_SWITCHES.labels(to="online" if online else "offline").inc()
        log.warning("edge hub is now %s", "ONLINE" if online else "OFFLINE (serving from store)")
        self._on_switch(online)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.probe_interval_seconds)
            self._wake.clear()
            try:
                healthy = await self._probe()
            except Exception:  # a probe bug must not stop probing
                log.exception("upstream probe failed unexpectedly")
                healthy = False
            self._observe(healthy)
