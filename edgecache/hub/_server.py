"""Wiring: builds the store, upstream client, health monitor, recorder, offline responder,
filters and proxy from :class:`HubSettings`, and serves the proxy port and the health port
(``/healthz``, ``/readyz``, ``/metrics``). ``edgecache hub`` and the tests both use
:class:`HubServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from types import TracebackType

from aiohttp import web

from edgecache.addresses import listening_socket
from edgecache.errors import ConfigError
from edgecache.hub._config import HubSettings
from edgecache.hub._filters import FilterChain, NodePoolTopologyFilter, ResponseFilter
from edgecache.hub._nodepool import NodePoolMembership
from edgecache.hub._offline import OfflineResponder
from edgecache.hub._proxy import HubProxy
from edgecache.hub._recording import Recorder
from edgecache.hub._store import HubStore
from edgecache.hub._upstream import Upstream, UpstreamUnavailableError
from edgecache.hub._watches import WatchRegistry
from edgecache.k8s.health import HealthMonitor
from edgecache.k8s.probes import metrics_response
from edgecache.metrics import (
    HUB_MODE,
    HUB_MODE_SWITCHES,
    HUB_STORE_BYTES,
    HUB_STORE_OBJECTS,
    HUB_WATCHES_ENDED,
)

__all__ = ["HubServer"]

log = logging.getLogger(__name__)


class HubServer:
    """The running hub. ``async with HubServer(settings) as hub: ... hub.url ...``"""

    def __init__(self, settings: HubSettings, *, require_serving: bool = True) -> None:
        #: Refuse to start when the upstream is unreachable and the store has nothing to serve.
        self.require_serving = require_serving
        self.settings = settings
        self.watches = WatchRegistry()
        self.upstream = Upstream(settings.upstream, settings.health)
        self.health = HealthMonitor(
            settings.health,
            probe=self.upstream.probe,
            on_switch=self._on_switch,
            name="upstream API server (edge hub)",
        )
        self.store: HubStore | None = None
        self.recorder: Recorder | None = None
        self.nodepool: NodePoolMembership | None = None
        self._runners: list[web.AppRunner] = []
        self._expiry: asyncio.Task[None] | None = None
        self.url = ""
        self.health_url = ""

    def _on_switch(self, online: bool) -> None:
        HUB_MODE.set(1 if online else 0)
        HUB_MODE_SWITCHES.labels(to="online" if online else "offline").inc()
        if not online:
            log.warning("edge hub serves from its store until the upstream is back")
            self.upstream.abandon_waiting()
        closed = self.watches.close_all()
        HUB_WATCHES_ENDED.inc(closed)
        log.warning("mode switch: ended %d open watches so clients re-list", closed)

    async def start(self) -> None:
        settings = self.settings
        proxy_sock = listening_socket(settings.listen.address, option="--listen")
        health_sock = listening_socket(settings.listen.health_address, option="--health-listen")
        try:
            self.store = await asyncio.to_thread(HubStore.open, settings.cache_dir)
            await self.upstream.start()
            stored, _ = await self.store.read(self.store.stats)
            online = await self.health.start(
                wait_seconds=settings.health.startup_probe_seconds if stored else None
            )
            HUB_MODE.set(1 if online else 0)
            if not online:
                if self.require_serving and stored == 0:
                    servers = ", ".join(settings.upstream.servers)
                    why = "; ".join(self.store.problems)
                    raise UpstreamUnavailableError(
                        f"cannot reach the upstream API server ({servers}) and the store in "
                        f"{settings.cache_dir} is empty, so there is nothing to serve"
                        + (f" (the store was damaged: {why})" if why else "")
                    )
                log.warning("upstream unreachable at start: serving from the store (offline)")
            filters: list[ResponseFilter] = []
            if settings.filters.nodepool:
                self.nodepool = NodePoolMembership(settings.filters, self.store, self.upstream)
                await self.nodepool.load()
                if online:
                    await self.nodepool.try_refresh()
                self.nodepool.start()
                filters.append(NodePoolTopologyFilter(self.nodepool))
            self.recorder = Recorder(self.store, settings.recording)
            offline = OfflineResponder(
                self.store,
                settings.offline,
                self.watches,
                recorded_components=settings.recording.components,
            )
            proxy = HubProxy(
                upstream=self.upstream,
                health=self.health,
                store=self.store,
                recorder=self.recorder,
                offline=offline,
                watches=self.watches,
                filters=FilterChain(filters),
            )
            self._expiry = asyncio.create_task(self._expire_periodically(), name="hub-expiry")
            self.url = await self._serve(proxy.app(), proxy_sock, tls=self._tls_context())
            self.health_url = await self._serve(self._health_app(), health_sock)
        except BaseException:
            proxy_sock.close()
            health_sock.close()
            await self.stop()
            raise

    async def _expire_periodically(self) -> None:
        retention = self.settings.recording.retention_seconds
        while True:
            if self.health.online and self.store is not None:
                try:
                    forgotten = await self.store.write(self.store.expire, time.time() - retention)
                    if forgotten:
                        log.info("forgot %d records not refreshed in %.0f s", forgotten, retention)
                except Exception:
                    log.exception("store expiry failed")
            await asyncio.sleep(min(3600.0, retention / 4))

    def _tls_context(self) -> ssl.SSLContext | None:
        listen = self.settings.listen
        if not listen.tls_cert_file:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(listen.tls_cert_file, listen.tls_key_file)
            if listen.client_ca_file:
                context.load_verify_locations(listen.client_ca_file)
                context.verify_mode = ssl.CERT_OPTIONAL  # tokens and anonymous still allowed
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the hub's serving certificate: {exc}") from exc
        return context

    async def _serve(
        self, app: web.Application, sock: socket.socket, *, tls: ssl.SSLContext | None = None
    ) -> str:
        # handler_cancellation: a client that goes away cancels its handler at once, so the
        # upstream watch it was streaming is released instead of lingering until the next event.
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            handler_cancellation=True,
        )
        await runner.setup()
        self._runners.append(runner)
        await web.SockSite(runner, sock, ssl_context=tls).start()
        host, port = sock.getsockname()[:2]
        scheme = "https" if tls is not None else "http"
        return f"{scheme}://{host if ':' not in host else f'[{host}]'}:{port}"

    def _health_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        """Ready while the hub can answer: online, or offline from a store found whole. Store
        damage is named either way (online the hub still proxies everything)."""
        notes: list[str] = []
        problems = self.store.problems if self.store is not None else []
        if problems:
            notes.append("store damaged at start: " + "; ".join(problems))
        damaged = self.store.damaged_rows if self.store is not None else 0
        if damaged:
            notes.append(f"{damaged} damaged store records dropped")
        suffix = "".join(f"\n{note}" for note in notes)
        if self.health.online:
            return web.Response(
                text="ok: online, proxying to " + self.upstream.current_server + suffix
            )
        if problems:
            return web.Response(
                status=503,
                text="not ready: offline, and the store lost what was recorded before" + suffix,
            )
        return web.Response(text="ok: offline, serving from the store" + suffix)

    async def _metrics(self, request: web.Request) -> web.Response:
        await self.update_store_metrics()
        return metrics_response()

    async def update_store_metrics(self) -> None:
        if self.store is not None:
            objects, size = await self.store.read(self.store.stats)
            HUB_STORE_OBJECTS.set(objects)
            HUB_STORE_BYTES.set(size)

    async def stop(self) -> None:
        """Stop serving, end open watches, flush recordings and close the store."""
        self.watches.close_all()
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
            self._expiry = None
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        await self.health.stop()
        if self.nodepool is not None:
            await self.nodepool.stop()
        if self.recorder is not None:
            await self.recorder.drain()
        await self.upstream.close()
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
            self.store = None

    async def __aenter__(self) -> HubServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
