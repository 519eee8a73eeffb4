"""The hub's store never serves bytes other than those it recorded (issue #10, item 2).

Recorded through a real hub from the test API server, then damaged on disk the way a disk or an
operator damages it: one flipped bit anywhere in a recorded object's row (hypothesis over the
position), every copy of an object altered, a file cut short or emptied, a zeroed page (each
page of the file in turn), and a store of the previous formats. Offline, through the hub, every
answer is the recorded object or a refusal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from edgecache_testservers.kubeapi import KubeAPIServer, objects
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecache.hub import HubServer, HubStore
from edgecache.hub._store import STORE_FORMAT
from edgecache.metrics import REGISTRY

from .conftest import fast_settings

KUBELET = {"User-Agent": "kubelet/v1.32.0 (linux/amd64)"}
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
VALUE = "the-recorded-value-0123456789abcdef"


def _dead_upstream() -> str:
    """A URL where nothing listens (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@dataclass(frozen=True)
class Recorded:
    """A store recorded online: its files, the object and the list as the upstream sent them."""

    directory: Path
    obj: dict[str, Any]
    items: list[dict[str, Any]]

    def copy_to(self, target: Path) -> Path:
        shutil.copytree(self.directory, target)
        return target


async def _record(directory: Path) -> Recorded:
    async with KubeAPIServer() as api:
        api.seed([objects.config_map("settings", data={"key": VALUE})])
        api.seed([objects.config_map("other", data={"key": "something else"})])
        async with HubServer(fast_settings(directory, api.url)) as hub:
            async with aiohttp.ClientSession(hub.url, headers=KUBELET) as http:
                async with http.get(CONFIGMAPS + "/settings") as got:
                    obj = await got.json()
                async with http.get(CONFIGMAPS) as listed:
                    items = (await listed.json())["items"]
            assert hub.recorder is not None
            await hub.recorder.drain()
    return Recorded(directory, obj, items)


@pytest.fixture(scope="module")
def recorded() -> Iterator[Recorded]:
    with tempfile.TemporaryDirectory(prefix="hub-integrity-") as directory:
        store = asyncio.run(_record(Path(directory) / "store"))
        assert not (store.directory / "hub.sqlite-wal").exists()  # all in the main file now
        yield store


def _occurrences(data: bytes, needle: bytes) -> list[int]:
    found, start = [], 0
    while (index := data.find(needle, start)) >= 0:
        found.append(index)
        start = index + 1
    return found


async def _offline_answers(directory: Path) -> dict[str, tuple[int, Any]]:
    settings = fast_settings(directory, _dead_upstream())
    async with (
        HubServer(settings, require_serving=False) as hub,
        aiohttp.ClientSession(hub.url, headers=KUBELET) as http,
    ):
        assert not hub.health.online
        answers: dict[str, tuple[int, Any]] = {}
        for name, path in (("get", CONFIGMAPS + "/settings"), ("list", CONFIGMAPS)):
            async with http.get(path) as response:
                raw = await response.read()
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw
                answers[name] = (response.status, body)
        return answers


def _assert_recorded_or_refused(answers: dict[str, tuple[int, Any]], recorded: Recorded) -> None:
    status, body = answers["get"]
    assert status in (200, 404, 503), answers
    if status == 200:
        assert body == recorded.obj
    status, body = answers["list"]
    assert status in (200, 404, 503), answers
    if status == 200:
        assert body["items"] == recorded.items


def test_undamaged_store_serves_the_recorded_objects(recorded: Recorded, tmp_path: Path) -> None:
    answers = asyncio.run(_offline_answers(recorded.copy_to(tmp_path / "store")))
    assert answers["get"] == (200, recorded.obj)
    assert answers["list"][0] == 200 and answers["list"][1]["items"] == recorded.items


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_flipped_bit_in_a_recorded_row_is_never_served(
    recorded: Recorded, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory(prefix="hub-flip-") as temporary:
        store = recorded.copy_to(Path(temporary) / "store")
        database = store / "hub.sqlite"
        content = bytearray(database.read_bytes())
        copies = _occurrences(bytes(content), VALUE.encode())
        assert len(copies) >= 2  # the GET copy and the list item
        where = data.draw(st.sampled_from(copies), label="copy")
        # The whole row around the value: record header, key columns, body and checksum.
        offset = data.draw(st.integers(where - 160, where + len(VALUE) + 60), label="offset")
        bit = data.draw(st.integers(0, 7), label="bit")
        content[offset] ^= 1 << bit
        database.write_bytes(bytes(content))
        _assert_recorded_or_refused(asyncio.run(_offline_answers(store)), recorded)


def _damaged_rows() -> float:
    value = REGISTRY.get_sample_value("edgecache_hub_store_problems_total", {"kind": "damaged_row"})
    return value or 0.0


def test_every_copy_altered_is_dropped_logged_once_and_reported(
    recorded: Recorded, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = recorded.copy_to(tmp_path / "store")
    database = store / "hub.sqlite"
    content = database.read_bytes()
    copies = _occurrences(content, VALUE.encode())
    altered = VALUE.replace("recorded", "RECORDED").encode()  # same length, valid text
    for index in copies:
        content = content[:index] + altered + content[index + len(VALUE) :]
    database.write_bytes(content)
    before = _damaged_rows()

    async def scenario() -> tuple[list[int], str]:
        settings = fast_settings(store, _dead_upstream())
        async with (
            HubServer(settings, require_serving=False) as hub,
            aiohttp.ClientSession(hub.url, headers=KUBELET) as http,
        ):
            statuses = []
            for path in (CONFIGMAPS + "/settings", CONFIGMAPS, CONFIGMAPS + "/settings"):
                async with http.get(path) as response:
                    assert b"RECORDED" not in await response.read()
                    statuses.append(response.status)
            async with http.get(hub.health_url + "/readyz") as ready:
                return statuses, await ready.text()

    with caplog.at_level(logging.ERROR, logger="edgecache.hub._store"):
        statuses, ready = asyncio.run(scenario())
    assert statuses[0] == 503 and statuses[1] in (503, 404) and statuses[2] in (503, 404)
    reports = [r for r in caplog.records if "failed its checksum" in r.getMessage()]
    assert len(reports) == len(copies)  # each damaged row once, however often it was asked for
    assert _damaged_rows() - before == len(copies)
    assert f"{len(copies)} damaged store records dropped" in ready
    # Dropped for good: a new process finds no trace of the altered rows.
    with sqlite3.connect(database) as conn:
        assert not conn.execute(
            "SELECT 1 FROM objects WHERE body LIKE ?", ("%RECORDED%",)
        ).fetchall()


def _problems(kind: str) -> float:
    return REGISTRY.get_sample_value("edgecache_hub_store_problems_total", {"kind": kind}) or 0.0


@pytest.mark.parametrize(("kind", "cut"), [("truncated_file", 0.5), ("empty_file", 0.0)])
def test_a_cut_or_emptied_store_is_reported_not_silently_emptied(
    recorded: Recorded, tmp_path: Path, kind: str, cut: float
) -> None:
    store = recorded.copy_to(tmp_path / "store")
    database = store / "hub.sqlite"
    size = database.stat().st_size
    assert size >= 3 * 4096  # more than one page, so half of it is a real truncation
    with database.open("r+b") as handle:
        handle.truncate(int(size * cut))
    before = _problems(kind)

    async def scenario() -> tuple[int, str, list[int]]:
        settings = fast_settings(store, _dead_upstream())
        async with (
            HubServer(settings, require_serving=False) as hub,
            aiohttp.ClientSession(hub.url, headers=KUBELET) as http,
        ):
            async with http.get(hub.health_url + "/readyz") as ready:
                status, text = ready.status, await ready.text()
            statuses = []
            for path in (CONFIGMAPS + "/settings", CONFIGMAPS):
                async with http.get(path) as response:
                    statuses.append(response.status)
            return status, text, statuses

    ready_status, ready_text, statuses = asyncio.run(scenario())
    word = "empty" if kind == "empty_file" else "cut short"
    assert ready_status == 503 and word in ready_text, ready_text
    assert _problems(kind) - before == 1
    assert statuses == [503, 503]  # nothing recorded: said so, not an empty list
    aside = list(store.glob("hub.sqlite.*-*"))
    assert len(aside) == 1 and aside[0].stat().st_size == int(size * cut)
    # The command line says it in one line and exits 1: nothing to serve.
    with database.open("r+b") as handle:
        handle.truncate(0)
    for extra in store.glob("hub.sqlite?*"):
        extra.unlink()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "edgecache.hub", "--server", _dead_upstream()),
            *("--cache-dir", str(store), "--listen", "127.0.0.1:0"),
            *("--health-listen", "127.0.0.1:0"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("edgecache hub:") and "is empty (0 bytes)" in last, result.stderr


# --- stores written by earlier versions --------------------------------------------------------

_FORMAT_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE lists (
    component TEXT NOT NULL, gvr TEXT NOT NULL, scope TEXT NOT NULL, selector TEXT NOT NULL,
    rv TEXT NOT NULL, kind TEXT NOT NULL, api_version TEXT NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (component, gvr, scope, selector)
) WITHOUT ROWID;
CREATE TABLE objects (
    component TEXT NOT NULL, gvr TEXT NOT NULL, scope TEXT NOT NULL, selector TEXT NOT NULL,
    namespace TEXT NOT NULL, name TEXT NOT NULL, rv TEXT NOT NULL, labels TEXT NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (component, gvr, scope, selector, namespace, name)
);
CREATE TABLE raw (
    component TEXT NOT NULL, key TEXT NOT NULL, status INTEGER NOT NULL,
    content_type TEXT NOT NULL, body BLOB NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (component, key)
) WITHOUT ROWID;
CREATE TABLE credentials (
    component TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (component, digest)
) WITHOUT ROWID;
"""
_GRANTS_1 = """CREATE TABLE grants (
    component TEXT NOT NULL, digest TEXT NOT NULL, gvr TEXT NOT NULL, namespace TEXT NOT NULL,
    PRIMARY KEY (component, digest, gvr, namespace)
) WITHOUT ROWID;"""
_GRANTS_2 = """CREATE TABLE grants (
    component TEXT NOT NULL, digest TEXT NOT NULL, gvr TEXT NOT NULL, namespace TEXT NOT NULL,
    name TEXT NOT NULL, selector TEXT NOT NULL,
    PRIMARY KEY (component, digest, gvr, namespace, name, selector)
) WITHOUT ROWID;"""
POD = b'{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","namespace":"ns"}}'


def _old_store(directory: Path, *, version: int) -> None:
    directory.mkdir()
    with sqlite3.connect(directory / "hub.sqlite") as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_FORMAT_1 + (_GRANTS_1 if version < 2 else _GRANTS_2))
        conn.execute("INSERT INTO meta VALUES ('salt', ?)", (b"s" * 32,))
        conn.execute(
            "INSERT INTO lists VALUES ('kubelet','/v1/pods','ns','','7','PodList','v1',?)", (1e10,)
        )
        conn.execute(
            "INSERT INTO objects VALUES ('kubelet','/v1/pods','ns','','ns','a','7','{}',?)",
            (POD,),
        )
        conn.execute("INSERT INTO raw VALUES ('kubelet','/api?|json',200,'a/j',?,?)", (b"{}", 1e10))
        conn.execute("INSERT INTO credentials VALUES ('kubelet','d1')")
        grant = ("kubelet", "d1", "/v1/pods", "ns") + (("", "") if version >= 2 else ())
        conn.execute(f"INSERT INTO grants VALUES ({','.join('?' * len(grant))})", grant)
        conn.execute(f"PRAGMA user_version={version}")


@pytest.mark.parametrize("version", [0, 2])
def test_a_store_of_a_previous_format_is_migrated(tmp_path: Path, version: int) -> None:
    _old_store(tmp_path / "old", version=version)
    store = HubStore.open(tmp_path / "old")
    try:
        assert store.problems == []
        record = store.find_list("kubelet", "/v1/pods", "ns", "")
        assert record is not None and record.rv == "7"
        assert [o.body for o in store.list_objects("kubelet", "/v1/pods", "ns", "", "ns")] == [POD]
        assert store.get_object("kubelet", "/v1/pods", "ns", "a") == POD
        raw = store.get_raw("kubelet", "/api?|json")
        assert raw is not None and raw.body == b"{}"
        assert store.has_credential("kubelet", "d1")
        # Grants of format 1 could have been earned through a non-canonical path: dropped.
        granted = store.has_grant("kubelet", "d1", "/v1/pods", "ns", "", "")
        assert granted == (version >= 2)
        assert store.damaged_rows == 0
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "old" / "hub.sqlite") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == STORE_FORMAT
        # Raw answers (OpenAPI documents of megabytes) moved to a table with rowids, whose
        # key look-ups do not read the large rows they pass.
        (raw_table,) = conn.execute("SELECT sql FROM sqlite_master WHERE name='raw'").fetchone()
        assert "WITHOUT ROWID" not in raw_table.upper()


def test_a_zeroed_page_anywhere_is_refused_or_served_intact_and_logged(
    recorded: Recorded, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A disk that loses a sector zeroes a page: the header page, an index page, a page of rows.
    # Offline each answer is still the recorded object or a refusal, and an answer that lost
    # what was recorded comes with a log line saying what the hub found.
    page = 4096
    pages = recorded.directory.joinpath("hub.sqlite").stat().st_size // page
    assert pages >= 3
    intact = asyncio.run(_offline_answers(recorded.copy_to(tmp_path / "intact")))
    for index in range(pages):
        store = recorded.copy_to(tmp_path / f"zeroed-{index}")
        with (store / "hub.sqlite").open("r+b") as handle:
            handle.seek(index * page)
            handle.write(bytes(page))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edgecache.hub"):
            answers = asyncio.run(_offline_answers(store))
        _assert_recorded_or_refused(answers, recorded)
        if answers != intact:
            assert [r for r in caplog.records if r.levelno >= logging.WARNING], (index, answers)
