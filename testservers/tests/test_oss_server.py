"""The OSS test server through real clients: oss2, ossfs.OSSFileSystem and AioOSSFileSystem.

What the OSS backend plugin relies on: objects, ranges, listings, multipart uploads and, above all,
signatures that are really checked (a wrong secret fails as it would against Aliyun).
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import oss2
import pytest
import requests
from edgecache_testservers.oss import OSSServer
from ossfs import AioOSSFileSystem, OSSFileSystem

AK, SK = "test-ak", "test-secret"


@pytest.fixture(scope="module")
def server() -> Iterator[OSSServer]:
    with OSSServer(credentials={AK: SK, "other-ak": "other-secret"}) as srv:
        yield srv


@pytest.fixture
def bucket_name(server: OSSServer, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test (names: 3-63 lower-case letters, digits, dashes)."""
    name = "b-" + hashlib.md5(request.node.nodeid.encode()).hexdigest()[:16]
    server.create_bucket(name)
    return name


@pytest.fixture
def bucket(server: OSSServer, bucket_name: str) -> oss2.Bucket:
    return oss2.Bucket(oss2.Auth(AK, SK), server.endpoint, bucket_name)


@pytest.fixture
def fs(server: OSSServer) -> OSSFileSystem:
    return OSSFileSystem(endpoint=server.endpoint, key=AK, secret=SK, skip_instance_cache=True)


def _md5_etag(data: bytes) -> str:
    return hashlib.md5(data).hexdigest().upper()


# ------------------------------------------------------------------------------------- oss2


def test_put_get_head_round_trip(server: OSSServer, bucket: oss2.Bucket) -> None:
    data = os.urandom(300_000)
    put = bucket.put_object("dir/obj.bin", data, headers={"x-oss-meta-owner": "edge"})
    assert put.etag == _md5_etag(data)
    assert put.crc is not None  # oss2 compared it with its own CRC-64 of the body
    assert bucket.get_object("dir/obj.bin").read() == data
    head = bucket.head_object("dir/obj.bin")
    assert head.content_length == len(data)
    assert head.etag == _md5_etag(data)
    assert head.object_type == "Normal"
    assert abs(head.last_modified - time.time()) < 5
    assert head.headers["x-oss-meta-owner"] == "edge"
    meta = bucket.get_object_meta("dir/obj.bin")
    assert (meta.content_length, meta.etag) == (len(data), head.etag)
    assert bucket.object_exists("dir/obj.bin")
    assert not bucket.object_exists("dir/missing")
    # Keys travel percent-encoded in the path, "/" included.
    odd = "a b/c+d/ü%20é?#.txt"
    bucket.put_object(odd, b"odd")
    assert bucket.get_object(odd).read() == b"odd"
    assert server.get_object(bucket.bucket_name, odd) == b"odd"


@pytest.mark.parametrize(
    ("byte_range", "standard", "status", "expected"),
    [
        ((10, 19), False, 206, (10, 20)),
        ((10, None), False, 206, (10, 1000)),  # open range
        ((None, 10), False, 206, (990, 1000)),  # suffix: the last 10 bytes
        ((990, 5000), True, 206, (990, 1000)),  # standard: the end is clipped
        ((990, 5000), False, 200, (0, 1000)),  # legacy: out of bounds means the whole object
        ((None, 5000), True, 206, (0, 1000)),
        ((2000, 3000), False, 200, (0, 1000)),
    ],
)
def test_ranges(
    bucket: oss2.Bucket,
    byte_range: tuple[int | None, int | None],
    standard: bool,
    status: int,
    expected: tuple[int, int],
) -> None:
    data = os.urandom(1000)
    bucket.put_object("r", data)
    headers = {"x-oss-range-behavior": "standard"} if standard else {}
    result = bucket.get_object("r", byte_range=byte_range, headers=headers)
    assert result.status == status
    assert result.read() == data[expected[0] : expected[1]]
    if status == 206:
        assert result.content_range == f"bytes {expected[0]}-{expected[1] - 1}/1000"


