"""The S3 backend: what edgecache's filesystem layer talks to for ``s3://`` and ``s3a://`` URLs.

Place in the data path::

    EdgeCacheFileSystem --(info, ls)--> S3Backend.call --> s3fs.S3FileSystem --> S3 / moto / MinIO
                        --(blocks)----> S3Backend.fetch_range: GET Range + If-Match: <ETag>

The version of an object is its size, mtime (whole seconds, the precision both LIST and HEAD give)
and ETag. Every block GET carries ``If-Match`` with the ETag the read was planned for, so a
replaced object fails with :class:`ObjectChangedError` (412) instead of mixing old and new bytes.

Errors leave this module as Python's own types, each naming the URL and never a secret:
``FileNotFoundError`` (missing bucket or key), ``PermissionError`` (credentials refused),
:class:`BackendUnavailableError` (endpoint unreachable, after bounded botocore retries; a
request that timed out is not retried: see ``edgecache_s3._filesystem``),
:class:`ConfigError` (a bucket or key botocore refuses to send, such as ``Bad_Bucket!``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
from collections.abc import Mapping
from typing import Any

import aiobotocore.endpoint
import aiohttp
import botocore.auth
import botocore.endpoint
import botocore.exceptions

from edgecache.backends.objectstore import ObjectStoreBackend
from edgecache.backends.options import redact_in_logs
from edgecache.errors import ConfigError
from edgecache_s3._filesystem import TIMEOUT_ERRORS, EdgeS3FileSystem
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


class S3Backend(ObjectStoreBackend):
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
        # Bound to the read engine's loop, never shared through fsspec's instance cache.
        self._fs = EdgeS3FileSystem(
            limits=self._config.limits, **self.bound_client_options(self._config.fs_kwargs)
        )
        # botocore retries each request (config_kwargs["retries"]); s3fs's own retry loop on top
        # would multiply the attempts against an unreachable endpoint.
        self._fs.retries = 1
        self._last_bucket: str | None = self._config.probe_bucket

    unreachable_errors = _UNREACHABLE
    body_errors = _BODY_ERRORS
    # S3's rules for bucket names (3-63 characters; lowercase letters, digits, dots, hyphens;
    # a letter or digit first and last; no two dots in a row; not an IPv4 address). botocore
    # checks only its wider legacy pattern (uppercase and "_" pass and are sent). An access
    # point ARN in the bucket's place is left to botocore.
    bucket_pattern = re.compile(
        r"arn:.*|(?!\d+\.\d+\.\d+\.\d+$)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
    )
    bucket_rule = (
        "S3 bucket names are 3-63 lowercase letters, digits, dots and hyphens, start and end "
        "with a letter or digit, and are not IP addresses"
    )
    timeout_errors = TIMEOUT_ERRORS
    reads_tell_info = True

    # --- ObjectStoreBackend --------------------------------------------------------------------
    @property
    def fs(self) -> EdgeS3FileSystem:
        return self._fs

    async def close(self) -> None:
        await self._fs.close_client()

    async def get_range(self, path: str, start: int, end: int, etag: str) -> bytes:
        bucket, key, version_id = self._fs.split_path(path)
        request: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "Range": f"bytes={start}-{end - 1}",
        }
        if etag:
            request["IfMatch"] = f'"{etag}"'
        if version_id:
            request["VersionId"] = version_id
        response = await self._fs._call_s3("get_object", **request)
        body = response["Body"]
        try:
            data: bytes = await body.read()
        finally:
            body.close()
        return data

    async def get_range_and_info(
        self, path: str, start: int, end: int
    ) -> tuple[bytes, dict[str, Any]]:
        bucket, key, version_id = self._fs.split_path(path)
        request: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "Range": f"bytes={start}-{end - 1}",
        }
        if version_id:
            request["VersionId"] = version_id
        response = await self._fs._call_s3("get_object", **request)
        body = response["Body"]
        try:
            data: bytes = await body.read()
        finally:
            body.close()
        # "bytes 0-4095/67108864"; no Content-Range: the store sent the whole object.
        content_range = str(response.get("ContentRange") or "")
        if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
            size = int(content_range.rsplit("/", 1)[1])
        else:
            size, data = len(data), data[start:end]
        # As s3fs's info() of an object gives it (from HEAD), so both describe it alike.
        info = {
            "ETag": response.get("ETag", ""),
            "LastModified": response.get("LastModified", ""),
            "size": size,
            "name": f"{bucket}/{key}",
            "type": "file",
            "StorageClass": response.get("StorageClass", "STANDARD"),
            "VersionId": response.get("VersionId"),
            "ContentType": response.get("ContentType"),
        }
        return data, info

    async def probe_request(self, bucket: str | None) -> None:
        if bucket:
            await self._fs._call_s3("head_bucket", Bucket=bucket)
        else:
            await self._fs._call_s3("list_buckets", MaxBuckets=1)

    def error_status(self, exc: BaseException) -> tuple[int | None, str]:
        code, status = _error_code(exc)
        return status, code

    def translate_specific(self, exc: BaseException, url: str) -> BaseException | None:
        if isinstance(exc, botocore.exceptions.ParamValidationError):
            # botocore checks bucket and key before sending anything: the URL is wrong, and
            # retrying cannot help. Its report quotes its regular expressions: keep the problem.
            report = str(exc.kwargs.get("report") or exc)
            problem = report.strip().splitlines()[0] if report.strip() else "invalid"
            problem = problem.split(": Bucket name must match", 1)[0]
            return ConfigError(
                f"{url} is not a valid S3 URL: {problem} (bucket names are 3-63 lowercase "
                "letters, digits, dots and hyphens)"
            )
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return PermissionError(
                errno.EACCES,
                f"no credentials for {url}: give key and secret (aws.accessKeyId and "
                "aws.secretAccessKey), or anon=true for a public bucket",
                url,
            )
        return None
