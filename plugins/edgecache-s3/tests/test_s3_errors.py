"""Bad input against S3: wrong credentials, unknown bucket, missing object, unreachable or silent
endpoints. Each gives a standard error naming the URL, never a secret, within a bounded time."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from s3testlib import KEY, SECRET, AuthMoto, free_port, put

from edgecache.backends import Backend
from edgecache.errors import BackendUnavailableError, ConfigError
from edgecache.fs import EdgeCacheFileSystem
from edgecache.testing.backend_suite import assert_one_line_failure, edgecache_cli, run

WRONG_SECRET = "Wr0ng-Secret-Nobody-May-See"


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def everything_said(exc: BaseException, caplog: pytest.LogCaptureFixture) -> str:
    """The error, its causes and all log records, as one text."""
    parts = [caplog.text]
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def edgecache_fs(target_options: dict[str, Any], cache_dir: Path) -> EdgeCacheFileSystem:
    fs = fsspec.filesystem(
        "edgecache",
        target_protocol="s3",
        target_options=target_options,
        cache_dir=str(cache_dir),
        skip_instance_cache=True,
    )
    assert isinstance(fs, EdgeCacheFileSystem)
    return fs


# --- credentials ---
def test_right_credentials_read_from_the_signing_server(
    auth_moto: AuthMoto, backends: Callable[..., Backend]
) -> None:
    backend = backends(
        "s3", {"endpoint_url": auth_moto.endpoint, "key": auth_moto.key, "secret": auth_moto.secret}
    )
    path = f"{auth_moto.bucket}/hello.txt"
    version = backend.version(run(backend.call, "info", path))
    assert run(backend.fetch_range, path, 0, 5, version) == b"hello"


def test_wrong_secret_is_permission_error_naming_the_url(
    auth_moto: AuthMoto, debug_logs: pytest.LogCaptureFixture, backends: Callable[..., Backend]
) -> None:
    backend = backends(
        "s3", {"endpoint_url": auth_moto.endpoint, "key": auth_moto.key, "secret": WRONG_SECRET}
    )
    url = f"s3://{auth_moto.bucket}/hello.txt"
    with pytest.raises(PermissionError) as info:
        run(backend.call, "info", f"{auth_moto.bucket}/hello.txt")
    assert url in str(info.value) and auth_moto.endpoint in str(info.value)
    assert info.value.filename == url
    with pytest.raises(PermissionError, match="SignatureDoesNotMatch") as fetched:
        run(backend.fetch_range, f"{auth_moto.bucket}/hello.txt", 0, 5, "11-0-x")
    assert url in str(fetched.value)
    for exc in (info.value, fetched.value):
        said = everything_said(exc, debug_logs)
        assert WRONG_SECRET not in said
        assert auth_moto.secret not in said


def test_wrong_secret_through_edgecache(
    auth_moto: AuthMoto, debug_logs: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    fs = edgecache_fs(
        {"endpoint_url": auth_moto.endpoint, "key": auth_moto.key, "secret": WRONG_SECRET},
        tmp_path,
    )
    with pytest.raises(PermissionError) as info:
        fs.cat_file(f"s3://{auth_moto.bucket}/hello.txt")
    assert f"s3://{auth_moto.bucket}/hello.txt" in str(info.value)
    assert WRONG_SECRET not in everything_said(info.value, debug_logs)


def test_no_credentials_at_all(auth_moto: AuthMoto, backends: Callable[..., Backend]) -> None:
    backend = backends("s3", {"endpoint_url": auth_moto.endpoint})
    with pytest.raises(PermissionError, match="credentials"):
        run(backend.call, "info", f"{auth_moto.bucket}/hello.txt")


def test_secrets_stay_out_of_the_cache(
    s3_options: dict[str, Any], client: Any, prefix: str, tmp_path: Path
) -> None:
    path = put(client, f"{prefix}/kept.bin", b"k" * 10_000)
    fs = edgecache_fs(s3_options, tmp_path / "cache")
    assert fs.cat_file(f"s3://{path}") == b"k" * 10_000
    fs.ls(f"s3://{prefix}")
    fs.cache.flush()
    for file in (tmp_path / "cache").rglob("*"):
        if file.is_file():
            content = file.read_bytes()
            assert SECRET.encode() not in content, file
            assert KEY.encode() not in content, file
    fs.cache.close()
    fs.metadata.close()


# --- missing things ---
def test_unknown_bucket_is_file_not_found(
    s3_options: dict[str, Any], backends: Callable[..., Backend]
) -> None:
    backend = backends("s3", s3_options)
    with pytest.raises(FileNotFoundError) as info:
        run(backend.call, "info", "no-such-bucket-here/key.bin")
    assert info.value.filename == "s3://no-such-bucket-here/key.bin"
    with pytest.raises(FileNotFoundError, match="no such bucket"):
        run(backend.fetch_range, "no-such-bucket-here/key.bin", 0, 10, "10-0-x")


def test_missing_object_is_file_not_found(
    s3_options: dict[str, Any], prefix: str, backends: Callable[..., Backend]
) -> None:
    backend = backends("s3", s3_options)
    with pytest.raises(FileNotFoundError) as info:
        run(backend.call, "info", f"{prefix}/missing.bin")
    assert info.value.filename == f"s3://{prefix}/missing.bin"


# --- URLs and options botocore refuses before sending anything ---
def test_an_invalid_bucket_name_is_a_config_error_naming_the_url(
    s3_options: dict[str, Any], tmp_path: Path, backends: Callable[..., Backend]
) -> None:
    backend = backends("s3", s3_options)
    with pytest.raises(ConfigError, match=r"s3://Bad_Bucket!/key is not a valid S3 URL"):
        run(backend.call, "info", "Bad_Bucket!/key")
    with pytest.raises(ConfigError, match="Bad_Bucket!"):
        run(backend.fetch_range, "Bad_Bucket!/key", 0, 10, "10-0-x")
    done = edgecache_cli(
        "cat",
        "s3://Bad_Bucket!/key",
        *[arg for k, v in s3_options.items() for arg in ("-o", f"{k}={v}")],
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    err = assert_one_line_failure(done, code=2, says="s3://Bad_Bucket!/key is not a valid S3 URL")
    assert "regex" not in err and len(err) < 300


@pytest.mark.parametrize(
    "bucket", ["Bad_Bucket", "UPPER", "ab", "-abc", "a..b", "10.0.0.1", "a" * 64]
)
def test_names_botocore_would_send_are_refused_before_any_request(
    bucket: str, backends: Callable[..., Backend]
) -> None:
    # botocore's own check lets uppercase, "_" and up to 255 characters through. A closed
    # port: had any request been tried, the answer would be "unreachable".
    closed = {"endpoint_url": "http://127.0.0.1:1", "key": "k", "secret": "s"}
    backend = backends("s3", closed)
    with pytest.raises(ConfigError, match="is not a valid S3 URL: bucket name"):
        run(backend.call, "info", f"{bucket}/key")


def test_an_unknown_option_is_refused_up_front_listing_the_accepted_ones(
    s3_options: dict[str, Any], backends: Callable[..., Backend]
) -> None:
    with pytest.raises(ConfigError, match="unknown S3 option 'nosuchoption'") as caught:
        backends("s3", {**s3_options, "nosuchoption": "1"})
    assert "endpoint_url" in str(caught.value) and "config_kwargs" in str(caught.value)
    # Native s3fs keywords still pass through.
    backends("s3", {**s3_options, "requester_pays": False, "skip_instance_cache": True})


# --- unreachable and silent endpoints ---
def closed_port_options(**extra: Any) -> dict[str, Any]:
    endpoint = f"http://127.0.0.1:{free_port()}"
    return {"endpoint_url": endpoint, "key": KEY, "secret": SECRET, **extra}


@pytest.mark.parametrize(("retries", "bound_seconds"), [(1, 3.0), (3, 15.0)])
def test_closed_port_is_backend_unavailable_in_bounded_time(
    retries: int,
    bound_seconds: float,
    debug_logs: pytest.LogCaptureFixture,
    backends: Callable[..., Backend],
) -> None:
    backend = backends("s3", closed_port_options(retries=retries))
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        run(backend.call, "info", "bucket/key.bin")
    with pytest.raises(BackendUnavailableError, match=r"s3://bucket/key\.bin"):
        run(backend.fetch_range, "bucket/key.bin", 0, 10, "10-0-x")
    with pytest.raises(BackendUnavailableError):
        run(backend.probe)
    assert time.monotonic() - started < 3 * bound_seconds
    assert isinstance(info.value, ConnectionError)
    assert backend.identity in str(info.value)
    assert SECRET not in everything_said(info.value, debug_logs)


def test_closed_port_through_edgecache(tmp_path: Path) -> None:
    fs = edgecache_fs(closed_port_options(retries=1), tmp_path)
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="unreachable"):
        fs.cat_file("s3://bucket/key.bin")
    assert time.monotonic() - started < 5


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A port that accepts TCP connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_silent_endpoint_times_out(silent_endpoint: str, backends: Callable[..., Backend]) -> None:
    backend = backends(
        "s3",
        {
            "endpoint_url": silent_endpoint,
            "key": KEY,
            "secret": SECRET,
            "read_timeout": 0.5,
            "connect_timeout": 0.5,
            "retries": 1,
            "probe_timeout": 0.5,
        },
    )
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError):
        run(backend.probe)
    with pytest.raises(BackendUnavailableError):
        run(backend.fetch_range, "bucket/key.bin", 0, 10, "10-0-x")
    with pytest.raises(BackendUnavailableError):
        run(backend.call, "info", "bucket/key.bin")
    assert time.monotonic() - started < 10


def test_probe_counts_an_auth_refusal_as_reachable(
    auth_moto: AuthMoto, backends: Callable[..., Backend]
) -> None:
    # A generous probe bound: moto checking signatures on a loaded machine is slow, and the
    # question here is what an answer means, not how fast it comes.
    backend = backends(
        "s3",
        {
            "endpoint_url": auth_moto.endpoint,
            "key": auth_moto.key,
            "secret": WRONG_SECRET,
            "probe_timeout": 30,
        },
    )
    run(backend.probe)
    backend = backends(
        "s3",
        {
            "endpoint_url": auth_moto.endpoint,
            "key": auth_moto.key,
            "secret": WRONG_SECRET,
            "probe_bucket": auth_moto.bucket,
            "probe_timeout": 30,
        },
    )
    run(backend.probe)


def test_session_token_stays_out_of_debug_logs(
    s3_options: dict[str, Any],
    client: Any,
    prefix: str,
    debug_logs: pytest.LogCaptureFixture,
    backends: Callable[..., Backend],
) -> None:
    token = "FwoGZXIvYXdzEXAMPLE-session-token-value"
    path = put(client, f"{prefix}/token.bin", b"t")
    backend = backends("s3", {**s3_options, "token": token})
    version = backend.version(run(backend.call, "info", path))
    assert run(backend.fetch_range, path, 0, 1, version) == b"t"
    assert "x-amz-security-token" in debug_logs.text.lower(), "botocore logged no headers"
    assert token not in debug_logs.text and SECRET not in debug_logs.text
