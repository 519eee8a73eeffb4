"""``edgecache agent``: the command line over :class:`~edgecache.agent.Agent`.

Connects like ``edgecache hub`` and ``edgecache controller`` (the shared flags of
:mod:`edgecache.k8s.options`: ``--server``, ``--kubeconfig``, or in-cluster), normally through
the node's edge hub, and runs until SIGINT/SIGTERM. When serving, one line on stdout names the
health URL. Mistakes print one line on stderr and exit 2.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from edgecache.agent._agent import AGENT_USER_AGENT, Agent
from edgecache.agent._csi import parse_csi_endpoint
from edgecache.agent._settings import AgentSettings
from edgecache.errors import ConfigError
from edgecache.k8s import (
    ConnectionFlags,
    ConnectionSettings,
    connection_options,
    official_api_client,
)
from edgecache.k8s.objects import NODEPOOL_LABEL
from edgecache.k8s.service import (
    address_flag,
    announce,
    configure_logging,
    positive_flag,
    run_service,
)
from edgecache.pool import (
    LeaseMembership,
    LeaseSettings,
    Member,
    PeerTimeouts,
    PoolNode,
    PoolSettings,
)

if TYPE_CHECKING:
    from edgecache.agent._csi_server import CsiServer

__all__ = ["agent_command"]


def _csi_server(agent: Agent, socket_path: Path, kubelet_dir: Path) -> CsiServer:
    """The CSI node service over ``agent``'s views (needs ``edgecache[agent]``: grpcio)."""
    try:
        from edgecache.agent._csi_node import NodeSettings
        from edgecache.agent._csi_server import CsiServer
    except ImportError as exc:
        raise ConfigError(
            f"--csi-endpoint needs gRPC ({exc.name} is missing): pip install 'edgecache[agent]'"
        ) from exc
    settings = NodeSettings(
        node_id=agent.settings.node_name,
        views_root=agent.settings.root,
        kubelet_dir=kubelet_dir,
        nodepool=lambda: (agent.node_labels or {}).get(NODEPOOL_LABEL),
    )
    return CsiServer(socket_path, settings, agent, ready=agent.started.is_set)


def _pool_node(agent: Agent, settings: PoolSettings | None) -> PoolNode | None:
    """The agent's part in its nodepool's cache sharing: static ``--peers``, else Leases
    through the agent's API connection (the node's hub) in the pool its Node's label names."""
    if settings is None:
        return None
    if settings.peers:
        node = PoolNode(settings)
        node.add_holder(agent.held_block)
        return node

    def leases(me: Member) -> LeaseMembership:
        return LeaseMembership(
            me,
            agent.kube,
            pool=lambda: (agent.node_labels or {}).get(NODEPOOL_LABEL),
            settings=settings.leases,
            cooldown_seconds=settings.timeouts.cooldown_seconds,
        )

    node = PoolNode(settings, membership=leases)
    node.add_holder(agent.held_block)
    return node


async def _serve(
    agent: Agent, csi: CsiServer | None, pool: PoolNode | None, stop: asyncio.Event
) -> None:
    if pool is not None:
        # Before the views: every engine the agent opens is served to peers and asks them.
        await pool.start()
    if csi is not None:
        # Before the views: a publish that comes early waits (UNAVAILABLE, "not placed") and
        # Probe says not ready until the agent has loaded its local state.
        await csi.start()
    try:
        task = asyncio.create_task(agent.run(stop))
        started = asyncio.create_task(agent.started.wait())
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        if agent.started.is_set():
            csi_text = f", CSI on unix://{csi.socket_path}" if csi is not None else ""
            announce(
                f"edgecache agent: node {agent.settings.node_name} serving views in "
                f"{agent.settings.views_dir}{csi_text}, health on {agent.health_url}"
            )
        await task
    finally:
        try:
            if csi is not None:
                await csi.stop()
            if pool is not None:
                await pool.stop()  # deletes this node's Lease through the agent's client
        finally:
            agent.close()