def test_range_past_the_end_is_416_with_standard_behaviour(bucket: oss2.Bucket) -> None:
    bucket.put_object("r", b"x" * 100)
    with pytest.raises(oss2.exceptions.ServerError) as raised:
        bucket.get_object("r", byte_range=(100, 200), headers={"x-oss-range-behavior": "standard"})
    assert (raised.value.status, raised.value.code) == (416, "InvalidRange")


def test_conditional_get(bucket: oss2.Bucket) -> None:
    etag = bucket.put_object("c", b"v1").etag
    assert bucket.get_object("c", headers={"If-Match": f'"{etag}"'}).read() == b"v1"
    with pytest.raises(oss2.exceptions.PreconditionFailed):
        bucket.get_object("c", headers={"If-Match": '"0000"'})
    with pytest.raises(oss2.exceptions.NotModified):
        bucket.get_object("c", headers={"If-None-Match": f'"{etag}"'})


def test_list_objects_v1(bucket: oss2.Bucket) -> None:
    keys = ["a.txt", "dir/1", "dir/2", "dir/sub/3", "dir/sub/4", "e f+g.txt", "z/ü"]
    for key in keys:
        bucket.put_object(key, key.encode())
    assert [o.key for o in oss2.ObjectIterator(bucket, max_keys=2)] == keys
    top = bucket.list_objects(delimiter="/")
    assert [o.key for o in top.object_list] == ["a.txt", "e f+g.txt"]
    assert top.prefix_list == ["dir/", "z/"]
    assert not top.is_truncated
    page = bucket.list_objects(prefix="dir/", delimiter="/", max_keys=2)
    assert [o.key for o in page.object_list] == ["dir/1", "dir/2"]
    assert page.prefix_list == []
    assert page.is_truncated
    assert page.next_marker == "dir/2"
    rest = bucket.list_objects(prefix="dir/", delimiter="/", marker=page.next_marker)
    assert rest.prefix_list == ["dir/sub/"]
    assert not rest.is_truncated
    entry = next(o for o in top.object_list if o.key == "a.txt")
    assert (entry.size, entry.etag, entry.type) == (5, _md5_etag(b"a.txt"), "Normal")
    assert entry.owner is not None
    assert bucket.list_objects(prefix="nothing/").object_list == []


def test_list_objects_v2(bucket: oss2.Bucket) -> None:
    keys = [f"k/{i:03d}" for i in range(25)] + ["k/sub/x", "top"]
    for key in keys:
        bucket.put_object(key, b"")
    listed = [o.key for o in oss2.ObjectIteratorV2(bucket, prefix="k/", max_keys=7)]
    assert listed == keys[:-1]
    page = bucket.list_objects_v2(prefix="k/", delimiter="/", max_keys=10)
    assert page.is_truncated
    assert len(page.object_list) == 10
    rest = bucket.list_objects_v2(
        prefix="k/", delimiter="/", continuation_token=page.next_continuation_token
    )
    assert [o.key for o in rest.object_list] == keys[10:25]
    assert rest.prefix_list == ["k/sub/"]
    after = bucket.list_objects_v2(start_after="k/023")
    assert [o.key for o in after.object_list] == ["k/024", "k/sub/x", "top"]
    assert after.object_list[0].owner is None
    owned = bucket.list_objects_v2(prefix="top", fetch_owner=True)
    assert owned.object_list[0].owner is not None


def test_delete_and_batch_delete(server: OSSServer, bucket: oss2.Bucket) -> None:
    for key in ("a", "b", "c d", "e"):
        bucket.put_object(key, b"1")
    bucket.delete_object("a")
    bucket.delete_object("never-existed")  # 204 all the same
    result = bucket.batch_delete_objects(["b", "c d", "missing"])
    assert sorted(result.deleted_keys) == ["b", "c d", "missing"]
    assert server.list_keys(bucket.bucket_name) == ["e"]


