"""S3 options: native s3fs keywords and Fluid/Hadoop keys, resolved into ``S3FileSystem`` keywords.

First step of the S3 backend (``edgecache_s3._backend`` uses the result): the generic resolution
(files, environment, Kubernetes Secrets, conflicts) is :func:`edgecache.backends.options.
resolve_options`; this module only says which names mean what for S3 and turns the result into
keywords for ``s3fs.S3FileSystem`` with bounded timeouts and retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiobotocore.session
import s3fs

from edgecache.backends.objectstore import ObjectStoreConfig, RequestLimits
from edgecache.backends.options import (
    OptionSpec,
    endpoint_url,
    filesystem_keywords,
    flag,
    public_url,
    refuse_unknown_options,
    resolve_options,
)
from edgecache.errors import ConfigError

__all__ = ["S3_OPTIONS", "s3_config"]

S3_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "endpoint_url",
        ("endpoint", "fs.s3a.endpoint", "aws.endpoint", "alluxio.underfs.s3.endpoint"),
        env=("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    ),
    OptionSpec(
        "key",
        ("access_key", "aws_access_key_id", "aws.accessKeyId", "fs.s3a.access.key"),
        env=("AWS_ACCESS_KEY_ID",),
        secret=True,
    ),
    OptionSpec(
        "secret",
        ("secret_key", "aws_secret_access_key", "aws.secretAccessKey", "fs.s3a.secret.key"),
        env=("AWS_SECRET_ACCESS_KEY",),
        secret=True,
    ),
    OptionSpec(
        "token",
        ("session_token", "aws_session_token", "aws.sessionToken", "fs.s3a.session.token"),
        env=("AWS_SESSION_TOKEN",),
        secret=True,
    ),
    OptionSpec(
        "region",
        ("region_name", "aws.region", "fs.s3a.endpoint.region", "alluxio.underfs.s3.region"),
        env=("AWS_REGION", "AWS_DEFAULT_REGION"),
    ),
    OptionSpec("path_style", ("fs.s3a.path.style.access",)),
    OptionSpec("connect_timeout"),
    OptionSpec("read_timeout"),
    OptionSpec("retries", ("fs.s3a.attempts.maximum",)),
    OptionSpec("probe_timeout"),
    OptionSpec("probe_bucket"),
)

#: Keys in these namespaces configure other engines (Hadoop S3A, Alluxio): ignored with a warning.
_FOREIGN_PREFIXES = ("fs.", "aws.", "alluxio.")

DEFAULT_REGION = "us-east-1"

#: Native keywords passed through: s3fs's own, and botocore's session's (s3fs hands its leftover
#: keywords to ``AioSession``, which would refuse an unknown one only at the first request).
_S3FS_KEYWORDS = filesystem_keywords(s3fs.S3FileSystem, aiobotocore.session.AioSession.__init__)


def s3_config(
    options: Mapping[str, Any], *, environ: Mapping[str, str] | None = None
) -> ObjectStoreConfig:
    """Resolve ``options`` (raises :class:`ConfigError` on bad input)."""
    resolved = resolve_options(
        options, S3_OPTIONS, environ=environ, ignore_prefixes=_FOREIGN_PREFIXES
    )
    extra = dict(resolved.extra)
    kwargs: dict[str, Any] = {}
    use_ssl = flag("use_ssl", extra.get("use_ssl", True))

    endpoint = resolved.get("endpoint_url")
    if endpoint:
        endpoint = endpoint_url("endpoint_url", endpoint, use_ssl=use_ssl)
        kwargs["endpoint_url"] = endpoint

    anon = flag("anon", extra.pop("anon", False))
    key, secret, token = resolved.get("key"), resolved.get("secret"), resolved.get("token")
    if not anon and bool(key) != bool(secret):
        missing = "secret (aws.secretAccessKey, fs.s3a.secret.key)" if key else "key"
        raise ConfigError(f"S3 credentials are incomplete: {missing} is missing")
    kwargs["anon"] = anon
    if key and not anon:
        kwargs["key"], kwargs["secret"] = str(key), str(secret)
        if token:
            kwargs["token"] = str(token)

    region = str(resolved.get("region") or DEFAULT_REGION)
    client_kwargs = dict(extra.pop("client_kwargs", None) or {})
    client_kwargs.setdefault("region_name", region)
    kwargs["client_kwargs"] = client_kwargs

    limits = RequestLimits.from_options(resolved)
    config_kwargs = dict(extra.pop("config_kwargs", None) or {})
    config_kwargs.setdefault("connect_timeout", limits.connect_timeout_seconds)
    config_kwargs.setdefault("read_timeout", limits.read_timeout_seconds)
    # botocore's "standard" mode retries throttling, 5xx and connection errors with jittered
    # exponential backoff; EdgeS3FileSystem keeps it from retrying a timeout.
    config_kwargs.setdefault("retries", {"total_max_attempts": limits.attempts, "mode": "standard"})
    # botocore's default pool (10) would queue edgecache's parallel block fetches: over a
    # high-latency link every queued request costs a round trip. By default 16 foreground
    # (fetch_concurrency) and 32 background (background_fetches) requests, each on request
    # slots of their own: a reader's request must not wait for a connection a prefetch holds.
    config_kwargs.setdefault("max_pool_connections", 64)
    if flag("path_style", resolved.get("path_style", False)):
        s3_section = dict(config_kwargs.get("s3") or {})
        s3_section.setdefault("addressing_style", "path")
        config_kwargs["s3"] = s3_section
    kwargs["config_kwargs"] = config_kwargs
    # edgecache keeps listings itself, with a TTL; s3fs's own listing cache never expires and
    # would hide a replaced object's new ETag from info() forever.
    kwargs["use_listings_cache"] = False
    refuse_unknown_options(
        extra, _S3FS_KEYWORDS, backend="S3", specs=S3_OPTIONS, filesystem="s3fs.S3FileSystem"
    )
    kwargs.update(extra)

    if endpoint:
        public_endpoint = public_url(endpoint)
    elif region == DEFAULT_REGION:
        public_endpoint = "https://s3.amazonaws.com"
    else:
        public_endpoint = f"https://s3.{region}.amazonaws.com"
    probe_bucket = resolved.get("probe_bucket")
    return ObjectStoreConfig(
        fs_kwargs=kwargs,
        endpoint=public_endpoint,
        resolved=resolved,
        limits=limits,
        probe_bucket=str(probe_bucket) if probe_bucket else None,
    )
