"""The API proxy: the aiohttp application every client request enters.

For each request: check that its target has one reading (:mod:`._canonical`; otherwise 400),
classify it (:mod:`._requestinfo`), then

* online: forward it upstream (:mod:`._upstream`) as a stream, every verb including watch, pass
  the answer back through the response filters (:mod:`._filters`), and hand GET/LIST/WATCH and
  discovery answers of recorded components to the recorder (:mod:`._recording`). The target goes
  upstream byte for byte as it was checked and classified. Credentials the upstream accepted are
  remembered (as salted digests) for offline use, with the exact scope of each read it answered
  with success (the offline grants).
* a request that cannot reach any upstream counts as health evidence and, for reads, is answered
  from the store at once instead of failing;
* offline: answer from the store (:mod:`._offline`).

Watches, proxied or offline, are registered in :mod:`._watches` so that a mode switch ends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sqlite3
import zlib

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from edgecache.httpexpect import expect_handler
from edgecache.hub._canonical import NonCanonicalRequestError, canonical_target
from edgecache.hub._filters import FilterChain, ResponseFilter
from edgecache.hub._offline import OfflineResponder
from edgecache.hub._recording import Recorder, json_accept, raw_key
from edgecache.hub._requestinfo import WRITE_VERBS, RequestInfo, component_of, parse_request
from edgecache.hub._status import status_response
from edgecache.hub._store import HubStore
from edgecache.hub._upstream import Upstream, UpstreamUnavailableError, gzip_decoder
from edgecache.hub._watches import WatchRegistry
from edgecache.k8s.health import HealthMonitor
from edgecache.metrics import HUB_REQUESTS

__all__ = ["HubProxy"]

log = logging.getLogger(__name__)

_REQUEST_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "accept-encoding",
    }
)
_RESPONSE_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "trailer",
        "upgrade",
    }
)
#: Upstream statuses that mean "the API server behind the load balancer is unreachable".
_GATEWAY_ERRORS = frozenset({502, 503, 504})
#: Answers up to this size are read whole and sent with a Content-Length; larger ones stream.
_SMALL_BODY_BYTES = 1 << 20


def _client_identity(request: web.Request) -> tuple[str, CIMultiDict[str]]:
    """The credential a client presented (what offline answers are checked against) and the
    impersonation headers that carry a certificate user upstream.

    A bearer token is the credential itself. A client certificate (verified against
    ``--client-ca-file``; unverified ones never reach here) is identified by its SHA-256 and
    forwarded with the hub's own identity impersonating its CN (user) and O (groups), so the
    upstream authorizes the actual client. No credentials: "", anonymous.
    """
    impersonation: CIMultiDict[str] = CIMultiDict()
    authorization = request.headers.get("Authorization", "")
    if authorization:
        return authorization, impersonation
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return "", impersonation
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return "", impersonation
    for rdn in ssl_object.getpeercert().get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                impersonation["Impersonate-User"] = value
            elif key == "organizationName":
                impersonation.add("Impersonate-Group", value)
    return "x509:" + hashlib.sha256(der).hexdigest(), impersonation


def _outgoing_headers(request: web.Request, impersonation: CIMultiDict[str]) -> CIMultiDict[str]:
    """The client's headers for the upstream, minus hop-by-hop ones. A request without its own
    Authorization goes out with the hub's identity, so it may not carry Impersonate-* headers of
    its own (that would let any local process act as anyone the hub may impersonate)."""
    own_credentials = "Authorization" in request.headers
    headers: CIMultiDict[str] = CIMultiDict(
        (k, v)
        for k, v in request.headers.items()
        if k.lower() not in _REQUEST_DROP
        and (own_credentials or not k.lower().startswith("impersonate-"))
    )
    headers.extend(impersonation)
    return headers


class _RawTunnel:
    """The payload "parser" of a raw upgraded connection: every byte the client sends after the
    101 goes as it is into a StreamReader (aiohttp's RequestHandler calls these two)."""

    def __init__(self, reader: aiohttp.StreamReader) -> None:
        self.reader = reader

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.reader.feed_data(data)
        return False, b""

    def feed_eof(self) -> None:
        self.reader.feed_eof()


async def _read_raw_body(
    status: int, reader: asyncio.StreamReader, headers: CIMultiDict[str]
) -> bytes:
    """The body of a non-101 answer on a raw upgrade connection (fixed length, chunked, or up
    to the connection's end)."""
    if status < 200 or status in (204, 304):
        return b""
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        parts: list[bytes] = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass  # trailers
        return b"".join(parts)
    if "Content-Length" in headers:
        return await reader.readexactly(int(headers["Content-Length"]))
    return await reader.read()


class HubProxy:
    """The request handler shared by online and offline modes."""

    def __init__(
        self,
        *,
        upstream: Upstream,
        health: HealthMonitor,
        store: HubStore,
        recorder: Recorder,
        offline: OfflineResponder,
        watches: WatchRegistry,
        filters: FilterChain,
    ) -> None:
        self.upstream = upstream
        self.health = health
        self.store = store
        self.recorder = recorder
        self.offline = offline
        self.watches = watches
        self.filters = filters
        self._remembered: set[tuple[str, str]] = set()
        self._granted: set[tuple[str, str, str, str, str, str]] = set()
        self._digests: dict[tuple[str, str], str] = {}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle, expect_handler=expect_handler)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            target = canonical_target(request.rel_url.raw_path, request.rel_url.raw_query_string)
        except NonCanonicalRequestError as exc:
            HUB_REQUESTS.labels(verb="invalid", served_from="rejected").inc()
            return status_response(
                400, f"edgecache hub refuses a non-canonical request: {exc}", reason="BadRequest"
            )
        # aiohttp's request.path and request.query are the unescaped reading of exactly the
        # target checked above, which is what the upstream will read from the bytes we send.
        info = parse_request(request.method, request.path, request.query)
        component = component_of(request.headers.get("User-Agent", ""))
        credential, impersonation = _client_identity(request)
        digest = self._digest(component, credential)
        upgrade = request.headers.get("Upgrade", "").lower()
        connection = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
        raw_upgrade = upgrade not in ("", "websocket") and "upgrade" in connection
        raw_upgrade = raw_upgrade and request.version == aiohttp.HttpVersion11
        if upgrade == "websocket" and self.health.online:
            return await self._websocket(request, target, info, impersonation)
        if raw_upgrade and self.health.online:
            return await self._raw_upgrade(request, target, info, impersonation)
        if upgrade:
            HUB_REQUESTS.labels(verb=info.verb, served_from="rejected").inc()
            if upgrade == "websocket" or raw_upgrade:
                return status_response(
                    503, "edgecache hub is offline: exec, attach and port-forward need the upstream"
                )
            return status_response(
                501,
                f"edgecache hub relays HTTP/1.1 Connection: Upgrade requests only, not {upgrade!r}",
                reason="NotImplemented",
            )
        if self.health.online:
            try:
                return await self._online(request, target, info, component, digest, impersonation)
            except UpstreamUnavailableError as exc:
                self.health.report_failure()
                if info.verb in WRITE_VERBS or request.method not in ("GET", "HEAD"):
                    HUB_REQUESTS.labels(verb=info.verb, served_from="rejected").inc()
                    outcome = "may or may not have been applied" if exc.sent else "was not applied"
                    return status_response(503, f"edgecache hub: {exc}; the request {outcome}")
                log.info("upstream unreachable, answering %s from the store", request.path)
        return await self.offline.respond(request, info, component, digest)

    async def _websocket(
        self,
        request: web.Request,
        target: str,
        info: RequestInfo,
        impersonation: CIMultiDict[str],
    ) -> web.StreamResponse:
        """exec/attach/port-forward over WebSocket: relay frames both ways until one side ends."""
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
        ]
        headers = _outgoing_headers(request, impersonation)
        for name in {k for k in headers if k.lower().startswith("sec-websocket-")}:
            headers.popall(name)
        try:
            upstream_ws = await self.upstream.websocket(
                target, headers=headers, protocols=[p for p in protocols if p]
            )
        except UpstreamUnavailableError as exc:
            self.health.report_failure()
            HUB_REQUESTS.labels(verb=info.verb, served_from="rejected").inc()
            return status_response(503, f"edgecache hub: {exc}")
        except aiohttp.WSServerHandshakeError as exc:
            HUB_REQUESTS.labels(verb=info.verb, served_from="upstream").inc()
            return status_response(exc.status, f"upstream refused the upgrade: {exc.message}")
        HUB_REQUESTS.labels(verb=info.verb, served_from="upstream").inc()
        chosen = (upstream_ws.protocol,) if upstream_ws.protocol else ()
        client_ws = web.WebSocketResponse(protocols=chosen, autoping=True, max_msg_size=0)
        await client_ws.prepare(request)

        async def relay(
            source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
            target: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        ) -> None:
            async for message in source:
                if message.type == aiohttp.WSMsgType.BINARY:
                    await target.send_bytes(message.data)
                elif message.type == aiohttp.WSMsgType.TEXT:
                    await target.send_str(message.data)
                else:
                    break

        tasks = [
            asyncio.ensure_future(relay(client_ws, upstream_ws)),
            asyncio.ensure_future(relay(upstream_ws, client_ws)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await upstream_ws.close()
            await client_ws.close()
        return client_ws

    async def _raw_upgrade(
        self,
        request: web.Request,
        target: str,
        info: RequestInfo,
        impersonation: CIMultiDict[str],
    ) -> web.StreamResponse:
        """exec/attach/port-forward over SPDY (or any other non-WebSocket upgrade): after the
        upstream's 101, splice bytes both ways until one side ends; any other answer is relayed
        as a normal response."""
        headers = _outgoing_headers(request, impersonation)
        headers["Connection"] = "Upgrade"
        headers["Upgrade"] = request.headers["Upgrade"]
        body = await request.read() if request.body_exists else b""
        try:
            upstream = await self.upstream.raw_upgrade(
                request.method, target, headers=headers, body=body
            )
        except UpstreamUnavailableError as exc:
            self.health.report_failure()
            HUB_REQUESTS.labels(verb=info.verb, served_from="rejected").inc()
            return status_response(503, f"edgecache hub: {exc}")
        HUB_REQUESTS.labels(verb=info.verb, served_from="upstream").inc()
        answer_headers = CIMultiDict(
            (k, v) for k, v in upstream.headers.items() if k.lower() not in _RESPONSE_DROP
        )
        try:
            if upstream.status != 101:
                try:
                    answer = await asyncio.wait_for(
                        _read_raw_body(upstream.status, upstream.reader, upstream.headers),
                        self.upstream.settings.read_timeout_seconds,
                    )
                except (
                    TimeoutError,
                    OSError,
                    ValueError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                ) as exc:
                    return status_response(502, f"edgecache hub: upstream answer broke off: {exc}")
                return web.Response(
                    status=upstream.status,
                    reason=upstream.reason or None,
                    headers=answer_headers,
                    body=answer,
                )
            answer_headers["Connection"] = "Upgrade"
            answer_headers["Upgrade"] = upstream.headers.get("Upgrade", headers["Upgrade"])
            response = web.StreamResponse(status=101, headers=answer_headers)
            # A 101 has no body, so aiohttp neither chunks nor counts what the writer sends:
            # it is the raw byte stream to the client. The connection cannot serve another
            # request afterwards.
            response.force_close()
            # aiohttp's parser only switches protocols for WebSocket; for anything else it
            # would parse the client's next bytes as HTTP. Installing a payload parser, as
            # WebSocketResponse does, makes the protocol hand every further byte to it instead
            # (installed before the 101 goes out, so no early byte can slip to the HTTP parser).
            # The StreamReader pauses the client's transport when the upstream falls behind.
            from_client = aiohttp.StreamReader(
                request.protocol, 1 << 16, loop=asyncio.get_running_loop()
            )
            request.protocol.set_parser(_RawTunnel(from_client))  # type: ignore[arg-type]
            request.protocol.keep_alive(False)
            await response.prepare(request)

            async def to_upstream() -> None:
                while chunk := await from_client.readany():
                    upstream.writer.write(chunk)
                    await upstream.writer.drain()

            async def to_client() -> None:
                while chunk := await upstream.reader.read(1 << 16):
                    await response.write(chunk)

            tasks = [asyncio.ensure_future(to_upstream()), asyncio.ensure_future(to_client())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                # A side that closed may leave its pump with a connection error: expected.
                await asyncio.gather(*tasks, return_exceptions=True)
            return response
        finally:
            upstream.writer.close()

    def _digest(self, component: str, credential: str) -> str:
        key = (component, credential)
        digest = self._digests.get(key)
        if digest is None:
            if len(self._digests) > 10_000:
                self._digests.clear()
            digest = self._digests[key] = self.store.credential_digest(component, credential)
        return digest

    async def _online(
        self,
        request: web.Request,
        target: str,
        info: RequestInfo,
        component: str,
        digest: str,
        impersonation: CIMultiDict[str],
    ) -> web.StreamResponse:
        recording = self.recorder.wants(info, component)
        headers = _outgoing_headers(request, impersonation)
        if recording and "Accept" in headers:
            headers["Accept"] = json_accept(headers["Accept"])
        body = await request.read() if request.body_exists else None
        watch = info.verb == "watch"
        upstream_response = await self.upstream.request(
            request.method, target, headers=headers, body=body, watch=watch
        )
        if upstream_response.status in _GATEWAY_ERRORS and request.method in ("GET", "HEAD"):
            # A proxy or load balancer in front of the API server says it is gone: that is
            # health evidence, and the read is answered from the store like a failed connect.
            upstream_response.release()
            raise UpstreamUnavailableError(
                f"upstream answered {upstream_response.status} {upstream_response.reason}",
                sent=True,
            )
        self.health.report_success()
        try:
            HUB_REQUESTS.labels(verb=info.verb, served_from="upstream").inc()
            if recording and upstream_response.status < 400:
                await self._remember(component, digest, info, upstream_response.status)
            filters = self.filters.for_request(info)
            if watch and upstream_response.status == 200:
                return await self._stream_watch(
                    request, upstream_response, info, component, recording, filters
                )
            return await self._forward(
                request, upstream_response, info, component, recording, filters, headers
            )
        finally:
            upstream_response.release()

    async def _remember(self, component: str, digest: str, info: RequestInfo, status: int) -> None:
        """The upstream accepted this credential (and, for a resource read it answered with
        success, showed it exactly that read's scope): what offline answers are checked
        against. The scope comes from the same target that was forwarded, so it is what the
        upstream answered, never a normalised or re-read variant of it."""
        try:
            if (component, digest) not in self._remembered:
                await self.store.write(self.store.add_credential, component, digest)
                self._remembered.add((component, digest))
            if (
                200 <= status < 300
                and info.verb in ("get", "list", "watch")
                and not info.subresource
            ):
                grant = (component, digest, *info.read_scope)
                if grant not in self._granted:
                    await self.store.write(self.store.add_grant, *grant)
                    self._granted.add(grant)
        except sqlite3.Error as exc:
            # A full or broken disk costs offline answers, never the online proxying.
            log.warning("cannot record credentials in the store: %s", exc)

    @staticmethod
    def _response_headers(
        upstream_response: aiohttp.ClientResponse, *, keep_encoding: bool = False
    ) -> CIMultiDict[str]:
        drop = _RESPONSE_DROP - {"content-encoding"} if keep_encoding else _RESPONSE_DROP
        return CIMultiDict(
            (k, v) for k, v in upstream_response.headers.items() if k.lower() not in drop
        )

    async def _forward(
        self,
        request: web.Request,
        upstream_response: aiohttp.ClientResponse,
        info: RequestInfo,
        component: str,
        recording: bool,
        filters: list[ResponseFilter],
        request_headers: CIMultiDict[str],
    ) -> web.StreamResponse:
        status = upstream_response.status
        gzipped = upstream_response.headers.get("Content-Encoding", "").lower() == "gzip"
        # A gzip answer goes to a client that accepts gzip as it came: the hub neither inflates
        # it on the hot path nor re-sends four times the bytes; the recorder inflates it later.
        passthrough = (
            gzipped and not filters and "gzip" in request.headers.get("Accept-Encoding", "")
        )
        decoder = gzip_decoder() if gzipped and not passthrough else None
        headers = self._response_headers(upstream_response, keep_encoding=passthrough)
        length = upstream_response.content_length
        small = length is not None and length <= _SMALL_BODY_BYTES
        chunks: list[bytes] = []
        if small or (filters and status == 200):
            try:
                raw = await upstream_response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                # Nothing was sent yet: the caller can still answer a read from the store.
                raise UpstreamUnavailableError(
                    f"upstream answer broke off: {exc}", sent=True
                ) from exc
            chunks.append(raw)
            data = raw if decoder is None else decoder.decompress(raw) + decoder.flush()
            if filters and status == 200:
                data = self.filters.filter_body(filters, data)
                chunks[:] = [data]
                gzipped = False
            response: web.StreamResponse = web.Response(status=status, body=data, headers=headers)
        else:
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            size = 0
            try:
                async for chunk in upstream_response.content.iter_any():
                    await response.write(chunk if decoder is None else decoder.decompress(chunk))
                    if recording and size <= self.recorder.settings.max_response_bytes:
                        chunks.append(chunk)
                        size += len(chunk)
                if decoder is not None:
                    await response.write(decoder.flush())
            except (aiohttp.ClientError, TimeoutError, zlib.error):
                # Half an answer was sent: all that is left is to cut the client off too
                # (it sees a truncated body and retries) and record nothing.
                self.health.report_failure()
                raise
            await response.write_eof()
        if recording:
            self.recorder.record(
                info,
                component,
                key=raw_key(request.path, request.query, request_headers.get("Accept", "")),
                query=request.query,
                status=status,
                content_type=upstream_response.headers.get("Content-Type", ""),
                body=b"".join(chunks),
                gzipped=gzipped,
            )
        return response

    async def _stream_watch(
        self,
        request: web.Request,
        upstream_response: aiohttp.ClientResponse,
        info: RequestInfo,
        component: str,
        recording: bool,
        filters: list[ResponseFilter],
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers=self._response_headers(upstream_response))
        response.enable_chunked_encoding()
        watch_recording = (
            self.recorder.watch(
                info,
                component,
                initial_events=request.query.get("sendInitialEvents", "").lower() == "true",
            )
            if recording
            else None
        )
        gzipped = upstream_response.headers.get("Content-Encoding", "").lower() == "gzip"
        decoder = gzip_decoder() if gzipped else None
        with self.watches.register() as handle:
            handle.on_close = upstream_response.close
            await response.prepare(request)
            pending = b""
            try:
                async for raw in upstream_response.content.iter_any():
                    chunk = raw if decoder is None else decoder.decompress(raw)
                    if filters:
                        pending += chunk
                        *lines, pending = pending.split(b"\n")
                        chunk = b"".join(
                            self.filters.filter_event(filters, line) + b"\n"
                            for line in lines
                            if line.strip()
                        )
                        if not chunk:
                            continue
                    await response.write(chunk)
                    if watch_recording is not None:
                        watch_recording.feed(chunk)
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                if not handle.closed.is_set():
                    log.info("upstream watch %s broke: %s", request.path, exc)
                    self.health.report_failure()
            except ConnectionResetError:
                pass  # the client went away
            finally:
                if watch_recording is not None:
                    watch_recording.close()
            with contextlib.suppress(ConnectionResetError):
                await response.write_eof()
        return response
