"""The metadata cache on disk (``metadata.sqlite``) is damaged: edited, bit-flipped, from an
older version. Its rows decide how many bytes a read returns, so a damaged row must never be
used: it is dropped, the lookup is a miss, and then either the backend answers again (online)
or the read fails with :class:`BackendUnavailableError` (offline). Never wrong or truncated
bytes, never a ``JSONDecodeError``/``KeyError`` traceback, never a file unreadable for good.

Issue #10, case 3: with S3 down, editing a cached size made ``edgecache cat`` print a truncated
object with exit 0; random bit flips gave tracebacks and files unreadable whatever the TTL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from edgecache_testservers.wan import WANEmulator, WANProfile
from fstestlib import KiB, SwitchableLocalBackend, close_fs, pattern
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from moto.server import ThreadedMotoServer

from edgecache.engine._metadata import MetadataCache
from edgecache.errors import BackendUnavailableError
from edgecache.fs import EdgeCacheFileSystem

BS = 4 * KiB
DB = "metadata.sqlite"


def edit_rows(db_path: Path, edit: Any) -> int:
    """Apply ``edit(payload) -> payload`` to the JSON of every row, keeping its old checksum
    (what a stray write or a hand edit does); returns how many rows were changed."""
    db = sqlite3.connect(db_path)
    changed = 0
    with db:
        for backend, kind, path, data in db.execute(
            "SELECT backend, kind, path, data FROM checked_entries"
        ).fetchall():
            new = json.dumps(edit(json.loads(data)))
            if new != data:
                changed += 1
                db.execute(
                    "UPDATE checked_entries SET data=? WHERE backend=? AND kind=? AND path=?",
                    (new, backend, kind, path),
                )
    db.close()
    return changed


def shrink_sizes(payload: Any) -> Any:
    """Every file size in an info or listing row made 10 bytes smaller."""
    for entry in payload if isinstance(payload, list) else [payload]:
        if entry["info"].get("type") == "file":
            entry["info"]["size"] -= 10
    return payload


# --- through the real CLI, S3 (moto) behind a link that is cut -------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_link(moto: str) -> Iterator[WANEmulator]:
    with WANEmulator(moto, WANProfile(rtt_ms=1, mbit=800)) as wan:
        yield wan


def edgecache(cache: Path, wan: WANEmulator, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    options = [f"-oendpoint_url={wan.endpoint}", "-okey=k", "-osecret=s"]
    return subprocess.run(
        [sys.executable, "-m", "edgecache", *args, "--cache-dir", str(cache), *options],
        capture_output=True,
        env=env,
        timeout=120,
    )


def test_an_edited_size_offline_is_unavailable_never_a_truncated_object(
    moto: str, s3_link: WANEmulator, tmp_path: Path
) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=moto,
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="meta")
    content = os.urandom(300_000)
    client.put_object(Bucket="meta", Key="obj.bin", Body=content)
    cache = tmp_path / "cache"
    url = "s3://meta/obj.bin"

    first = edgecache(cache, s3_link, "cat", url)
    assert first.returncode == 0, first.stderr.decode()
    assert first.stdout == content

    s3_link.cut("reset")
    assert edit_rows(cache / DB, shrink_sizes) >= 1
    offline = edgecache(cache, s3_link, "cat", url)
    assert offline.returncode == 1, offline.stderr.decode()
    assert offline.stdout == b"", "bytes of a damaged size were printed"
    stderr = offline.stderr.decode()
    assert "unreachable" in stderr and "Traceback" not in stderr
    assert "dropped the damaged info row" in stderr
    assert any(line.startswith("edgecache: error: ") for line in stderr.splitlines())

    s3_link.restore()
    online = edgecache(cache, s3_link, "cat", url)
    assert online.returncode == 0, online.stderr.decode()
    assert online.stdout == content
    # Re-fetched and stored again with a valid checksum: offline it is served once more.
    s3_link.cut("reset")
    again = edgecache(cache, s3_link, "cat", url)
    assert again.returncode == 0, again.stderr.decode()
    assert again.stdout == content


# --- in process, a local backend whose link can be cut ---------------------------------------


@pytest.fixture
def tree(data_dir: Path) -> dict[str, bytes]:
    (data_dir / "sub").mkdir()
    files = {}
    for i, name in enumerate(("a", "b", "sub/c", "sub/d")):
        files[str(data_dir / name)] = pattern(3 * BS + 100 * i, seed=i)
        (data_dir / name).write_bytes(files[str(data_dir / name)])
    return files


def open_fs(cache: Path, **options: Any) -> EdgeCacheFileSystem:
    # Backend health is shared by every filesystem on the cache directory, but each test
    # switches the link of one filesystem's own backend: a filesystem opened "online again"
    # must not wait out the age rule of the probe for a link the other one saw cut.
    options.setdefault("backend_recheck_after", 0)
    return EdgeCacheFileSystem(
        target_protocol="switchfile",
        cache_dir=str(cache),
        block_size="4KiB",
        skip_instance_cache=True,
        **options,
    )


def offline(fs: EdgeCacheFileSystem) -> EdgeCacheFileSystem:
    backend = fs.backend
    assert isinstance(backend, SwitchableLocalBackend)
    backend.online = False
    return fs


def warm(cache: Path, files: dict[str, bytes], data_dir: Path) -> None:
    """Infos, listings and blocks of every file cached, and the database closed (checkpointed)."""
    fs = open_fs(cache)
    try:
        fs.find(str(data_dir))
        for path, content in files.items():
            assert fs.cat_file(path) == content
            fs.ls(os.path.dirname(path))
    finally:
        close_fs(fs)
    assert not (cache / (DB + "-wal")).exists() or (cache / (DB + "-wal")).stat().st_size == 0


def test_an_edited_size_is_dropped_logged_once_and_fetched_again(
    tree: dict[str, bytes], data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    warm(cache, tree, data_dir)
    assert edit_rows(cache / DB, shrink_sizes) >= 2  # the listings hold the infos

    fs = offline(open_fs(cache))
    try:
        with caplog.at_level(logging.WARNING, logger="edgecache.engine._metadata"):
            for path in tree:
                with pytest.raises(BackendUnavailableError, match="unreachable"):
                    fs.cat_file(path)
                with pytest.raises(BackendUnavailableError, match="unreachable"):
                    fs.cat_file(path)  # asked twice: logged once
        damaged = [r for r in caplog.records if "damaged" in r.getMessage()]
        assert damaged and len(damaged) == len({r.getMessage() for r in damaged})
    finally:
        close_fs(fs)

    fs = open_fs(cache)  # online again: every file is read whole, whatever the TTL
    try:
        for path, content in tree.items():
            assert fs.cat_file(path) == content
    finally:
        close_fs(fs)
    rows = sqlite3.connect(cache / DB).execute("SELECT count(*) FROM checked_entries")
    assert rows.fetchone()[0] >= len(tree), "re-fetched metadata was not stored again"


def test_rows_of_the_unchecked_format_are_dropped_not_trusted(tmp_path: Path) -> None:
    db_path = tmp_path / DB
    old = sqlite3.connect(db_path)
    old.execute(
        "CREATE TABLE entries(backend TEXT, kind TEXT, path TEXT, data TEXT, fetched REAL,"
        " PRIMARY KEY(backend, kind, path)) WITHOUT ROWID"
    )
    old.execute(
        "INSERT INTO entries VALUES ('file', 'info', '/x', ?, 1e12)",
        (json.dumps({"info": {"name": "/x", "size": 1, "type": "file"}, "version": "v"}),),
    )
    old.commit()
    old.close()
    cache = MetadataCache(str(db_path), ttl_seconds=1e9)
    try:
        assert cache.info("file", "/x", allow_stale=True) is None
    finally:
        cache.close()
    tables = sqlite3.connect(db_path).execute("SELECT name FROM sqlite_master WHERE type='table'")
    assert [name for (name,) in tables] == ["checked_entries"]


def test_rows_of_a_table_without_rowids_are_kept_in_one_with_them(tmp_path: Path) -> None:
    # The table had no rowids before (a look-up next to a large listing read all of it):
    # an offline site upgrading keeps the metadata it serves from.
    db_path = tmp_path / DB
    cache = MetadataCache(str(db_path), ttl_seconds=1e9)
    info = {"name": "/d/x", "size": 1, "type": "file"}
    cache.put_info("file", "/d/x", info, "v1")
    cache.put_listing("file", "/d", [(info, "v1"), ({**info, "name": "/d/y"}, "v2")])
    cache.close()
    old = sqlite3.connect(db_path, isolation_level=None)
    old.executescript(
        "ALTER TABLE checked_entries RENAME TO t;"
        "CREATE TABLE checked_entries(backend TEXT NOT NULL, kind TEXT NOT NULL,"
        " path TEXT NOT NULL, data TEXT NOT NULL, fetched REAL NOT NULL,"
        " checksum TEXT NOT NULL, PRIMARY KEY(backend, kind, path)) WITHOUT ROWID;"
        "INSERT INTO checked_entries SELECT * FROM t; DROP TABLE t;"
    )
    old.close()
    caches = [MetadataCache(str(db_path), ttl_seconds=1e9) for _ in range(2)]  # both open it
    try:
        for cache in caches:
            x = cache.info("file", "/d/x", allow_stale=True)
            y = cache.info("file", "/d/y", allow_stale=True)  # known from the listing only
            assert x is not None and x.version == "v1" and x.info == info
            assert y is not None and y.version == "v2"
            assert [
                e.info["name"] for e in cache.listing("file", "/d", allow_stale=True) or []
            ] == [
                "/d/x",
                "/d/y",
            ]
    finally:
        for cache in caches:
            cache.close()
    tables = sqlite3.connect(db_path).execute(
        "SELECT name, sql FROM sqlite_master WHERE type='table'"
    )
    assert [(name, "WITHOUT ROWID" in sql) for name, sql in tables] == [("checked_entries", False)]


def flip_bits(path: Path, flips: list[tuple[int, int]]) -> None:
    data = bytearray(path.read_bytes())
    for offset, bit in flips:
        data[offset % len(data)] ^= 1 << bit
    path.write_bytes(bytes(data))


def payload_offsets(path: Path) -> list[int]:
    """Where the stored infos are in the file (the bytes a flip makes most harm in)."""
    data = path.read_bytes()
    found, start = [], 0
    while (at := data.find(b'"size"', start)) >= 0:
        found.append(at)
        start = at + 1
    return found


@pytest.fixture
def warm_cache(tree: dict[str, bytes], data_dir: Path, tmp_path: Path) -> Path:
    cache = tmp_path / "warm"
    warm(cache, tree, data_dir)
    assert payload_offsets(cache / DB)
    return cache


flip = st.tuples(st.integers(min_value=0, max_value=2**20), st.integers(0, 7))
near_payload = st.tuples(st.integers(min_value=0), st.integers(-40, 40), st.integers(0, 7))


@hsettings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    anywhere=st.lists(flip, max_size=6),
    in_rows=st.lists(near_payload, max_size=6),
    ttl=st.sampled_from([0.0, 5.0, 1e9]),
)
def test_bit_flips_in_the_database_never_give_wrong_bytes_or_a_traceback(
    warm_cache: Path,
    tree: dict[str, bytes],
    data_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    anywhere: list[tuple[int, int]],
    in_rows: list[tuple[int, int, int]],
    ttl: float,
) -> None:
    cache = tmp_path_factory.mktemp("flipped") / "cache"
    shutil.copytree(warm_cache, cache)
    rows = payload_offsets(cache / DB)
    flips = anywhere + [(rows[i % len(rows)] + delta, bit) for i, delta, bit in in_rows]
    flip_bits(cache / DB, flips)

    # Offline, a dropped row makes an answer unavailable, which is true; any answer given is
    # the right one.
    unavailable = contextlib.suppress(BackendUnavailableError)
    fs = offline(open_fs(cache, metadata_ttl=ttl))
    try:
        for path, content in tree.items():
            with unavailable:
                assert fs.cat_file(path) == content
            with unavailable:
                assert fs.info(path)["size"] == len(content)
        with unavailable:
            listed = fs.ls(str(data_dir / "sub"), detail=False)
            assert sorted(listed) == sorted(p for p in tree if "/sub/" in p)
    finally:
        close_fs(fs)

    fs = open_fs(cache, metadata_ttl=ttl)  # online again, as a new process would be
    try:
        for path, content in tree.items():
            assert fs.cat_file(path) == content
            assert fs.info(path)["size"] == len(content)
    finally:
        close_fs(fs)


# --- a damaged database file: repaired by the process that meets it ---------------------------
def repair_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "was damaged" in r.getMessage()]


def test_a_database_that_is_not_one_is_moved_aside_on_open_and_the_blocks_kept(
    tree: dict[str, bytes], data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    warm(cache, tree, data_dir)
    (cache / DB).write_bytes(b"not a database, a stray write " * 400)
    (cache / "notes.txt").write_text("not ours")

    with caplog.at_level(logging.WARNING, logger="edgecache.engine._metadata"):
        fs = open_fs(cache)
        try:
            for path, content in tree.items():
                assert fs.cat_file(path) == content
            backend = fs.backend
            assert isinstance(backend, SwitchableLocalBackend)
            assert backend.fetched == [], "the SSD blocks were lost with the metadata"
        finally:
            close_fs(fs)
    (line,) = repair_warnings(caplog)
    assert f"{cache / DB} was damaged (file is not a database): moved to {DB}.corrupt" in line
    assert (cache / (DB + ".corrupt")).read_bytes().startswith(b"not a database")
    assert (cache / "notes.txt").read_text() == "not ours"

    fs = offline(open_fs(cache))  # the new database holds what was fetched again
    try:
        for path, content in tree.items():
            assert fs.cat_file(path) == content
    finally:
        close_fs(fs)


def test_a_torn_page_met_in_use_is_repaired_keeping_the_rows_that_verify(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_path = tmp_path / DB
    names = [f"/bucket/dir/{i:05d}-" + "n" * 100 for i in range(3000)]
    cache = MetadataCache(str(db_path), ttl_seconds=1e9)
    for i, name in enumerate(names):
        cache.put_info("file", name, {"name": name, "size": i, "type": "file"}, f"v{i}")
    cache.close()
    page = 4096
    data = bytearray(db_path.read_bytes())
    assert len(data) > 100 * page
    data[40 * page : 41 * page] = bytes(page)  # one page of rows zeroed
    db_path.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="edgecache.engine._metadata"):
        cache = MetadataCache(str(db_path), ttl_seconds=1e9)
        try:
            found = [cache.info("file", name) for name in names]
            again = [cache.info("file", name) for name in names]
        finally:
            cache.close()
    for i, entry in enumerate(found + again):
        assert entry is None or entry.info["size"] == i % len(names)  # never a wrong answer
    kept = sum(entry is not None for entry in again)
    assert kept >= len(names) - 100, f"only {kept} of {len(names)} rows kept"
    (line,) = repair_warnings(caplog)
    assert "database disk image is malformed" in line and "rows that verify" in line

    cache = MetadataCache(str(db_path), ttl_seconds=1e9)  # a later process: sound, same rows
    try:
        # (this process's memory may hold one entry read just before the damaged page)
        later = [cache.info("file", name) for name in names]
        assert len(names) - 100 <= sum(entry is not None for entry in later) <= kept
        assert all(entry is None or entry.info["size"] == i for i, entry in enumerate(later))
        assert cache.verify()["damage_found"] is False
    finally:
        cache.close()
