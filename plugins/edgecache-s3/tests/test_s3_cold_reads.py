"""Cold reads over S3 (moto): a read of an object nothing is known of costs its GET alone, as
with s3fs (no HEAD first: the ranged GET's answer carries size, ETag and mtime), ``cat_ranges``
sends all its GETs at once, and what the first reads learnt serves the reads that follow.

Requests are counted by wrapping the client's ``_call_s3`` (they still go to moto over HTTP).
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from typing import Any

import botocore.utils
import dateutil.parser
import fsspec
import pytest
import s3fs
from edgecache_s3._filesystem import EdgeS3FileSystem, parse_timestamp
from s3testlib import put

from edgecache.errors import BackendUnavailableError

MiB = 1024 * 1024


@pytest.fixture
def requests(
    monkeypatch: pytest.MonkeyPatch, bucket: str
) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every S3 call edgecache's clients make about the test bucket: (operation, parameters).
    Other engines of the process (earlier tests', probing their own buckets) are not counted."""
    seen: list[tuple[str, dict[str, Any]]] = []
    real = EdgeS3FileSystem._call_s3

    async def counted(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("Bucket") == bucket:
            seen.append((method, dict(kwargs)))
        return await real(self, method, *args, **kwargs)

    monkeypatch.setattr(EdgeS3FileSystem, "_call_s3", counted)
    yield seen


def _options(s3_options: dict[str, Any], cache_dir: str) -> dict[str, Any]:
    return {"s3": dict(s3_options), "edgecache": {"cache_dir": cache_dir}}


def _gets(requests: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    assert {m for m, _ in requests} <= {"get_object"}, requests
    return [kwargs for _, kwargs in requests]


def test_a_cold_range_costs_one_get_and_teaches_the_info(
    client: Any, prefix: str, s3_options: dict[str, Any], tmp_path: Any, requests: Any
) -> None:
    data = os.urandom(9 * MiB)
    path = put(client, f"{prefix}/big.bin", data)
    fs, _ = fsspec.url_to_fs(f"edgecache::s3://{path}", **_options(s3_options, str(tmp_path)))
    assert (
        fs.cat_file(f"s3://{path}", start=5 * MiB + 3, end=5 * MiB + 4099)
        == (data[5 * MiB + 3 : 5 * MiB + 4099])
    )
    (first,) = _gets(requests)
    assert "IfMatch" not in first  # nothing was known to match
    # What the answer said is the object's info, as plain s3fs's HEAD gives it.
    plain = s3fs.S3FileSystem(**s3_options, skip_instance_cache=True).info(path)
    info = fs.info(f"s3://{path}")
    assert (info["size"], info["ETag"], info["type"]) == (plain["size"], plain["ETag"], "file")
    assert len(requests) == 1  # the info came from the cache
    # The next range of the same object is planned from it: a GET checked against its ETag.
    assert fs.cat_file(path, start=100, end=200) == data[100:200]
    assert len(requests) == 2 and requests[1][1]["IfMatch"] == plain["ETag"]
    # The pages fetched serve the same range again without a request, and a whole read works.
    assert (
        fs.cat_file(path, start=5 * MiB + 3, end=5 * MiB + 4099)
        == (data[5 * MiB + 3 : 5 * MiB + 4099])
    )
    assert len(requests) == 2
    assert fs.cat_file(path) == data


def test_a_cold_whole_small_file_is_one_get_then_cached(
    client: Any, prefix: str, s3_options: dict[str, Any], tmp_path: Any, requests: Any
) -> None:
    data = os.urandom(100_000)
    path = put(client, f"{prefix}/small.bin", data)
    options = _options(s3_options, str(tmp_path))
    fs, _ = fsspec.url_to_fs(f"edgecache::s3://{path}", **options)
    assert fs.cat_file(path) == data
    assert len(_gets(requests)) == 1
    assert fs.cat_file(path) == data
    assert fs.cat_file(path, start=10, end=20) == data[10:20]
    with fsspec.open(f"edgecache::s3://{path}", "rb", **options) as f:
        assert f.read() == data
    assert len(requests) == 1  # the block the first GET brought serves them all


def test_cold_cat_ranges_sends_every_get_at_once_without_a_head(
    client: Any, prefix: str, s3_options: dict[str, Any], tmp_path: Any, requests: Any
) -> None:
    data = os.urandom(16 * MiB)
    path = put(client, f"{prefix}/sparse.bin", data)
    fs, _ = fsspec.url_to_fs(f"edgecache::s3://{path}", **_options(s3_options, str(tmp_path)))
    rng = random.Random(3)
    starts = sorted(rng.randrange(0, len(data) - 4096) for _ in range(12))
    ends = [s + 4096 for s in starts]
    starts.append(-10)  # counted from the end: needs the size, learnt from the others
    ends.append(None)  # type: ignore[arg-type]
    got = fs.cat_ranges([f"s3://{path}"] * len(starts), starts, ends)
    assert got[:-1] == [data[s:e] for s, e in zip(starts[:-1], ends[:-1], strict=True)]
    assert got[-1] == data[-10:]
    gets = _gets(requests)
    # One GET per range whose pages no other range brought, none of them checked against a
    # version (all were sent before any answer came), plus the tail's, checked.
    unchecked = [g for g in gets if "IfMatch" not in g]
    assert 1 <= len(unchecked) <= 12 and len(gets) - len(unchecked) <= 1
    assert all(
        int(g["Range"].split("-")[1]) - int(g["Range"][6:].split("-")[0]) < 64 * 1024 for g in gets
    )
    # Mixed with another object's ranges and a missing one, each answered for itself.
    other = put(client, f"{prefix}/other.bin", b"0123456789")
    mixed = fs.cat_ranges(
        [path, f"s3://{other}", f"{prefix}/missing", path], [0, 2, 0, 100], [10, 5, 1, 110]
    )
    assert mixed[:2] == [data[:10], b"234"] and mixed[3] == data[100:110]
    assert isinstance(mixed[2], FileNotFoundError)


def test_cold_reads_of_what_is_no_object_say_what_it_is(
    client: Any, prefix: str, s3_options: dict[str, Any], tmp_path: Any
) -> None:
    put(client, f"{prefix}/dir/inside", b"x")
    empty = put(client, f"{prefix}/empty", b"")
    short = put(client, f"{prefix}/short", b"abc")
    fs, _ = fsspec.url_to_fs(f"edgecache::s3://{prefix}", **_options(s3_options, str(tmp_path)))
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"s3://{prefix}/nothing", start=0, end=10)
    with pytest.raises(IsADirectoryError):
        fs.cat_file(f"s3://{prefix}/dir", start=0, end=10)
    assert fs.cat_file(empty) == b""
    assert fs.cat_file(empty, start=0, end=10) == b""
    assert fs.cat_file(short, start=10, end=20) == b""  # past the end, as s3fs answers


def test_a_cold_read_of_an_unreachable_store_fails_with_one_message(tmp_path: Any) -> None:
    options = {
        "s3": {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s", "retries": 1},
        "edgecache": {"cache_dir": str(tmp_path)},
    }
    fs, _ = fsspec.url_to_fs("edgecache::s3://bkt/x", **options)
    with pytest.raises(BackendUnavailableError) as caught:
        fs.cat_file("s3://bkt/x", start=0, end=100)
    message = str(caught.value)
    # What was asked, that it is not cached, since when, the first error: once each.
    assert "bkt/x is not cached" in message and message.count("unreachable since") == 1
    assert message.count("EndpointConnectionError") == 1, message
    assert message.count("is unreachable") == 1, message  # the backend is named once


def test_every_client_of_the_process_parses_the_service_models_once(
    client: Any, prefix: str, s3_options: dict[str, Any], tmp_path: Any
) -> None:
    # A new engine (another cache directory, a forked worker) builds a new S3 client: with one
    # data loader for the process it does not parse botocore's JSON models again (~0.15 s of
    # CPU each, what a DataLoader worker's first open paid).
    data = os.urandom(1000)
    path = put(client, f"{prefix}/one.bin", data)
    loaders = []
    for name in ("a", "b"):
        options = _options(s3_options, str(tmp_path / name))
        fs, _ = fsspec.url_to_fs(f"edgecache::s3://{path}", **options)
        with fsspec.open(f"edgecache::s3://{path}", "rb", **options) as f:
            assert f.read() == data
        session = fs.engine.backend.fs.session
        loaders.append(session.get_component("data_loader"))
    assert loaders[0] is loaders[1]


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-02T03:36:16.000Z",
        "2026-12-02T03:36:16Z",
        "2026-12-02T03:36:16.123456Z",
        "Wed, 02 Dec 2026 03:36:16 GMT",
        "Tue, 1 Dec 2026 23:59:59 GMT",
        "2026-12-02T03:36:16+02:00",
        "1733100000",
        1733100000.5,
    ],
)
def test_timestamps_are_parsed_as_botocore_parses_them(value: Any) -> None:
    fast = parse_timestamp(value)
    assert fast == botocore.utils.parse_timestamp(value)
    assert fast.utcoffset() is not None


