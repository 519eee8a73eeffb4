"""API server health: decides whether a component is online (talks to the API server) or offline
(serves or works from what it has locally).

The edge hub uses it to switch between proxying and answering from its store; the agent and the
controller can use it the same way. An active probe runs every ``probe_interval_seconds``;
failed requests are evidence too (:meth:`HealthMonitor.report_failure`) and trigger an immediate
probe. Hysteresis: ``failures_to_offline`` consecutive failures switch to offline,
``successes_to_online`` consecutive successful probes switch back. Every switch calls the
``on_switch`` callback (the hub closes in-flight watches there, design 2.6, so clients re-list).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["HealthMonitor", "HealthSettings"]

log = logging.getLogger(__name__)


@dataclass
class HealthSettings:
    """When the API server counts as down or back (hysteresis against a flapping WAN)."""

    #: Seconds between active probes of the upstream.
    probe_interval_seconds: float = 5.0
    #: Seconds a probe may take before it counts as a failure.
    probe_timeout_seconds: float = 3.0
    #: Consecutive failed observations (probes or proxied requests) before going offline.
    #: Three at 5 s tolerates a short WAN hiccup without dropping every watch.
    failures_to_offline: int = 3
    #: Consecutive successful probes before going back online; two avoids re-syncing every
    #: client against an upstream that answers once and then drops again.
    successes_to_online: int = 2
    #: Seconds the first probe may hold up start when a local copy can serve meanwhile: an
    #: upstream that swallows packets (WAN down, no RST) must not delay offline answers after a
    #: restart.
    startup_probe_seconds: float = 0.5
    #: Path probed on the upstream; any answer below 500 (even 401/403) means "reachable".
    probe_path: str = "/readyz"


class HealthMonitor:
    """Tracks the online/offline state. Call :meth:`start` to begin probing.

    ``probe`` answers whether the API server is reachable; ``on_switch(online)`` runs on every
    switch, on the event loop; ``name`` appears in the log lines of the switches.
    """

    def __init__(
        self,
        settings: HealthSettings,
        *,
        probe: Callable[[], Awaitable[bool]],
        on_switch: Callable[[bool], None],
        name: str = "API server",
    ) -> None:
        self.settings = settings
        self.name = name
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
        """Wait until the mode is ``online`` (tests and benchmarks use this); raises
        ``TimeoutError`` after ``within_seconds``."""
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
        log.warning(
            "%s is now %s", self.name, "reachable (ONLINE)" if online else "unreachable (OFFLINE)"
        )
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
