"""Watch streams: chunked JSON lines of ``{"type": ..., "object": ...}`` events.

Sits between the store's event history and the HTTP response. A watch starts from its
``resourceVersion`` (replaying the history after it, or 410 Gone as an ``ERROR`` event when that
history is compacted), or from the current state as synthetic ``ADDED`` events when no
resourceVersion (or ``0``) is given, or with ``sendInitialEvents=true`` followed by the
``k8s.io/initial-events-end`` bookmark. Selectors are applied to both the new and the previous
state of each object, so an object that stops matching is sent as ``DELETED`` and one that starts
matching as ``ADDED``, as the API server's watch cache does. ``BOOKMARK`` events carry a
resourceVersion up to which the stream has delivered everything, so a client can resume from it
without losing events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import _status
from ._history import StoredEvent
from ._resources import ResourceType
from ._store import Predicate, Store

JSONObject = dict[str, Any]
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
_DISCONNECT_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class WatchOptions:
    """The watch-related query parameters of one request."""

    resource_version: str = ""
    allow_bookmarks: bool = False
    send_initial_events: bool = False
    timeout_seconds: float | None = None


def _as_version(obj: JSONObject, resource: ResourceType) -> JSONObject:
    if obj.get("apiVersion") == resource.api_version:
        return obj
    return {**obj, "apiVersion": resource.api_version}


class WatchStream:
    """One client's watch: produces encoded event lines until its end."""

    def __init__(
        self,
        store: Store,
        resource: ResourceType,
        namespace: str | None,
        predicate: Predicate,
        options: WatchOptions,
        *,
        bookmark_interval_seconds: float,
        render: Callable[[JSONObject], JSONObject] | None = None,
    ) -> None:
        self._store = store
        self._resource = resource
        self._namespace = namespace
        self._predicate = predicate
        self._options = options
        self._bookmark_interval = bookmark_interval_seconds
        self._render = render or (lambda obj: obj)
        self._wake = asyncio.Event()
        self._stopped = False
        self._cursor = 0

    def stop(self) -> None:
        """End the stream cleanly (server shutdown, or a test closing all watches)."""
        self._stopped = True
        self._wake.set()

    def _line(self, kind: str, obj: JSONObject) -> bytes:
        return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"

    def _event_line(self, kind: str, obj: JSONObject) -> bytes:
        return self._line(kind, self._render(_as_version(obj, self._resource)))

    def _bookmark(self, *, initial_end: bool = False) -> bytes:
        metadata: JSONObject = {"resourceVersion": str(self._cursor)}
        if initial_end:
            metadata["annotations"] = {INITIAL_EVENTS_END: "true"}
        obj = {
            "kind": self._resource.kind,
            "apiVersion": self._resource.api_version,
            "metadata": metadata,
        }
        return self._line("BOOKMARK", obj)

    def _error(self, error: _status.APIError) -> bytes:
        return self._line("ERROR", error.status())

    def _too_old(self) -> bytes:
        return self._error(
            _status.gone(
                f"too old resource version: {self._options.resource_version} "
                f"({self._store.compacted_resource_version})"
            )
        )

    def start(self) -> list[bytes]:
        """The first lines: the initial state, or nothing for a watch from a resourceVersion."""
        options = self._options
        if options.send_initial_events or options.resource_version in ("", "0"):
            page = self._store.list_page(self._resource, self._namespace, self._predicate)
            self._cursor = page.resource_version
            lines = [self._event_line("ADDED", obj) for obj in page.items]
            if options.send_initial_events and options.allow_bookmarks:
                lines.append(self._bookmark(initial_end=True))
            return lines
        try:
            self._cursor = int(options.resource_version)
        except ValueError:
            self._stopped = True
            return [
                self._error(
                    _status.bad_request(f"invalid resourceVersion {options.resource_version!r}")
                )
            ]
        if self._store.events_after(self._cursor) is None:
            self._stopped = True
            return [self._too_old()]
        return []

    def _translate(self, event: StoredEvent) -> bytes | None:
        if event.group_resource != self._resource.group_resource:
            return None
        if self._namespace is not None and event.namespace != self._namespace:
            return None
        now_matches = self._predicate(event.object)
        if event.type == "ADDED":
            return self._event_line("ADDED", event.object) if now_matches else None
        if event.type == "DELETED":
            return self._event_line("DELETED", event.object) if now_matches else None
        before: Mapping[str, Any] = event.old or {}
        was_matching = self._predicate(before)
        if now_matches and was_matching:
            return self._event_line("MODIFIED", event.object)
        if now_matches:
            return self._event_line("ADDED", event.object)
        if was_matching:
            return self._event_line("DELETED", event.object)
        return None

    def pending(self) -> list[bytes] | None:
        """Lines for events committed since the cursor; ``None`` once the stream must end."""
        if self._stopped:
            return None
        found = self._store.events_after(self._cursor)
        if found is None:
            self._stopped = True
            return [self._too_old()]
        events, reached = found
        self._cursor = reached
        return [line for line in map(self._translate, events) if line is not None]

    async def run(
        self, write: Callable[[bytes], Any], *, closed: Callable[[], bool] = lambda: False
    ) -> None:
        """Send events through ``write`` (an async callable) until timeout, stop or disconnect.

        ``closed`` tells whether the client has gone; it is polled every second, so an idle watch
        whose client disconnected ends even when nothing is written to it.
        """
        loop = asyncio.get_running_loop()
        deadline = (
            None
            if self._options.timeout_seconds is None
            else loop.time() + self._options.timeout_seconds
        )
        self._store.add_waiter(loop, self._wake)
        try:
            for line in self.start():
                await write(line)
            last_bookmark = time.monotonic()
            while True:
                self._wake.clear()
                lines = self.pending()
                if lines is None:
                    return
                for line in lines:
                    await write(line)
                if self._stopped:
                    return
                if (
                    self._options.allow_bookmarks
                    and time.monotonic() - last_bookmark >= self._bookmark_interval
                ):
                    await write(self._bookmark())
                    last_bookmark = time.monotonic()
                next_bookmark = last_bookmark + self._bookmark_interval - time.monotonic()
                waits = [next_bookmark if self._options.allow_bookmarks else 3600.0]
                waits.append(_DISCONNECT_POLL_SECONDS)
                if deadline is not None:
                    waits.append(deadline - loop.time())
                    if waits[-1] <= 0:
                        return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, min(waits)))
                if closed():
                    return
        finally:
            self._store.remove_waiter(loop, self._wake)
