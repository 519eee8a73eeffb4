"""Recording: what happens to an upstream answer after (and while) it is sent to the client.

The proxy hands every successful GET, LIST, WATCH and discovery answer of a recorded component
here. Parsing and writing happen on the store's writer thread, after the bytes went to the
client, so recording adds almost nothing to online latency:

* LIST: the items become the new content of the list key (component, gvr, namespace, selector),
  replacing what was there (so upstream deletions disappear on resync); paginated lists
  (``limit``/``continue``) are assembled and committed when the last page arrives. A list whose
  resourceVersion equals the last one recorded for its key is skipped (same RV, same content).
* GET: the object is stored under the ``#get`` pseudo-selector; a 404 forgets stored copies.
* WATCH: events are applied in small batches (upsert, delete, advance the list RV); a WatchList
  (``sendInitialEvents=true``) stream becomes a list replacement at its initial-events-end
  bookmark.
* Discovery, OpenAPI and server-side tables (``as=Table``) are stored raw per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from edgecache.hub._config import RecordingSettings
from edgecache.hub._requestinfo import RequestInfo
from edgecache.hub._store import HubStore, ObjectRow, RawResponse, WatchChange

__all__ = ["Recorder", "WatchRecording", "json_accept", "object_row", "raw_key"]

log = logging.getLogger(__name__)

_LIST_METADATA = re.compile(rb'^\s*\{.{0,200}?"metadata"\s*:\s*(\{[^{}]*\})', re.DOTALL)
_RV = re.compile(rb'"resourceVersion"\s*:\s*"([^"]*)"')
_INITIAL_EVENTS_END = "k8s.io/initial-events-end"
_UNRECORDED_KINDS = frozenset({"Table", "PartialObjectMetadata", "PartialObjectMetadataList"})
_MAX_PENDING_PAGES = 64
_MAX_REMEMBERED_GETS = 100_000
#: An unchanged list is still rewritten this often, which keeps it from expiring in the store.
_UNCHANGED_LIST_REWRITE_SECONDS = 600.0


def json_accept(accept: str) -> str:
    """An Accept header without protobuf, so that recorded answers are JSON (clients that send
    protobuf first, like kubelet, always list JSON as a fallback)."""
    parts = [part for part in accept.split(",") if "protobuf" not in part]
    return ",".join(parts) if parts else "application/json"


def raw_key(path: str, query: Mapping[str, str], accept: str) -> str:
    """The store key of a raw answer: path, sorted query and the (JSON-only) Accept header."""
    pairs = "&".join(f"{k}={v}" for k, v in sorted(query.items()))
    return f"{path}?{pairs}|{json_accept(accept)}"


def object_row(obj: Mapping[str, Any], *, kind: str = "", api_version: str = "") -> ObjectRow:
    """An object as stored: list items get their kind and apiVersion back, so a stored item
    can also answer an offline GET."""
    meta = obj.get("metadata") or {}
    if kind and "kind" not in obj:
        obj = {"apiVersion": api_version, "kind": kind, **obj}
    labels = json.dumps(meta.get("labels") or {}, separators=(",", ":"), sort_keys=True)
    return ObjectRow(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        rv=str(meta.get("resourceVersion") or ""),
        labels=labels,
        body=json.dumps(obj, separators=(",", ":")).encode(),
    )


def _inflate(body: bytes, *, max_bytes: int = 0) -> bytes:
    """Inflate a gzip body (only its first ``max_bytes`` when given); b"" if it is corrupt."""
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        if max_bytes:
            return decoder.decompress(body, max_bytes)
        return decoder.decompress(body) + decoder.flush()
    except zlib.error:
        return b""


def _head_object_rv(body: bytes) -> str | None:
    """An object's resourceVersion read from its first bytes (metadata precedes spec)."""
    match = _RV.search(body, 0, 4096)
    return None if match is None else match.group(1).decode()


def _head_list_rv(body: bytes) -> str | None:
    """The list resourceVersion read from the first bytes, or None if paginated or unsure."""
    match = _LIST_METADATA.match(body[:2048])
    if match is None or b'"continue"' in match.group(1):
        return None
    rv = _RV.search(match.group(1))
    return None if rv is None else rv.group(1).decode()


