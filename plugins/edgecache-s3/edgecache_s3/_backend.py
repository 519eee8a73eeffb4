"""The S3 backend: what edgecache's filesystem layer talks to for ``s3://`` and ``s3a://`` URLs.

Place in the data path::

    EdgeCacheFileSystem --(info, ls)--> S3Backend.call --> s3fs.S3FileSystem --> S3 / moto / MinIO
                        --(blocks)----> S3Backend.fetch_range: GET Range + If-Match: <ETag>

The version of an object is its size, mtime (whole seconds, the precision both LIST and HEAD give)
and ETag. Every block GET carries ``If-Match`` with the ETag the read was planned for, so a
replaced object fails with :class:`ObjectChangedError` (412) instead of mixing old and new bytes.

Errors leave this module as Python's own types, each naming the URL and never a secret:
``FileNotFoundError`` (missing bucket or key), ``PermissionError`` (credentials refused),
:class:`BackendUnavailableError` (endpoint unreachable, after bounded botocore retries).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiobotocore.endpoint
import aiohttp
import botocore.auth
import botocore.endpoint
import botocore.exceptions
import s3fs

from edgecache.backends import Backend, ObjectChangedError
from edgecache.backends.options import redact_in_logs, scrub
from edgecache.errors import BackendUnavailableError
from edgecache_s3._options import s3_config

__all__ = ["S3Backend"]

log = logging.getLogger(__name__)

#: Loggers of the client stack; botocore logs request headers (an STS token) at DEBUG.
_CLIENT_LOGGERS = ("botocore", "aiobotocore", "s3fs", "urllib3", "aiohttp")
_ = (aiobotocore.endpoint, botocore.auth, botocore.endpoint)  # imported so their loggers exist

#: Failures while streaming a block's body: the request reached S3, the bytes did not all arrive.
_BODY_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientPayloadError,
    asyncio.IncompleteReadError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.ReadTimeoutError,
    TimeoutError,
)
_UNREACHABLE: tuple[type[BaseException], ...] = (
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    aiohttp.ClientConnectionError,
)


def _client_error(exc: BaseException) -> botocore.exceptions.ClientError | None:
    """The botocore ClientError behind ``exc`` (s3fs translates them and keeps the cause)."""
    seen: BaseException | None = exc
    for _ in range(4):
        if isinstance(seen, botocore.exceptions.ClientError):
            return seen
        if seen is None:
            return None
        seen = seen.__cause__
    return None


def _error_code(exc: BaseException) -> tuple[str, int | None]:
    client_error = _client_error(exc)
    if client_error is None:
        return "", None
    response: Mapping[str, Any] = client_error.response or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, int(status) if status is not None else None


def _whole_seconds(modified: Any) -> int:
    """An mtime as whole epoch seconds, from a datetime, a number, or a datetime's ``str``/ISO
    form (info that went through a JSON metadata store); 0 when absent or unreadable."""
    if hasattr(modified, "timestamp"):
        return int(modified.timestamp())
    if isinstance(modified, int | float):
        return int(modified)
    if isinstance(modified, str) and modified:
        try:
            return int(datetime.fromisoformat(modified).timestamp())
        except ValueError:
            try:
                return int(float(modified))
            except ValueError:
                return 0
    return 0


class S3Backend(Backend):
    """S3 and S3-compatible stores through s3fs.

    Options (native s3fs names or Fluid/Hadoop names, from the option, a file, the environment
    or a Kubernetes Secret; see :mod:`edgecache.backends.options`): ``endpoint_url``
    (``fs.s3a.endpoint``), ``key`` (``aws.accessKeyId``, ``fs.s3a.access.key``), ``secret``
    (``aws.secretAccessKey``, ``fs.s3a.secret.key``), ``token`` (``aws.sessionToken``),
    ``region`` (``aws.region``), ``anon``, ``path_style``, ``connect_timeout`` and
    ``read_timeout`` (seconds), ``retries`` (attempts per request), ``probe_timeout`` (seconds),
    ``probe_bucket``; anything else goes to ``s3fs.S3FileSystem`` as given.
    """

    protocols = ("s3", "s3a")

    def __init__(self, protocol: str, options: Mapping[str, Any]) -> None:
        super().__init__(protocol, options)
        self._config = s3_config(options)
        # Keep only the resolved form: secrets wrapped, so printing the options shows none.
        self.options = {**self._config.resolved.extra, **self._config.resolved.values}
        self._secrets = self._config.resolved.secrets()
        redact_in_logs(self._secrets, _CLIENT_LOGGERS)
        self._fs = s3fs.S3FileSystem(**self._config.fs_kwargs)
        # botocore retries each request (config_kwargs["retries"]); s3fs's own retry loop on top
        # would multiply the attempts against an unreachable endpoint.
        self._fs.retries = 1
        self._last_bucket: str | None = self._config.probe_bucket

    # --- Backend -------------------------------------------------------------------------------
    @property
    def fs(self) -> s3fs.S3FileSystem:
        return self._fs

    @property
    def identity(self) -> str:
        return f"s3|{self._config.endpoint}"

    def version(self, info: Mapping[str, Any]) -> str:
        etag = str(info.get("ETag") or info.get("etag") or "")
        stamp = _whole_seconds(info.get("LastModified") or info.get("mtime"))
        return f"{info.get('size')}-{stamp}-{etag}"

    @staticmethod
    def etag_of(version: str) -> str:
        """The ETag inside a version token made by :meth:`version`."""
        return version.split("-", 2)[2] if version.count("-") >= 2 else ""

    def is_unreachable(self, exc: BaseException) -> bool:
        if isinstance(exc, _UNREACHABLE):
            return True
        return super().is_unreachable(exc)

    async def probe(self) -> None:
        """HEAD the last bucket used (or list at most one bucket), within ``probe_timeout``.

        Any answer from S3, even 403 or 404, proves the endpoint is reachable.
        """
        try:
            async with asyncio.timeout(self._config.probe_timeout_seconds):
                if self._last_bucket:
                    await self._fs._call_s3("head_bucket", Bucket=self._last_bucket)
                else:
                    await self._fs._call_s3("list_buckets", MaxBuckets=1)
        except TimeoutError as exc:
            raise BackendUnavailableError(
                f"{self.identity} did not answer a probe within "
                f"{self._config.probe_timeout_seconds:g} s"
            ) from exc
        except Exception as exc:
            if self.is_unreachable(exc):
                raise self._unavailable(exc, None) from exc

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        path = args[0] if args and isinstance(args[0], str) else None
        self._remember_bucket(path)
        try:
            return await super().call(method, *args, **kwargs)
        except Exception as exc:
            translated = self._translate(exc, path)
            if translated is exc:
                raise
            raise translated from exc

    async def fetch_range(self, path: str, start: int, end: int, version: str) -> bytes:
        if end <= start:
            return b""
        bucket, key, version_id = self._fs.split_path(path)
        self._last_bucket = bucket
        request: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "Range": f"bytes={start}-{end - 1}",
        }
        etag = self.etag_of(version)
        if etag:
            request["IfMatch"] = etag
        if version_id:
            request["VersionId"] = version_id
        attempts = self._config.attempts
        for attempt in range(attempts):
            try:
                response = await self._fs._call_s3("get_object", **request)
                body = response["Body"]
                try:
                    data: bytes = await body.read()
                finally:
                    body.close()
                return data
            except _BODY_ERRORS as exc:
                if attempt + 1 >= attempts:
                    raise self._unavailable(exc, path) from exc
                delay = min(0.1 * 2**attempt, 2.0)
                log.debug("retrying block of %s in %.1f s: %s", self._url(path), delay, exc)
                await asyncio.sleep(delay)
            except Exception as exc:
                code, status = _error_code(exc)
                if status == 412 or code == "PreconditionFailed":
                    raise ObjectChangedError(
                        errno.ESTALE, f"{self._url(path)} changed since it was listed"
                    ) from exc
                translated = self._translate(exc, path)
                if translated is exc:
                    raise
                raise translated from exc
        raise AssertionError("unreachable")

    # --- error translation ---------------------------------------------------------------------
    def _remember_bucket(self, path: str | None) -> None:
        if path:
            bucket = self._fs.split_path(path)[0]
            if bucket:
                self._last_bucket = bucket

    def _url(self, path: str | None) -> str:
        if not path:
            return f"{self.protocol}:// at {self._config.endpoint}"
        return f"{self.protocol}://{self._fs._strip_protocol(path)}"

    def _clean(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _unavailable(self, exc: BaseException, path: str | None) -> BackendUnavailableError:
        what = f" while reading {self._url(path)}" if path else ""
        return BackendUnavailableError(
            self._clean(f"{self.identity} is unreachable{what}: {type(exc).__name__}: {exc}")
        )

    def _translate(self, exc: BaseException, path: str | None) -> BaseException:
        """``exc`` as the error edgecache users see: standard type, URL named, no secret."""
        url = self._url(path)
        if isinstance(exc, ObjectChangedError | BackendUnavailableError):
            return exc
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return PermissionError(
                errno.EACCES,
                f"no credentials for {url}: give key and secret (aws.accessKeyId and "
                "aws.secretAccessKey), or anon=true for a public bucket",
                url,
            )
        code, status = _error_code(exc)
        if isinstance(exc, PermissionError) or status == 403:
            detail = self._clean(f"{code or 'AccessDenied'}: {exc}")
            return PermissionError(
                errno.EACCES,
                f"access denied to {url} at {self._config.endpoint} ({detail}); check the "
                "credentials and the bucket policy",
                url,
            )
        if isinstance(exc, FileNotFoundError) or status == 404:
            what = "bucket" if code == "NoSuchBucket" else "object or bucket"
            return FileNotFoundError(errno.ENOENT, f"no such {what} at {self.identity}", url)
        if self.is_unreachable(exc) or (status is not None and status >= 500):
            # 5xx that outlived the retries: the service is there but not serving.
            return self._unavailable(exc, path)
        return exc
