"""``KubeAPIServer``: the in-process Kubernetes API server's lifecycle and test controls.

The top of the package: wires the store, the HTTP handlers and the request controls (auth, faults,
request log) into an aiohttp application listening on 127.0.0.1. It runs either on the caller's
event loop (``async with KubeAPIServer() as srv``) or on its own loop in a background thread
(``with KubeAPIServer() as srv``), for sync clients such as the ``kubernetes`` package or kubectl
subprocesses. It can be stopped and started again on the same port with its state kept, which is
how a test cuts and restores the "cloud" behind an edge hub.
"""

from __future__ import annotations

import asyncio
import copy
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from edgecache_testservers._threadloop import LoopThreadService

from . import _status
from ._faults import Authenticator, Fault, FaultMode, FaultPlan, RecordedRequest
from ._handlers import USER_KEY, APIHandlers, error_response
from ._patch import MERGE_PATCH
from ._resources import ResourceRegistry
from ._status import APIError
from ._store import JSONObject, Store
from ._watch import WatchStream
from .rbac import Authorizer, Rule

if TYPE_CHECKING:
    from ._tls import PKI

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_FAULT_REASONS = {
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_UNAUTHENTICATED_PATHS = ("/healthz", "/livez", "/readyz", "/version")


def _is_resource_path(path: str) -> bool:
    """The API server's split: /api/VERSION/... and /apis/GROUP/VERSION/... name resources."""
    parts = [part for part in path.split("/") if part]
    return bool(parts) and (
        (parts[0] == "api" and len(parts) >= 3) or (parts[0] == "apis" and len(parts) >= 4)
    )


def _is_watch(request: web.Request) -> bool:
    return request.query.get("watch") in ("1", "true", "True") or "/watch/" in request.path


class KubeAPIServer(LoopThreadService):
    """A Kubernetes API server for tests, on ``127.0.0.1`` and a free port unless told otherwise.

    ``tokens``: accepted bearer tokens (a mapping gives each its user name); ``None`` disables
    authentication. ``allow_anonymous``: whether requests without credentials are served when
    tokens are set. ``bookmark_interval_seconds``: how often watches with
    ``allowWatchBookmarks=true`` get a ``BOOKMARK`` (a real server: about a minute; tests: short).
    ``history_size``: events kept for watch resumption; older resourceVersions get 410 Gone.
    ``require_namespaces``: refuse objects in namespaces that do not exist (404), as a real server.
    ``tls``: serve HTTPS with a fresh test PKI (``True``) or a given one; clients then authenticate
    with bearer tokens (kubectl sends them only over TLS) or client certificates (CN = user).
    ``store``: serve another server's store (see :meth:`replica`).
    ``authorization``: RBAC-style rules per user name (``rbac.ADMIN``, ``rbac.DISCOVERY``, or
    :class:`Rule` lists); a user without rules gets 403. ``None`` (default): no authorization.
    """

    thread_name = "kubeapi"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Collection[str] | Mapping[str, str] | None = None,
        allow_anonymous: bool = False,
        bookmark_interval_seconds: float = 60.0,
        history_size: int = 10_000,
        require_namespaces: bool = True,
        aggregated_discovery: bool = True,
        tables: bool = True,
        request_log_size: int = 100_000,
        tls: bool | PKI = False,
        compression_threshold_bytes: int | None = 128 * 1024,
        store: Store | None = None,
        authorization: Mapping[str, Sequence[Rule]] | None = None,
    ) -> None:
        self._settings = {
            "host": host,
            "tokens": tokens,
            "allow_anonymous": allow_anonymous,
            "bookmark_interval_seconds": bookmark_interval_seconds,
            "aggregated_discovery": aggregated_discovery,
            "tables": tables,
            "request_log_size": request_log_size,
            "compression_threshold_bytes": compression_threshold_bytes,
        }
        self.host = host
        self.pki: PKI | None = None
        """With ``tls``: the CA (for ``--certificate-authority``) and client certificates."""
        if tls is True:
            from ._tls import PKI as _PKI

            self.pki = _PKI.create(Path(tempfile.mkdtemp(prefix="kubeapi-pki-")), host=host)
        elif tls:
            self.pki = tls
        self._port = port
        self.store = store or Store(
            ResourceRegistry(), history_size=history_size, require_namespaces=require_namespaces
        )
        self.auth = Authenticator(tokens, allow_anonymous=allow_anonymous)
        self.authorizer = Authorizer(authorization)
        self.faults = FaultPlan()
        self.bookmark_interval_seconds = bookmark_interval_seconds
        self.compression_threshold_bytes = compression_threshold_bytes
        """Bodies at least this large are gzip-compressed for clients that accept it, as the API
        server does (128 KiB); ``None`` never compresses."""
        self.latency_seconds = 0.0
        """Added before every answer (watch streams: before the first byte)."""
        self._request_log: deque[RecordedRequest] = deque(maxlen=request_log_size)
        self._handlers = APIHandlers(
            self.store,
            bookmark_interval_seconds=lambda: self.bookmark_interval_seconds,
            aggregated_discovery=aggregated_discovery,
            tables=tables,
            on_watch=self._track_watch,
            authorizer=self.authorizer,
        )
        self._watches: dict[WatchStream, asyncio.BaseTransport | None] = {}
        self._controls_lock = threading.Lock()  # the log and the watch set, read from test threads
        self._transports: set[asyncio.BaseTransport] = set()
        self._runner: web.AppRunner | None = None
        LoopThreadService.__init__(self)
        self._stopping: asyncio.Event | None = None

    # ------------------------------------------------------------------------------ facts

    @property
    def port(self) -> int:
        """The listening port (fixed after the first start, kept across restarts)."""
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.pki is not None else "http"
        return f"{scheme}://{self.host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def requests(self) -> list[RecordedRequest]:
        """The request log, oldest first."""
        with self._controls_lock:
            return list(self._request_log)

    def clear_requests(self) -> None:
        with self._controls_lock:
            self._request_log.clear()

    @property
    def resource_version(self) -> int:
        return self.store.resource_version

    @property
    def open_watches(self) -> int:
        return len(self._watches)

    # --------------------------------------------------------------------- the application

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        h = self._handlers
        for path in ("/healthz", "/livez", "/readyz"):
            app.router.add_get(path, h.health)
        app.router.add_get("/version", h.version)
        app.router.add_get("/api", h.core)
        app.router.add_get("/apis", h.groups)
        app.router.add_get("/openapi/v3", h.openapi_index)
        app.router.add_get("/openapi/v3/{tail:.+}", h.openapi_document)
        app.router.add_route("*", "/api/{tail:.+}", h.dispatch)
        app.router.add_route("*", "/apis/{tail:.+}", h.dispatch)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _not_found(self, request: web.Request) -> web.Response:
        return error_response(_status.path_not_found(request.path))

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        authorization = request.headers.get("Authorization", "")
        transport = request.transport
        cert_user = None
        if transport is not None and self.pki is not None:
            from ._tls import peer_user

            cert_user = peer_user(transport.get_extra_info("peercert"))
        user = self.auth.authenticate(authorization, cert_user)
        request[USER_KEY] = user or ""
        if transport is not None:
            self._transports.add(transport)
        status = 0
        try:
            response = await self._answer(request, handler, user)
            status = response.status
            return response
        finally:
            if transport is not None:
                self._transports.discard(transport)
            record = RecordedRequest(
                method=request.method,
                path=request.path,
                query=request.query_string,
                user_agent=request.headers.get("User-Agent", ""),
                authorization=authorization,
                user=user or "",
                client_cert=cert_user or "",
                status=status,
                watch=_is_watch(request),
                target=request.raw_path,
            )
            with self._controls_lock:
                self._request_log.append(record)

    async def _answer(
        self, request: web.Request, handler: Handler, user: str | None
    ) -> web.StreamResponse:
        if user is None and not (
            request.path in _UNAUTHENTICATED_PATHS and not request.headers.get("Authorization")
        ):
            return error_response(_status.unauthorized())
        if not _is_resource_path(request.path) and request.path not in _UNAUTHENTICATED_PATHS:
            try:
                self.authorizer.check_path(user or "", request.method, request.path)
            except APIError as error:
                return error_response(error)
        fault = self.faults.take(request.method, request.path, watch=_is_watch(request))
        if fault is not None:
            return await self._fail(request, fault)
        if self.latency_seconds > 0:
            await asyncio.sleep(self.latency_seconds)
        try:
            response = await handler(request)
        except APIError as error:
            response = error_response(error)
        self._finish(request, response)
        return response

    def _finish(self, request: web.Request, response: web.StreamResponse) -> None:
        """Headers every API server answer carries; gzip for large bodies, as it compresses them."""
        if response.prepared:  # a watch stream: already on the wire, never compressed
            return
        response.headers.setdefault("Audit-Id", str(uuid.uuid4()))
        response.headers.setdefault("Cache-Control", "no-cache, private")
        threshold = self.compression_threshold_bytes
        if (
            threshold is not None
            and isinstance(response, web.Response)
            and isinstance(response.body, bytes)
            and len(response.body) >= threshold
            and "gzip" in request.headers.get("Accept-Encoding", "")
        ):
            response.enable_compression(web.ContentCoding.gzip)

    async def _fail(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.mode == "hang" and self._stopping is not None:
            await self._stopping.wait()
        if fault.mode in ("close", "hang") and request.transport is not None:
            request.transport.abort()
            raise asyncio.CancelledError  # nothing may be written: the connection is gone
        reason = _FAULT_REASONS.get(fault.status, "InternalError")
        response = error_response(APIError(fault.status, reason, "injected fault"))
        if fault.status == 429:  # API priority and fairness asks clients to come back
            response.headers["Retry-After"] = "1"
        return response

    def _track_watch(
        self, stream: WatchStream, transport: asyncio.BaseTransport | None
    ) -> Callable[[], None]:
        with self._controls_lock:
            self._watches[stream] = transport

        def forget() -> None:
            with self._controls_lock:
                self._watches.pop(stream, None)

        return forget

    # ------------------------------------------------------------------ async lifecycle

    async def astart(self) -> None:
        """Listen (on the running loop), on the same port as before if started earlier."""
        if self._runner is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        context = self.pki.server_context() if self.pki is not None else None
        site = web.TCPSite(runner, self.host, self._port, reuse_address=True, ssl_context=context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = int(runner.addresses[0][1])
        self._runner = runner

    async def astop(self, *, abort: bool = True) -> None:
        """Stop listening and end every connection; the store is kept for a later start.

        ``abort=True`` resets open connections (a cut link or a crashed server: watches end without
        their final chunk); ``abort=False`` ends watch streams cleanly first (a graceful shutdown).
        """
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._stopping is not None:
            self._stopping.set()
        with self._controls_lock:
            streams = list(self._watches)
        for stream in streams:
            stream.stop()
        if abort:
            for transport in list(self._transports):
                if isinstance(transport, asyncio.Transport):
                    transport.abort()
        else:
            await asyncio.sleep(0.05)  # let watch handlers write their final chunk
        await runner.cleanup()

    async def arestart(self) -> None:
        await self.astop()
        await self.astart()

    # ----------------------------------------------------------- threaded (sync) lifecycle

    def stop(self, *, abort: bool = True) -> None:
        """Stop listening (see :meth:`astop`); :meth:`start` serves again on the same port."""
        if self._thread is None:
            if self._runner is not None:
                raise RuntimeError("this server runs on your event loop: use await astop()")
            return
        self._run(self.astop(abort=abort))

    def restart(self) -> None:
        self._run(self.arestart())

    def replica(self) -> KubeAPIServer:
        """A second API server of the same cluster: same store, settings and PKI, its own port.

        For failover tests: both serve the same objects and resourceVersions, and a watch can
        resume on one from a resourceVersion seen on the other. Start it like any server.
        """
        settings: dict[str, Any] = dict(self._settings)
        return KubeAPIServer(**settings, tls=self.pki or False, store=self.store)

    # --------------------------------------------------------------------- test controls

    def wait_for_watches(self, count: int = 1, *, timeout_seconds: float = 10.0) -> None:
        """Block until at least ``count`` watches are open (a client has started watching)."""
        deadline = time.monotonic() + timeout_seconds
        while self.open_watches < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.open_watches} of {count} watches open")
            time.sleep(0.01)

    def close_watches(self, *, abort: bool = False) -> int:
        """End every open watch; returns how many.

        Cleanly by default, as at a server-side watch timeout; ``abort=True`` resets their
        connections instead (a network blip), while the server keeps serving new requests.
        """
        with self._controls_lock:
            watches = list(self._watches.items())
        loop = self._loop
        if loop is not None:
            for stream, transport in watches:
                if abort and isinstance(transport, asyncio.Transport):
                    loop.call_soon_threadsafe(transport.abort)
                loop.call_soon_threadsafe(stream.stop)
        return len(watches)

    def fail(
        self,
        status: int = 503,
        *,
        count: int | None = None,
        path_prefix: str = "",
        methods: Iterable[str] = (),
        watch: bool | None = None,
        mode: FaultMode = "status",
    ) -> Fault:
        """Answer matching requests with ``status`` (or drop / hang them, per ``mode``).

        Matching: ``path_prefix``, ``methods`` (any if empty), ``watch`` (``True``: only watch
        requests, ``False``: all but watches); ``count`` requests, or until :meth:`clear_faults`.
        """
        methods_set = frozenset(m.upper() for m in methods)
        return self.faults.add(Fault(mode, status, count, path_prefix, methods_set, watch))

    def drop_connections(
        self, *, count: int | None = None, path_prefix: str = "", watch: bool | None = None
    ) -> Fault:
        """Close matching requests' connections without an answer."""
        return self.fail(count=count, path_prefix=path_prefix, watch=watch, mode="close")

    def hang(
        self, *, count: int | None = None, path_prefix: str = "", watch: bool | None = None
    ) -> Fault:
        """Never answer matching requests (until the server stops), to exercise client timeouts."""
        return self.fail(count=count, path_prefix=path_prefix, watch=watch, mode="hang")

    def clear_faults(self) -> None:
        self.faults.clear()

    def compact(self) -> None:
        """Drop the event history: watches from any older resourceVersion now get 410 Gone."""
        self.store.compact()

    # ------------------------------------------------------------------------ data helpers

    def create(self, obj: JSONObject) -> JSONObject:
        """Create an object as a client POST would (server-set fields, status reset)."""
        resource = self.store.resource_of(obj)
        namespace = (obj.get("metadata") or {}).get("namespace")
        return copy.deepcopy(self.store.create(resource, namespace, obj))

    def put(self, obj: JSONObject) -> JSONObject:
        """Create or replace an object exactly as given, status included."""
        return copy.deepcopy(self.store.put(obj))

    def seed(self, objects: Iterable[JSONObject]) -> int:
        """Put many objects at once (5,000 pods: well under a second); returns the new RV."""
        return self.store.seed(objects)

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> JSONObject:
        """An object by kind and name (404 ``APIError`` if absent)."""
        resource = self.store.resource_of({"apiVersion": api_version, "kind": kind})
        return copy.deepcopy(self.store.get(resource, namespace, name))

    def list_objects(
        self, api_version: str, kind: str, namespace: str | None = None
    ) -> list[JSONObject]:
        resource = self.store.resource_of({"apiVersion": api_version, "kind": kind})
        page = self.store.list_page(resource, namespace, lambda obj: True)
        return copy.deepcopy(page.items)

    def patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        patch: JSONObject,
        namespace: str | None = None,
        *,
        subresource: str = "",
    ) -> JSONObject:
        """Merge-patch an object as a client would (``subresource="status"`` for its status)."""
        resource = self.store.resource_of({"apiVersion": api_version, "kind": kind})
        obj = self.store.patch(
            resource, namespace, name, copy.deepcopy(patch), MERGE_PATCH, subresource=subresource
        )
        return copy.deepcopy(obj)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        resource = self.store.resource_of({"apiVersion": api_version, "kind": kind})
        self.store.delete(resource, namespace, name)