def test_multipart_upload(server: OSSServer, bucket: oss2.Bucket) -> None:
    parts_data = [os.urandom(150_000), os.urandom(150_000), os.urandom(1_000)]
    upload_id = bucket.init_multipart_upload("mp").upload_id
    parts = []
    for number, data in enumerate(parts_data, start=1):
        result = bucket.upload_part("mp", upload_id, number, data)
        assert result.etag == _md5_etag(data)
        parts.append(oss2.models.PartInfo(number, result.etag, size=len(data), part_crc=result.crc))
    listed = bucket.list_parts("mp", upload_id)
    assert [p.part_number for p in listed.parts] == [1, 2, 3]
    assert [u.upload_id for u in bucket.list_multipart_uploads().upload_list] == [upload_id]
    done = bucket.complete_multipart_upload("mp", upload_id, parts)  # oss2 checks the CRC
    assert done.etag.endswith("-3")
    assert bucket.get_object("mp").read() == b"".join(parts_data)
    assert server.head_object(bucket.bucket_name, "mp").object_type == "Multipart"
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        bucket.upload_part("mp", upload_id, 4, b"late")


def test_multipart_refusals(bucket: oss2.Bucket) -> None:
    upload_id = bucket.init_multipart_upload("small").upload_id
    first = bucket.upload_part("small", upload_id, 1, b"tiny")
    second = bucket.upload_part("small", upload_id, 2, b"tail")
    parts = [oss2.models.PartInfo(1, first.etag), oss2.models.PartInfo(2, second.etag)]
    with pytest.raises(oss2.exceptions.ServerError) as raised:
        bucket.complete_multipart_upload("small", upload_id, parts)
    assert raised.value.code == "EntityTooSmall"
    with pytest.raises(oss2.exceptions.ServerError) as raised:
        bucket.complete_multipart_upload("small", upload_id, [oss2.models.PartInfo(1, "00")])
    assert raised.value.code == "InvalidPart"
    bucket.abort_multipart_upload("small", upload_id)
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        bucket.abort_multipart_upload("small", upload_id)


def test_resumable_upload_and_download(bucket: oss2.Bucket, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(1_000_000))
    oss2.resumable_upload(
        bucket,
        "resumable.bin",
        str(source),
        store=oss2.ResumableStore(root=str(tmp_path)),
        multipart_threshold=200_000,
        part_size=200_000,
        num_threads=3,
    )
    assert bucket.head_object("resumable.bin").object_type == "Multipart"
    target = tmp_path / "target.bin"
    oss2.resumable_download(
        bucket,
        "resumable.bin",
        str(target),
        store=oss2.ResumableDownloadStore(root=str(tmp_path)),
        multiget_threshold=100_000,
        part_size=300_000,
        num_threads=3,
    )
    assert target.read_bytes() == source.read_bytes()


def test_copy_and_append(bucket: oss2.Bucket) -> None:
    bucket.put_object("src", b"source", headers={"x-oss-meta-a": "1"})
    bucket.copy_object(bucket.bucket_name, "src", "dst")
    assert bucket.get_object("dst").read() == b"source"
    assert bucket.head_object("dst").headers["x-oss-meta-a"] == "1"
    first = bucket.append_object("log", 0, b"one,")
    second = bucket.append_object("log", first.next_position, b"two")
    assert second.next_position == 7
    assert bucket.get_object("log").read() == b"one,two"
    assert bucket.head_object("log").object_type == "Appendable"
    with pytest.raises(oss2.exceptions.PositionNotEqualToLength):
        bucket.append_object("log", 3, b"x")
    with pytest.raises(oss2.exceptions.ObjectNotAppendable):
        bucket.append_object("src", 6, b"x")


def test_buckets(server: OSSServer) -> None:
    service = oss2.Service(oss2.Auth(AK, SK), server.endpoint)
    fresh = oss2.Bucket(oss2.Auth(AK, SK), server.endpoint, "made-by-oss2")
    fresh.create_bucket()
    assert "made-by-oss2" in [b.name for b in oss2.BucketIterator(service)]
    info = fresh.get_bucket_info()
    assert (info.name, info.location) == ("made-by-oss2", "oss-cn-hangzhou")
    assert fresh.get_bucket_location().location == "oss-cn-hangzhou"
    fresh.put_object("k", b"")
    with pytest.raises(oss2.exceptions.BucketNotEmpty):
        fresh.delete_bucket()
    fresh.delete_object("k")
    fresh.delete_bucket()
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        fresh.get_object("k")
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        fresh.list_objects()


