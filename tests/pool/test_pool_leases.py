"""Pool membership from Leases through a real edge hub in front of the Kubernetes API test
server: members join, a node that stops renewing is dropped within seconds, another pool's
nodes are never members, and with the WAN cut the members stay."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from edgecache_testservers.kubeapi import KubeAPIServer
from edgecache_testservers.kubeapi.fixtures import kube_api  # noqa: F401
from hub.conftest import cut, fast_settings, k8s_client

from edgecache.hub import HubServer
from edgecache.k8s.api import Kube
from edgecache.pool import LeaseMembership, LeaseSettings, Member

pytestmark = pytest.mark.timeout(120)

FAST = LeaseSettings(namespace="default", renew_seconds=0.2, duration_seconds=1.5)


@pytest.fixture
async def hub(tmp_path: Path, kube_api: KubeAPIServer) -> AsyncIterator[HubServer]:  # noqa: F811
    async with HubServer(fast_settings(tmp_path / "hub", kube_api.url)) as server:
        yield server


@pytest.fixture
def make_member(hub: HubServer) -> AsyncIterator[Callable[..., LeaseMembership]]:
    made: list[LeaseMembership] = []

    def make(name: str, pool: str = "pool-a") -> LeaseMembership:
        kube = Kube(k8s_client(hub.url, agent="edgecache-agent/pool"), request_timeout_seconds=2)
        member = LeaseMembership(
            Member(name, f"127.0.0.1:{10000 + len(made)}"),
            kube,
            pool=lambda: pool,
            settings=FAST,
            cooldown_seconds=1,
        )
        made.append(member)
        return member

    yield make  # type: ignore[misc]
    for member in made:
        member.kube.close()


async def until(members: list[LeaseMembership], ok: Callable[[], bool], *, within: float) -> None:
    """Wait, round by round, until ``ok()`` holds (AssertionError after ``within`` seconds)."""
    deadline = time.monotonic() + within
    while not ok():
        assert time.monotonic() < deadline, "condition not reached in time"
        for member in members:
            member.round_done.clear()
        for member in members:
            await member.round_done.wait()


def names(member: LeaseMembership) -> set[str]:
    return {m.name for m in member.live()}


async def test_members_join_leave_and_stale_ones_are_dropped(
    make_member: Callable[..., LeaseMembership],
    kube_api: KubeAPIServer,  # noqa: F811
) -> None:
    a, b, c = (make_member(n) for n in ("node-a", "node-b", "node-c"))
    other = make_member("node-x", pool="pool-b")
    running = [a, b, c, other]
    for m in running:
        await m.start()
    everyone = {"node-a", "node-b", "node-c"}
    await until(running, lambda: all(names(m) == everyone for m in (a, b, c)), within=10)
    assert names(other) == {"node-x"}  # another pool's nodes are never members
    assert {m.address for m in a.live()} == {m.me.address for m in (a, b, c)}
    # c stops cleanly: its Lease is deleted, and it is gone at the next listing.
    await c.stop()
    running.remove(c)
    await until(running, lambda: names(a) == names(b) == {"node-a", "node-b"}, within=5)
    # d renews once and dies (its Lease stays): dropped once its renewTime stops moving.
    d = make_member("node-d")
    await d.round("pool-a")
    await until(running, lambda: "node-d" in names(a), within=5)
    dropped_at = time.monotonic()
    await until(running, lambda: "node-d" not in names(a), within=10)
    assert time.monotonic() - dropped_at <= FAST.duration_seconds + 2
    for m in running:
        await m.stop()


async def test_with_the_wan_cut_the_members_stay(
    make_member: Callable[..., LeaseMembership],
    hub: HubServer,
    kube_api: KubeAPIServer,  # noqa: F811
) -> None:
    a, b = make_member("node-a"), make_member("node-b")
    for m in (a, b):
        await m.start()
    await until([a, b], lambda: names(a) == names(b) == {"node-a", "node-b"}, within=10)
    await cut(kube_api, hub)
    await until([a, b], lambda: not a.renewing and not b.renewing, within=10)
    stale_after = time.monotonic() + FAST.duration_seconds + 1
    await until([a, b], lambda: time.monotonic() > stale_after, within=10)
    assert names(a) == names(b) == {"node-a", "node-b"}
    for m in (a, b):
        m.kube.close()  # stop() would wait on the cut API for its delete
    for m in (a, b):
        if m._task is not None:
            m._task.cancel()