def test_listings_and_gets_parse_their_timestamps_without_dateutil(
    client: Any,
    prefix: str,
    s3_options: dict[str, Any],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # botocore hands every timestamp of a response to dateutil's general parser (~0.1 ms
    # each): a cold glob of 400 objects spent a tenth of its time there, every GET some. The
    # client's parser takes S3's two formats itself, and gives the same times s3fs gives.
    paths = [put(client, f"{prefix}/d/f{i:02d}", b"x" * 10) for i in range(20)]
    plain = s3fs.S3FileSystem(**s3_options, skip_instance_cache=True).find(
        f"{prefix}/d", detail=True
    )
    general = dateutil.parser.parse
    parsed: list[Any] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        # The clients' responses are parsed on fsspec's I/O thread (moto, in this process,
        # parses timestamps too, on its own threads).
        if threading.current_thread().name == "fsspecIO":
            parsed.append(args[0])
        return general(*args, **kwargs)

    monkeypatch.setattr(dateutil.parser, "parse", counted)
    fs, _ = fsspec.url_to_fs(f"edgecache::s3://{prefix}", **_options(s3_options, str(tmp_path)))
    found = fs.find(f"s3://{prefix}/d", detail=True)
    assert fs.cat_file(f"s3://{paths[0]}", start=2, end=5) == b"xxx"
    other = fsspec.filesystem(
        "edgecache",
        target_protocol="s3",
        target_options=s3_options,
        cache_dir=str(tmp_path / "other"),
        skip_instance_cache=True,
    )
    assert other.cat_file(f"s3://{paths[1]}", start=2, end=5) == b"xxx"
    assert parsed == []
    assert {k: v["LastModified"] for k, v in found.items()} == {
        k: v["LastModified"] for k, v in plain.items()
    }
    assert other.info(f"s3://{paths[1]}")["LastModified"] == plain[paths[1]]["LastModified"]
