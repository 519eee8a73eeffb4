"""The issue's test: three ``edgecache agent`` processes of one nodepool (own peer ports, roots
and cache directories, membership from Leases) materialise one dataset from S3 behind the WAN
emulator: the WAN carries it about once, every view is exact; one agent SIGKILLed while the
others load leaves their views exact. (The issue's 256 MiB dataset is 32 MiB in the normal
run, to keep the suite fast, and 256 MiB with EDGECACHE_RELIABILITY=long; bench/pool_bench.py
reads 256 MiB too.)"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from agent.conftest import AgentProcess, dataset, runtime, wait_for
from edgecache_testservers.kubeapi import KubeAPIServer, objects
from edgecache_testservers.kubeapi.fixtures import TEST_BOOKMARK_INTERVAL_SECONDS
from edgecache_testservers.wan import WANEmulator, WANProfile

from edgecache.k8s.objects import NODEPOOL_LABEL
from edgecache.pool import AGENT_ENV, TOKEN_FILE_ENV

from .conftest import Dataset, MiB, make_dataset

pytestmark = pytest.mark.timeout(300)
LEASE = ("coordination.k8s.io/v1", "Lease")
ROOT = Path(__file__).resolve().parents[2]
NODES = ("a1", "a2", "a3")


@pytest.fixture
def cluster() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(bookmark_interval_seconds=TEST_BOOKMARK_INTERVAL_SECONDS) as api:
        for path in sorted((ROOT / "manifests/crds").glob("*.yaml")):
            api.create(yaml.safe_load(path.read_text()))
        for name in NODES:
            api.create(objects.node(name, labels={NODEPOOL_LABEL: "pool-a"}))
        yield api


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    """Agents a test starts; all are stopped at the end."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()


def metrics(agent: AgentProcess) -> str:
    with urllib.request.urlopen(f"{agent.health_url}/metrics", timeout=5) as response:
        return str(response.read().decode())


def members_seen(agent: AgentProcess) -> float:
    found = re.search(r"^edgecache_pool_members (\S+)$", metrics(agent), re.M)
    return float(found.group(1)) if found else 0.0


def peer_requests(agents: list[AgentProcess]) -> dict[str, list[str]]:
    """Each agent's peer request counters (for a failure's message)."""
    return {
        a.node: re.findall(r"^edgecache_peer_requests_total\{.*$", metrics(a), re.M)
        for a in agents
        if a.alive()
    }


def start_pool(
    cluster: KubeAPIServer,
    tmp_path: Path,
    token_file: Path,
    agents: list[AgentProcess],
    *extra_flags: str,
) -> list[AgentProcess]:
    for node in NODES:
        extra = (
            "--peer-listen=127.0.0.1:0",
            f"--peer-token-file={token_file}",
            "--peer-namespace=default",
            *extra_flags,
        )
        agents.append(AgentProcess(tmp_path, node, cluster.url, metadata_ttl=60, extra=extra))
        agents[-1].start()
    # The dataset comes once every agent sees the whole pool (else the first blocks would be
    # fetched by each node alone).
    for agent in agents:
        # Generous: under load (a shared 2-core machine) agents take tens of seconds to start.
        wait_for(
            lambda a=agent: members_seen(a) == len(NODES),
            timeout_seconds=90,
            what=f"{agent.node}'s pool",
        )
    return agents


def place(cluster: KubeAPIServer, data: Dataset, endpoint: str) -> None:
    body = dataset("shared", f"s3://{data.bucket}/data")
    body["spec"]["mounts"][0]["options"] = {
        "fs.s3a.endpoint": endpoint,
        "aws.accessKeyId": "k",
        "aws.secretAccessKey": "s",
    }
    cluster.create(body)
    cluster.create(runtime("shared", blockSize="1MiB"))


