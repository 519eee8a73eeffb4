"""``OSSServer``: the OSS test server's lifecycle, authentication, request log and faults.

The top of the package: an aiohttp application on 127.0.0.1 whose middleware names the operation,
verifies the signature (``_auth``), applies bucket ACLs to anonymous requests, injects the faults a
test asked for, hands the request to ``_handlers`` and logs it. It runs on the caller's event loop
(``async with OSSServer() as srv``) or on its own loop in a thread (``with OSSServer() as srv``),
for sync clients such as ``oss2`` and ``ossfs.OSSFileSystem``.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from aiohttp import web

from edgecache_testservers._threadloop import LoopThreadService

from ._auth import ANONYMOUS, Principal, SignedRequest, Verifier
from ._errors import OSSError, access_denied
from ._handlers import Answer, Handlers, Target, http_date, operation_of, parse_target
from ._store import Bucket, Store, StoredObject

T = TypeVar("T")
FaultMode = Literal["status", "close", "hang", "truncate"]

DEFAULT_CREDENTIALS = {"edgecache-test-key": "edgecache-test-secret"}
_ANONYMOUS_READS = frozenset(
    {"GetObject", "HeadObject", "GetObjectMeta", "ListObjects", "ListObjectsV2"}
)
_BUCKET_OPERATIONS = frozenset({"PutBucket", "DeleteBucket", "GetBucketInfo", "GetBucketAcl"})


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it (the request log, for assertions)."""

    operation: str
    """The OSS API name: ``GetObject``, ``ListObjectsV2``, ``UploadPart``..."""
    method: str
    path: str
    """The request path as sent (percent-encoded)."""
    bucket: str
    key: str
    query: str
    range: str
    """The ``Range`` header as sent (empty if none)."""
    status: int
    bytes_received: int
    """Request body bytes."""
    bytes_sent: int
    """Response body bytes (object data for GET)."""
    access_key_id: str
    auth_version: str
    """``v1``, ``v2``, ``v4``, or empty for anonymous and refused requests."""
    error_code: str
    user_agent: str
    started: float
    """``time.monotonic()`` when the request arrived."""


