"""The OSS backend: what edgecache's filesystem layer talks to for ``oss://`` URLs.

Place in the data path::

    EdgeCacheFileSystem --(info, ls)--> OSSBackend.call --> EdgeOSSFileSystem (ossfs, aiooss2)
                        --(blocks)----> OSSBackend.fetch_range: GET Range + If-Match: "<ETag>"

The version of an object is its size, mtime (whole seconds) and ETag. Every block GET carries
``If-Match`` with the ETag the read was planned for and OSS's standard range behaviour, so a
replaced object fails with :class:`ObjectChangedError` (412) instead of mixing old and new bytes.

Errors leave this module as Python's own types, each naming the URL and never a secret:
``FileNotFoundError`` (missing bucket or key), ``PermissionError`` (``SignatureDoesNotMatch``,
``InvalidAccessKeyId``, ``AccessDenied``...), :class:`BackendUnavailableError` (endpoint
unreachable or silent, after bounded retries).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from edgecache.backends import Backend, ObjectChangedError
from edgecache.backends.options import redact_in_logs, scrub
from edgecache.errors import BackendUnavailableError
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


class OSSBackend(Backend):
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
            connect_timeout_seconds=self._config.connect_timeout_seconds,
            read_timeout_seconds=self._config.read_timeout_seconds,
            attempts=self._config.attempts,
            **self._config.fs_kwargs,
        )
        self._last_bucket: str | None = self._config.probe_bucket

    # --- Backend -------------------------------------------------------------------------------
    @property
    def fs(self) -> EdgeOSSFileSystem:
        return self._fs

    @property
    def identity(self) -> str:
        return f"oss|{self._config.endpoint}"

    def version(self, info: Mapping[str, Any]) -> str:
        etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
        stamp = _whole_seconds(info.get("LastModified") or info.get("mtime"))
        return f"{info.get('size')}-{stamp}-{etag}"

    @staticmethod
    def etag_of(version: str) -> str:
        """The ETag inside a version token made by :meth:`version`."""
        return version.split("-", 2)[2] if version.count("-") >= 2 else ""

    def strip(self, path: str) -> str:
        stripped: str = self._fs._strip_protocol(path)
        return stripped

    def is_unreachable(self, exc: BaseException) -> bool:
        if isinstance(exc, CONNECTION_ERRORS):
            return True
        return super().is_unreachable(exc)

    async def probe(self) -> None:
        """List at most one key of the last bucket used (or one bucket), within
        ``probe_timeout``. Any answer from OSS, even 403 or 404, proves it is reachable."""
        try:
            async with asyncio.timeout(self._config.probe_timeout_seconds):
                if self._last_bucket:
                    await self._fs._call_oss("list_objects", bucket=self._last_bucket, max_keys=1)
                else:
                    await self._fs._call_oss("list_buckets", max_keys=1)
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
        path = self.strip(path)
        self._remember_bucket(path)
        headers = {"x-oss-range-behavior": "standard"}
        etag = self.etag_of(version)
        if etag:
            headers["If-Match"] = f'"{etag}"'
        attempts = self._config.attempts
        for attempt in range(attempts):
            try:
                return await self._fs.ranged_get(path, (start, end - 1), headers)
            except CONNECTION_ERRORS as exc:
                # The request is retried inside the filesystem; this covers the body breaking
                # off after the answer started.
                if attempt + 1 >= attempts:
                    raise self._unavailable(exc, path) from exc
                delay = min(0.1 * 2**attempt, 2.0)
                log.debug("retrying block of %s in %.1f s: %s", self._url(path), delay, exc)
                await asyncio.sleep(delay)
            except Exception as exc:
                status, code = oss_status(exc)
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
            bucket = self._fs.split_path(self.strip(path))[0]
            if bucket:
                self._last_bucket = bucket

    def _url(self, path: str | None) -> str:
        if not path:
            return f"oss:// at {self._config.endpoint}"
        return f"oss://{self.strip(path)}"

    def _clean(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _unavailable(self, exc: BaseException, path: str | None) -> BackendUnavailableError:
        what = f" while reading {self._url(path)}" if path else ""
        detail = str(exc) or type(exc).__name__
        return BackendUnavailableError(
            self._clean(f"{self.identity} is unreachable{what}: {type(exc).__name__}: {detail}")
        )

    def _translate(self, exc: BaseException, path: str | None) -> BaseException:
        """``exc`` as the error edgecache users see: standard type, URL named, no secret."""
        if isinstance(exc, ObjectChangedError | BackendUnavailableError):
            return exc
        url = self._url(path)
        status, code = oss_status(exc)
        if status == 403 or code in _AUTH_CODES or isinstance(exc, PermissionError):
            reason = code or "403 Forbidden"
            return PermissionError(
                errno.EACCES,
                f"access denied to {url} at {self._config.endpoint} ({reason}); check the "
                "access key id and secret (fs.oss.accessKeyId, fs.oss.accessKeySecret) and the "
                "bucket policy",
                url,
            )
        if status == 404 or isinstance(exc, FileNotFoundError):
            what = "bucket" if code == "NoSuchBucket" else "object or bucket"
            return FileNotFoundError(errno.ENOENT, f"no such {what} at {self.identity}", url)
        if self.is_unreachable(exc) or (status is not None and status >= 500):
            # 5xx that outlived the retries: the service is there but not serving.
            return self._unavailable(exc, path)
        return exc
