"""OSS options: native ossfs keywords and Fluid keys, resolved into filesystem settings.

First step of the OSS backend (``edgecache_oss._backend`` uses the result): the generic
resolution (files, environment, Kubernetes Secrets, conflicts) is
:func:`edgecache.backends.options.resolve_options`; this module says which names mean what for
OSS, with bounded timeouts and retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
from edgecache_oss._filesystem import EdgeOSSFileSystem

__all__ = ["OSS_OPTIONS", "oss_config"]

OSS_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "endpoint",
        ("endpoint_url", "fs.oss.endpoint", "alluxio.underfs.oss.endpoint"),
        env=("OSS_ENDPOINT",),
    ),
    OptionSpec(
        "key",
        ("access_key_id", "fs.oss.accessKeyId", "fs.oss.accessKeyID"),
        env=("OSS_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_ID"),
        secret=True,
    ),
    OptionSpec(
        "secret",
        ("access_key_secret", "fs.oss.accessKeySecret"),
        env=("OSS_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
        secret=True,
    ),
    OptionSpec(
        "token",
        ("security_token", "sts_token", "fs.oss.securityToken"),
        env=("OSS_SESSION_TOKEN", "OSS_SECURITY_TOKEN", "ALIBABA_CLOUD_SECURITY_TOKEN"),
        secret=True,
    ),
    OptionSpec("connect_timeout"),
    OptionSpec("read_timeout"),
    OptionSpec("retries"),
    OptionSpec("probe_timeout"),
    OptionSpec("probe_bucket"),
)

#: Keys in these namespaces configure other engines (JindoFS, Alluxio): ignored with a warning.
_FOREIGN_PREFIXES = ("fs.", "alluxio.")

#: Native keywords passed through to ossfs (which would drop an unknown one silently). The
#: timeouts and attempts are set from the options above (``limits``), never passed through.
_OSSFS_KEYWORDS = filesystem_keywords(EdgeOSSFileSystem) - {"limits"}


def oss_config(
    options: Mapping[str, Any], *, environ: Mapping[str, str] | None = None
) -> ObjectStoreConfig:
    """Resolve ``options`` (raises :class:`ConfigError` on bad input)."""
    resolved = resolve_options(
        options, OSS_OPTIONS, environ=environ, ignore_prefixes=_FOREIGN_PREFIXES
    )
    extra = dict(resolved.extra)
    use_ssl = flag("use_ssl", extra.pop("use_ssl", True))
    raw_endpoint = resolved.get("endpoint")
    if not raw_endpoint:
        raise ConfigError(
            "OSS needs an endpoint: give endpoint (or fs.oss.endpoint), e.g. "
            "oss-cn-hangzhou.aliyuncs.com, or set $OSS_ENDPOINT"
        )
    endpoint = endpoint_url("endpoint", raw_endpoint, use_ssl=use_ssl)
    key, secret, token = resolved.get("key"), resolved.get("secret"), resolved.get("token")
    if bool(key) != bool(secret):
        missing = "secret (fs.oss.accessKeySecret)" if key else "key (fs.oss.accessKeyId)"
        raise ConfigError(f"OSS credentials are incomplete: {missing} is missing")
    if token and not key:
        raise ConfigError("OSS security token given without key and secret")
    kwargs: dict[str, Any] = {"endpoint": endpoint}
    if key:
        kwargs["key"], kwargs["secret"] = str(key), str(secret)
        if token:
            kwargs["token"] = str(token)
    # edgecache keeps listings itself, with a TTL; ossfs's own listing cache never expires and
    # would hide a replaced object's new ETag from info() forever.
    kwargs["use_listings_cache"] = False
    # ossfs pools 20 connections; edgecache runs 16 foreground (fetch_concurrency) and 32
    # background (background_fetches) requests on request slots of their own, and a reader's
    # request must not wait for a connection a prefetch holds (as the S3 backend's pool of 64).
    kwargs["psize"] = 64
    refuse_unknown_options(
        extra, _OSSFS_KEYWORDS, backend="OSS", specs=OSS_OPTIONS, filesystem="ossfs"
    )
    kwargs.update(extra)
    probe_bucket = resolved.get("probe_bucket")
    return ObjectStoreConfig(
        fs_kwargs=kwargs,
        endpoint=public_url(endpoint),
        resolved=resolved,
        limits=RequestLimits.from_options(resolved),
        probe_bucket=str(probe_bucket) if probe_bucket else None,
    )
