"""Pool nodes as real processes on loopback (own ports, own cache directories), reading one
dataset from S3 (moto) behind the WAN emulator through ``fsspec.open`` per file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from edgecache_testservers.wan import WANEmulator, WANProfile

from .conftest import Dataset, MiB, Peer, make_dataset, read_all

pytestmark = pytest.mark.timeout(240)

StartPeers = Callable[..., list[Peer]]


@pytest.fixture
def dataset(moto_endpoint: str) -> Dataset:
    return make_dataset(moto_endpoint, files=8, file_bytes=4 * MiB)  # 32 MiB


def join(peers: list[Peer], dataset: Dataset, *, views: list[list[Peer]] | None = None) -> None:
    """Give each peer its view of the pool (default: everyone), and have it look the dataset
    up, as an agent does for the datasets of its pool: a node serves the backends it has
    opened (its engines), and learns the files' metadata."""
    for i, peer in enumerate(peers):
        view = peers if views is None else views[i]
        assert peer.call("peers", peers=[p.entry for p in view])["event"] == "ok"
    for peer in peers:
        assert peer.call("list", urls=dataset.urls)["event"] == "ok"


def test_three_nodes_fetch_the_dataset_over_the_wan_once(
    start_peers: StartPeers, dataset: Dataset, wan: WANEmulator
) -> None:
    # A first-byte timeout no busy owner runs out of (see test_pool_agents.py): the sharing is
    # measured here, a silent peer's timeout below.
    peers = start_peers(3, timeouts={"first_byte_seconds": 30.0})
    join(peers, dataset)
    for result in read_all(peers, dataset.urls):
        assert result == dataset.sha256
    assert wan.bytes_down <= 1.05 * dataset.size, (wan.bytes_down, dataset.size)
    stats = [p.call("stats") for p in peers]
    # Every node got blocks from its peers and served blocks to them.
    assert all(s["peer_hits"] > 0 and s["sent"] > 0 for s in stats), stats
    assert sum(s["served"].get("fetched", 0) + s["served"].get("cached", 0) for s in stats) > 0


def test_a_peer_killed_mid_read_leaves_every_read_exact(
    start_peers: StartPeers, dataset: Dataset, wan: WANEmulator
) -> None:
    wan.set_profile(WANProfile(rtt_ms=2, mbit=100))  # reads last a few seconds
    a, b, c = peers = start_peers(3)
    join(peers, dataset)
    for peer in peers:
        peer.send("read", urls=dataset.urls)
    first = a.event()
    assert first["event"] == "read"
    c.kill()
    rest_a = a.reads()
    rest_a[first["url"]] = first["sha256"]
    assert rest_a == dataset.sha256
    assert b.reads() == dataset.sha256


def test_a_peer_serves_what_it_holds_while_the_cloud_is_cut(
    start_peers: StartPeers, dataset: Dataset, wan: WANEmulator
) -> None:
    a, b, c = peers = start_peers(3)
    join(peers, dataset)
    assert a.call("read", urls=dataset.urls[:4])["event"] == "read"
    rest = a.reads()
    assert len(rest) == 3
    wan.cut()
    # c owned a third of the blocks and is gone: a, which read everything, serves those too.
    c.kill()
    b.send("read", urls=dataset.urls[:4])
    assert b.reads() == {u: dataset.sha256[u] for u in dataset.urls[:4]}


def test_disagreeing_views_never_forward_a_request_twice(
    start_peers: StartPeers, dataset: Dataset
) -> None:
    a, b, c = peers = start_peers(3)
    # a believes the pool is {a, b}, b believes {b, c}, c believes {c, a}: each asks a node
    # that would, by its own view, ask the next one.
    join(peers, dataset, views=[[a, b], [b, c], [c, a]])
    a.send("read", urls=dataset.urls)
    assert a.reads() == dataset.sha256
    served_by_b: dict[str, Any] = b.call("stats")["served"]
    served_by_c: dict[str, Any] = c.call("stats")["served"]
    assert served_by_b.get("fetched", 0) > 0  # a asked b for b's blocks; b fetched them itself
    assert served_by_c == {}, served_by_c  # and b never passed one on to c


def test_a_silent_peer_is_skipped_after_the_first_byte_timeout(
    start_peers: StartPeers, dataset: Dataset
) -> None:
    a, b = peers = start_peers(2, timeouts={"first_byte_seconds": 0.5, "cooldown_seconds": 60})
    join(peers, dataset)
    b.pause()
    try:
        a.send("read", urls=dataset.urls)
        assert a.reads() == dataset.sha256
        asked = a.call("stats")["asked"]
    finally:
        b.resume()
    # The reads in flight to b when it went silent timed out once each; then b was left out.
    assert 1 <= asked["timeout"] <= 8, asked
    assert not asked["hit"], asked
