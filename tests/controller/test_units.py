"""The controller's small parts: formats, patches, conditions, node matching, names, the work
queue, and the informer's recovery from expired watches and a vanished API server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from edgecache_testservers.kubeapi import KubeAPIServer, objects

from edgecache.controller import Controller
from edgecache.controller._queue import WorkQueue
from edgecache.controller._status import fluid_bytes, percent, set_condition
from edgecache.dataset import NodeSelectorRequirement as Req
from edgecache.k8s.api import NODE, Kube, merge_patch, status_patch
from edgecache.k8s.informer import Informer
from edgecache.k8s.nodes import matching_nodes
from edgecache.k8s.objects import (
    parse_volume_handle,
    persistent_volume_name,
    placement_id,
    report_name,
    volume_handle,
)

from .conftest import api_client, dataset, eventually, get, runtime


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1KiB"),
        (54_714_368, "52.18MiB"),
        (10 * 2**30, "10GiB"),
        (1536 * 2**20, "1.5GiB"),
        (2**50 * 3, "3PiB"),
    ],
)
def test_fluid_size_format(size: int, text: str) -> None:
    assert fluid_bytes(size) == text


def test_percent_and_zero_totals() -> None:
    assert percent(1, 3) == "33.3%" and percent(0, 0) == "0.0%" and percent(5, 5) == "100.0%"


def test_merge_patch_turns_old_into_new() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "gone": True}
    new = {"a": 1, "b": {"c": 2, "d": 4}, "e": [1], "added": "x"}
    assert merge_patch(old, new) == {"b": {"d": 4}, "e": [1], "gone": None, "added": "x"}
    assert merge_patch(new, new) == {}


def test_a_status_patch_sends_every_field_when_anything_changed() -> None:
    # The informer's copy says Loading (it has not seen the write that made it Complete); the
    # new status is Loading again with one node back to Pending: the server must get the
    # phase too, or it keeps Complete.
    cached = {"phase": "Loading", "nodes": [{"phase": "Complete"}], "cache": {"a": 1, "old": 2}}
    new = {"phase": "Loading", "nodes": [{"phase": "Pending"}], "cache": {"a": 1}}
    assert status_patch(cached, new) == {
        "phase": "Loading",
        "nodes": [{"phase": "Pending"}],
        "cache": {"a": 1, "old": None},
    }
    assert status_patch(new, new) == {}
    assert status_patch({"gone": 1, **new}, new) == {**new, "gone": None}


def test_condition_transition_time_moves_only_on_a_change() -> None:
    first = set_condition(
        None, type_="Ready", status="False", reason="A", message="m", generation=1, now="t1"
    )
    same = set_condition(
        first, type_="Ready", status="False", reason="B", message="n", generation=2, now="t2"
    )
    flipped = set_condition(
        same, type_="Ready", status="True", reason="C", message="o", generation=2, now="t3"
    )
    assert first[0]["lastTransitionTime"] == "t1"
    assert same[0]["lastTransitionTime"] == "t1" and same[0]["reason"] == "B"
    assert flipped[0]["lastTransitionTime"] == "t3"


def test_node_selector_semantics() -> None:
    nodes = [
        {"metadata": {"name": "a", "labels": {"pool": "x", "gpu": "2"}}},
        {"metadata": {"name": "b", "labels": {"pool": "y"}}},
        {"metadata": {"name": "c", "labels": {}}},
    ]
    assert matching_nodes([[Req("pool", "In", ("x", "y"))]], nodes) == ["a", "b"]
    assert matching_nodes([[Req("pool", "NotIn", ("x",))]], nodes) == ["b", "c"]
    assert matching_nodes([[Req("pool", "Exists")], [Req("gpu", "Gt", ("1",))]], nodes) == [
        "a",
        "b",
    ]
    assert matching_nodes([[Req("pool", "DoesNotExist")]], nodes) == ["c"]
    assert matching_nodes([[Req("gpu", "Lt", ("2",))]], nodes) == []
    assert matching_nodes([[]], nodes) == []  # an empty term matches nothing


def test_names_are_valid_and_stable() -> None:
    long = "n" * 63
    node = "node-" + "x" * 240
    assert len(report_name(long, node)) <= 253
    assert report_name(long, node) != report_name(long, node[:-1] + "y")
    assert report_name("images", "edge-1") == "images.edge-1"
    terms = [{"matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]}]
    p1, p2 = placement_id("uid-1", terms), placement_id("uid-2", terms)
    assert p1 != p2 and p1 == placement_id("uid-1", [dict(t) for t in terms])
    assert len(persistent_volume_name("ns" * 31, long, p1)) <= 253
    assert parse_volume_handle(volume_handle("default", "images", p1)) == ("default", "images")
    with pytest.raises(ValueError):
        parse_volume_handle("images")


async def test_work_queue_dedups_serialises_and_backs_off() -> None:
    queue = WorkQueue(base_delay_seconds=0.01, max_delay_seconds=0.04)
    queue.add("a")
    queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    key = await queue.get()
    assert key == "a"
    queue.add("a")  # while "a" is being processed: again after, never twice at once
    assert await queue.get() == "b"
    assert len(queue) == 0
    queue.done("a")
    assert await queue.get() == "a"
    delays = [queue.retry("a") for _ in range(4)]
    assert delays == [0.01, 0.02, 0.04, 0.04]
    queue.done("a")
    assert await asyncio.wait_for(queue.get(), 1) == "a"  # came back after its backoff
    queue.forget("a")
    assert queue.failures("a") == 0
    queue.close()


async def test_informer_relists_after_an_expired_watch_and_an_api_outage() -> None:
    async with KubeAPIServer(bookmark_interval_seconds=0.2) as api:
        api.create(objects.node("n1"))
        kube = Kube(api_client(api.url))
        changes: list[tuple[str | None, str | None]] = []

        def on_change(old: object, new: object) -> None:
            name = lambda o: o["metadata"]["name"] if o else None  # noqa: E731
            changes.append((name(old), name(new)))

        informer = Informer(kube, NODE, on_change=on_change, max_backoff_seconds=0.2)
        informer.start()
        await asyncio.wait_for(informer.synced.wait(), 10)
        assert set(informer.cache) == {("", "n1")}
        api.compact()
        api.close_watches()  # the resumed watch gets 410: a fresh list follows
        api.create(objects.node("n2"))
        await eventually(lambda: ("", "n2") in informer.cache)
        await api.astop()
        await asyncio.sleep(0.3)  # a few failed attempts while the API is gone
        await api.astart()
        api.delete("v1", "Node", "n1")
        await eventually(lambda: set(informer.cache) == {("", "n2")}, what="n1 gone after outage")
        assert ("n1", None) in changes
        informer.stop()
        await informer.join()
        kube.close()


async def test_the_controller_keeps_going_through_an_api_outage(
    cluster: KubeAPIServer, controller: Controller, tmp_path: Path
) -> None:
    (tmp_path / "d").mkdir()
    cluster.stop()
    await asyncio.sleep(0.5)  # reconciles and watches fail meanwhile, with backoff
    cluster.start()
    cluster.create(dataset("after", f"file://{tmp_path / 'd'}"))
    cluster.create(runtime("after"))
    await eventually(
        lambda: get(cluster, "Dataset", "after").get("status", {}).get("phase") == "Bound",
        timeout_seconds=15,
    )
    status, text = await _readyz(controller)
    assert status == 200 and "caches synced" in text


async def _readyz(controller: Controller) -> tuple[int, str]:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(controller.health_url + "/readyz") as r:
        return r.status, await r.text()
