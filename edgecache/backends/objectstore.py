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
- what a hung link may cost (:class:`RequestLimits`): seconds-long connect and read timeouts,
  and retries only of failures that come fast (a refused or reset connection, a 5xx, a body
  that broke off): a request that timed out is never repeated (:func:`retrying`), so a hung
  request costs one timeout, after which the backend is offline for every reader;
- a probe that any answer (even 403/404) counts as "reachable", bounded in time;
- errors leave as Python's own types naming the URL and never a secret: ``FileNotFoundError``,
  ``PermissionError``, :class:`~edgecache.errors.BackendUnavailableError`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from edgecache.backends._base import Backend, ObjectChangedError
from edgecache.backends.options import (
    ResolvedOptions,
    Secret,
    number,
    scrub,
    unexpected_option,
)
from edgecache.errors import BackendUnavailableError, ConfigError, quoted

__all__ = [
    "ObjectStoreBackend",
    "ObjectStoreConfig",
    "RequestLimits",
    "backoff_seconds",
    "is_timeout",
    "retrying",
    "whole_seconds",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RequestLimits:
    """What one request to an object store may cost: the options ``connect_timeout``,
    ``read_timeout`` and ``probe_timeout`` (seconds) and ``retries`` (attempts).

    An edge site's link hangs (a dead router, a radio link gone: packets vanish, nothing is
    refused) as often as it fails cleanly. Until a request times out, nobody knows the link is
    dead, so the timeouts are what the first reader pays; after that the backend is offline and
    readers are served from the cache. Hence timeouts of seconds, not the libraries' minute, and
    no retry after a timeout.
    """

    connect_timeout_seconds: float = 3.0
    """Bound on opening a connection (TCP and TLS handshakes; not the wait for a pooled one).
    Three seconds: a handshake takes a few round trips, and Linux resends a lost SYN after one
    second, so a lossy link still connects; a hung one costs three seconds, not a minute."""
    read_timeout_seconds: float = 10.0
    """Longest silence while waiting for an answer or its next bytes (not a bound on a whole
    transfer: a large object over a slow link keeps sending). Ten seconds: S3 and OSS answer
    within a second or two even when loaded, so a healthy link does not trip it, and a hung link
    costs the first reader ten seconds."""
    attempts: int = 3
    """Tries of a request whose failure came fast (refused or reset connection, 5xx, throttling,
    a body that broke off), with backoff: these are cheap and often pass on the next try. A
    request that timed out is not tried again: on a hung link that would multiply the wait."""
    probe_timeout_seconds: float = 3.0
    """Bound on one reachability probe. A read that needs an offline backend waits for a probe
    (at most one a second), so this is what such a read costs while the link hangs. A probe is
    one small request, answered within a few round trips on a live link; three seconds, as for a
    connect, leave room for a new TLS connection and a busy node, where a probe that times out
    on a live link would keep it offline for another second."""

    @classmethod
    def from_options(cls, resolved: ResolvedOptions) -> RequestLimits:
        """The limits given in ``resolved`` (``connect_timeout``, ``read_timeout``, ``retries``,
        ``probe_timeout``), defaults for the rest."""
        default = cls()
        return cls(
            connect_timeout_seconds=number(
                "connect_timeout",
                resolved.get("connect_timeout"),
                default.connect_timeout_seconds,
                minimum=0.1,
            ),
            read_timeout_seconds=number(
                "read_timeout",
                resolved.get("read_timeout"),
                default.read_timeout_seconds,
                minimum=0.1,
            ),
            attempts=int(number("retries", resolved.get("retries"), default.attempts, minimum=1)),
            probe_timeout_seconds=number(
                "probe_timeout",
                resolved.get("probe_timeout"),
                default.probe_timeout_seconds,
                minimum=0.1,
            ),
        )


@dataclass(frozen=True)
class ObjectStoreConfig:
    """A plugin's resolved options: what it builds its client from and what the shared code
    reads (endpoint, request limits, probe bucket)."""

    fs_kwargs: dict[str, Any]
    """Keywords for the plugin's fsspec filesystem (plain secrets: hand over, never log)."""
    endpoint: str
    """Secret-free endpoint URL, for identity, logs and errors."""
    resolved: ResolvedOptions
    """The options as resolved (secrets wrapped), for ``Backend.options``."""
    limits: RequestLimits
    """Timeouts and attempts of every request."""
    probe_bucket: str | None
    """Bucket the first probe asks about (later probes use the last bucket read)."""


def is_timeout(exc: BaseException, types: tuple[type[BaseException], ...] = ()) -> bool:
    """Whether ``exc`` (or an error it was raised from) is a timeout: a :class:`TimeoutError`
    (asyncio's and aiohttp's are) or one of a client library's own ``types``."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, (TimeoutError, *types)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def backoff_seconds(retry: int) -> float:
    """Pause before retry number ``retry`` (0-based) of a request that failed fast: 0.1 s, 0.2 s,
    0.4 s... at most 2 s. Short, because what is retried (a reset connection, a 5xx) usually
    passes at once or not for a long while, and a reader waits through every pause."""
    return float(min(0.1 * 2.0**retry, 2.0))


async def retrying(
    request: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    retryable: Callable[[BaseException], bool],
    timeouts: tuple[type[BaseException], ...] = (),
    what: str = "request",
) -> T:
    """``request()``, tried up to ``attempts`` times while it fails fast with a ``retryable``
    error, with :func:`backoff_seconds` between tries. A timeout is raised at once
    (:class:`RequestLimits` says why)."""
    for attempt in range(attempts):
        try:
            return await request()
        except Exception as exc:
            if attempt + 1 >= attempts or is_timeout(exc, timeouts) or not retryable(exc):
                raise
            delay = backoff_seconds(attempt)
            log.debug("retrying %s in %.1f s: %s", what, delay, type(exc).__name__)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


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
    timeout_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    """Client-library exceptions meaning a request timed out (besides ``TimeoutError``)."""
    auth_codes: ClassVar[frozenset[str]] = frozenset()
    """Error codes that mean the credentials were refused (besides any 403)."""
    credentials_hint: ClassVar[str] = "check the credentials and the bucket policy"
    """Advice appended to an access-denied error."""
    bucket_pattern: ClassVar[re.Pattern[str] | None] = None
    """The bucket names the store can have (None: any). A path whose bucket does not match is
    refused with a ConfigError before any request: a request could only fail, after retries,
    with an error that does not say the name is the problem."""
    bucket_rule: ClassVar[str] = ""
    """``bucket_pattern`` in words, for the error message."""

    _config: ObjectStoreConfig
    _secrets: list[Secret]
    _last_bucket: str | None

    # --- what plugins implement ----------------------------------------------------------------
    @abstractmethod
    async def get_range(self, path: str, start: int, end: int, etag: str) -> bytes:
        """Bytes ``[start, end)`` of ``path`` with ``If-Match: etag`` (unquoted; "" for none)."""

    async def get_range_and_info(
        self, path: str, start: int, end: int
    ) -> tuple[bytes, dict[str, Any]]:
        """Bytes ``[start, end)`` of ``path`` (no ``If-Match``) and the object's info from the
        answer's headers; plugins that implement it set ``reads_tell_info = True``."""
        raise NotImplementedError(f"{type(self).__name__} cannot read an object's info")

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
            async with asyncio.timeout(self._config.limits.probe_timeout_seconds):
                await self.probe_request(self._last_bucket)
        except TimeoutError as exc:
            raise BackendUnavailableError(
                f"{self.identity} did not answer a probe within "
                f"{self._config.limits.probe_timeout_seconds:g} s"
            ) from exc
        except Exception as exc:
            if self.is_unreachable(exc):
                raise self._unavailable(exc, None) from exc

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        path = args[0] if args and isinstance(args[0], str) else None
        self._check_bucket(path)
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
        etag = self.etag_of(version)
        return await self._ranged(path, lambda: self.get_range(path, start, end, etag))

    async def fetch_range_and_info(
        self, path: str, start: int, end: int
    ) -> tuple[bytes, dict[str, Any]]:
        path = self.strip(path)
        return await self._ranged(path, lambda: self.get_range_and_info(path, start, end))

    async def _ranged(self, path: str, request: Callable[[], Awaitable[T]]) -> T:
        """A ranged GET of ``path``: a body that broke off is read again (with backoff), a 412
        is :class:`ObjectChangedError`, other errors are translated."""
        self._check_bucket(path)
        self._remember_bucket(path)
        try:
            return await retrying(
                request,
                attempts=self._config.limits.attempts,
                retryable=lambda exc: isinstance(exc, self.body_errors),
                timeouts=self.timeout_errors,
                what=f"block of {self._url(path)}",
            )
        except self.body_errors as exc:
            raise self._unavailable(exc, path) from exc
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

    # --- errors --------------------------------------------------------------------------------
    def _check_bucket(self, path: str | None) -> None:
        if not path or self.bucket_pattern is None:
            return
        bucket = str(self.strip(path)).split("/", 1)[0]
        if bucket and not self.bucket_pattern.fullmatch(bucket):
            url = self._url(path)
            raise ConfigError(
                f"{url if len(url) <= 120 else url[:117] + '...'} is not a valid "
                f"{self.protocol.upper()} URL: bucket name {quoted(bucket)} is not allowed "
                f"({self.bucket_rule})"
            )

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
        if is_timeout(exc, self.timeout_errors):
            # Say which bound ran out: it is what a user would tune.
            limits = self._config.limits
            detail = (
                f"no answer within the timeouts (connect_timeout "
                f"{limits.connect_timeout_seconds:g} s, read_timeout "
                f"{limits.read_timeout_seconds:g} s): {detail}"
            )
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
