"""API server health: decides whether a component is online (talks to the API server) or offline
(serves or works from what it has locally).

The edge hub uses it to switch between proxying and answering from its store; the agent and the
controller can use it the same way. An active probe runs every ``probe_interval_seconds``
unless a request succeeded meanwhile (:meth:`HealthMonitor.report_success`: traffic proves the
link); failed requests are evidence too (:meth:`HealthMonitor.report_failure`) and trigger an
immediate probe. Hysteresis: ``failures_to_offline`` consecutive failures switch to offline,
``successes_to_online`` consecutive successful probes switch back; while a switch is pending,
probes follow each other every ``retry_interval_seconds`` (back to back when each one hangs
until its timeout), so a link that hangs without resetting is detected within about
``probe_interval + failures_to_offline * probe_timeout`` (4 s with the defaults), and a
flapping one never switches on fewer than ``failures_to_offline`` failures over at least
``(failures_to_offline - 1) * retry_interval``. Every switch calls the ``on_switch`` callback
(the hub closes in-flight watches there, design 2.6, so clients re-list).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["HealthMonitor", "HealthSettings"]

log = logging.getLogger(__name__)


@dataclass
class HealthSettings:
    """When the API server counts as down or back (hysteresis against a flapping WAN)."""

    #: Seconds between active probes while nothing is in doubt. With the timeout below this
    #: bounds how late a hung link is noticed (interval + 3 timeouts = 4 s; issue #10 asks for
    #: 5 s). Cost: one small GET per second per node over a kept-alive connection, skipped
    #: while proxied requests succeed; raise it where that matters more than detection time.
    probe_interval_seconds: float = 1.0
    #: Seconds a probe may take before it counts as a failure: a probe reuses a kept-alive
    #: connection, so it costs one round trip (well under a second even on a bad WAN); a slow
    #: answer once is absorbed by the hysteresis below.
    probe_timeout_seconds: float = 1.0
    #: Seconds between the starts of probes while a switch is pending (after a failure while
    #: online, a success while offline): the hysteresis is checked quickly, but a link failing
    #: instantly (refused connections) still needs this long per failure to switch.
    retry_interval_seconds: float = 0.5
    #: Consecutive failed observations (probes or proxied requests) before going offline.
    #: Three tolerates a lost probe or two without dropping every watch.
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
        self._last_evidence = 0.0  # monotonic time of the last successful request
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

    def report_success(self) -> None:
        """A request was answered by the upstream: while online and in no doubt, that is as
        good as a probe (the next probe waits a full interval from now)."""
        if self.online and self._failures == 0:
            self._last_evidence = time.monotonic()

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

    def _pending(self) -> bool:
        """Whether a switch is under way (the hysteresis is counting)."""
        return self._failures > 0 if self.online else self._successes > 0

    def _next_delay(self, last_start: float) -> float:
        now = time.monotonic()
        if self._pending():
            return max(0.0, last_start + self.settings.retry_interval_seconds - now)
        since = max(last_start, self._last_evidence if self.online else 0.0)
        return max(0.0, since + self.settings.probe_interval_seconds - now)

    async def _run(self) -> None:
        last_start = time.monotonic()
        while True:
            while (delay := self._next_delay(last_start)) > 0:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                # cancellation that arrives as the wait ends, and stop() would wait forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                if self._wake.is_set():
                    break
            self._wake.clear()
            last_start = time.monotonic()
            try:
                # The probe has its own timeout; this one only guards against a probe that
                # ignores it.
                async with asyncio.timeout(self.settings.probe_timeout_seconds * 2 + 1):
                    healthy = await self._probe()
            except TimeoutError:
                healthy = False
            except Exception:  # a probe bug must not stop probing
                log.exception("upstream probe failed unexpectedly")
                healthy = False
            self._observe(healthy)
