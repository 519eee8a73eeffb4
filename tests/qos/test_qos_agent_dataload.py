"""A pod's reader keeps its idle block latency while the node's agent (its own process) loads
a Dataset and runs a DataLoad over the same thin WAN link: the agent's view materialisation
and DataLoads are background work, the reader's reads foreground, and the two processes see
each other's foreground through the QoS state directory of the cache directory they share
(the pod mounts the node's cache directory).

Run with ``EDGECACHE_TEST_QOS=off`` to check the reader's side of it matters: the agent's
QoS cannot be turned off from here, so that only shows how much a reader that does not mark
its foreground suffers (it must fail then).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent.conftest import (
    AgentProcess,
    dataload,
    dataset,
    runtime,
    seed_cluster,
    wait_for,
)
from edgecache_testservers.kubeapi import KubeAPIServer
from edgecache_testservers.kubeapi.fixtures import TEST_BOOKMARK_INTERVAL_SECONDS
from qoslib import BLOCK, Site, cache_options
from test_qos_reader_latency import assert_within_one_block, reader_process

# Runs alone (conftest.py): latencies measured against an idle baseline.
pytestmark = [pytest.mark.exclusive, pytest.mark.timeout(240)]

READER_BLOCKS = 8
LOAD_FILES = 96
"""Files of two blocks each: about 40 s of the 10 Mbit/s link, far longer than the loaded
reads (the test ends before the load does)."""


@pytest.fixture
def cluster() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(bookmark_interval_seconds=TEST_BOOKMARK_INTERVAL_SECONDS) as api:
        seed_cluster(api)
        yield api


@pytest.fixture
def agent(cluster: KubeAPIServer, tmp_path: Path) -> Iterator[AgentProcess]:
    started = AgentProcess(tmp_path, "a1", cluster.url, metadata_ttl=60).start()
    yield started
    started.stop()


def view_files(agent: AgentProcess) -> int:
    return sum(1 for p in agent.view("load").rglob("*") if p.is_file())


def test_a_pod_reader_keeps_its_idle_latency_while_the_agent_runs_a_dataload(
    site: Site, cluster: KubeAPIServer, agent: AgentProcess
) -> None:
    for name in ("idle", "loaded"):
        site.put(f"reader/{name}.bin", os.urandom(READER_BLOCKS * BLOCK))
    for i in range(LOAD_FILES):
        site.put(f"load/part{i:02d}.bin", os.urandom(2 * BLOCK))
    # The pod mounts the node's cache directory (the agent's), and with it the QoS state.
    options = cache_options(str(agent.cache_dir))
    idle = reader_process(site, "reader/idle.bin", options)
    before = site.wan.bytes_down
    body = dataset("load", f"s3://{site.bucket}/load")
    body["spec"]["mounts"][0]["options"] = {
        "fs.s3a.endpoint": site.wan.endpoint,
        "aws.accessKeyId": "k",
        "aws.secretAccessKey": "s",
    }
    cluster.create(body)
    cluster.create(runtime("load", blockSize=f"{BLOCK // 1024}KiB"))
    cluster.create(dataload("warm", "load"))
    cluster.patch(
        "data.edgecache.io/v1alpha1",
        "DataLoad",
        "warm",
        {"status": {"run": 1}},
        "default",
        subresource="status",
    )
    wait_for(lambda: site.wan.bytes_down > before + 4 * BLOCK, timeout_seconds=90, what="the load")
    loaded = reader_process(site, "reader/loaded.bin", options)
    assert_within_one_block(idle, loaded)
    assert view_files(agent) < LOAD_FILES, "the agent's load ended before the reader's reads"
