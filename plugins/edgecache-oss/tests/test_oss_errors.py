"""Bad input against OSS: wrong credentials (the test server checks signatures), unknown bucket,
missing object, closed or silent endpoints, server faults. Each gives a standard error naming the
URL, never a secret, within a bounded time; transient faults are retried."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from edgecache_testservers.oss import OSSServer
from osstestlib import KEY, SECRET, free_port

from edgecache.backends import get_backend
from edgecache.errors import BackendUnavailableError, ConfigError
from edgecache.fs import EdgeCacheFileSystem
from edgecache.testing.backend_suite import assert_one_line_failure, edgecache_cli, run

WRONG_SECRET = "Wr0ng-OSS-Secret-Nobody-May-See"


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def everything_said(exc: BaseException, caplog: pytest.LogCaptureFixture) -> str:
    parts = [caplog.text]
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def edgecache_fs(target_options: dict[str, Any], cache_dir: Path) -> EdgeCacheFileSystem:
    fs = fsspec.filesystem(
        "edgecache",
        target_protocol="oss",
        target_options=target_options,
        cache_dir=str(cache_dir),
        skip_instance_cache=True,
    )
    assert isinstance(fs, EdgeCacheFileSystem)
    return fs


# --- credentials ---
def test_wrong_secret_is_permission_error_naming_the_url(
    oss_server: OSSServer, put: Any, prefix: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    path = put(f"{prefix}/hello.txt", b"hello")
    backend = get_backend(
        "oss", {"endpoint": oss_server.endpoint, "key": KEY, "secret": WRONG_SECRET}
    )
    url = f"oss://{path}"
    with pytest.raises(PermissionError) as info:
        run(backend.call, "info", path)
    assert url in str(info.value) and oss_server.endpoint in str(info.value)
    assert info.value.filename == url
    with pytest.raises(PermissionError, match="SignatureDoesNotMatch") as fetched:
        run(backend.fetch_range, path, 0, 5, "5-0-ABC")
    with pytest.raises(PermissionError, match="SignatureDoesNotMatch") as listed:
        run(backend.call, "ls", prefix, detail=True)
    for exc in (info.value, fetched.value, listed.value):
        said = everything_said(exc, debug_logs)
        assert WRONG_SECRET not in said and SECRET not in said


def test_unknown_access_key(oss_server: OSSServer, put: Any, prefix: str) -> None:
    path = put(f"{prefix}/hello.txt", b"hello")
    backend = get_backend(
        "oss", {"endpoint": oss_server.endpoint, "key": "LTAInobody", "secret": WRONG_SECRET}
    )
    with pytest.raises(PermissionError, match="InvalidAccessKeyId"):
        run(backend.fetch_range, path, 0, 5, "5-0-ABC")


def test_wrong_secret_through_edgecache(
    oss_server: OSSServer, put: Any, prefix: str, tmp_path: Path
) -> None:
    path = put(f"{prefix}/hello.txt", b"hello")
    fs = edgecache_fs(
        {"endpoint": oss_server.endpoint, "key": KEY, "secret": WRONG_SECRET}, tmp_path
    )
    with pytest.raises(PermissionError, match=f"oss://{path}"):
        fs.cat_file(f"oss://{path}")


def test_anonymous_read_of_a_private_bucket_is_refused(
    oss_server: OSSServer, put: Any, prefix: str
) -> None:
    path = put(f"{prefix}/private.txt", b"private")
    backend = get_backend("oss", {"endpoint": oss_server.endpoint})
    with pytest.raises(PermissionError, match=r"oss://.*private\.txt"):
        run(backend.call, "info", path)


def test_secrets_stay_out_of_the_cache(
    oss_options: dict[str, Any], put: Any, prefix: str, tmp_path: Path
) -> None:
    path = put(f"{prefix}/kept.bin", b"k" * 10_000)
    fs = edgecache_fs(oss_options, tmp_path / "cache")
    assert fs.cat_file(f"oss://{path}") == b"k" * 10_000
    fs.ls(f"oss://{prefix}")
    fs.cache.flush()
    for file in (tmp_path / "cache").rglob("*"):
        if file.is_file():
            assert SECRET.encode() not in file.read_bytes(), file
            assert KEY.encode() not in file.read_bytes(), file
    fs.cache.close()
    fs.metadata.close()


# --- missing things ---
def test_unknown_bucket_is_file_not_found(oss_options: dict[str, Any]) -> None:
    backend = get_backend("oss", oss_options)
    with pytest.raises(FileNotFoundError) as info:
        run(backend.call, "info", "no-such-bucket/key.bin")
    assert info.value.filename == "oss://no-such-bucket/key.bin"
    with pytest.raises(FileNotFoundError, match="no such bucket"):
        run(backend.fetch_range, "no-such-bucket/key.bin", 0, 10, "10-0-ABC")


def test_missing_object_is_file_not_found(oss_options: dict[str, Any], prefix: str) -> None:
    backend = get_backend("oss", oss_options)
    with pytest.raises(FileNotFoundError) as info:
        run(backend.call, "info", f"oss://{prefix}/missing.bin")
    assert info.value.filename == f"oss://{prefix}/missing.bin"


# --- bucket names OSS cannot have: refused before any request ---
INVALID_BUCKETS = ["Bad_Bucket", "ab", "-abc", "abc-", "a" * 64, "my.bucket", "UPPER", "caf\u00e9"]


@pytest.mark.parametrize("bucket", INVALID_BUCKETS)
def test_an_invalid_bucket_name_is_refused_before_any_request(bucket: str) -> None:
    # A closed port: had any request been tried, the answer would be "unreachable".
    backend = get_backend("oss", {"endpoint": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(ConfigError, match="is not a valid OSS URL: bucket name") as caught:
        run(backend.call, "info", f"{bucket}/key.bin")
    assert "3-63 lowercase letters, digits and hyphens" in str(caught.value)
    with pytest.raises(ConfigError, match="not a valid OSS URL"):
        run(backend.fetch_range, f"{bucket}/key.bin", 0, 10, "10-0-ABC")


@pytest.mark.parametrize("bucket", ["abc", "a" * 63, "edge-cache-01", "0-9"])
def test_valid_bucket_names_are_sent(bucket: str) -> None:
    backend = get_backend("oss", {"endpoint": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(BackendUnavailableError):
        run(backend.call, "info", f"{bucket}/key.bin")


def test_an_invalid_bucket_name_through_the_command(tmp_path: Path) -> None:
    done = edgecache_cli(
        "cat",
        "oss://Bad_Bucket/key",
        *("-o", f"endpoint=http://127.0.0.1:{free_port()}"),
        *("--cache-dir", str(tmp_path / "cache")),
    )
    assert_one_line_failure(
        done, code=2, says="oss://Bad_Bucket/key is not a valid OSS URL", never="unreachable"
    )


# --- unreachable, silent and faulty endpoints ---
@pytest.mark.parametrize(("retries", "bound_seconds"), [(1, 3.0), (3, 6.0)])
def test_closed_port_is_backend_unavailable_in_bounded_time(
    retries: int, bound_seconds: float, debug_logs: pytest.LogCaptureFixture
) -> None:
    options = {
        "endpoint": f"http://127.0.0.1:{free_port()}",
        "key": KEY,
        "secret": SECRET,
        "retries": retries,
    }
    backend = get_backend("oss", options)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        run(backend.call, "info", "bucket/key.bin")
    with pytest.raises(BackendUnavailableError, match=r"oss://bucket/key\.bin"):
        run(backend.fetch_range, "bucket/key.bin", 0, 10, "10-0-ABC")
    with pytest.raises(BackendUnavailableError):
        run(backend.probe)
    assert time.monotonic() - started < bound_seconds
    assert isinstance(info.value, ConnectionError) and backend.identity in str(info.value)
    assert SECRET not in everything_said(info.value, debug_logs)


def test_closed_port_through_edgecache(tmp_path: Path) -> None:
    options = {"endpoint": f"http://127.0.0.1:{free_port()}", "key": KEY, "secret": SECRET}
    fs = edgecache_fs(options, tmp_path)
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="unreachable"):
        fs.cat_file("oss://bucket/key.bin")
    assert time.monotonic() - started < 5


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A port that accepts TCP connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_silent_endpoint_times_out(silent_endpoint: str) -> None:
    backend = get_backend(
        "oss",
        {
            "endpoint": silent_endpoint,
            "key": KEY,
            "secret": SECRET,
            "read_timeout": 0.5,
            "retries": 1,
            "probe_timeout": 0.5,
        },
    )
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError):
        run(backend.probe)
    with pytest.raises(BackendUnavailableError):
        run(backend.fetch_range, "bucket/key.bin", 0, 10, "10-0-ABC")
    with pytest.raises(BackendUnavailableError):
        run(backend.call, "info", "bucket/key.bin")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("mode", ["status", "close", "truncate"])
def test_a_transient_fault_is_retried(
    oss_server: OSSServer, oss_options: dict[str, Any], put: Any, prefix: str, mode: str
) -> None:
    data = bytes(range(256)) * 64
    path = put(f"{prefix}/flaky.bin", data)
    backend = get_backend("oss", oss_options)
    version = backend.version(run(backend.call, "info", path))
    key_prefix = path.split("/", 1)[1]
    fault = oss_server.fail(
        503, "ServiceUnavailable", count=1, operations=["GetObject"], key_prefix=key_prefix
    )
    fault.mode = mode  # type: ignore[assignment]
    try:
        assert run(backend.fetch_range, path, 1000, 9000, version) == data[1000:9000]
    finally:
        oss_server.clear_faults()
    assert fault.matched == 1


def test_a_persistent_503_is_backend_unavailable(
    oss_server: OSSServer, oss_options: dict[str, Any], put: Any, prefix: str
) -> None:
    path = put(f"{prefix}/down.bin", b"d" * 100)
    backend = get_backend("oss", {**oss_options, "retries": 2})
    version = backend.version(run(backend.call, "info", path))
    oss_server.fail(503, "ServiceUnavailable", key_prefix=path.split("/", 1)[1])
    try:
        with pytest.raises(BackendUnavailableError, match=r"oss://.*down\.bin"):
            run(backend.fetch_range, path, 0, 10, version)
    finally:
        oss_server.clear_faults()


def test_a_hanging_server_is_bounded_by_the_read_timeout(
    oss_server: OSSServer, oss_options: dict[str, Any], put: Any, prefix: str
) -> None:
    path = put(f"{prefix}/hang.bin", b"h" * 100)
    backend = get_backend("oss", {**oss_options, "read_timeout": 0.5, "retries": 2})
    version = backend.version(run(backend.call, "info", path))
    oss_server.fail(key_prefix=path.split("/", 1)[1], operations=["GetObject"], mode="hang")
    started = time.monotonic()
    try:
        with pytest.raises(BackendUnavailableError):
            run(backend.fetch_range, path, 0, 10, version)
    finally:
        oss_server.clear_faults()
    assert time.monotonic() - started < 5


def test_probe_counts_an_auth_refusal_as_reachable(
    oss_server: OSSServer, put: Any, prefix: str
) -> None:
    put(f"{prefix}/x", b"x")
    options = {"endpoint": oss_server.endpoint, "key": KEY, "secret": WRONG_SECRET}
    run(get_backend("oss", options).probe)
    run(get_backend("oss", {**options, "probe_bucket": prefix.split("/")[0]}).probe)