class Recorder:
    """Schedules recording work on the store's writer thread."""

    def __init__(self, store: HubStore, settings: RecordingSettings) -> None:
        self.store = store
        self.settings = settings
        self._pending: set[asyncio.Future[None]] = set()
        self._queued_bytes = 0
        self._list_seq: dict[tuple[str, str, str, str], int] = {}
        # Per list key: (resourceVersion, monotonic time) of the last recorded answer.
        self._last_rv: dict[tuple[str, str, str, str], tuple[str, float]] = {}
        self._last_get_rv: dict[tuple[str, str, str, str], str] = {}
        # Pages of a paginated list, by (component, continue token) of the next page.
        self._pages: OrderedDict[tuple[str, str], tuple[tuple[str, str, str, str], list[Any]]]
        self._pages = OrderedDict()

    def wants(self, info: RequestInfo, component: str) -> bool:
        """Whether this request's answer is recorded."""
        if self.settings.components is not None and component not in self.settings.components:
            return False
        if info.verb == "discovery":
            return True
        if info.verb not in ("get", "list", "watch") or info.subresource:
            return False
        return not (
            info.group == ""
            and info.resource == "secrets"
            and component not in self.settings.secret_components
        )

    def _track(self, future: asyncio.Future[None], *, queued_bytes: int = 0) -> None:
        self._pending.add(future)
        self._queued_bytes += queued_bytes
        future.add_done_callback(lambda done: self._done(done, queued_bytes))

    def _done(self, future: asyncio.Future[None], queued_bytes: int = 0) -> None:
        self._pending.discard(future)
        self._queued_bytes -= queued_bytes
        if not future.cancelled() and future.exception() is not None:
            log.warning("recording failed: %s", future.exception())

    async def drain(self) -> None:
        """Wait until everything scheduled so far is in the store."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def record(
        self,
        info: RequestInfo,
        component: str,
        *,
        key: str,
        query: Mapping[str, str],
        status: int,
        content_type: str,
        body: bytes,
        gzipped: bool = False,
    ) -> None:
        """Record one complete non-watch answer (called after it was sent to the client).

        A ``gzipped`` body is inflated on the writer thread, not here on the event loop.
        """
        if len(body) > self.settings.max_response_bytes:
            return
        # The disk cannot keep up: answers are dropped (the next one of their key is recorded)
        # rather than held in an unbounded backlog in memory. Forgetting (404) always goes on.
        backlog_full = self._queued_bytes + len(body) > self.settings.max_queued_bytes
        # What the resourceVersion checks read: the first bytes, inflated if need be.
        head = _inflate(body, max_bytes=4096) if gzipped else body
        if info.verb == "discovery":
            if status == 200 and not backlog_full:
                self._track(
                    asyncio.ensure_future(
                        self.store.write(
                            self._record_raw, component, key, content_type, body, gzipped
                        )
                    ),
                    queued_bytes=len(body),
                )
            return
        if info.verb == "get" and status == 404:
            self._last_get_rv.pop((component, info.gvr, info.namespace, info.name), None)
            future = self.store.write(
                self.store.forget_object, component, info.gvr, info.namespace, info.name
            )
            self._track(asyncio.ensure_future(future))
            return
        if status != 200 or "json" not in content_type:
            return
        if backlog_full:
            log.info("recording backlog full: %s not recorded", key)
            return
        if info.verb == "get":
            object_key = (component, info.gvr, info.namespace, info.name)
            head_rv = _head_object_rv(head)
            if head_rv is not None and self._last_get_rv.get(object_key) == head_rv:
                return  # same resourceVersion: the stored copy is this object
            if len(self._last_get_rv) >= _MAX_REMEMBERED_GETS:
                self._last_get_rv.clear()
            if head_rv is not None:
                self._last_get_rv[object_key] = head_rv
            self._track(
                asyncio.ensure_future(
                    self.store.write(
                        self._record_get, component, info, key, content_type, body, gzipped
                    )
                ),
                queued_bytes=len(body),
            )
        elif info.verb == "list":
            list_key = (component, info.gvr, info.namespace, info.selector)
            continue_token = query.get("continue", "")
            if not continue_token:
                head_rv = _head_list_rv(head)
                last = self._last_rv.get(list_key)
                if (
                    head_rv is not None
                    and last is not None
                    and last[0] == head_rv
                    and time.monotonic() - last[1] < _UNCHANGED_LIST_REWRITE_SECONDS
                ):
                    return  # same resourceVersion, same content: nothing to write
            seq = self._list_seq.get(list_key, 0) + 1
            self._list_seq[list_key] = seq
            self._track(
                asyncio.ensure_future(
                    self.store.write(
                        self._record_list,
                        list_key,
                        seq,
                        continue_token,
                        key,
                        content_type,
                        body,
                        gzipped,
                    )
                ),
                queued_bytes=len(body),
            )

    # --- writer-thread work -------------------------------------------------------------------
    def _record_raw(
        self, component: str, key: str, content_type: str, body: bytes, gzipped: bool
    ) -> None:
        if gzipped:
            body = _inflate(body)
        self.store.put_raw(component, key, RawResponse(200, content_type, body))

    def _record_get(
        self,
        component: str,
        info: RequestInfo,
        key: str,
        content_type: str,
        body: bytes,
        gzipped: bool,
    ) -> None:
        if gzipped:
            body = _inflate(body)
        obj = json.loads(body)
        if not isinstance(obj, dict):
            return
        if obj.get("kind") in _UNRECORDED_KINDS:
            self.store.put_raw(component, key, RawResponse(200, content_type, body))
            return
        self.store.put_object(component, info.gvr, object_row(obj))

    def _record_list(
        self,
        list_key: tuple[str, str, str, str],
        seq: int,
        continue_token: str,
        key: str,
        content_type: str,
        body: bytes,
        gzipped: bool,
    ) -> None:
        component = list_key[0]
        if gzipped:
            body = _inflate(body)
        obj = json.loads(body)
        if not isinstance(obj, dict):
            return
        if obj.get("kind") in _UNRECORDED_KINDS:
            if not continue_token:
                self.store.put_raw(component, key, RawResponse(200, content_type, body))
            return
        items: list[Any] = list(obj.get("items") or [])
        if continue_token:
            page = self._pages.pop((component, continue_token), None)
            if page is None or page[0] != list_key:
                return  # the first page was not seen: this cannot become a whole list
            items = page[1] + items
        meta = obj.get("metadata") or {}
        next_token = meta.get("continue")
        if next_token:
            self._pages[(component, str(next_token))] = (list_key, items)
            while len(self._pages) > _MAX_PENDING_PAGES:
                self._pages.popitem(last=False)
            return
        if not continue_token and self._list_seq.get(list_key) != seq:
            return  # a newer answer for the same list is queued behind this one
        list_kind = str(obj.get("kind") or "List")
        api_version = str(obj.get("apiVersion") or "v1")
        item_kind = list_kind[: -len("List")] if list_kind.endswith("List") else ""
        rows = [object_row(item, kind=item_kind, api_version=api_version) for item in items]
        rv = str(meta.get("resourceVersion") or "")
        self.store.replace_list(
            *list_key, rv=rv, kind=list_kind, api_version=api_version, rows=rows
        )
        self._last_rv[list_key] = (rv, time.monotonic())

    def watch(self, info: RequestInfo, component: str, *, initial_events: bool) -> WatchRecording:
        """A recorder for one proxied watch stream."""
        return WatchRecording(self, info, component, initial_events=initial_events)


class WatchRecording:
    """Splits a proxied watch stream into events and applies them to the store in batches."""

    def __init__(
        self, recorder: Recorder, info: RequestInfo, component: str, *, initial_events: bool
    ) -> None:
        self.recorder = recorder
        self.key = (component, info.gvr, info.namespace, info.selector)
        self._buffer = b""
        self._lines: list[bytes] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._initial: list[ObjectRow] | None = [] if initial_events else None
        self._initial_kind = ""
        self._initial_api_version = ""

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the stream (any split; events end with a newline)."""
        data = self._buffer + chunk
        *lines, self._buffer = data.split(b"\n")
        self._lines.extend(line for line in lines if line.strip())
        if self._lines and self._flush_handle is None:
            loop = asyncio.get_running_loop()
            delay = self.recorder.settings.watch_flush_seconds
            self._flush_handle = loop.call_later(delay, self.flush)

    def flush(self) -> None:
        self._flush_handle = None
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        store = self.recorder.store
        self.recorder._track(asyncio.ensure_future(store.write(self._apply, lines)))

    def close(self) -> None:
        """The stream ended: write what is left."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if self._buffer.strip():
            self._lines.append(self._buffer)
            self._buffer = b""
        self.flush()

    def _apply(self, lines: list[bytes]) -> None:
        changes: list[WatchChange] = []
        rv: str | None = None
        store = self.recorder.store
        for line in lines:
            try:
                event = json.loads(line)
                event_type = str(event["type"])
                obj = event["object"]
            except (ValueError, KeyError, TypeError):
                log.debug("unparsable watch event skipped")
                continue
            if event_type == "ERROR" or not isinstance(obj, dict):
                continue
            if obj.get("kind") in _UNRECORDED_KINDS:
                return
            meta = obj.get("metadata") or {}
            event_rv = str(meta.get("resourceVersion") or "") or None
            if self._initial is not None:
                if event_type == "BOOKMARK":
                    annotations = meta.get("annotations") or {}
                    if annotations.get(_INITIAL_EVENTS_END) == "true":
                        kind = self._initial_kind or str(obj.get("kind") or "")
                        api_version = self._initial_api_version or str(obj.get("apiVersion"))
                        store.replace_list(
                            *self.key,
                            rv=event_rv or "",
                            kind=f"{kind}List",
                            api_version=api_version,
                            rows=self._initial,
                        )
                        self._initial = None
                    continue
                if event_type == "ADDED":
                    self._initial_kind = str(obj.get("kind") or "")
                    self._initial_api_version = str(obj.get("apiVersion") or "")
                    self._initial.append(object_row(obj))
                    continue
            if event_type != "BOOKMARK":
                changes.append(WatchChange(event_type, object_row(obj)))
            rv = event_rv or rv
        if changes or rv is not None:
            store.apply_watch(*self.key, changes=changes, rv=rv)
