"""``edgecache agent``: the command line over :class:`~edgecache.agent.Agent`.

Connects like ``edgecache hub`` and ``edgecache controller`` (the shared flags of
:mod:`edgecache.k8s.options`: ``--server``, ``--kubeconfig``, or in-cluster), normally through
the node's edge hub, and runs until SIGINT/SIGTERM. When serving, one line on stdout names the
health URL. Mistakes print one line on stderr and exit 2.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click

from edgecache.agent._agent import AGENT_USER_AGENT, Agent
from edgecache.agent._settings import AgentSettings
from edgecache.errors import ConfigError, EdgeCacheError
from edgecache.k8s import ConnectionFlags, ConnectionSettings, connection_options
from edgecache.k8s.official import official_configuration

__all__ = ["agent_command"]


def _api_client(connection: ConnectionSettings) -> Any:
    try:
        from kubernetes import client
    except ImportError as exc:
        raise ConfigError(
            "edgecache agent needs the 'kubernetes' package: pip install 'edgecache[controller]'"
        ) from exc
    configuration = official_configuration(connection)
    configuration.connection_pool_maxsize = 16
    api_client = client.ApiClient(configuration)
    api_client.user_agent = AGENT_USER_AGENT
    return api_client


async def _run(agent: Agent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    task = asyncio.create_task(agent.run(stop))
    started = asyncio.create_task(agent.started.wait())
    await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if agent.started.is_set():
        click.echo(
            f"edgecache agent: node {agent.settings.node_name} serving views in "
            f"{agent.settings.views_dir}, health on {agent.health_url}"
        )
        sys.stdout.flush()
    await task


def _positive(value: float, flag: str) -> float:
    if value <= 0:
        raise click.BadParameter("must be positive", param_hint=flag)
    return value


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
    help="unix:///path/csi.sock of the CSI node service (NodePublishVolume of views).",
)
@click.option(
    "--metadata-ttl",
    type=float,
    default=60.0,
    help="Seconds a mount listing is trusted: changed objects reach the view within this.",
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
    metadata_ttl: float,
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
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings_connection = ConnectionSettings()
    connection.resolve(settings_connection)
    _positive(metadata_ttl, "--metadata-ttl")
    _host, sep, port = health_listen.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter("expected host:port", param_hint="--health-listen")
    if root.resolve() == cache_dir.resolve():
        raise click.UsageError("--root and --cache-dir must be different directories")
    if csi_endpoint is not None and not csi_endpoint.startswith("unix://"):
        raise click.BadParameter("expected unix:///path/to/csi.sock", param_hint="--csi-endpoint")
    settings = AgentSettings(
        node_name=node_name,
        root=root,
        cache_dir=cache_dir,
        health_address=health_listen,
        metadata_ttl_seconds=metadata_ttl,
    )
    try:
        agent = Agent(settings, _api_client(settings_connection))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        asyncio.run(_run(agent))
    except (OSError, EdgeCacheError) as exc:
        click.echo(f"edgecache agent: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
