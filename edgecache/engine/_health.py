"""Backend health: whether the read path sends requests to a backend, and when it tries again.

Place in the data path: the read engine's guard (:meth:`ReadEngine.guard
<edgecache.engine.ReadEngine.guard>`) asks :meth:`BackendHealth.usable` before each request
that needs the backend and reports every "unreachable" error with
:meth:`BackendHealth.went_unreachable`. One object per engine, so every filesystem instance,
``fsspec.open`` and prefetch of a process reading this backend through one cache directory sees
the same state. It holds no client, loop or filesystem of its own (each caller hands it the
probe to run) and works from any thread or event loop.

- **online**: requests go to the backend.
- **offline** (from the first unreachable error or timeout, for every reader at once): cached
  data is served at local speed and nothing waits on the dead link. A request that needs the
  backend probes it at once if the last probe (or failed request) is older than
  ``recheck_after_seconds`` (about a second) and goes ahead if the probe is answered: a link
  that comes back is used by the first read that needs it, with no fixed wait. One probe runs at
  a time, shared by every read waiting for it, so a dead link costs at most one short probe per
  ``recheck_after_seconds`` in total, and a read that finds no probe due fails at once. While
  the backend fails *at once* (refused, reset: not a timeout), a probe is due after a quarter of
  that period: it costs a round trip, not a wait, and a link that comes back is used within a
  fraction of a second. A background probe every ``probe_interval_seconds`` brings the backend
  back when nothing reads.
- **recovering** (online, for ``stable_after_seconds`` after an outage): the hysteresis. Requests
  that need the backend go to it; answers the cache already has (expired metadata) are served as
  they are and refreshed behind the reader's back (:attr:`BackendHealth.stable` is False), so a
  link that flaps makes no reader of cached data wait, however often it drops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Awaitable, Callable

from edgecache.config import HealthSettings
from edgecache.errors import EdgeCacheError
from edgecache.metrics import BACKEND_ONLINE

__all__ = ["BackendHealth", "Probe", "first_error_clause"]

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[None]]
"""A backend's reachability check (``Backend.probe``): returns if reachable, raises if not."""


