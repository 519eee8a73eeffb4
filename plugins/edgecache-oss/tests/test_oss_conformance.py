"""The backend conformance suite over OSS (the signature-checking OSS test server), plus
OSS-specific version checks."""

from __future__ import annotations

from typing import Any

import fsspec
import pytest
from edgecache_oss import OSSBackend
from edgecache_testservers.oss import OSSServer
from osstestlib import KEY, SECRET

from edgecache.backends import Backend, ObjectChangedError, get_backend
from edgecache.testing.backend_suite import BackendConformance, Seed, run


class TestOSSConformance(BackendConformance):
    @pytest.fixture
    def backend(self, oss_options: dict[str, Any]) -> Backend:
        return get_backend("oss", oss_options)

    @pytest.fixture
    def seed(self, backend: Backend, put: Any, prefix: str) -> Seed:
        return lambda name, data: put(f"{prefix}/{name}", data)

    @pytest.fixture
    def url_options(self, oss_options: dict[str, Any]) -> dict[str, str]:
        return {k: str(v) for k, v in oss_options.items()}

    @pytest.fixture
    def secrets(self) -> list[str]:
        return [KEY, SECRET]


def test_registered_for_oss(oss_options: dict[str, Any]) -> None:
    backend = get_backend("oss", oss_options)
    assert isinstance(backend, OSSBackend)
    assert backend.identity == f"oss|{oss_options['endpoint']}"


def test_urls_and_paths_name_the_same_object(
    oss_options: dict[str, Any], put: Any, prefix: str
) -> None:
    backend = get_backend("oss", oss_options)
    path = put(f"{prefix}/same.bin", b"x")
    assert backend.strip(f"oss://{path}") == backend.strip(path) == backend.strip(f"/{path}")
    assert run(backend.call, "info", f"oss://{path}")["name"] == path


def test_same_size_replacement_is_detected_by_etag(
    oss_options: dict[str, Any], put: Any, prefix: str
) -> None:
    backend = get_backend("oss", oss_options)
    path = put(f"{prefix}/same-size.bin", b"A" * 100)
    old = backend.version(run(backend.call, "info", path))
    put(f"{prefix}/same-size.bin", b"B" * 100)
    new = backend.version(run(backend.call, "info", path))
    assert new != old
    with pytest.raises(ObjectChangedError, match=r"oss://.*same-size\.bin"):
        run(backend.fetch_range, path, 0, 10, old)
    assert run(backend.fetch_range, path, 0, 10, new) == b"B" * 10


def test_a_block_read_is_one_ranged_get(
    oss_options: dict[str, Any], put: Any, prefix: str, oss_server: OSSServer
) -> None:
    backend = get_backend("oss", oss_options)
    path = put(f"{prefix}/ranged.bin", bytes(range(256)) * 40)
    version = backend.version(run(backend.call, "info", path))
    oss_server.clear_requests()
    assert run(backend.fetch_range, path, 100, 200, version) == (bytes(range(256)) * 40)[100:200]
    gets = [r for r in oss_server.requests if r.operation == "GetObject"]
    assert len(gets) == 1
    assert (gets[0].range, gets[0].bytes_sent, gets[0].status) == ("bytes=100-199", 100, 206)


def test_version_has_etag_size_and_mtime(
    oss_options: dict[str, Any], put: Any, prefix: str, oss_server: OSSServer
) -> None:
    backend = get_backend("oss", oss_options)
    path = put(f"{prefix}/v.bin", b"hello")
    stored = oss_server.head_object(*path.split("/", 1))
    size, _mtime, etag = backend.version(run(backend.call, "info", path)).split("-", 2)
    assert (int(size), etag) == (5, stored.etag.strip('"'))


def test_a_cold_read_costs_its_get_alone_and_teaches_the_info(
    oss_options: dict[str, Any], put: Any, prefix: str, oss_server: OSSServer, tmp_path: Any
) -> None:
    # As over S3: the ranged GET's answer (Content-Range, ETag, Last-Modified) plans the read,
    # so nothing is asked before it, and what it said is the object's info, as HEAD gives it.
    data = bytes(range(256)) * 4096  # 1 MiB
    path = put(f"{prefix}/cold.bin", data)
    options = {"oss": dict(oss_options), "edgecache": {"cache_dir": str(tmp_path)}}
    fs, _ = fsspec.url_to_fs(f"edgecache::oss://{path}", **options)
    oss_server.clear_requests()
    assert fs.cat_file(path, start=300_000, end=304_096) == data[300_000:304_096]
    mine = [r for r in oss_server.requests if r.key.startswith(path.split("/", 1)[1])]
    assert [r.operation for r in mine] == ["GetObject"]
    plain = get_backend("oss", oss_options)
    head = run(plain.call, "info", path)
    learnt = fs.info(path)  # from the cache: the HEAD above went to another backend's client
    assert (learnt["size"], plain.version(learnt)) == (len(data), plain.version(head))
    # The next read is planned from what the GET said: one GET, checked against its ETag.
    oss_server.clear_requests()
    with fsspec.open(f"edgecache::oss://{path}", "rb", **options) as f:
        assert f.read() == data
    assert [r.operation for r in oss_server.requests if r.key.endswith("cold.bin")] == ["GetObject"]


def test_a_cold_read_of_what_is_no_object_says_what_info_says(
    oss_options: dict[str, Any], put: Any, prefix: str, tmp_path: Any
) -> None:
    put(f"{prefix}/dir/inner.bin", b"x" * 10)
    put(f"{prefix}/empty.bin", b"")
    options = {"oss": dict(oss_options), "edgecache": {"cache_dir": str(tmp_path)}}
    fs, _ = fsspec.url_to_fs(f"edgecache::oss://{prefix}", **options)
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{prefix}/missing.bin", start=0, end=10)
    with pytest.raises(IsADirectoryError):
        fs.cat_file(f"{prefix}/dir", start=0, end=10)
    assert fs.cat_file(f"{prefix}/empty.bin") == b""
