"""The s3fs filesystem, adjusted for edgecache: what ``S3Backend.fs`` is.

Sits between the S3 backend (``edgecache_s3._backend``) and aiobotocore. s3fs does the S3
protocol; this subclass changes how botocore retries a request that got no answer, so that S3
follows the same rules as every object store (:class:`~edgecache.backends.objectstore.
RequestLimits`):

- a request that timed out is not retried. botocore's ``standard`` mode repeats timeouts like
  any transient error, so on a hung link one request cost ``attempts x read_timeout`` (3 x 30 s
  measured) before edgecache heard of it; now it costs one timeout, after which the backend is
  offline for every reader;
- a refused or reset connection is retried after
  :func:`~edgecache.backends.objectstore.backoff_seconds` (0.1 s, 0.2 s...), not botocore's
  jittered second or two: a link that was cut is reported within a fraction of a second;
- answers (throttling, 5xx) keep botocore's own policy and backoff: the service asked for them.

Every client of the process reads botocore's service models through one data loader
(:func:`botocore_session`): parsing them costs ~0.15 s of CPU, paid once per process (and not
again in a forked DataLoader worker, which inherits them), instead of once per client. Its
responses' timestamps are parsed by :func:`parse_timestamp`: botocore hands every one to
dateutil's general parser (~0.1 ms each), a tenth of a cold ``glob`` of 400 objects (one
``LastModified`` per listed key) and part of every GET; S3 sends two fixed formats.
"""

from __future__ import annotations

import datetime
from typing import Any

import aiobotocore.session
import botocore.exceptions
import botocore.loaders
import botocore.utils
import s3fs

from edgecache.backends.objectstore import RequestLimits, backoff_seconds

__all__ = ["TIMEOUT_ERRORS", "EdgeS3FileSystem", "botocore_session", "parse_timestamp"]

#: botocore's exceptions for a connect or read timeout (aiohttp's timeouts, translated).
TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
)
#: A request that got no answer: the connection failed (refused, reset, closed early).
_NO_ANSWER: tuple[type[BaseException], ...] = (
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    OSError,
)
_HANDLER_ID = "edgecache-retry-without-answer"
_LOADERS: dict[str | None, botocore.loaders.Loader] = {}
"""botocore data loaders by data path (``AWS_DATA_PATH``): pure caches of parsed JSON files."""
_UTC = botocore.utils.tzutc()
"""The UTC botocore's parser gives (dateutil's, which botocore depends on)."""
_HTTP_DATE = "%a, %d %b %Y %H:%M:%S GMT"


def parse_timestamp(value: Any) -> datetime.datetime:
    """A timestamp of an S3 response as botocore's own parser gives it (a UTC datetime), fast
    for S3's two formats: ISO 8601 in UTC (``2026-12-02T03:36:16.000Z``, listings) and the
    HTTP date (``Wed, 02 Dec 2026 03:36:16 GMT``, headers). Anything else, or a name of a day
    or month this process's locale does not spell so, goes to botocore's parser."""
    if isinstance(value, str):
        try:
            if value.endswith("Z") and "T" in value:
                return datetime.datetime.fromisoformat(value).replace(tzinfo=_UTC)
            if value.endswith(" GMT"):
                return datetime.datetime.strptime(value, _HTTP_DATE).replace(tzinfo=_UTC)
        except ValueError:
            pass
    parsed: datetime.datetime = botocore.utils.parse_timestamp(value)
    return parsed


def botocore_session(**kwargs: Any) -> aiobotocore.session.AioSession:
    """A new botocore session (``kwargs``: what s3fs hands to ``AioSession``) whose data
    loader is the process's: the service models it has parsed already are not parsed again (a
    new client: ~10 ms of CPU instead of ~0.15 s). Only the loader is shared, never credentials
    or connections, which stay with each session and client."""
    session = aiobotocore.session.AioSession(**kwargs)
    data_path = session.get_config_variable("data_path")
    loader = _LOADERS.get(data_path)
    if loader is None:
        loader = _LOADERS[data_path] = botocore.loaders.create_loader(data_path)
    session.register_component("data_loader", loader)
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=parse_timestamp
    )
    return session


class _RetryWithoutAnswer:
    """botocore ``needs-retry`` handler, run before the retry policy. The first answer that is
    not None decides: ``False`` is "do not retry" (aiobotocore), a number is the pause before the
    retry; ``None`` leaves the decision to botocore (the request got an answer)."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts

    def __call__(
        self, attempts: int = 1, caught_exception: BaseException | None = None, **_: Any
    ) -> float | bool | None:
        if caught_exception is None:
            return None
        if isinstance(caught_exception, TIMEOUT_ERRORS) or attempts >= self.attempts:
            return False
        if isinstance(caught_exception, _NO_ANSWER):
            return backoff_seconds(attempts - 1)
        return None


class EdgeS3FileSystem(s3fs.S3FileSystem):  # type: ignore[misc]
    """``S3FileSystem`` whose client retries a request without an answer as edgecache does."""

    _edge_client: Any = None
    session: aiobotocore.session.AioSession | None
    kwargs: dict[str, Any]

    def __init__(self, *args: Any, limits: RequestLimits | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._retry_without_answer = _RetryWithoutAnswer((limits or RequestLimits()).attempts)

    async def close_client(self) -> None:
        """Close the client and its connections (s3fs closes them only for a synchronous
        instance, when it is collected); a later request makes a new client."""
        creator = getattr(self, "_s3creator", None)
        if creator is not None:
            self._s3creator = self._s3 = self._edge_client = None
            await creator.__aexit__(None, None, None)

    async def set_session(self, refresh: bool = False, kwargs: dict[str, Any] | None = None) -> Any:
        if self.session is None:
            self.session = botocore_session(**self.kwargs)
        client = await super().set_session(refresh=refresh, kwargs=kwargs or {})
        if client is not self._edge_client:
            client.meta.events.register_first(
                "needs-retry.s3", self._retry_without_answer, unique_id=_HANDLER_ID
            )
            self._edge_client = client
        return client