def test_missing_objects(bucket: oss2.Bucket) -> None:
    with pytest.raises(oss2.exceptions.NoSuchKey) as raised:
        bucket.get_object("missing")
    assert raised.value.status == 404
    # HEAD answers carry the error document in the x-oss-err header.
    with pytest.raises(oss2.exceptions.NoSuchKey):
        bucket.head_object("missing")


# ------------------------------------------------------------------------------ signatures


def test_wrong_secret_is_signature_does_not_match(server: OSSServer, bucket_name: str) -> None:
    server.put_object(bucket_name, "k", b"secret data")
    bad = oss2.Bucket(oss2.Auth(AK, "wrong-secret"), server.endpoint, bucket_name)
    with pytest.raises(oss2.exceptions.ServerError) as raised:
        bad.get_object("k")
    assert (raised.value.status, raised.value.code) == (403, "SignatureDoesNotMatch")
    assert "wrong-secret" not in str(raised.value)
    with pytest.raises(oss2.exceptions.ServerError) as raised:
        bad.put_object("k", b"overwritten?")
    assert raised.value.code == "SignatureDoesNotMatch"
    assert server.get_object(bucket_name, "k") == b"secret data"
    # A valid signature of another key pair is fine; a key id the server does not know is not.
    other = oss2.Bucket(oss2.Auth("other-ak", "other-secret"), server.endpoint, bucket_name)
    assert other.get_object("k").read() == b"secret data"
    unknown = oss2.Bucket(oss2.Auth("nobody", SK), server.endpoint, bucket_name)
    with pytest.raises(oss2.exceptions.ServerError) as raised:
        unknown.get_object("k")
    assert (raised.value.status, raised.value.code) == (403, "InvalidAccessKeyId")
    assert server.requests[-1].error_code == "InvalidAccessKeyId"


@pytest.mark.parametrize("version", ["v1", "v2", "v4"])
def test_signature_versions(server: OSSServer, bucket_name: str, version: str) -> None:
    auth = oss2.make_auth(AK, SK, version)
    bucket = oss2.Bucket(auth, server.endpoint, bucket_name, region="cn-hangzhou")
    bucket.put_object("dir/a b", b"payload", headers={"Content-Type": "text/plain"})
    assert bucket.get_object("dir/a b", byte_range=(1, 3)).read() == b"ayl"
    assert [o.key for o in oss2.ObjectIteratorV2(bucket, prefix="dir/")] == ["dir/a b"]
    upload_id = bucket.init_multipart_upload("mp").upload_id
    part = bucket.upload_part("mp", upload_id, 1, b"p")
    bucket.complete_multipart_upload("mp", upload_id, [oss2.models.PartInfo(1, part.etag)])
    assert server.requests[-1].auth_version == version
    bad = oss2.Bucket(
        oss2.make_auth(AK, "nope", version), server.endpoint, bucket_name, region="cn-hangzhou"
    )
    with pytest.raises(oss2.exceptions.ServerError) as raised:
        bad.get_object("dir/a b")
    assert raised.value.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("version", ["v1", "v2", "v4"])
def test_presigned_urls(server: OSSServer, bucket_name: str, version: str) -> None:
    server.put_object(bucket_name, "shared/file", b"shared bytes")
    bucket = oss2.Bucket(
        oss2.make_auth(AK, SK, version), server.endpoint, bucket_name, region="cn-hangzhou"
    )
    url = bucket.sign_url("GET", "shared/file", 60)
    assert requests.get(url, timeout=10).content == b"shared bytes"
    assert server.requests[-1].auth_version == version
    tampered = url.replace("shared%2Ffile", "shared%2Fother")
    assert requests.get(tampered, timeout=10).status_code == 403
    put_url = bucket.sign_url("PUT", "shared/up", 60)
    assert requests.put(put_url, data=b"uploaded", timeout=10).status_code == 200
    assert server.get_object(bucket_name, "shared/up") == b"uploaded"


