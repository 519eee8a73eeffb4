"""The ossfs async filesystem, adjusted for edgecache: what ``OSSBackend.fs`` is.

Sits between the OSS backend (``edgecache_oss._backend``) and aiooss2/aiohttp. ossfs's
``AioOSSFileSystem`` does the OSS protocol; this subclass changes only what edgecache relies on:

- ``info`` and listings carry the object's ETag (ossfs drops it), so versions from ``ls`` and
  ``info`` agree; ``info`` reports 403 as an error instead of turning it into "not found";
- paths are normalised to ``bucket/key`` (ossfs keeps a leading ``/`` from ``oss://`` URLs);
- every request has bounds (aiohttp ``ClientTimeout``: connect, and silence while reading;
  :class:`~edgecache.backends.objectstore.RequestLimits`), and idempotent requests (HEAD, GET,
  LIST) are retried with backoff on failures that come fast (connection errors, 5xx), never
  after a timeout (:func:`~edgecache.backends.objectstore.retrying`);
- request headers (which carry an STS token) are never logged;
- ``cat_file`` ranges follow fsspec (end exclusive) with OSS's standard range behaviour;
- ``pipe_file`` takes fsspec's ``mode`` (``create`` refuses to overwrite, on the server), and
  uploads work with current aiohttp (aiooss2's upload payload predates an abstract method).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import aiohttp
from aiohttp.payload import PAYLOAD_REGISTRY, Order
from aiooss2.adapter import AsyncPayload, FilelikeObjectAdapter, IterableAdapter, SliceableAdapter
from aiooss2.http import AioResponse, AioSession
from oss2.exceptions import OssError, RequestError  # type: ignore[import-untyped]
from ossfs import AioOSSFileSystem  # type: ignore[import-untyped]

from edgecache.backends.objectstore import RequestLimits, retrying

__all__ = ["EdgeOSSFileSystem", "is_transient", "oss_status"]

log = logging.getLogger(__name__)

#: Requests that change nothing and can be repeated safely.
_IDEMPOTENT = frozenset(
    {
        "head_object",
        "get_object",
        "get_object_meta",
        "list_objects",
        "list_buckets",
        "get_bucket_info",
        "object_exists",
    }
)
#: Failures of the connection rather than answers of the service.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    ConnectionError,
    TimeoutError,
    RequestError,
)


def _register_upload_payload() -> None:
    """Let aiooss2 upload with current aiohttp.

    aiooss2 sends upload bodies as its ``AsyncPayload``, written before aiohttp 3.12 made
    ``Payload.decode`` abstract; instantiating it then fails, so every PUT would. This registers
    a subclass that has ``decode`` (aiohttp only uses it to show a body as text), ahead of it.
    """
    if "decode" not in getattr(AsyncPayload, "__abstractmethods__", ()):
        return

    class _UploadPayload(AsyncPayload):
        def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
            return f"<upload stream {type(self._value).__name__}>"

    PAYLOAD_REGISTRY.register(
        _UploadPayload,
        (SliceableAdapter, FilelikeObjectAdapter, IterableAdapter),
        order=Order.try_first,
    )


_register_upload_payload()


def oss_status(exc: BaseException) -> tuple[int | None, str]:
    """HTTP status and OSS error code behind ``exc`` (ossfs keeps oss2's error as the cause)."""
    seen: BaseException | None = exc
    for _ in range(4):
        if isinstance(seen, OssError) and not isinstance(seen, RequestError):
            status = getattr(seen, "status", None)
            return (int(status) if isinstance(status, int) else None), str(seen.code or "")
        if seen is None:
            break
        seen = seen.__cause__
    return None, ""


def is_transient(exc: BaseException) -> bool:
    """Whether the failure is the connection's or the service's, not the request's: connection
    trouble, timeouts, 5xx (:func:`retrying` still never repeats a timeout)."""
    if isinstance(exc, CONNECTION_ERRORS):
        return True
    status, _ = oss_status(exc)
    if status is not None and status >= 500:
        return True
    cause = exc.__cause__
    return cause is not None and cause is not exc and isinstance(cause, CONNECTION_ERRORS)


class _BoundedSession(AioSession):
    """aiooss2's session with one ``ClientTimeout`` for every request, and no header logging."""

    def __init__(self, psize: int, timeout: aiohttp.ClientTimeout) -> None:
        super().__init__(psize)
        self._timeout = timeout

    async def do_request(self, req: Any, timeout: Any = None) -> AioResponse:  # noqa: ASYNC109
        assert self.session is not None
        log.debug("OSS %s %s", req.method, req.url)
        try:
            response = await self.session.request(
                req.method,
                req.url,
                data=req.data,
                params=req.params,
                headers=req.headers,
                timeout=self._timeout,
            )
        except aiohttp.ClientResponseError as err:
            raise RequestError(err) from err
        return AioResponse(response)


class EdgeOSSFileSystem(AioOSSFileSystem):  # type: ignore[misc]
    """``AioOSSFileSystem`` with ETags, bounded and retried requests, normalised paths."""

    protocol = "oss"
    _session: Any

    def __init__(self, *, limits: RequestLimits | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        limits = limits or RequestLimits()
        # Bounds on silence, not on duration: a 64 MiB object over a slow link may take minutes,
        # but no connect and no wait for the next bytes may outlast its timeout. The wait for a
        # free pooled connection is not bounded (``connect``): under many parallel block fetches
        # over a slow link it is long, and says nothing about whether the link is up.
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None,
            sock_connect=limits.connect_timeout_seconds,
            sock_read=limits.read_timeout_seconds,
        )
        self._attempts = limits.attempts

    # --- paths ---------------------------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        stripped: str = super()._strip_protocol(path)
        return stripped.strip("/")

    # --- requests ------------------------------------------------------------------------------
    async def close_client(self) -> None:
        """Close the session and its connections (ossfs closes them only for a synchronous
        instance, when it is collected); a later request opens it again."""
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def set_session(self, refresh: bool = False) -> None:
        if self._session is None or self._session.closed or refresh:
            if self._session is None or refresh:
                self._session = _BoundedSession(self._psize, self._timeout)
            await self._session.__aenter__()
            if not self.asynchronous:
                weakref.finalize(self, self.close_session)

    async def _call_oss(
        self, method_name: str, *args: Any, bucket: str | None = None, **kwargs: Any
    ) -> Any:
        call = super()._call_oss
        return await retrying(
            lambda: call(method_name, *args, bucket=bucket, **kwargs),
            attempts=self._attempts if method_name in _IDEMPOTENT else 1,
            retryable=is_transient,
            what=f"OSS {method_name}",
        )

    # --- metadata with ETags -------------------------------------------------------------------
    def _transfer_object_info_to_dict(self, bucket: str, obj: Any) -> dict[str, Any]:
        data: dict[str, Any] = super()._transfer_object_info_to_dict(bucket, obj)
        if data.get("type") == "file" and getattr(obj, "etag", None):
            data["ETag"] = obj.etag
        return data

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        norm = self._strip_protocol(path)
        if not norm:
            return {"name": "", "size": 0, "type": "directory"}
        bucket, key = self.split_path(norm)
        if key:
            try:
                head = await self._call_oss("head_object", key, bucket=bucket)
            except FileNotFoundError:
                pass  # not an object: maybe a prefix ("directory"), see below
            else:
                return {
                    "name": norm,
                    "type": "file",
                    "size": head.content_length,
                    "LastModified": head.last_modified,
                    "ETag": head.etag,
                    "VersionId": head.versionid,
                }
        listing = await self._call_oss(
            "list_objects",
            bucket=bucket,
            prefix=f"{key.rstrip('/')}/" if key else "",
            delimiter="/",
            max_keys=1,
        )
        if not key or listing.object_list or listing.prefix_list:
            return {"name": norm, "size": 0, "type": "directory"}
        raise FileNotFoundError(norm)

    async def _pipe_file(
        self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        # ossfs hands every keyword to put_object, which knows no ``mode``: "create" becomes
        # OSS's own no-overwrite header, so the check is atomic on the server.
        if mode == "create":
            headers = dict(kwargs.pop("headers", None) or {})
            headers["x-oss-forbid-overwrite"] = "true"
            kwargs["headers"] = headers
        try:
            await super()._pipe_file(path, value, **kwargs)
        except OSError as exc:
            if oss_status(exc)[1] == "FileAlreadyExists":
                raise FileExistsError(path) from exc
            raise

    async def _cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        norm = self._strip_protocol(path)
        if (start is not None and start < 0) or (end is not None and end < 0):
            size = (await self._info(norm))["size"]
            start = size + start if start is not None and start < 0 else start
            end = size + end if end is not None and end < 0 else end
        if start is not None and end is not None and end <= start:
            return b""
        headers = dict(kwargs.pop("headers", None) or {})
        headers["x-oss-range-behavior"] = "standard"
        byte_range: tuple[int | None, int | None] | None = (
            None if start is None and end is None else (start, None if end is None else end - 1)
        )
        return await self.ranged_get(norm, byte_range, headers)

    async def ranged_get(
        self, path: str, byte_range: tuple[int | None, int | None] | None, headers: dict[str, str]
    ) -> bytes:
        """One GET of ``path`` (``byte_range`` inclusive, as OSS takes it), body read whole."""
        data, _ = await self.ranged_get_with_answer(path, byte_range, headers)
        return data

    async def ranged_get_with_answer(
        self, path: str, byte_range: tuple[int | None, int | None] | None, headers: dict[str, str]
    ) -> tuple[bytes, Any]:
        """:meth:`ranged_get` and the answer it came with (its headers: ``content_range``,
        ``etag``, ``last_modified``, ``versionid``...), which describe the object."""
        bucket, key = self.split_path(path)
        stream = await self._call_oss(
            "get_object", key, bucket=bucket, byte_range=byte_range, headers=headers
        )
        chunks: list[bytes] = []
        async with stream:
            while chunk := await stream.read():  # one network chunk per call, b"" at the end
                chunks.append(chunk)
        data = b"".join(chunks)
        expected = stream.content_length
        if expected is not None and len(data) != int(expected):
            # aiooss2 ends the body quietly when the connection drops mid-way: never hand a
            # short read up as if it were the object's bytes.
            raise aiohttp.ClientPayloadError(
                f"{path}: body ended after {len(data)} of {expected} bytes"
            )
        return data, stream