class BackendHealth:
    """Online/offline state of one backend, shared by every reader of it in the engine.

    Its periods are :class:`~edgecache.config.HealthSettings` (whose docstrings give the
    reasons): the background probe's period, which is also the bound on one probe; the age of
    the last probe at which a read probes by itself; and how long a recovered backend must stay
    reachable before it counts as stable.
    """

    def __init__(
        self,
        identity: str,
        settings: HealthSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.identity = identity
        settings = settings or HealthSettings()
        self.probe_interval_seconds = settings.probe_interval_seconds
        self.recheck_after_seconds = settings.recheck_after_seconds
        self.stable_after_seconds = settings.stable_after_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._online = True
        self._offline_since = 0.0
        self._offline_since_wall = 0.0
        self._first_error = ""
        self._recovered_at: float | None = None
        self._last_probe = float("-inf")
        self._failing_fast = False
        """Whether the last failure (of a request or a probe) came at once rather than by a
        timeout: then a probe is due sooner (see the module docstring)."""
        self._probe_flight: concurrent.futures.Future[bool] | None = None
        self._background: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False
        """No background probe any more (see :meth:`stop_probing`)."""
        self._offline_watchers: set[Callable[[], None]] = set()
        BACKEND_ONLINE.labels(identity).set(1)

    # --- state ---------------------------------------------------------------------------------
    @property
    def online(self) -> bool:
        """Whether requests go to the backend."""
        return self._online

    @property
    def stable(self) -> bool:
        """Online, and not just back from an outage: cached answers may be revalidated in the
        foreground (a reader may wait on the backend although the cache could answer)."""
        if not self._online:
            return False
        recovered = self._recovered_at
        return recovered is None or self._clock() - recovered >= self.stable_after_seconds

    @property
    def offline_since(self) -> float | None:
        """Wall-clock time (``time.time()``) it went offline; None while online."""
        return None if self._online else self._offline_since_wall

    @property
    def last_error(self) -> str:
        """The error that took the backend offline, once (empty while online)."""
        return "" if self._online else self._first_error

    def describe(self) -> str:
        """``unreachable since 10:42:07 (12 s)``, with the error that took it offline; ``online``
        while online. One sentence for any error message, never nested."""
        if self._online:
            return "online"
        since = time.strftime("%H:%M:%S", time.localtime(self._offline_since_wall))
        offline_for = self._clock() - self._offline_since
        first = first_error_clause(self._first_error)
        return f"unreachable since {since} ({offline_for:.0f} s; {first})"

    # --- evidence ------------------------------------------------------------------------------
    def went_unreachable(self, exc: BaseException, probe: Probe | None = None) -> None:
        """A request found the backend unreachable: go offline for every reader at once and, with
        ``probe`` (called from a running loop), probe in the background."""
        with self._lock:
            now = self._clock()
            went_offline = self._online
            if went_offline:
                self._online = False
                self._offline_since = now
                self._offline_since_wall = time.time()
                self._first_error = _root_message(exc, self.identity)
            # Every failed request, the first or one that was sent before the backend went
            # offline and failed since, is evidence as fresh as a probe: the next probe may
            # wait. (A request that waited out its read timeout on a hung link, then a probe
            # for the read it served, cost that read a probe timeout on top of its own.)
            self._failing_fast = not _timed_out(exc)
            self._last_probe = max(self._last_probe, now)
        if went_offline:
            BACKEND_ONLINE.labels(self.identity).set(0)
            log.warning(
                "backend %s unreachable (%s); serving from cache, probing when a read needs it",
                self.identity,
                self._first_error,
            )
            with self._lock:
                watchers = list(self._offline_watchers)
            for watcher in watchers:
                watcher()
        if probe is not None:
            self._keep_probing(probe)

    def on_offline(self, watcher: Callable[[], None]) -> Callable[[], None]:
        """Call ``watcher`` (in the thread that found the backend unreachable) when the backend
        goes offline; returns the function that stops watching. For a request whose caller
        has a cached answer: it need not wait out its own timeout once another request has
        shown the link to be down."""
        with self._lock:
            self._offline_watchers.add(watcher)

        def stop() -> None:
            with self._lock:
                self._offline_watchers.discard(watcher)

        return stop

    async def usable(self, probe: Probe) -> bool:
        """Whether a request that needs the backend should be sent now.

        Online: True at once. Offline: probes first if the last probe is old enough (or joins
        the probe in flight) and answers whether it succeeded; False at once otherwise.
        """
        if self._online:
            return True
        self._keep_probing(probe)
        with self._lock:
            flight = self._probe_flight
            if flight is None:
                due_after = self.recheck_after_seconds / (4 if self._failing_fast else 1)
                if self._clock() - self._last_probe < due_after:
                    return self._online
                flight = self._start_probe(probe)
        return await self._outcome(flight)

    async def _outcome(self, flight: concurrent.futures.Future[bool]) -> bool:
        """Whether the probe ``flight`` succeeded. A probe is bounded by the probe interval, so a
        longer wait means its event loop stopped under it: that probe counts as failed."""
        try:
            # Shielded: a reader giving up must not cancel the probe the others wait for.
            async with asyncio.timeout(self.probe_interval_seconds + 1.0):
                return await asyncio.shield(asyncio.wrap_future(flight))
        except TimeoutError:
            with self._lock:
                if self._probe_flight is flight:
                    self._probe_flight = None
            return self._online

    # --- probing -------------------------------------------------------------------------------
    def _start_probe(self, probe: Probe) -> concurrent.futures.Future[bool]:
        """Start one probe on the running loop (caller holds the lock)."""
        flight: concurrent.futures.Future[bool] = concurrent.futures.Future()
        self._probe_flight = flight
        self._last_probe = self._clock()
        task = asyncio.get_running_loop().create_task(self._run_probe(probe, flight))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return flight

    async def _run_probe(self, probe: Probe, flight: concurrent.futures.Future[bool]) -> None:
        reachable = False
        started = self._clock()
        try:
            async with asyncio.timeout(self.probe_interval_seconds):
                await probe()
            reachable = True
        except Exception as exc:
            log.debug("probe of %s failed: %s", self.identity, exc)
        finally:
            with self._lock:
                self._probe_flight = None
                # A probe is bounded by a timeout of seconds; one that failed well within
                # the recheck period was refused or reset.
                took = self._clock() - started
                self._failing_fast = took < self.recheck_after_seconds / 2
            if reachable:
                self._back_online()
            flight.set_result(reachable)

    def stop_probing(self) -> None:
        """Stop the background probe and cancel the probes in flight (from any thread): the
        backend's client is about to be closed (its engine was replaced, or the process
        exits), and a probe after that would open the client's session again, to be left
        unclosed. A read that needs the backend still probes it (and reopens the client)."""
        with self._lock:
            self._stopped = True
            running = [t for t in (self._background, *self._tasks) if t is not None]
        for task in running:
            loop = task.get_loop()
            if not task.done() and not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)

    def _keep_probing(self, probe: Probe) -> None:
        """Run the background probe on the running loop unless one runs somewhere already."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # sync caller: the next read that needs the backend starts it
        with self._lock:
            if self._stopped:
                return
            task = self._background
            if task is not None and not task.done() and not task.get_loop().is_closed():
                return
            self._background = loop.create_task(self._probe_until_online(probe))

    async def _probe_until_online(self, probe: Probe) -> None:
        while not self._online:
            await asyncio.sleep(self.probe_interval_seconds)
            with self._lock:
                flight = self._probe_flight
                if flight is None and not self._online:
                    flight = self._start_probe(probe)
            if flight is not None:
                await self._outcome(flight)

    def _back_online(self) -> None:
        with self._lock:
            if self._online:
                return
            self._online = True
            self._recovered_at = self._clock()
            offline_for = self._recovered_at - self._offline_since
            self._first_error = ""
        BACKEND_ONLINE.labels(self.identity).set(1)
        log.warning("backend %s reachable again after %.1f s", self.identity, offline_for)


def _timed_out(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised from, is a timeout (Python's, or a client
    library's ``...Timeout...`` class such as botocore's ``ReadTimeoutError``)."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, TimeoutError) or "Timeout" in type(seen).__name__:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _root_message(exc: BaseException, identity: str) -> str:
    """What went wrong, once: an edgecache error's own message (it names the URL and the
    library's error) without the "<backend> is unreachable" it opens with, which every message
    that quotes it says already; anything else as ``Type: message``."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, EdgeCacheError) or text.startswith(type(exc).__name__):
        prefix = f"{identity} is unreachable"
        if text.startswith(prefix) and len(text) > len(prefix):
            text = text[len(prefix) :].lstrip(": ")
        return text
    return f"{type(exc).__name__}: {text}"


def first_error_clause(first: str) -> str:
    """``first error while reading s3://b/k: ...`` (or ``first error: ...``): how a message
    quotes the error that took a backend offline."""
    return f"first error {first}" if first.startswith("while ") else f"first error: {first}"
