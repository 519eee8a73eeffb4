"""The upstream client: how the hub talks to the cloud kube-apiserver(s) while online.

One pooled aiohttp session over TLS (CA, client certificate) or plain HTTP, with the hub's bearer
token added for clients that bring no credentials. Several servers: requests go to the current
one; a connection failure moves to the next and retries there (safe for every verb, because
nothing was sent). Request targets are sent byte for byte as given (already escaped and checked
by :mod:`._canonical`): no client-side normalisation may turn the request the hub classified
into another one. When no server can be reached, :class:`UpstreamUnavailableError` tells the
proxy to answer from the store instead, and the health monitor counts it as evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import zlib
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from edgecache.errors import BackendUnavailableError
from edgecache.hub._config import UpstreamSettings
from edgecache.k8s.credentials import TokenSource
from edgecache.k8s.health import HealthSettings
from edgecache.k8s.tls import client_ssl_context

__all__ = ["RawUpgrade", "Upstream", "UpstreamUnavailableError", "gzip_decoder", "read_body"]

log = logging.getLogger(__name__)


class UpstreamUnavailableError(BackendUnavailableError):
    """No upstream API server could be reached (connect failed or timed out on all).

    ``sent`` says whether the request may have reached a server before the connection broke
    (then a write may or may not have been applied).
    """

    def __init__(self, message: str, *, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


def gzip_decoder() -> zlib._Decompress:
    """An incremental gzip decoder (the hub inflates upstream answers itself, off the hot path
    where it can: see the proxy)."""
    return zlib.decompressobj(16 + zlib.MAX_WBITS)


async def read_body(response: aiohttp.ClientResponse) -> bytes:
    """The whole body of an upstream answer, inflated if it came gzip-encoded."""
    data = await response.read()
    if response.headers.get("Content-Encoding", "").lower() == "gzip":
        decoder = gzip_decoder()
        data = decoder.decompress(data) + decoder.flush()
    return data


@dataclass
class RawUpgrade:
    """The upstream's answer head to a raw upgrade request, on its own connection (not pooled):
    the caller relays the rest of ``reader``/``writer`` and closes ``writer``."""

    status: int
    reason: str
    headers: CIMultiDict[str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class Upstream:
    """Pooled HTTP client for the upstream servers with failover. Use :meth:`start` first."""

    def __init__(self, settings: UpstreamSettings, health: HealthSettings) -> None:
        settings.check()
        self.settings = settings
        self.health_settings = health
        # No TLS (plain http upstreams): aiohttp's ssl=False, which then never applies.
        self._ssl: ssl.SSLContext | bool = client_ssl_context(settings, identity=True) or False
        self._ssl_anonymous: ssl.SSLContext | bool = (
            client_ssl_context(settings, identity=False) or False
        )
        self._current = 0
        # Two pools: requests without client credentials go out with the hub's identity (its
        # client certificate); requests that bring their own Authorization go out without it,
        # so that the upstream judges the client's credentials alone.
        self._session: aiohttp.ClientSession | None = None
        self._session_own_credentials: aiohttp.ClientSession | None = None
        self._tokens = TokenSource(settings)
        # Resolved when the hub goes offline; replaced by a fresh one at each switch.
        self._abandoned: asyncio.Future[None] | None = None

    @property
    def current_server(self) -> str:
        return self.settings.servers[self._current].rstrip("/")

    @staticmethod
    def _new_session(ssl_context: ssl.SSLContext | bool) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=0, ssl=ssl_context, keepalive_timeout=60)
        return aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def _unless_abandoned(
        self, sending: Awaitable[aiohttp.ClientResponse]
    ) -> aiohttp.ClientResponse:
        """Wait for an answer head, unless :meth:`abandon_waiting` gives up on it first."""
        assert self._abandoned is not None, "Upstream.start() was not called"
        abandoned = self._abandoned
        task = asyncio.ensure_future(sending)
        try:
            await asyncio.wait((task, abandoned), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
        if not task.done() or task.cancelled():
            with contextlib.suppress(BaseException):
                await task
            raise UpstreamUnavailableError(
                "the upstream stopped answering (the hub went offline meanwhile)", sent=True
            )
        return task.result()

    def abandon_waiting(self) -> None:
        """The hub went offline: requests still waiting for an answer head give up now (the
        proxy answers reads from the store), instead of waiting out the read timeout on a link
        that hangs. Answers already streaming are not touched."""
        if self._abandoned is not None and not self._abandoned.done():
            self._abandoned.set_result(None)
        self._abandoned = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        self._abandoned = asyncio.get_running_loop().create_future()
        self._session = self._new_session(self._ssl)
        if self.settings.client_certificate and self._ssl is not False:
            self._session_own_credentials = self._new_session(self._ssl_anonymous)
        else:
            self._session_own_credentials = self._session

    async def close(self) -> None:
        if self._session_own_credentials not in (None, self._session):
            assert self._session_own_credentials is not None
            await self._session_own_credentials.close()
        if self._session is not None:
            await self._session.close()
        self._session = self._session_own_credentials = None

    def outgoing_headers(self, headers: Mapping[str, str]) -> CIMultiDict[str]:
        """Headers for the upstream: the client's, plus the hub's token when it has none."""
        result = CIMultiDict(headers)
        if "Authorization" not in result:
            authorization = self._tokens.authorization()
            if authorization:
                result["Authorization"] = authorization
        if self.settings.gzip:
            result["Accept-Encoding"] = "gzip"
        return result

    async def request(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        watch: bool,
    ) -> aiohttp.ClientResponse:
        """Send one request for ``target`` (escaped path and query, sent as it is), failing
        over between servers on connection errors.

        The caller must release the response. Raises :class:`UpstreamUnavailableError` when no
        server accepts a connection (or, for non-watch requests, answers in time).
        """
        assert self._session is not None, "Upstream.start() was not called"
        session = self._session if "Authorization" not in headers else self._session_own_credentials
        assert session is not None
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.settings.connect_timeout_seconds,
            sock_connect=self.settings.connect_timeout_seconds,
            sock_read=None if watch else self.settings.read_timeout_seconds,
        )
        outgoing = self.outgoing_headers(headers)
        errors: list[str] = []
        count = len(self.settings.servers)
        for attempt in range(count):
            index = (self._current + attempt) % count
            server = self.settings.servers[index].rstrip("/")
            try:
                response = await self._unless_abandoned(
                    session.request(
                        method,
                        URL(server + target, encoded=True),
                        headers=outgoing,
                        data=body,
                        timeout=timeout,
                        allow_redirects=False,
                    )
                )
            except UpstreamUnavailableError:
                raise  # abandoned: the hub is offline, no server is tried any more
            except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
                errors.append(f"{server}: {exc or type(exc).__name__}")
                connected = not isinstance(
                    exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
                )
                if connected and method not in ("GET", "HEAD"):
                    # The request may have been applied: sending it elsewhere could apply it
                    # twice, so the failure goes back to the client as it is.
                    raise UpstreamUnavailableError(
                        "upstream connection broke after the request was sent: "
                        + "; ".join(errors),
                        sent=True,
                    ) from exc
                continue
            if index != self._current:
                log.warning("upstream failover: now using %s", server)
                self._current = index
            return response
        raise UpstreamUnavailableError("no upstream API server reachable: " + "; ".join(errors))

    async def websocket(
        self, target: str, *, headers: Mapping[str, str], protocols: list[str]
    ) -> aiohttp.ClientWebSocketResponse:
        """Open a WebSocket upstream (exec, attach, port-forward), failing over like requests.

        Raises :class:`UpstreamUnavailableError` when no server accepts a connection and lets
        ``aiohttp.WSServerHandshakeError`` (the upstream refused the upgrade) through.
        """
        assert self._session is not None, "Upstream.start() was not called"
        session = self._session if "Authorization" not in headers else self._session_own_credentials
        assert session is not None
        outgoing = self.outgoing_headers(headers)
        outgoing.pop("Accept-Encoding", None)
        errors: list[str] = []
        count = len(self.settings.servers)
        for attempt in range(count):
            index = (self._current + attempt) % count
            server = self.settings.servers[index].rstrip("/")
            try:
                return await session.ws_connect(
                    URL(server + target, encoded=True),
                    protocols=protocols,
                    headers=outgoing,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                    autoping=True,
                    max_msg_size=0,
                )
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                errors.append(f"{server}: {exc}")
        raise UpstreamUnavailableError("no upstream API server reachable: " + "; ".join(errors))

    async def raw_upgrade(
        self, method: str, target: str, *, headers: Mapping[str, str], body: bytes
    ) -> RawUpgrade:
        """Send an upgrade request other than WebSocket (SPDY exec/attach/port-forward) on a
        connection of its own and read the answer head, failing over like :meth:`websocket`.

        aiohttp's client cannot hand over the socket after a 101 for other protocols, so this
        speaks HTTP/1.1 itself, with the same TLS identity and token rules as the pools.
        ``headers`` must carry the Connection/Upgrade pair. Raises
        :class:`UpstreamUnavailableError` when no server accepts a connection or the chosen one
        breaks off before a full answer head.
        """
        own_credentials = "Authorization" in headers
        ssl_context = self._ssl_anonymous if own_credentials else self._ssl
        outgoing = self.outgoing_headers(headers)
        outgoing.pop("Accept-Encoding", None)
        if body:
            outgoing["Content-Length"] = str(len(body))
        errors: list[str] = []
        count = len(self.settings.servers)
        for attempt in range(count):
            index = (self._current + attempt) % count
            server = self.settings.servers[index].rstrip("/")
            url = URL(server + target, encoded=True)
            tls = ssl_context if url.scheme == "https" and ssl_context is not False else None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        url.host, url.port, ssl=tls, server_hostname=url.host if tls else None
                    ),
                    self.settings.connect_timeout_seconds,
                )
            except (TimeoutError, OSError) as exc:
                errors.append(f"{server}: {exc or type(exc).__name__}")
                continue
            if index != self._current:
                log.warning("upstream failover: now using %s", server)
                self._current = index
            head = [f"{method} {url.raw_path_qs} HTTP/1.1", f"Host: {url.host_port_subcomponent}"]
            head += [f"{name}: {value}" for name, value in outgoing.items()]
            try:
                writer.write("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)
                raw = await asyncio.wait_for(
                    reader.readuntil(b"\r\n\r\n"), self.settings.read_timeout_seconds
                )
                status_line, *lines = raw.decode("latin-1").split("\r\n")
                _, status, *reason = status_line.split(" ", 2)
                answer: CIMultiDict[str] = CIMultiDict()
                for line in lines:
                    if line:
                        name, _, value = line.partition(":")
                        answer.add(name.strip(), value.strip())
                return RawUpgrade(int(status), "".join(reason), answer, reader, writer)
            except (
                TimeoutError,
                OSError,
                ValueError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
            ) as exc:
                writer.close()
                raise UpstreamUnavailableError(
                    f"{server}: no answer to the upgrade request: {exc or type(exc).__name__}",
                    sent=True,
                ) from exc
        raise UpstreamUnavailableError("no upstream API server reachable: " + "; ".join(errors))

    async def probe(self) -> bool:
        """Whether some upstream server answers; switches to the first that does.

        Any HTTP answer below 500 counts (401/403 prove the server is there). All servers are
        asked at once, so a probe takes one probe timeout however many of them hang; the
        current server is preferred, so a healthy connection is not moved around.
        """
        assert self._session is not None, "Upstream.start() was not called"
        session = self._session
        timeout = aiohttp.ClientTimeout(total=self.health_settings.probe_timeout_seconds)
        count = len(self.settings.servers)
        order = [(self._current + attempt) % count for attempt in range(count)]

        async def answers(index: int) -> bool:
            url = self.settings.servers[index].rstrip("/") + self.health_settings.probe_path
            try:
                async with session.get(
                    url, headers=self.outgoing_headers({}), timeout=timeout
                ) as response:
                    await response.read()
                    return response.status < 500
            except (TimeoutError, aiohttp.ClientError, OSError):
                return False

        results = await asyncio.gather(*(answers(index) for index in order))
        for index, healthy in zip(order, results, strict=True):
            if healthy:
                if index != self._current:
                    log.warning("upstream failover: now using %s", self.settings.servers[index])
                    self._current = index
                return True
        return False
