"""Observation: list, then watch, one kind into a local cache, and say what changed.

The first stage of the controller (observation -> queueing -> reconciling), and how the node
agent follows Datasets, runtimes and DataLoads. A thread per kind
lists, then watches from the list's resourceVersion with bookmarks; each change is applied to
:attr:`Informer.cache` on the event loop (so reconcilers read it without locks) and handed to
``on_change(old, new)``. A watch that ends is resumed from the last resourceVersion seen; one
whose resourceVersion expired (410) or that failed is followed by a fresh list, after a backoff
that doubles up to a minute, so a flapping API server is not hammered. Level-triggered: what the
reconcilers act on is the cached state, never the event itself.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from edgecache.k8s.api import (
    Kube,
    KubeError,
    KubeUnavailableError,
    WatchStream,
    resource_path,
)
from edgecache.k8s.objects import Kind

__all__ = ["Informer", "object_key"]

log = logging.getLogger(__name__)
JSONObject = dict[str, Any]
Key = tuple[str, str]
OnChange = Callable[[JSONObject | None, JSONObject | None], None]


def object_key(obj: JSONObject) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Informer:
    """Keeps :attr:`cache` equal to the API's objects of one kind (all namespaces)."""

    def __init__(
        self,
        kube: Kube,
        kind: Kind,
        *,
        on_change: OnChange,
        label_selector: str | None = None,
        watch_timeout_seconds: int = 300,
        max_backoff_seconds: float = 60.0,
        restarts: Any = None,
    ) -> None:
        self.kube = kube
        self.kind = kind
        self.on_change = on_change
        self.label_selector = label_selector
        self.watch_timeout_seconds = watch_timeout_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.restarts = restarts
        """A Prometheus counter labelled (resource, reason) counting re-lists, or None."""
        self.cache: dict[Key, JSONObject] = {}
        self.synced = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._stream: WatchStream | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._run, name=f"watch-{self.kind.plural}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()

    async def join(self, timeout_seconds: float = 5.0) -> None:
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, timeout_seconds)

    def objects(self) -> list[JSONObject]:
        return list(self.cache.values())

    # --- on the event loop ------------------------------------------------------------------
    def _replace(self, items: list[JSONObject]) -> None:
        fresh = {object_key(obj): obj for obj in items}
        old = self.cache
        self.cache = fresh
        for key, obj in old.items():
            if key not in fresh:
                self.on_change(obj, None)
        for key, obj in fresh.items():
            previous = old.get(key)
            if previous is None or previous.get("metadata", {}).get("resourceVersion") != obj.get(
                "metadata", {}
            ).get("resourceVersion"):
                self.on_change(previous, obj)
        self.synced.set()

    def _apply(self, kind: str, obj: JSONObject) -> None:
        key = object_key(obj)
        previous = self.cache.get(key)
        if kind == "DELETED":
            self.cache.pop(key, None)
            self.on_change(previous or obj, None)
        else:
            self.cache[key] = obj
            self.on_change(previous, obj)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: we are shutting down
            self._stop.set()

    # --- in the watch thread ----------------------------------------------------------------
    def _list(self) -> str:
        query = [("labelSelector", self.label_selector)] if self.label_selector else []

        answer = self.kube.call("GET", resource_path(self.kind), query=query)
        items = []
        for item in answer.get("items") or []:
            # List items carry no kind; watch events do. Make them alike for the reconcilers.
            item.setdefault("apiVersion", self.kind.api_version)
            item.setdefault("kind", self.kind.kind)
            items.append(item)
        self._post(self._replace, items)
        return str((answer.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, resource_version: str) -> str | None:
        """Watch until the stream ends; the last resourceVersion, or None to re-list."""
        stream = self.kube.open_watch(
            self.kind,
            resource_version=resource_version,
            label_selector=self.label_selector,
            timeout_seconds=self.watch_timeout_seconds,
        )
        self._stream = stream
        try:
            if self._stop.is_set():
                return resource_version
            for event in stream:
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    code = obj.get("code")
                    log.info("watch %s: %s %s", self.kind.plural, code, obj.get("message"))
                    return None
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    resource_version = str(version)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._post(self._apply, kind, obj)
                if self._stop.is_set():
                    break
        finally:
            self._stream = None
        return resource_version

    def _count_restart(self, reason: str) -> None:
        if self.restarts is not None:
            self.restarts.labels(self.kind.plural, reason).inc()

    def _run(self) -> None:
        backoff = 0.5
        resource_version: str | None = None
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list()
                resource_version = self._watch(resource_version)
                backoff = 0.5
                if resource_version is None:
                    self._count_restart("expired")
                continue
            except (KubeError, KubeUnavailableError) as exc:
                if self._stop.is_set():
                    break
                self._count_restart("error")
                log.warning("watch %s failed (%s); again in %.1f s", self.kind.plural, exc, backoff)
                resource_version = None
            except Exception:  # a bug must not silently end observation of a kind
                log.exception("watch %s: unexpected error", self.kind.plural)
                resource_version = None
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.max_backoff_seconds)