def test_presigned_url_expires(server: OSSServer, bucket_name: str) -> None:
    server.put_object(bucket_name, "k", b"x")
    bucket = oss2.Bucket(oss2.Auth(AK, SK), server.endpoint, bucket_name)
    url = bucket.sign_url("GET", "k", -10)
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 403
    assert b"<Code>AccessDenied</Code>" in answer.content


def test_anonymous_access_follows_the_bucket_acl(server: OSSServer, bucket_name: str) -> None:
    server.put_object(bucket_name, "k", b"private")
    anonymous = oss2.Bucket(oss2.AnonymousAuth(), server.endpoint, bucket_name)
    with pytest.raises(oss2.exceptions.AccessDenied):
        anonymous.get_object("k")
    server.create_bucket("public-" + bucket_name[2:], acl="public-read")
    server.put_object("public-" + bucket_name[2:], "k", b"public")
    public = oss2.Bucket(oss2.AnonymousAuth(), server.endpoint, "public-" + bucket_name[2:])
    assert public.get_object("k").read() == b"public"
    with pytest.raises(oss2.exceptions.AccessDenied):
        public.put_object("k", b"defaced")


def test_sts_tokens_and_clock_skew(bucket_name: str) -> None:
    now = [time.time()]
    with OSSServer(
        credentials={"STS.id": "sts-secret"},
        security_tokens={"STS.id": "the-token"},
        clock=lambda: now[0],
    ) as srv:
        srv.create_bucket(bucket_name)
        good = oss2.Bucket(
            oss2.StsAuth("STS.id", "sts-secret", "the-token"), srv.endpoint, bucket_name
        )
        good.put_object("k", b"v")
        wrong = oss2.Bucket(
            oss2.StsAuth("STS.id", "sts-secret", "stolen"), srv.endpoint, bucket_name
        )
        with pytest.raises(oss2.exceptions.ServerError) as raised:
            wrong.get_object("k")
        assert raised.value.code == "InvalidSecurityToken"
        now[0] += 3600
        with pytest.raises(oss2.exceptions.ServerError) as raised:
            good.get_object("k")
        assert raised.value.code == "RequestTimeTooSkewed"


# ------------------------------------------------------------------------------------ ossfs


def test_ossfs_filesystem(server: OSSServer, fs: OSSFileSystem, bucket_name: str) -> None:
    data = bytes(range(256)) * 40
    server.put_object(bucket_name, "dir/a.bin", data)
    server.put_object(bucket_name, "dir/sub/b.txt", b"bbb")
    root = f"{bucket_name}/dir"
    assert sorted(fs.ls(root, detail=False)) == [f"{root}/a.bin", f"{root}/sub/"]
    info = fs.info(f"{root}/a.bin")
    assert (info["type"], info["size"]) == ("file", len(data))
    assert fs.info(root)["type"] == "directory"
    assert fs.cat_file(f"{root}/a.bin") == data
    # ossfs passes fsspec's exclusive end to oss2's inclusive byte_range: one byte more.
    assert fs.cat_file(f"{root}/a.bin", 100, 110) == data[100:111]
    with fs.open(f"{root}/a.bin", "rb") as f:  # OSSFile reads through get_object correctly
        f.seek(5000)
        assert f.read(100) == data[5000:5100]
    fs.pipe(f"{bucket_name}/p.txt", b"piped")
    assert fs.cat(f"{bucket_name}/p.txt") == b"piped"
    fs.copy(f"{bucket_name}/p.txt", f"{bucket_name}/copy.txt")  # CopyObject
    assert fs.cat(f"{bucket_name}/copy.txt") == b"piped"
    fs.rm(f"{bucket_name}/copy.txt")
    assert abs(fs.modified(f"{bucket_name}/p.txt") - time.time()) < 5  # GetObjectMeta
    assert fs.ukey(f"{bucket_name}/p.txt") is not None  # the CRC-64 of a GetObject
    assert bucket_name in [entry["name"] for entry in fs.ls("")]  # ListBuckets
    with fs.open(f"{bucket_name}/w.txt", "wb") as f:  # writes go through AppendObject
        f.write(b"written")
    assert fs.cat(f"{bucket_name}/w.txt") == b"written"
    assert fs.find(bucket_name) == sorted(
        f"{bucket_name}/{k}" for k in ("dir/a.bin", "dir/sub/b.txt", "p.txt", "w.txt")
    )
    assert fs.exists(f"{bucket_name}/p.txt")
    fs.rm(f"{bucket_name}/p.txt")
    assert not fs.exists(f"{bucket_name}/p.txt")
    fs.rm(root, recursive=True)
    assert server.list_keys(bucket_name) == ["w.txt"]
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{bucket_name}/missing")