@dataclass
class Fault:
    """An injected failure; ``remaining`` counts down (``None``: until cleared)."""

    mode: FaultMode
    status: int
    code: str
    remaining: int | None
    operations: frozenset[str]
    key_prefix: str
    matched: int = field(default=0)

    def matches(self, operation: str, target: Target) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.operations and operation not in self.operations:
            return False
        return target.key.startswith(self.key_prefix)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class OSSServer(LoopThreadService):
    """An OSS-protocol server for tests, on ``127.0.0.1`` and a free port unless told otherwise.

    ``credentials``: access key id -> secret; every request must be signed with one of them
    (anonymous requests only reach buckets created ``public-read``/``public-read-write``).
    ``security_tokens``: access key ids that are STS credentials, with their required token.
    ``region``: the bucket location reported (``oss-<region>``); V4 signatures carry their own.
    ``min_part_size_bytes``: the service's minimum size of every multipart part but the last.
    ``crc``: report ``x-oss-hash-crc64ecma`` (``oss2`` then checks uploads and whole downloads).
    """

    thread_name = "oss-server"

    def __init__(
        self,
        *,
        credentials: Mapping[str, str] | None = None,
        security_tokens: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = "cn-hangzhou",
        min_part_size_bytes: int = 100 * 1024,
        crc: bool = True,
        request_log_size: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self._port = port
        self.region = region
        self.credentials = dict(DEFAULT_CREDENTIALS if credentials is None else credentials)
        self.store = Store(min_part_size_bytes=min_part_size_bytes, crc=crc)
        self.verifier = Verifier(self.credentials, security_tokens=security_tokens, clock=clock)
        self._handlers = Handlers(self.store, region=region, endpoint_host=host)
        self._faults: list[Fault] = []
        self._request_log: deque[RecordedRequest] = deque(maxlen=request_log_size)
        self._runner: web.AppRunner | None = None
        LoopThreadService.__init__(self)
        self._stopping: asyncio.Event | None = None
        self._transports: set[asyncio.Transport] = set()

    # ------------------------------------------------------------------------------ facts

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: give it to ``oss2.Bucket``/``ossfs`` as the endpoint."""
        return f"http://{self.host}:{self._port}"

    @property
    def access_key_id(self) -> str:
        """The first configured access key id (convenient when there is one)."""
        return next(iter(self.credentials))

    @property
    def access_key_secret(self) -> str:
        return self.credentials[self.access_key_id]

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def requests(self) -> list[RecordedRequest]:
        """The request log, oldest first."""
        return list(self._request_log)

    def clear_requests(self) -> None:
        self._request_log.clear()

    def bytes_sent(self, operation: str | None = None) -> int:
        """Response body bytes sent so far (of one operation, e.g. ``GetObject``)."""
        return sum(r.bytes_sent for r in self.requests if operation in (None, r.operation))

    # ----------------------------------------------------------------------- data helpers

    def create_bucket(self, name: str, *, acl: str = "private") -> Bucket:
        """Create a bucket (no-op if it exists). ``acl``: ``private``, ``public-read``, ...."""
        return self.store.create_bucket(name, acl=acl)

    def put_object(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        """Store an object directly (creating the bucket if needed); not logged."""
        self.store.create_bucket(bucket)
        meta = {k.lower(): v for k, v in (metadata or {}).items()}
        return self.store.put(bucket, key, data, content_type=content_type, metadata=meta)

    def get_object(self, bucket: str, key: str) -> bytes:
        return self.store.get(bucket, key).data

    def head_object(self, bucket: str, key: str) -> StoredObject:
        return self.store.get(bucket, key)

    def delete_object(self, bucket: str, key: str) -> bool:
        return self.store.delete(bucket, key)

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        return [k for k in self.store.bucket(bucket).keys if k.startswith(prefix)]

    # ---------------------------------------------------------------------------- faults

    def fail(
        self,
        status: int = 503,
        code: str = "ServiceUnavailable",
        *,
        count: int | None = None,
        operations: Iterable[str] = (),
        key_prefix: str = "",
        mode: FaultMode = "status",
    ) -> Fault:
        """Make matching requests fail: with an OSS error (``status``/``code``), by closing the
        connection (``close``), by never answering until the server stops (``hang``), or, for
        GetObject, by sending the headers and half the body and then closing (``truncate``)."""
        fault = Fault(mode, status, code, count, frozenset(operations), key_prefix)
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    def _take_fault(self, operation: str, target: Target) -> Fault | None:
        for fault in self._faults:
            if fault.matches(operation, target):
                if fault.remaining is not None:
                    fault.remaining -= 1
                fault.matched += 1
                return fault
        return None

    # --------------------------------------------------------------------- the application

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=6 * 1024**3)
        app.router.add_route("*", "/{tail:.*}", self._not_routed)
        return app

    async def _not_routed(self, request: web.Request) -> web.StreamResponse:
        raise AssertionError("the middleware answers every request")  # pragma: no cover

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        request_id = secrets.token_hex(12).upper()
        target = parse_target(request)
        query = request.rel_url.query
        headers = {k.lower(): v for k, v in request.headers.items()}
        operation = operation_of(request.method, target, query, headers)
        transport = request.transport
        if isinstance(transport, asyncio.Transport):
            self._transports.add(transport)
        principal = ANONYMOUS
        answer: Answer | None = None
        error: OSSError | None = None
        try:
            principal = self.verifier.verify(
                SignedRequest(
                    request.method, target.bucket, target.key, list(query.items()), headers
                )
            )
            self._authorize(principal, operation, target)
            fault = self._take_fault(operation, target)
            if fault is not None and fault.mode == "status":
                raise OSSError(fault.status, fault.code, "Injected by the OSS test server.")
            answer = await self._handlers.handle(request, target, operation)
            if fault is not None:
                await self._misbehave(request, fault, answer)
        except OSSError as exc:
            error = exc
            answer = self._error_answer(request, exc, request_id)
        finally:
            if isinstance(transport, asyncio.Transport):
                self._transports.discard(transport)
        received = len(await request.read())  # cached if the handler read it
        response = answer.response
        response.headers["x-oss-request-id"] = request_id
        response.headers["Server"] = "AliyunOSS"
        response.headers["Date"] = http_date(time.time())
        self._request_log.append(
            RecordedRequest(
                operation=operation,
                method=request.method,
                path=request.rel_url.raw_path,
                bucket=target.bucket,
                key=target.key,
                query=request.rel_url.raw_query_string,
                range=request.headers.get("Range", ""),
                status=response.status,
                bytes_received=received,
                bytes_sent=answer.body_bytes if request.method != "HEAD" else 0,
                access_key_id=principal.access_key_id,
                auth_version=principal.auth_version,
                error_code=error.code if error is not None else "",
                user_agent=request.headers.get("User-Agent", ""),
                started=started,
            )
        )
        return response

    def _authorize(self, principal: Principal, operation: str, target: Target) -> None:
        if principal.access_key_id:
            return
        if not target.bucket or operation in _BUCKET_OPERATIONS:
            raise access_denied("AccessDenied: anonymous access is forbidden for this operation.")
        bucket = self.store.bucket(target.bucket)
        if bucket.acl == "public-read-write":
            return
        if bucket.acl == "public-read" and operation in _ANONYMOUS_READS:
            return
        raise access_denied("You have no right to access this object because of bucket acl.")

    def _error_answer(self, request: web.Request, error: OSSError, request_id: str) -> Answer:
        body = error.to_xml(request_id=request_id, host_id=self.host)
        headers = dict(error.headers)
        headers["x-oss-ec"] = "0000-00000000"
        if error.status == 304:
            return Answer(web.Response(status=304, headers=headers))
        if request.method == "HEAD":
            # A HEAD answer has no body: the service puts the error document in a header.
            headers["x-oss-err"] = base64.b64encode(body).decode()
            return Answer(web.Response(status=error.status, headers=headers))
        response = web.Response(
            status=error.status, body=body, content_type="application/xml", headers=headers
        )
        return Answer(response, len(body))

    async def _misbehave(self, request: web.Request, fault: Fault, answer: Answer) -> None:
        transport = request.transport
        if fault.mode == "hang" and self._stopping is not None:
            await self._stopping.wait()
        if fault.mode == "truncate" and answer.data is not None:
            stream = web.StreamResponse(
                status=answer.response.status, headers=answer.response.headers
            )
            stream.content_length = len(answer.data)
            await stream.prepare(request)
            await stream.write(answer.data[: len(answer.data) // 2])
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError  # the connection is gone: nothing more may be written

    # ------------------------------------------------------------------ async lifecycle

    async def astart(self) -> None:
        """Listen on the running loop (on the same port as before if started earlier)."""
        if self._runner is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        server = site._server
        assert isinstance(server, asyncio.Server)
        self._port = server.sockets[0].getsockname()[1]
        self._runner = runner

    async def astop(self) -> None:
        """Stop listening and reset open connections; the data is kept for a later start."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._stopping is not None:
            self._stopping.set()
        for transport in list(self._transports):
            transport.abort()
        await runner.cleanup()

    # ----------------------------------------------------------- threaded (sync) lifecycle

    def stop(self) -> None:
        """Stop listening; :meth:`start` serves again on the same port with the same data."""
        if self._thread is not None:
            self._run(self.astop())
