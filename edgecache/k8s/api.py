"""API access for the controller and the node agent: the official client's transport, plain dicts.

Every call goes through one ``kubernetes.client.ApiClient`` (TLS, bearer token refresh, client
certificates, connection pool: built by :func:`edgecache.k8s.official_api_client` from the same
flags as the hub), by REST path, so every kind (core, CRDs, leases) is handled alike and objects
stay the JSON the API serves. Blocking calls run on a small thread pool; the reconcilers (and
the agent's loops) await them. Failures become :class:`KubeError` (an answer with a status code) or
:class:`KubeUnavailableError` (no answer: retry later), translated here at the boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edgecache.errors import EdgeCacheError, TemporaryError
from edgecache.k8s.objects import Kind

__all__ = [
    "LEASE",
    "NODE",
    "PERSISTENT_VOLUME",
    "PERSISTENT_VOLUME_CLAIM",
    "SECRET",
    "Kube",
    "KubeError",
    "KubeUnavailableError",
    "WatchStream",
    "merge_patch",
    "resource_path",
    "status_patch",
]

log = logging.getLogger(__name__)
JSONObject = dict[str, Any]

NODE = Kind("Node", "nodes", group="", version="v1", namespaced=False)
SECRET = Kind("Secret", "secrets", group="", version="v1")
PERSISTENT_VOLUME = Kind(
    "PersistentVolume", "persistentvolumes", group="", version="v1", namespaced=False
)
PERSISTENT_VOLUME_CLAIM = Kind(
    "PersistentVolumeClaim", "persistentvolumeclaims", group="", version="v1"
)
LEASE = Kind("Lease", "leases", group="coordination.k8s.io", version="v1")

MERGE_PATCH = "application/merge-patch+json"


class KubeError(EdgeCacheError):
    """The API server answered with an error ``Status``."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class KubeUnavailableError(TemporaryError, ConnectionError):
    """The API server could not be reached (or did not answer in time)."""


def resource_path(kind: Kind, namespace: str | None = None, name: str | None = None) -> str:
    base = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
    if kind.namespaced and namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{kind.plural}"
    return f"{base}/{name}" if name else base


