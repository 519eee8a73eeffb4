"""Pure pieces of the hub: request classification, selectors, store keys and crash handling."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import edgecache.hub
from edgecache.errors import ConfigError
from edgecache.hub._config import RecordingSettings
from edgecache.hub._recording import Recorder
from edgecache.hub._requestinfo import canonical_selector, component_of, parse_request
from edgecache.hub._store import HubStore, ObjectRow, RawResponse, WatchChange
from edgecache.k8s.selectors import FieldSelector, LabelSelector


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api", {}, ("discovery", "", "", "", "")),
        ("GET", "/apis/apps/v1", {}, ("discovery", "", "", "", "")),
        ("GET", "/openapi/v3", {}, ("discovery", "", "", "", "")),
        ("GET", "/healthz", {}, ("nonresource", "", "", "", "")),
        ("GET", "/api/v1/pods", {}, ("list", "/v1/pods", "", "", "")),
        (
            "GET",
            "/api/v1/namespaces/ns/pods",
            {"watch": "true"},
            ("watch", "/v1/pods", "ns", "", ""),
        ),
        ("GET", "/api/v1/watch/namespaces/ns/pods", {}, ("watch", "/v1/pods", "ns", "", "")),
        ("GET", "/api/v1/namespaces/ns/pods/p/log", {}, ("get", "/v1/pods", "ns", "p", "log")),
        ("GET", "/api/v1/namespaces/ns", {}, ("get", "/v1/namespaces", "ns", "ns", "")),
        (
            "PUT",
            "/api/v1/namespaces/ns/finalize",
            {},
            ("update", "/v1/namespaces", "ns", "ns", "finalize"),
        ),
        (
            "DELETE",
            "/apis/data.edgecache.io/v1alpha1/namespaces/ns/datasets",
            {},
            ("deletecollection", "data.edgecache.io/v1alpha1/datasets", "ns", "", ""),
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/ns/deployments/d/scale",
            {},
            ("patch", "apps/v1/deployments", "ns", "d", "scale"),
        ),
    ],
)
def test_parse_request(
    method: str, path: str, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    info = parse_request(method, path, query)
    gvr = info.gvr if info.is_resource else ""
    assert (info.verb, gvr, info.namespace, info.name, info.subresource) == expected


def test_component_and_selector_keys() -> None:
    assert component_of("kubectl/v1.32.4 (linux/amd64) kubernetes/abc") == "kubectl"
    assert component_of("Kubelet/v1.30") == "kubelet"
    assert component_of("") == "unknown"
    assert canonical_selector("b=2, a=1", "") == canonical_selector("a=1,b=2", "")
    assert canonical_selector("k in (x,y),a", "") == "l=a,k in (x,y);f="
    assert canonical_selector("", "") == ""


def test_label_and_field_selectors() -> None:
    match = LabelSelector.parse("app in (web,db),tier!=cache,!legacy,env").matches_labels
    assert match({"app": "web", "env": "prod"})
    assert not match({"app": "web", "env": "prod", "legacy": "1"})
    assert not match({"app": "api", "env": "prod"})
    assert not match({"app": "db", "tier": "cache", "env": "x"})
    assert LabelSelector.parse("").requirements == ()
    fields = FieldSelector.parse("spec.nodeName=n1,status.phase!=Failed").matches
    assert fields({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    assert not fields({"spec": {"nodeName": "n2"}})
    with pytest.raises(ConfigError):
        FieldSelector.parse("spec.nodeName")


def _row(name: str, rv: str, labels: dict[str, str] | None = None) -> ObjectRow:
    body = {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}
    return ObjectRow("ns", name, rv, json.dumps(labels or {}), json.dumps(body).encode())


def test_store_list_replacement_and_watch_events(tmp_path: Path) -> None:
    store = HubStore.open(tmp_path)
    try:
        key = ("kubelet", "/v1/pods", "ns", "")
        store.replace_list(
            *key, rv="5", kind="PodList", api_version="v1", rows=[_row("a", "3"), _row("b", "5")]
        )
        store.put_object("kubelet", "/v1/pods", _row("b", "5"))
        store.apply_watch(
            *key,
            changes=[WatchChange("ADDED", _row("c", "6")), WatchChange("DELETED", _row("b", "7"))],
            rv="7",
        )
        record = store.find_list("kubelet", "/v1/pods", "ns", "")
        assert record is not None and record.rv == "7"
        assert [o.name for o in store.list_objects(*key, "ns")] == ["a", "c"]
        assert store.get_object("kubelet", "/v1/pods", "ns", "b") is None  # GET copy gone too
        store.replace_list(*key, rv="9", kind="PodList", api_version="v1", rows=[_row("c", "6")])
        assert [o.name for o in store.list_objects(*key, "ns")] == ["c"]
        assert store.find_list("kubectl", "/v1/pods", "ns", "") is None  # per component
        digest = store.credential_digest("kubelet", "Bearer secret")
        store.add_credential("kubelet", digest)
        assert store.has_credential("kubelet", digest)
        assert "secret" not in digest
    finally:
        store.close()


def test_store_keeps_the_newest_snapshot_when_answers_arrive_out_of_order(
    tmp_path: Path,
) -> None:
    """Two clients on one list key: a slow LIST (resourceVersion 100) recorded after watch
    events up to 105, and a watch replaying events older than a newer list. A stored list is
    always the server's state at its resourceVersion: never rolled back to an older snapshot,
    never mixed with events it already contains (found by test_hub_faults.py)."""
    store = HubStore.open(tmp_path)
    try:
        key = ("kubelet", "/v1/pods", "ns", "")

        def state() -> tuple[str | None, dict[str, str]]:
            record = store.find_list(*key[:3], "")
            objects = store.list_objects(*key, "ns")
            bodies = {o.name: json.loads(o.body)["metadata"]["resourceVersion"] for o in objects}
            return (record.rv if record else None), bodies

        rows_at_100 = [_row("a", "90"), _row("b", "95")]
        store.replace_list(*key, rv="100", kind="PodList", api_version="v1", rows=rows_at_100)
        store.apply_watch(*key, changes=[WatchChange("MODIFIED", _row("a", "105"))], rv="105")
        # The slow LIST of resourceVersion 100 is recorded now: the store stays at 105.
        store.replace_list(*key, rv="100", kind="PodList", api_version="v1", rows=rows_at_100)
        assert state() == ("105", {"a": "105", "b": "95"})
        store.apply_watch(*key, changes=[WatchChange("MODIFIED", _row("b", "110"))], rv="110")
        assert state() == ("110", {"a": "105", "b": "110"})
        # A watch from 100 replaying 101..108 after the list of 110: nothing goes back.
        store.apply_watch(
            *key,
            changes=[
                WatchChange("MODIFIED", _row("a", "103")),
                WatchChange("DELETED", _row("b", "108")),
            ],
            rv="108",
        )
        assert state() == ("110", {"a": "105", "b": "110"})
        # A newer list replaces as always.
        store.replace_list(
            *key, rv="120", kind="PodList", api_version="v1", rows=[_row("c", "115")]
        )
        assert state() == ("120", {"c": "115"})
    finally:
        store.close()


def test_corrupt_store_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / "hub.sqlite").write_bytes(b"this is not a database" * 100)
    store = HubStore.open(tmp_path)
    try:
        assert store.stats()[0] == 0
        assert list(tmp_path.glob("hub.sqlite.corrupt-*"))
    finally:
        store.close()


def test_public_api_is_complete_and_sorted() -> None:
    assert edgecache.hub.__all__ == sorted(edgecache.hub.__all__)
    for name in edgecache.hub.__all__:
        assert hasattr(edgecache.hub, name)


def test_store_expires_records_nothing_refreshed(tmp_path: Path) -> None:
    store = HubStore.open(tmp_path)
    try:
        old_key = ("kubectl", "/v1/pods", "ns", "l=app=once;f=")
        store.replace_list(
            *old_key, rv="3", kind="PodList", api_version="v1", rows=[_row("a", "3")]
        )
        store.put_raw("kubectl", "/api?|json", RawResponse(200, "application/json", b"{}"))
        cutoff = time.time() + 0.001
        time.sleep(0.01)
        fresh_key = ("kubelet", "/v1/pods", "ns", "")
        store.replace_list(
            *fresh_key, rv="4", kind="PodList", api_version="v1", rows=[_row("b", "4")]
        )
        assert store.expire(cutoff) == 2
        assert store.find_list("kubectl", "/v1/pods", "ns", "l=app=once;f=") is None
        assert store.list_objects(*old_key, "ns") == []
        assert store.get_raw("kubectl", "/api?|json") is None
        assert [o.name for o in store.list_objects(*fresh_key, "ns")] == ["b"]
    finally:
        store.close()


def test_store_files_are_owner_only(tmp_path: Path) -> None:
    store = HubStore.open(tmp_path)
    try:
        store.put_raw("kubelet", "k", RawResponse(200, "application/json", b"{}"))
        for path in tmp_path.glob("hub.sqlite*"):
            assert path.stat().st_mode & 0o077 == 0, path
    finally:
        store.close()


async def test_recording_backlog_is_bounded(tmp_path: Path) -> None:
    store = HubStore.open(tmp_path)
    try:
        recorder = Recorder(store, RecordingSettings(max_queued_bytes=1000))
        info = parse_request("GET", "/api/v1/namespaces/ns/pods", {})
        items = [{"metadata": {"name": f"p{i}", "namespace": "ns"}} for i in range(3)]

        def body(rv: int, padding: int) -> bytes:
            listing = {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(rv)},
            }
            return json.dumps({**listing, "items": items, "pad": "x" * padding}).encode()

        common = {"key": "k", "query": {}, "status": 200, "content_type": "application/json"}
        recorder.record(info, "kubelet", body=body(1, 2000), **common)  # over the bound: dropped
        await recorder.drain()
        assert store.find_list("kubelet", "/v1/pods", "ns", "") is None
        recorder.record(info, "kubelet", body=body(2, 0), **common)
        await recorder.drain()
        record = store.find_list("kubelet", "/v1/pods", "ns", "")
        assert record is not None and record.rv == "2"
    finally:
        store.close()
