"""What the S3 and OSS backends share: ETag versions, verified ranged GETs, probes, errors.

Object stores differ in their client libraries, not in what edgecache needs from them, so the
plugins (``edgecache_s3``, ``edgecache_oss``) subclass :class:`ObjectStoreBackend` and supply
only the library calls (:meth:`~ObjectStoreBackend.get_range`,
:meth:`~ObjectStoreBackend.probe_request`) and how to read an error
(:meth:`~ObjectStoreBackend.error_status`). Everything else is here, once:

- the version of an object is ``size-mtime-ETag`` (mtime in whole seconds, the precision both
  LIST and HEAD give), so ``ls`` and ``info`` agree and a replaced object gets new cache keys;
- a block GET carries ``If-Match: <ETag>``; a 412 becomes :class:`ObjectChangedError`, never a
  mix of old and new bytes; a body that breaks off is re-read with backoff;
- a probe that any answer (even 403/404) counts as "reachable", bounded in time;
- errors leave as Python's own types naming the URL and never a secret: ``FileNotFoundError``,
  ``PermissionError``, :class:`~edgecache.errors.BackendUnavailableError`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from edgecache.backends._base import Backend, ObjectChangedError
from edgecache.backends.options import ResolvedOptions, Secret, scrub, unexpected_option
from edgecache.errors import BackendUnavailableError, ConfigError, quoted

__all__ = ["ObjectStoreBackend", "ObjectStoreConfig", "whole_seconds"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectStoreConfig:
    """A plugin's resolved options: what it builds its client from and what the shared code
    reads (endpoint, attempts, probe bounds)."""

    fs_kwargs: dict[str, Any]
    """Keywords for the plugin's fsspec filesystem (plain secrets: hand over, never log)."""
    endpoint: str
    """Secret-free endpoint URL, for identity, logs and errors."""
    resolved: ResolvedOptions
    """The options as resolved (secrets wrapped), for ``Backend.options``."""
    connect_timeout_seconds: float
    """Bound on opening a connection."""
    read_timeout_seconds: float
    """Longest wait for the next bytes of an answer (not a bound on the whole transfer)."""
    attempts: int
    """Attempts per idempotent request, and re-reads of a block whose body broke off."""
    probe_timeout_seconds: float
    """Bound on one reachability probe."""
    probe_bucket: str | None
    """Bucket the first probe asks about (later probes use the last bucket read)."""


def whole_seconds(modified: Any) -> int:
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


class ObjectStoreBackend(Backend):
    """Base of backends for S3-like object stores; see the module docstring."""

    unreachable_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    """Client-library exceptions meaning the endpoint cannot be reached."""
    body_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    """Exceptions meaning a GET's body broke off: the block is read again, with backoff."""
    auth_codes: ClassVar[frozenset[str]] = frozenset()
    """Error codes that mean the credentials were refused (besides any 403)."""
    credentials_hint: ClassVar[str] = "check the credentials and the bucket policy"
    """Advice appended to an access-denied error."""

    _config: ObjectStoreConfig
    _secrets: list[Secret]
    _last_bucket: str | None

    # --- what plugins implement ----------------------------------------------------------------
    @abstractmethod
    async def get_range(self, path: str, start: int, end: int, etag: str) -> bytes:
        """Bytes ``[start, end)`` of ``path`` with ``If-Match: etag`` (unquoted; "" for none)."""

    @abstractmethod
    async def probe_request(self, bucket: str | None) -> None:
        """The cheapest request the store answers: about ``bucket``, or the service."""

    @abstractmethod
    def error_status(self, exc: BaseException) -> tuple[int | None, str]:
        """(HTTP status, store error code) behind a client-library exception."""

    def translate_specific(self, exc: BaseException, url: str) -> BaseException | None:
        """A plugin's own translation of ``exc`` (None: use the shared rules)."""
        return None

    # --- Backend -------------------------------------------------------------------------------
    @property
    def identity(self) -> str:
        return f"{self.protocols[0]}|{self._config.endpoint}"

    def version(self, info: Mapping[str, Any]) -> str:
        etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
        stamp = whole_seconds(info.get("LastModified") or info.get("mtime"))
        return f"{info.get('size')}-{stamp}-{etag}"

    @staticmethod
    def etag_of(version: str) -> str:
        """The ETag inside a version token made by :meth:`version`."""
        return version.split("-", 2)[2] if version.count("-") >= 2 else ""

    def strip(self, path: str) -> str:
        stripped: str = self.fs._strip_protocol(path)
        return stripped

    def is_unreachable(self, exc: BaseException) -> bool:
        if isinstance(exc, self.unreachable_errors):
            return True
        return super().is_unreachable(exc)

    async def probe(self) -> None:
        """One bounded request to the last bucket used (or the service). Any answer from the
        store, even 403 or 404, proves the endpoint is reachable."""
        try:
            async with asyncio.timeout(self._config.probe_timeout_seconds):
                await self.probe_request(self._last_bucket)
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
        etag = self.etag_of(version)
        attempts = self._config.attempts
        for attempt in range(attempts):
            try:
                return await self.get_range(path, start, end, etag)
            except self.body_errors as exc:
                if attempt + 1 >= attempts:
                    raise self._unavailable(exc, path) from exc
                delay = min(0.1 * 2**attempt, 2.0)
                log.debug("retrying block of %s in %.1f s: %s", self._url(path), delay, exc)
                await asyncio.sleep(delay)
            except Exception as exc:
                status, code = self.error_status(exc)
                if status == 412 or code == "PreconditionFailed":
                    raise ObjectChangedError(
                        errno.ESTALE, f"{self._url(path)} changed since it was listed"
                    ) from exc
                translated = self._translate(exc, path)
                if translated is exc:
                    raise
                raise translated from exc
        raise AssertionError("unreachable")

    # --- errors --------------------------------------------------------------------------------
    def _remember_bucket(self, path: str | None) -> None:
        if path:
            bucket = str(self.strip(path)).split("/", 1)[0]
            if bucket:
                self._last_bucket = bucket

    def _url(self, path: str | None) -> str:
        if not path:
            return f"{self.protocol}:// at {self._config.endpoint}"
        return f"{self.protocol}://{self.strip(path)}"

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
        option = unexpected_option(exc, self.options)
        if option is not None:
            return ConfigError(
                f"{self.protocol}:// option {quoted(option)} was refused by the client library "
                f"while reading {url}: {self._clean(str(exc))}"
            )
        specific = self.translate_specific(exc, url)
        if specific is not None:
            return specific
        status, code = self.error_status(exc)
        if status == 403 or code in self.auth_codes or isinstance(exc, PermissionError):
            detail = self._clean(f"{code or 'AccessDenied'}: {exc}")
            return PermissionError(
                errno.EACCES,
                f"access denied to {url} at {self._config.endpoint} ({detail}); "
                + self.credentials_hint,
                url,
            )
        if status == 404 or isinstance(exc, FileNotFoundError):
            what = "bucket" if code == "NoSuchBucket" else "object or bucket"
            return FileNotFoundError(errno.ENOENT, f"no such {what} at {self.identity}", url)
        if self.is_unreachable(exc) or (status is not None and status >= 500):
            # 5xx that outlived the retries: the service is there but not serving.
            return self._unavailable(exc, path)
        return exc
