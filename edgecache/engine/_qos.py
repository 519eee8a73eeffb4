"""WAN QoS: the link scheduler that puts foreground reads before background loading.

Place in the data path::

    reader / read-ahead / peer on a reader's behalf          prefetch, DataLoads (background)
      --> ReadEngine.guard: LinkScheduler.request(...)        --> ReadEngine._block:
          counts foreground requests queued or in flight          LinkScheduler.background_block(n)
          (and marks the link's activity file)                    waits for its turn, then
      --> BackendSource (WAN): LinkScheduler.charge(...)  <------ TieredCache -> sources

Every fetch carries a :class:`Priority` in a context variable (:func:`fetch_priority`), so it
follows the fetch through tasks, the engine's loop and single-flight without changing any
signature: prefetch marks its work background, everything else is foreground, and a peer's
request carries its requester's priority in :data:`PRIORITY_HEADER`.

Rules (the seeds' QoS-tiered co-location of online and offline work, applied to the link):

- Foreground never waits for the scheduler.
- A background block starts only when no foreground request is queued or in flight and none
  ended in the last ``foreground_quiet_seconds``, here or in another process on the same
  state directory; a background block in flight is never cancelled, but no new one starts, so
  a foreground burst pauses background within one block (:attr:`background_inflight_bytes`).
- The last ``background_lead`` of a block's expected time on the link (learnt from the blocks
  that landed before) no longer counts as in flight: the next block's request goes out while
  its tail streams, so one block at a time still keeps the link busy (a foreground read finds
  at most that lead more ahead of it).
- Background bytes per second are capped (outside and inside the daily UTC windows, each its
  own cap or none) by a token bucket without burst, charged with the bytes that really cross
  the link (a block found in the cache or served by a peer costs nothing).

Across processes (the agent's DataLoad, a pod's ``edgecache::`` reader on the same node), each
process with foreground requests in flight sets the modification time of one small file per
link, ``<state dir>/<digest of the backend identity>.foreground``, to now, at the start of a
request and every third of the quiet period while any is in flight; a background fetcher
reads it (one ``stat``) before each block. No lock, no counter to leak: a process killed
mid-request stops touching the file and is forgotten after the quiet period.

One scheduler per process per backend link (the backend identity: protocol and endpoint) and
QoS settings (:func:`link_scheduler`), shared by every engine on that link.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import functools
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import xxhash

from edgecache.config import QoSSettings
from edgecache.metrics import QOS_BACKGROUND_WAIT_SECONDS, WAN_BYTES

__all__ = [
    "PRIORITY_HEADER",
    "LinkScheduler",
    "Priority",
    "as_background",
    "current_priority",
    "fetch_priority",
    "link_scheduler",
]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

PRIORITY_HEADER = "X-EdgeCache-Priority"
"""HTTP header of a peer block request carrying the requester's priority (``foreground`` or
``background``); a request without it (or with another value) is foreground."""

_MAX_WAIT_SECONDS = 1.0
"""A waiting background fetch looks again at least this often, whatever it waits for (a
missed wake-up, a clock set forward, a window opening) costs at most this."""


_MIN_LEAD_BLOCK_SECONDS = 0.02
"""Blocks expected to take less than this on the link get no lead: the link idles too little
between them to matter (and a test's clock that does not move gives no estimate)."""


class Priority(enum.Enum):
    """Who a fetch is for: a reader waiting for it, or work that can wait."""

    FOREGROUND = "foreground"
    BACKGROUND = "background"

    @classmethod
    def from_header(cls, value: str | None) -> Priority:
        """The priority a peer's request asked for (:data:`PRIORITY_HEADER`); foreground when
        missing or unknown, so an older peer's reader is never slowed."""
        return cls.BACKGROUND if (value or "").strip().lower() == "background" else cls.FOREGROUND


_PRIORITY: contextvars.ContextVar[Priority] = contextvars.ContextVar(
    "edgecache_fetch_priority", default=Priority.FOREGROUND
)


def current_priority() -> Priority:
    """The priority of the fetches made from here (foreground unless :func:`fetch_priority`
    said otherwise)."""
    return _PRIORITY.get()


@contextlib.contextmanager
def fetch_priority(priority: Priority) -> Iterator[None]:
    """Make the fetches started inside (and in tasks created inside) have ``priority``."""
    token = _PRIORITY.set(priority)
    try:
        yield
    finally:
        _PRIORITY.reset(token)


def as_background(
    work: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Decorate a coroutine function whose fetches are background work (prefetch, DataLoads):
    it runs under ``fetch_priority(Priority.BACKGROUND)``, and its caller's priority is as it
    was afterwards."""

    @functools.wraps(work)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        with fetch_priority(Priority.BACKGROUND):
            return await work(*args, **kwargs)

    return run


@dataclass(eq=False)
class _Ticket:
    """One admitted background block: what it reserved of the bucket and what it really
    fetched over the link (single-flight may have served it from another fetch)."""

    nbytes: int
    reserved: float
    on_link_since: float
    """When it went on the link (admitted, or back from a peer that skipped it)."""
    wan_bytes: int = 0
    off_link: bool = False
    """Waiting on something that does not use the link (a pool peer): it holds no room."""


_TICKET: contextvars.ContextVar[_Ticket | None] = contextvars.ContextVar(
    "edgecache_background_ticket", default=None
)


@dataclass(frozen=True)
class _Wait:
    reason: str
    """``foreground``, ``window``, ``rate`` or ``in_flight`` (the metric's label)."""
    seconds: float | None
    """How long at most before looking again; None: until something here changes."""


class _ActivityFile:
    """The file through which processes on one node see each other's foreground requests."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._usable = True

    def mark(self, now_ns: int) -> None:
        if not self._usable:
            return
        try:
            try:
                os.utime(self.path, ns=(now_ns, now_ns))
            except FileNotFoundError:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                with open(self.path, "ab"):
                    pass
                os.utime(self.path, ns=(now_ns, now_ns))
        except OSError as exc:
            # A read-only cache directory: this process's foreground is then seen only here.
            self._usable = False
            log.warning("QoS: cannot mark foreground activity in %s: %s", self.path, exc)

    def last_ns(self) -> int | None:
        try:
            return os.stat(self.path).st_mtime_ns
        except OSError:
            return None


class LinkScheduler:
    """Foreground first, background capped and windowed, on one backend link (module doc).

    ``wall_clock`` (seconds since the epoch) places the UTC windows; ``clock`` (monotonic
    seconds) times the quiet period and the bucket. Both are injectable for tests. All methods
    run on the engines' event loop, except :meth:`recheck`, which any thread may call.
    """

    def __init__(
        self,
        link: str,
        settings: QoSSettings,
        *,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.link = link
        """The backend identity (protocol and endpoint) whose link this schedules."""
        self.settings = settings
        self.wall_clock = wall_clock
        """Seconds since the epoch: where the UTC windows are (replaceable, e.g. by tests)."""
        self._clock = clock
        self._label = link.split("|", 1)[0]
        self._foreground = 0
        """Foreground requests of this process queued or in flight on the link."""
        self._foreground_ended = -math.inf
        self._marked = -math.inf
        self._beating = False
        self._on_link: set[_Ticket] = set()
        """Background blocks admitted whose bytes have not crossed the link yet."""
        self._seconds_per_byte: float | None = None
        """A background block's time on the link per byte, recent blocks weighing most."""
        self._tokens = 0.0
        self._stamp = clock()
        self._rate: float | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self._activity: dict[str, _ActivityFile] = {}
        self._last_reason: str | None = None
        self._lock = threading.Lock()

    # --- where other processes' foreground shows ----------------------------------------------
    def share_through(self, directory: str) -> None:
        """Mark and watch this link's activity file in ``directory`` (a cache directory's
        ``qos/``, or ``qos_dir``): processes sharing it see each other's foreground."""
        name = xxhash.xxh3_64_hexdigest(self.link.encode()) + ".foreground"
        path = os.path.join(os.path.realpath(directory), name)
        with self._lock:
            self._activity.setdefault(path, _ActivityFile(path))

    # --- foreground ---------------------------------------------------------------------------
    def is_background(self, priority: Priority | None = None) -> bool:
        """Whether a fetch of ``priority`` (default: the current one) is background work on
        this link: QoS is on and it is marked so. Such a fetch waits for its turn
        (:meth:`background_block`) and has request slots of its own (``background_fetches``
        of them), so it never takes one of the foreground's (``fetch_concurrency``)."""
        return self.settings.enabled and (priority or current_priority()) is Priority.BACKGROUND

    @contextlib.contextmanager
    def request(self, priority: Priority | None = None) -> Iterator[None]:
        """Around one backend request (a block, pages, metadata, a write), from before it
        queues for a request slot to its end: a foreground one holds background back."""
        if not self.settings.enabled or self.is_background(priority):
            yield
            return
        self._foreground += 1
        self._mark(force=self._foreground == 1)
        try:
            yield
        finally:
            self._foreground -= 1
            self._foreground_ended = self._clock()
            if self._foreground == 0:
                self._mark(force=True)
                self._wake()

    def _mark(self, *, force: bool) -> None:
        now = self._clock()
        quiet = self.settings.foreground_quiet_seconds
        if not force and now - self._marked < quiet / 4:
            return
        self._marked = now
        now_ns = time.time_ns()
        for activity in list(self._activity.values()):
            activity.mark(now_ns)
        if self._foreground and not self._beating and self._activity:
            self._beating = True
            asyncio.get_running_loop().call_later(max(quiet / 3, 0.01), self._beat)

    def _beat(self) -> None:
        # While any foreground request is in flight, keep the activity files fresh: a request
        # may take longer than the quiet period (a large block on a slow link).
        self._beating = False
        if self._foreground:
            self._mark(force=True)

    def _remote_quiet_left(self) -> float:
        """Seconds until the foreground seen in the activity files is older than the quiet
        period (0: none). A time far in the future (a clock set back) does not count."""
        quiet_ns = self.settings.foreground_quiet_seconds * 1e9
        now_ns = time.time_ns()
        left = 0.0
        for activity in list(self._activity.values()):
            marked = activity.last_ns()
            if marked is not None and abs(now_ns - marked) < quiet_ns:
                left = max(left, (marked + quiet_ns - now_ns) / 1e9)
        return left

    # --- background ---------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def background_block(self, nbytes: int) -> AsyncIterator[None]:
        """Around fetching one background block of ``nbytes``: waits for its turn (no
        foreground, within the windows and the cap, room in flight), then holds its place
        until the block is fetched. Returns at once with QoS disabled."""
        if not self.settings.enabled:
            yield
            return
        await self._admitted(nbytes)
        reserved = nbytes if self._rate is not None else 0
        ticket = _Ticket(nbytes, reserved=reserved, on_link_since=self._clock())
        self._tokens -= ticket.reserved
        self._hold(ticket, 1)
        token = _TICKET.set(ticket)
        try:
            yield
        finally:
            _TICKET.reset(token)
            if not ticket.off_link:
                self._hold(ticket, -1)
            # Pay for what really crossed the link, not for what was reserved.
            if self._rate is not None:
                self._tokens += ticket.reserved - ticket.wan_bytes
            self._wake()

    def _hold(self, ticket: _Ticket, sign: int) -> None:
        if sign > 0:
            self._on_link.add(ticket)
        else:
            self._on_link.discard(ticket)

    def _leads_at(self, ticket: _Ticket) -> float:
        """When ``ticket``'s block enters its lead and stops counting as in flight (inf: no
        block has landed yet to learn the time from, or blocks take no time to speak of)."""
        per_byte, lead = self._seconds_per_byte, self.settings.background_lead
        if per_byte is None or lead == 0:
            return math.inf
        expected = per_byte * ticket.nbytes
        if expected < _MIN_LEAD_BLOCK_SECONDS:
            return math.inf
        return ticket.on_link_since + (1 - lead) * expected

    @contextlib.contextmanager
    def off_link(self) -> Iterator[None]:
        """Around the part of a background block's fetch that does not use this link (a pool
        peer or a local copy serving it): the block holds no room in flight meanwhile. Nodes
        asking each other for blocks would otherwise wait in a circle, each holding its room
        for a block its owner cannot start because its own room is held the same way."""
        ticket = _TICKET.get()
        if ticket is None or ticket.off_link:
            yield
            return
        ticket.off_link = True
        self._hold(ticket, -1)
        self._wake()
        try:
            yield
        finally:
            # Back on the link (the peer skipped it: the backend is next), without waiting:
            # it is inside single-flight now, where waiting would hold readers back.
            ticket.off_link = False
            ticket.on_link_since = self._clock()
            self._hold(ticket, 1)

    def landed(self) -> None:
        """The current background block's bytes have crossed the link (the backend fetch is
        done; the block is being stored): its room in flight is free for the next one. Held
        through the SSD store (p50 150 ms for 4 MiB on a loaded machine), it left the link idle
        between blocks: a prefetch of one large object ran at 0.69x of the link."""
        ticket = _TICKET.get()
        if ticket is None or ticket.off_link:
            return
        per_byte = (self._clock() - ticket.on_link_since) / max(ticket.nbytes, 1)
        previous = self._seconds_per_byte
        self._seconds_per_byte = per_byte if previous is None else 0.7 * previous + 0.3 * per_byte
        ticket.off_link = True
        self._hold(ticket, -1)
        self._wake()

    async def _admitted(self, nbytes: int) -> None:
        while True:
            wait = self.admission(nbytes)
            if wait is None:
                self._note(None)
                return
            self._note(wait.reason)
            started = self._clock()
            await self._sleep(wait.seconds)
            QOS_BACKGROUND_WAIT_SECONDS.labels(wait.reason).inc(self._clock() - started)

    def admission(self, nbytes: int) -> _Wait | None:
        """None if a background block of ``nbytes`` may start now, else why not and for how
        long at most (see :class:`_Wait`)."""
        settings = self.settings
        now = self._clock()
        if self._foreground:
            return _Wait("foreground", None)
        quiet_left = self._foreground_ended + settings.foreground_quiet_seconds - now
        if quiet_left > 0:
            return _Wait("foreground", quiet_left)
        remote_left = self._remote_quiet_left()
        if remote_left > 0:
            return _Wait("foreground", remote_left)
        rate, change_in = self._rate_now()
        self._rate = rate
        if rate == 0:
            return _Wait("window", change_in)
        if self._on_link:
            if len(self._on_link) >= settings.background_fetches:
                return _Wait("in_flight", None)
            leads_at = {ticket: self._leads_at(ticket) for ticket in self._on_link}
            counted = [ticket for ticket, at in leads_at.items() if now < at]
            if counted and (
                sum(ticket.nbytes for ticket in counted) + nbytes
                > settings.background_inflight_bytes
            ):
                first_lead = min(leads_at[ticket] for ticket in counted)
                return _Wait("in_flight", None if first_lead == math.inf else first_lead - now)
        self._refill(rate, now)
        if rate is not None and self._tokens < 0:
            return _Wait("rate", min(-self._tokens / rate, change_in))
        return None

    def _rate_now(self) -> tuple[float | None, float]:
        """The background cap now (bytes/s, None: none) and seconds until it may change."""
        settings = self.settings
        windows = settings.background_windows
        if not windows:
            return settings.background_bytes_per_second, math.inf
        minute = (self.wall_clock() % 86400) / 60
        inside = any(w.contains(minute) for w in windows)
        rate = settings.window_bytes_per_second if inside else settings.background_bytes_per_second
        edges = [m for w in windows for m in (w.start_minute, w.end_minute % 1440)]
        change_in = min(((e - minute) % 1440 or 1440) for e in edges) * 60
        return rate, change_in

    def _refill(self, rate: float | None, now: float) -> None:
        # No burst: an idle link does not bank bytes, so the cap holds over any interval (plus
        # what may be in flight). A cap that changes (a window opening) keeps the debt; no cap
        # forgets it.
        if rate is None:
            self._tokens = 0.0
        else:
            self._tokens = min(0.0, self._tokens + (now - self._stamp) * rate)
        self._stamp = now

    def charge(self, nbytes: int, priority: Priority | None = None) -> None:
        """``nbytes`` crossed the link for a fetch of ``priority`` (default: the current
        one): counted in ``edgecache_wan_bytes_total``, and a background one pays the cap."""
        priority = priority or current_priority()
        WAN_BYTES.labels(self._label, priority.value).inc(nbytes)
        if priority is not Priority.BACKGROUND or not self.settings.enabled:
            return
        ticket = _TICKET.get()
        if ticket is not None:
            ticket.wan_bytes += nbytes
        elif self._rate is not None:
            self._tokens -= nbytes  # background bytes outside a block (pages, listings)

    # --- waiting ------------------------------------------------------------------------------
    async def _sleep(self, seconds: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.add(waiter)
        timeout = _MAX_WAIT_SECONDS if seconds is None else min(seconds, _MAX_WAIT_SECONDS)
        handle = loop.call_later(max(timeout, 0.0), _resolve, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiters.discard(waiter)

    def recheck(self) -> None:
        """Make waiting background fetches look again now (a foreground request ended, a
        background block landed, the clock changed); safe from any thread."""
        for waiter in list(self._waiters):
            waiter.get_loop().call_soon_threadsafe(_resolve, waiter)

    _wake = recheck

    def _note(self, reason: str | None) -> None:
        # One log line per change of state, not per block: "paused (window)", "resumed".
        if reason == self._last_reason:
            return
        self._last_reason = reason
        if reason is None:
            log.debug("QoS %s: background fetches resume", self.link)
        else:
            log.debug("QoS %s: background fetches wait (%s)", self.link, reason)

    def __repr__(self) -> str:
        return f"<LinkScheduler {self.link} foreground={self._foreground}>"


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


_schedulers: dict[tuple[str, QoSSettings], LinkScheduler] = {}
_schedulers_lock = threading.Lock()


def link_scheduler(link: str, settings: QoSSettings) -> LinkScheduler:
    """The process's scheduler of ``link`` (a backend identity) under ``settings``."""
    with _schedulers_lock:
        scheduler = _schedulers.get((link, settings))
        if scheduler is None:
            scheduler = _schedulers[(link, settings)] = LinkScheduler(link, settings)
        return scheduler


def _forget_the_parents() -> None:
    # A forked child has none of its parent's requests in flight, nor its waiters' loop.
    global _schedulers_lock
    _schedulers_lock = threading.Lock()
    _schedulers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_the_parents)