def test_ossfs_multipart_put_and_pipe(
    server: OSSServer,
    fs: OSSFileSystem,
    bucket_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ossfs switches to oss2.resumable_upload at 100 MiB; lower it so a 12 MiB file goes multipart.
    monkeypatch.setattr("ossfs.core.SIMPLE_TRANSFER_THRESHOLD", 1 << 20)
    monkeypatch.setenv("HOME", str(tmp_path))  # resumable_upload keeps checkpoints under ~
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(12 << 20))
    fs.put(str(source), f"{bucket_name}/big.bin")
    assert server.head_object(bucket_name, "big.bin").object_type == "Multipart"
    assert server.get_object(bucket_name, "big.bin") == source.read_bytes()
    server.clear_requests()
    fs.pipe_file(f"{bucket_name}/piped.bin", b"z" * (11 << 20))  # >= 2 x 5 MiB blocks
    operations = [r.operation for r in server.requests]
    assert operations.count("UploadPart") == 3
    assert server.head_object(bucket_name, "piped.bin").size == 11 << 20


def test_ossfs_wrong_secret(server: OSSServer, bucket_name: str) -> None:
    server.put_object(bucket_name, "k", b"v")
    bad = OSSFileSystem(endpoint=server.endpoint, key=AK, secret="bad", skip_instance_cache=True)
    with pytest.raises(OSError, match="SignatureDoesNotMatch"):
        bad.cat_file(f"{bucket_name}/k")


def test_aio_ossfs_reads(server: OSSServer, bucket_name: str) -> None:
    server.put_object(bucket_name, "d/a", b"0123456789")
    server.put_object(bucket_name, "d/e/b", b"b")
    afs = AioOSSFileSystem(endpoint=server.endpoint, key=AK, secret=SK, skip_instance_cache=True)
    assert afs.cat_file(f"{bucket_name}/d/a", 2, 5) == b"2345"  # the same off-by-one
    assert afs.info(f"{bucket_name}/d/a")["size"] == 10
    assert afs.find(bucket_name) == [f"{bucket_name}/d/a", f"{bucket_name}/d/e/b"]
    assert sorted(afs.ls(f"{bucket_name}/d", detail=False)) == [
        f"{bucket_name}/d/a",
        f"{bucket_name}/d/e/",  # ossfs names directories with their trailing slash
    ]
    afs.copy(f"{bucket_name}/d/a", f"{bucket_name}/d/c")  # CopyObject sends no body
    assert server.get_object(bucket_name, "d/c") == b"0123456789"
    afs.rm([f"{bucket_name}/d/a", f"{bucket_name}/d/c"])
    assert server.list_keys(bucket_name) == ["d/e/b"]
    with pytest.raises(FileNotFoundError):
        afs.cat_file(f"{bucket_name}/d/a")