def view_digests(agent: AgentProcess) -> dict[str, str]:
    """File name -> sha256 of the files in the agent's view of the dataset."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(agent.view("shared").rglob("*"))
        if p.is_file()
    }


def expected_views(data: Dataset) -> dict[str, str]:
    return {url.rsplit("/", 1)[1]: digest for url, digest in data.sha256.items()}


def test_three_agents_fetch_a_dataset_over_the_wan_once(
    cluster: KubeAPIServer,
    tmp_path: Path,
    token_file: Path,
    agents: list[AgentProcess],
    moto_endpoint: str,
    wan: WANEmulator,
    reliability: Any,
) -> None:
    # 32 MiB in the normal run; the 256 MiB with EDGECACHE_RELIABILITY=long.
    data = make_dataset(moto_endpoint, files=8, file_bytes=reliability.scale(4 * MiB, 32 * MiB))
    # What is measured is the sharing, not how fast a busy owner answers: within the default
    # first-byte timeout (1 s) an owner on a loaded machine (three agents, moto, the WAN
    # emulator and other tests on 2 cores) may not get its status line out, and the asker
    # then fetches that block over the WAN as well (once 1.12x). A silent peer's timeout is
    # tested in test_pool_processes.py, a killed agent below.
    pool = start_pool(cluster, tmp_path, token_file, agents, "--peer-first-byte-timeout=30")
    place(cluster, data, wan.endpoint)
    want = expected_views(data)
    for agent in pool:
        wait_for(
            lambda a=agent: view_digests(a) == want,
            timeout_seconds=reliability.scale(120, 600),
            what=agent.node,
        )
    reliability.reads_checked = len(pool) * len(want)
    reliability.notes.update(dataset_bytes=data.size, wan_bytes_down=wan.bytes_down)
    assert wan.bytes_down <= 1.05 * data.size, (wan.bytes_down, data.size, peer_requests(pool))


def test_an_agent_stopped_with_sigterm_deletes_its_lease_and_exits_cleanly(
    cluster: KubeAPIServer, tmp_path: Path, token_file: Path, agents: list[AgentProcess]
) -> None:
    pool = start_pool(cluster, tmp_path, token_file, agents)
    leases = {o["metadata"]["name"] for o in cluster.list_objects(*LEASE, "default")}
    assert leases == {f"edgecache-pool-{node}" for node in NODES}
    leaving = pool[0]
    # The Lease goes with the agent, through the agent's own API client (closed after it).
    assert leaving.stop() == 0, leaving.log.read_text()
    assert "error" not in leaving.log.read_text(), leaving.log.read_text()
    leases = {o["metadata"]["name"] for o in cluster.list_objects(*LEASE, "default")}
    assert leases == {f"edgecache-pool-{node}" for node in NODES[1:]}
    # The others drop it at their next listing, not a Lease duration later.
    for agent in pool[1:]:
        wait_for(
            lambda a=agent: members_seen(a) == len(NODES) - 1,
            timeout_seconds=30,
            what=f"{agent.node} to see {leaving.node} leave",
        )


def test_an_agent_killed_mid_load_leaves_the_other_views_exact(
    cluster: KubeAPIServer,
    tmp_path: Path,
    token_file: Path,
    agents: list[AgentProcess],
    moto_endpoint: str,
    wan: WANEmulator,
) -> None:
    wan.set_profile(WANProfile(rtt_ms=2, mbit=100))  # the load lasts a few seconds
    data = make_dataset(moto_endpoint, files=8, file_bytes=4 * MiB)
    a1, a2, a3 = start_pool(cluster, tmp_path, token_file, agents)
    place(cluster, data, wan.endpoint)
    wait_for(
        lambda: wan.bytes_down > data.size // 4, timeout_seconds=90, what="a quarter of the load"
    )
    a3.kill()
    want = expected_views(data)
    for agent in (a1, a2):
        wait_for(lambda a=agent: view_digests(a) == want, timeout_seconds=120, what=agent.node)


def peer_address(agent: AgentProcess) -> str:
    """Where the agent's block server listens (its log says so once it serves)."""
    found = re.search(r"serving at (\S+)", agent.log.read_text())
    assert found, agent.log.read_text()[-2000:]
    return found.group(1)


def read_in_a_pod(
    agent: AgentProcess, token_file: Path, url: str, endpoint: str, cache_dir: Path
) -> dict[str, Any]:
    """``pod_reader.py`` with the environment a pod on the agent's node has."""
    job = {
        "urls": [url],
        "options": {
            "s3": {"endpoint_url": endpoint, "key": "k", "secret": "s"},
            "edgecache": {"cache_dir": str(cache_dir), "block_size": MiB},
        },
    }
    env = {**os.environ, AGENT_ENV: peer_address(agent), TOKEN_FILE_ENV: str(token_file)}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("pod_reader.py")), json.dumps(job)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    answer: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return answer


def test_pod_readers_get_blocks_through_their_agents_from_the_pool(
    cluster: KubeAPIServer,
    tmp_path: Path,
    token_file: Path,
    agents: list[AgentProcess],
    moto_endpoint: str,
    wan: WANEmulator,
) -> None:
    # The placed Dataset gives the agents their engine for the store; the pods read an object
    # outside it, which no view holds.
    data = make_dataset(moto_endpoint, files=1, file_bytes=MiB)
    payload = os.urandom(8 * MiB)
    boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
    ).put_object(Bucket=data.bucket, Key="other/x.bin", Body=payload)
    url = f"edgecache::s3://{data.bucket}/other/x.bin"
    a1, a2, _ = start_pool(cluster, tmp_path, token_file, agents)
    place(cluster, data, wan.endpoint)
    want = expected_views(data)
    for agent in (a1, a2):
        wait_for(lambda a=agent: view_digests(a) == want, timeout_seconds=120, what=agent.node)
    before = wan.bytes_down
    first = read_in_a_pod(a1, token_file, url, wan.endpoint, tmp_path / "pod-1-cache")
    after_first = wan.bytes_down
    # The second pod mounts its node's cache directory (the agent's own): the agent stores
    # the block there while the reader waits for it, without waiting for the reader's lock.
    second = read_in_a_pod(a2, token_file, url, wan.endpoint, a2.cache_dir)
    digest = hashlib.sha256(payload).hexdigest()
    assert first["sha256"] == second["sha256"] == {url: digest}
    # Node 1's pod: every block through its agent, each fetched once for the pool; node 2's
    # pod read what the pool held (what its agent kept for node 1 it finds in the directory
    # it shares with it, the rest comes from node 1): only its metadata crossed the WAN.
    assert first["peer_hits"] == 8
    assert after_first - before <= 1.05 * len(payload), peer_requests(agents)
    assert wan.bytes_down - after_first < 0.05 * len(payload), peer_requests(agents)
    assert second["peer_hits"] > 0