@click.command(
    "agent", context_settings={"help_option_names": ["-h", "--help"], "show_default": True}
)
@click.option("--node-name", required=True, help="The Node this agent runs on (its nodepool).")
@connection_options()
@click.option(
    "--root",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Views go to ROOT/datasets/<namespace>/<name>/ (agent state in ROOT/.edgecache-agent).",
)
@click.option(
    "--cache-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The node's block cache directory (wins over a runtime level's path).",
)
@click.option(
    "--health-listen", default="0.0.0.0:10269", help="host:port of /healthz /readyz /metrics."
)
@click.option(
    "--csi-endpoint",
    help="unix:///path/csi.sock: serve the CSI node service there (NodePublishVolume "
    "bind-mounts views read-only into pods; the socket is mode 0600).",
)
@click.option(
    "--kubelet-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/kubelet"),
    help="kubelet's root directory: the CSI service mounts only under its pods/.",
)
@click.option(
    "--metadata-ttl",
    type=float,
    default=60.0,
    help="Seconds a mount listing is trusted: changed objects reach the view within this.",
)
@click.option(
    "--report-interval",
    type=float,
    default=2.0,
    help="Least seconds between two writes of one CacheReport while progress changes.",
)
@click.option(
    "--peer-listen",
    help="host:port of the pool's block server (serves this node's cache to its nodepool "
    "peers; needs --peer-token-file). Without it the node shares nothing.",
)
@click.option(
    "--advertise", help="host:port peers reach the block server at (default: --peer-listen)."
)
@click.option(
    "--peer-token-file",
    type=click.Path(dir_okay=False),
    help="File with the pool's shared token (a mounted Secret); peers without it get 401.",
)
@click.option(
    "--peers",
    help="Static pool members, comma separated [NAME=]HOST:PORT (this node may be listed); "
    "default: Leases through the API, in the pool of the Node's apps.openyurt.io/nodepool.",
)
@click.option(
    "--peer-namespace",
    default=lambda: os.environ.get("POD_NAMESPACE") or "edgecache-system",
    show_default="$POD_NAMESPACE or edgecache-system",
    help="Namespace of the pool's Leases.",
)
@click.option(
    "--peer-connect-timeout",
    type=float,
    default=PeerTimeouts.connect_seconds,
    help="Seconds a connect to a pool peer may take before the block comes from the backend.",
)
@click.option(
    "--peer-first-byte-timeout",
    type=float,
    default=PeerTimeouts.first_byte_seconds,
    help="Seconds from asking a pool peer for a block to its answer's status line (a live "
    "owner answers before its own WAN fetch) before the block comes from the backend.",
)
@click.option("-v", "--verbose", is_flag=True, help="Also log informational events.")
def agent_command(
    *,
    node_name: str,
    connection: ConnectionFlags,
    root: Path,
    cache_dir: Path,
    health_listen: str,
    csi_endpoint: str | None,
    kubelet_dir: Path,
    metadata_ttl: float,
    report_interval: float,
    peer_listen: str | None,
    advertise: str | None,
    peer_token_file: str | None,
    peers: str | None,
    peer_namespace: str,
    peer_connect_timeout: float,
    peer_first_byte_timeout: float,
    verbose: bool,
) -> None:
    """Run the node agent: materialise the Datasets placed on this node's pool as plain files.

    It reads its Node's apps.openyurt.io/nodepool label, watches Datasets, EdgeCacheRuntimes and
    DataLoads (through the node's edge hub, so it keeps working with the WAN down), keeps each
    placed Dataset's files in ROOT/datasets/<namespace>/<name>/ (complete, verified, replaced
    atomically), runs DataLoads and writes a CacheReport per Dataset.

    \b
    Examples:
      edgecache agent --node-name edge-1 --server http://127.0.0.1:10261 \\
          --root /var/lib/edgecache/views --cache-dir /var/lib/edgecache/cache
    """
    configure_logging(verbose=verbose)
    settings_connection = ConnectionSettings()
    connection.resolve(settings_connection)
    positive_flag(metadata_ttl, "--metadata-ttl")
    positive_flag(report_interval, "--report-interval")
    for seconds, flag in (
        (peer_connect_timeout, "--peer-connect-timeout"),
        (peer_first_byte_timeout, "--peer-first-byte-timeout"),
    ):
        # A timeout must end: inf or nan would leave a read waiting on a dead peer for good.
        if not (math.isfinite(seconds) and seconds > 0):
            raise click.BadParameter("must be a positive number of seconds", param_hint=flag)
    address_flag(health_listen, "--health-listen")
    if root.resolve() == cache_dir.resolve():
        raise click.UsageError("--root and --cache-dir must be different directories")
    csi_socket = None
    if csi_endpoint is not None:
        try:
            csi_socket = parse_csi_endpoint(csi_endpoint)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--csi-endpoint") from exc
    settings = AgentSettings(
        node_name=node_name,
        root=root,
        cache_dir=cache_dir,
        health_address=health_listen,
        metadata_ttl_seconds=metadata_ttl,
        report_interval_seconds=report_interval,
        report_retry_seconds=min(report_interval, 2.0),
    )
    pool_settings = None
    if peer_listen is None:
        if advertise or peer_token_file or peers:
            raise click.UsageError("--advertise, --peer-token-file and --peers need --peer-listen")
    else:
        pool_settings = PoolSettings(
            node_name=node_name,
            listen=peer_listen,
            advertise=advertise or "",
            token_file=peer_token_file or "",
            peers=[p.strip() for p in (peers or "").split(",") if p.strip()],
            leases=LeaseSettings(namespace=peer_namespace),
            timeouts=PeerTimeouts(
                connect_seconds=peer_connect_timeout, first_byte_seconds=peer_first_byte_timeout
            ),
        )
    try:
        api_client = official_api_client(
            settings_connection, user_agent=AGENT_USER_AGENT, connection_pool_size=16
        )
        agent = Agent(settings, api_client)
        csi = None if csi_socket is None else _csi_server(agent, csi_socket, kubelet_dir)
        pool = _pool_node(agent, pool_settings)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    run_service("agent", functools.partial(_serve, agent, csi, pool))
