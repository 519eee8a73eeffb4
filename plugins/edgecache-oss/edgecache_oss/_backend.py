"""The OSS backend: what edgecache's filesystem layer talks to for ``oss://`` URLs.

Place in the data path::

    EdgeCacheFileSystem --(info, ls)--> OSSBackend.call --> EdgeOSSFileSystem (ossfs, aiooss2)
                        --(blocks)----> OSSBackend.fetch_range: GET Range + If-Match: "<ETag>"
                        --(a cold object's first reads)--> OSSBackend.fetch_range_and_info:
                              GET Range, the object's info read from the answer (no HEAD first)

The version of an object is its size, mtime (whole seconds) and ETag. Every block GET carries
``If-Match`` with the ETag the read was planned for and OSS's standard range behaviour, so a
replaced object fails with :class:`ObjectChangedError` (412) instead of mixing old and new bytes.

Errors leave this module as Python's own types, each naming the URL and never a secret:
``FileNotFoundError`` (missing bucket or key), ``PermissionError`` (``SignatureDoesNotMatch``,
``InvalidAccessKeyId``, ``AccessDenied``...), :class:`BackendUnavailableError` (endpoint
unreachable or silent, after bounded retries).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from edgecache.backends.objectstore import ObjectStoreBackend
from edgecache.backends.options import redact_in_logs
from edgecache_oss._filesystem import CONNECTION_ERRORS, EdgeOSSFileSystem, oss_status
from edgecache_oss._options import oss_config

__all__ = ["OSSBackend"]

log = logging.getLogger(__name__)

#: Loggers of the client stack, whose records must never carry a secret.
_CLIENT_LOGGERS = ("aiooss2", "oss2", "ossfs", "aiohttp", "edgecache_oss")

_AUTH_CODES = frozenset(
    {
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "AccessDenied",
        "SecurityTokenExpired",
        "InvalidSecurityToken",
    }
)


class OSSBackend(ObjectStoreBackend):
    """Aliyun OSS (and OSS-compatible servers) through ossfs's async filesystem.

    Options (native ossfs names or Fluid names, from the option, a file, the environment or a
    Kubernetes Secret; see :mod:`edgecache.backends.options`): ``endpoint``
    (``fs.oss.endpoint``; a bare host gets ``https://``), ``key`` (``fs.oss.accessKeyId``),
    ``secret`` (``fs.oss.accessKeySecret``), ``token`` (``fs.oss.securityToken``),
    ``connect_timeout`` and ``read_timeout`` (seconds, per request), ``retries`` (attempts per
    idempotent request), ``probe_timeout`` (seconds), ``probe_bucket``; anything else goes to the
    ossfs filesystem as given.
    """

    protocols = ("oss",)

    def __init__(self, protocol: str, options: Mapping[str, Any]) -> None:
        super().__init__(protocol, options)
        self._config = oss_config(options)
        # Keep only the resolved form: secrets wrapped, so printing the options shows none.
        self.options = {**self._config.resolved.extra, **self._config.resolved.values}
        self._secrets = self._config.resolved.secrets()
        redact_in_logs(self._secrets, _CLIENT_LOGGERS)
        self._fs = EdgeOSSFileSystem(
            limits=self._config.limits,
            # Bound to the read engine's loop, never shared through fsspec's instance cache.
            **self.bound_client_options(self._config.fs_kwargs),
        )
        self._last_bucket: str | None = self._config.probe_bucket

    unreachable_errors = CONNECTION_ERRORS
    # Requests are retried inside the filesystem; this covers a body breaking off after the
    # answer started.
    body_errors = CONNECTION_ERRORS
    auth_codes = _AUTH_CODES
    reads_tell_info = True
    credentials_hint = (
        "check the access key id and secret (fs.oss.accessKeyId, fs.oss.accessKeySecret) and "
        "the bucket policy"
    )
    # OSS's naming rules (3-63 characters; lowercase letters, digits and hyphens; no hyphen
    # first or last). oss2 checks nothing: such a name was sent and came back as a 403 or an
    # unreachable virtual host, which says nothing about the name.
    bucket_pattern = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
    bucket_rule = (
        "OSS bucket names are 3-63 lowercase letters, digits and hyphens, and neither start "
        "nor end with a hyphen"
    )

    # --- ObjectStoreBackend --------------------------------------------------------------------
    @property
    def fs(self) -> EdgeOSSFileSystem:
        return self._fs

    async def close(self) -> None:
        await self._fs.close_client()

    async def get_range(self, path: str, start: int, end: int, etag: str) -> bytes:
        headers = {"x-oss-range-behavior": "standard"}
        if etag:
            headers["If-Match"] = f'"{etag}"'
        return await self._fs.ranged_get(path, (start, end - 1), headers)

    async def get_range_and_info(
        self, path: str, start: int, end: int
    ) -> tuple[bytes, dict[str, Any]]:
        headers = {"x-oss-range-behavior": "standard"}
        data, answer = await self._fs.ranged_get_with_answer(path, (start, end - 1), headers)
        # "bytes 0-4095/67108864"; no Content-Range: the server sent the whole object.
        content_range = str(answer.content_range or "")
        if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
            size = int(content_range.rsplit("/", 1)[1])
        else:
            size, data = len(data), data[start:end]
        # As the filesystem's info() of an object gives it (from HEAD), so both describe it
        # alike and name the same version.
        bucket, key = self._fs.split_path(path)
        info = {
            "name": f"{bucket}/{key}",
            "type": "file",
            "size": size,
            "LastModified": answer.last_modified,
            "ETag": answer.etag,
            "VersionId": answer.versionid,
        }
        return data, info

    async def probe_request(self, bucket: str | None) -> None:
        if bucket:
            await self._fs._call_oss("list_objects", bucket=bucket, max_keys=1)
        else:
            await self._fs._call_oss("list_buckets", max_keys=1)

    def error_status(self, exc: BaseException) -> tuple[int | None, str]:
        return oss_status(exc)