class WatchStream:
    """One open watch: iterate its events; :meth:`close` from any thread ends the iteration."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def __iter__(self) -> Iterator[JSONObject]:
        from kubernetes.watch.watch import iter_resp_lines

        try:
            for line in iter_resp_lines(self._response):  # type: ignore[no-untyped-call]
                if line.strip():
                    yield json.loads(line)
        except Exception as exc:  # urllib3/socket errors while streaming, and a closed stream
            raise KubeUnavailableError(f"watch stream broke: {exc}") from exc
        finally:
            self._response.release_conn()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._response.shutdown()  # unblocks a read in progress in another thread
        self._response.close()


class Kube:
    """Async access to the API through one official ``ApiClient``."""

    def __init__(
        self,
        api_client: Any,
        *,
        request_timeout_seconds: float = 30.0,
        threads: int = 8,
        field_manager: str = "edgecache-controller",
    ) -> None:
        self.api_client = api_client
        self.field_manager = field_manager
        """Names the writer in ``managedFields`` (server-side apply bookkeeping)."""
        self.request_timeout_seconds = request_timeout_seconds
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="kube-call")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.api_client.close()

    # --- blocking core -----------------------------------------------------------------------
    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout: Any = None,
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        request = self.api_client.param_serialize(
            method,
            path,
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            return self.api_client.call_api(
                *request, _request_timeout=timeout or self.request_timeout_seconds
            )
        except Exception as exc:  # urllib3 connect/read errors, TLS errors
            raise KubeUnavailableError(f"{method} {path}: {exc}") from exc

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> JSONObject:
        """One request; the decoded answer, or :class:`KubeError` for an error status."""
        response = self._send(method, path, query=query, body=body, content_type=content_type)
        try:
            data = response.read()
        except Exception as exc:
            raise KubeUnavailableError(f"{method} {path}: {exc}") from exc
        try:
            decoded = json.loads(data) if data else {}
        except ValueError:
            decoded = {"message": data[:200].decode("utf-8", "replace")}
        if not 200 <= response.status <= 299:
            raise KubeError(
                response.status,
                str(decoded.get("reason") or response.reason or ""),
                str(decoded.get("message") or ""),
            )
        return decoded if isinstance(decoded, dict) else {}

    def open_watch(
        self,
        kind: Kind,
        *,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> WatchStream:
        """A watch of ``kind`` (all namespaces) from ``resource_version``, with bookmarks."""
        query = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if label_selector:
            query.append(("labelSelector", label_selector))
        response = self._send(
            "GET", resource_path(kind), query=query, timeout=(10.0, timeout_seconds + 30.0)
        )
        if not 200 <= response.status <= 299:
            data = response.read()
            try:
                status = json.loads(data)
            except ValueError:
                status = {}
            raise KubeError(
                response.status, str(status.get("reason", "")), str(status.get("message", ""))
            )
        return WatchStream(response.response)

    # --- async verbs ------------------------------------------------------------------------
    async def _run(self, method: str, path: str, **kwargs: Any) -> JSONObject:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self.call(method, path, **kwargs))

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> JSONObject | None:
        try:
            return await self._run("GET", resource_path(kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self, kind: Kind, namespace: str | None = None, *, label_selector: str | None = None
    ) -> JSONObject:
        """The list object of ``kind`` (in ``namespace``), selected by ``label_selector``."""
        query = [("labelSelector", label_selector)] if label_selector else []
        return await self._run("GET", resource_path(kind, namespace), query=query)

    async def create(self, kind: Kind, obj: Mapping[str, Any]) -> JSONObject:
        namespace = (obj.get("metadata") or {}).get("namespace")
        return await self._run(
            "POST",
            resource_path(kind, namespace),
            body=dict(obj),
            query=[("fieldManager", self.field_manager)],
        )

    async def replace(
        self, kind: Kind, obj: Mapping[str, Any], *, subresource: str | None = None
    ) -> JSONObject:
        meta = obj.get("metadata") or {}
        path = resource_path(kind, meta.get("namespace"), meta["name"])
        if subresource:
            path += f"/{subresource}"
        return await self._run(
            "PUT", path, body=dict(obj), query=[("fieldManager", self.field_manager)]
        )

    async def patch(
        self,
        kind: Kind,
        name: str,
        patch: Mapping[str, Any],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> JSONObject:
        """A JSON merge patch (``metadata.resourceVersion`` in it makes it conditional)."""
        path = resource_path(kind, namespace, name) + (f"/{subresource}" if subresource else "")
        return await self._run(
            "PATCH",
            path,
            body=dict(patch),
            content_type=MERGE_PATCH,
            query=[("fieldManager", self.field_manager)],
        )

    async def delete(self, kind: Kind, name: str, namespace: str | None = None) -> bool:
        """Delete; False when it was already gone."""
        try:
            await self._run("DELETE", resource_path(kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # --- for the listing threads ------------------------------------------------------------
    def get_sync(self, kind: Kind, name: str, namespace: str | None = None) -> JSONObject | None:
        try:
            return self.call("GET", resource_path(kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> JSONObject:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new`` (empty: nothing to do).

    Keys ``new`` lacks become ``null`` (removed); lists are replaced whole."""
    patch: JSONObject = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            inner = merge_patch(before, value)
            if inner:
                patch[key] = inner
        elif key not in old or before != value:
            patch[key] = value
    return patch


def status_patch(cached: Mapping[str, Any], new: Mapping[str, Any]) -> JSONObject:
    """The merge patch that makes an object's status ``new`` (empty: ``cached`` is ``new``).

    Every field of ``new`` is sent, not only those that differ from ``cached``: ``cached`` is
    an informer's copy and may be older than the server's, and a patch of the differences
    alone would leave a field the server holds at a newer value untouched (a DataLoad that
    went back from Complete to Loading kept ``phase: Complete`` until the next event). Fields
    ``new`` lacks are removed, as in :func:`merge_patch`."""
    patch = merge_patch(cached, new)
    return _overlay(patch, new) if patch else patch


def _overlay(patch: JSONObject, new: Mapping[str, Any]) -> JSONObject:
    for key, value in new.items():
        inner = patch.get(key)
        if isinstance(value, Mapping) and isinstance(inner, Mapping):
            patch[key] = _overlay(dict(inner), value)
        else:
            patch[key] = value
    return patch