def test_aio_ossfs_writes_need_a_payload_shim(
    server: OSSServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiooss2 0.2.x defines an aiohttp ``Payload`` without ``decode``, abstract since aiohttp
    3.12: every AioOSSFileSystem upload fails with TypeError before reaching the server. With the
    method made concrete, uploads (multipart included) work against this server."""
    from aiooss2 import adapter

    monkeypatch.setattr(adapter.AsyncPayload, "__abstractmethods__", frozenset())
    afs = AioOSSFileSystem(endpoint=server.endpoint, key=AK, secret=SK, skip_instance_cache=True)
    afs.pipe(f"{bucket_name}/small", b"aio")
    afs.pipe(f"{bucket_name}/large", b"l" * (11 << 20))
    assert server.get_object(bucket_name, "small") == b"aio"
    assert server.head_object(bucket_name, "large").object_type == "Multipart"


# ---------------------------------------------------------------- async use, log and faults


async def test_async_server_request_log_and_faults() -> None:
    async with OSSServer(credentials={AK: SK}) as srv:
        srv.put_object("async-bucket", "obj", b"x" * 10_000)
        afs = AioOSSFileSystem(
            endpoint=srv.endpoint, key=AK, secret=SK, asynchronous=True, skip_instance_cache=True
        )
        assert await afs._cat_file("async-bucket/obj", 0, 999) == b"x" * 1000
        record = srv.requests[-1]
        assert (record.operation, record.method, record.key) == ("GetObject", "GET", "obj")
        assert record.path == "/async-bucket/obj"
        assert (record.range, record.status, record.bytes_sent) == ("bytes=0-999", 206, 1000)
        assert (record.access_key_id, record.auth_version) == (AK, "v1")

        srv.fail(503, "ServiceUnavailable", count=1, operations=["GetObject"])
        with pytest.raises(OSError, match="ServiceUnavailable"):
            await afs._cat_file("async-bucket/obj")
        assert await afs._cat_file("async-bucket/obj") == b"x" * 10_000

        srv.fail(mode="truncate", count=1)
        async with aiohttp.ClientSession() as session:
            signer = oss2.Bucket(oss2.Auth(AK, SK), srv.endpoint, "async-bucket")
            url = signer.sign_url("GET", "obj", 60)
            with pytest.raises(aiohttp.ClientPayloadError):
                async with session.get(url) as response:
                    await response.read()
        await afs._session.close()


def test_stop_and_start_keep_port_and_data(bucket_name: str) -> None:
    with OSSServer(credentials={AK: SK}) as srv:
        srv.put_object(bucket_name, "k", b"kept")
        port = srv.port
        bucket = oss2.Bucket(oss2.Auth(AK, SK), srv.endpoint, bucket_name, connect_timeout=2)
        srv.stop()
        with pytest.raises(oss2.exceptions.RequestError):
            bucket.get_object("k")
        srv.start()
        assert srv.port == port
        assert bucket.get_object("k").read() == b"kept"


def test_command_line(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgecache_testservers.oss",
            "--credentials",
            "cli-ak:cli-sk",
            "--bucket",
            "cli-bucket",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("oss listening on http://127.0.0.1:")
        endpoint = line.split()[-1]
        bucket = oss2.Bucket(oss2.Auth("cli-ak", "cli-sk"), endpoint, "cli-bucket")
        bucket.put_object("k", b"from the cli")
        assert bucket.get_object("k").read() == b"from the cli"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_content_md5_is_checked(bucket: oss2.Bucket) -> None:
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(oss2.exceptions.InvalidDigest):
        bucket.put_object("k", b"data", headers={"Content-MD5": wrong})


def test_faults_close_and_hang(server: OSSServer, bucket_name: str) -> None:
    server.put_object(bucket_name, "k", b"v")
    bucket = oss2.Bucket(oss2.Auth(AK, SK), server.endpoint, bucket_name, connect_timeout=0.5)
    fault = server.fail(mode="close", operations=["GetObject"], key_prefix="k")
    with pytest.raises(oss2.exceptions.RequestError):
        bucket.get_object("k")
    assert fault.matched >= 1
    assert bucket.head_object("k").content_length == 1  # other operations are untouched
    server.clear_faults()
    server.fail(mode="hang", count=1)
    start = time.monotonic()
    with pytest.raises(oss2.exceptions.RequestError):
        bucket.get_object("k")
    assert 0.4 <= time.monotonic() - start < 5
    assert bucket.get_object("k").read() == b"v"


def test_fixture_helpers() -> None:
    from edgecache_testservers.oss.fixtures import TEST_BUCKET, ossfs_options

    with OSSServer() as srv:
        srv.create_bucket(TEST_BUCKET)
        fs = OSSFileSystem(skip_instance_cache=True, **ossfs_options(srv))
        fs.pipe(f"{TEST_BUCKET}/k", b"v")
        assert srv.get_object(TEST_BUCKET, "k") == b"v"
