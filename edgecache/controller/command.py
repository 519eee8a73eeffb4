"""``edgecache controller``: the command line over :class:`~edgecache.controller.Controller`.

Connects like ``edgecache hub`` (the shared flags of :mod:`edgecache.k8s.options`: ``--server``,
``--kubeconfig``, or in-cluster), runs until SIGINT/SIGTERM and then releases its Lease so a
standby replica takes over at once. When serving, one line on stdout names the health URL.
Mistakes print one line on stderr and exit 2.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

import click

from edgecache.controller._controller import Controller, ControllerSettings
from edgecache.controller._leader import LeaderSettings
from edgecache.errors import ConfigError, EdgeCacheError
from edgecache.k8s import ConnectionFlags, ConnectionSettings, connection_options, pod_namespace
from edgecache.k8s.objects import CONTROLLER_USER_AGENT
from edgecache.k8s.official import official_configuration

__all__ = ["controller_command"]


def _api_client(connection: ConnectionSettings) -> Any:
    """The official client, with a pool large enough for seven watches and the workers."""
    try:
        from kubernetes import client
    except ImportError as exc:
        raise ConfigError(
            "edgecache controller needs the 'kubernetes' package: "
            "pip install 'edgecache[controller]'"
        ) from exc
    configuration = official_configuration(connection)
    configuration.connection_pool_maxsize = 32
    api_client = client.ApiClient(configuration)
    api_client.user_agent = CONTROLLER_USER_AGENT
    return api_client


async def _run(controller: Controller) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    task = asyncio.create_task(controller.run(stop))
    started = asyncio.create_task(controller.started.wait())
    await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if controller.started.is_set():
        identity = controller.settings.leader.identity
        click.echo(f"edgecache controller: {identity} serving health on {controller.health_url}")
        sys.stdout.flush()
    await task


def _positive(value: float, flag: str) -> float:
    if value <= 0:
        raise click.BadParameter("must be positive", param_hint=flag)
    return value


@click.command(
    "controller", context_settings={"help_option_names": ["-h", "--help"], "show_default": True}
)
@connection_options()
@click.option(
    "--health-listen", default="0.0.0.0:10268", help="host:port of /healthz /readyz /metrics."
)
@click.option(
    "--leader-elect/--no-leader-elect",
    default=True,
    help="Take a coordination.k8s.io Lease before acting (run several replicas safely).",
)
@click.option("--lease-name", default="edgecache-controller", help="Name of the Lease.")
@click.option(
    "--lease-namespace",
    help="Namespace of the Lease [default: the pod's namespace, else edgecache-system].",
)
@click.option(
    "--lease-duration", type=float, default=15.0, help="Seconds before a standby takes over."
)
@click.option(
    "--renew-deadline", type=float, default=10.0, help="Seconds the leader tries to renew."
)
@click.option("--retry-period", type=float, default=2.0, help="Seconds between Lease attempts.")
@click.option("--workers", type=int, default=4, help="Objects reconciled at once.")
@click.option("--resync", type=float, default=300.0, help="Seconds between full resyncs.")
@click.option(
    "--listing-refresh", type=float, default=300.0, help="Seconds between listings of a mount."
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Cache directory for listing mounts [default: a private temporary directory].",
)
@click.option("-v", "--verbose", is_flag=True, help="Also log informational events.")
def controller_command(
    *,
    connection: ConnectionFlags,
    health_listen: str,
    leader_elect: bool,
    lease_name: str,
    lease_namespace: str | None,
    lease_duration: float,
    renew_deadline: float,
    retry_period: float,
    workers: int,
    resync: float,
    listing_refresh: float,
    cache_dir: str | None,
    verbose: bool,
) -> None:
    """Run the Dataset controller: Datasets pinned to nodepools get PVs and PVCs, true status.

    It watches Datasets, EdgeCacheRuntimes, DataLoads and the agents' CacheReports; validates
    specs (a problem is a Ready=False condition naming the field); creates a read-only PV pinned
    to the Dataset's nodeAffinity and a PVC of the Dataset's name; sums the agents' reports into
    status.cacheStates and DataLoad progress. Several replicas elect one leader.

    \b
    Examples:
      edgecache controller                      # in a pod: in-cluster service account
      edgecache controller --kubeconfig ~/.kube/config --lease-namespace default
      edgecache controller --server http://127.0.0.1:8080 --no-leader-elect
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings_connection = ConnectionSettings()
    connection.resolve(settings_connection)
    for value, flag in (
        (lease_duration, "--lease-duration"),
        (renew_deadline, "--renew-deadline"),
        (retry_period, "--retry-period"),
        (resync, "--resync"),
        (listing_refresh, "--listing-refresh"),
    ):
        _positive(value, flag)
    if renew_deadline >= lease_duration:
        raise click.UsageError("--renew-deadline must be shorter than --lease-duration")
    if retry_period >= renew_deadline:
        raise click.UsageError("--retry-period must be shorter than --renew-deadline")
    if workers < 1:
        raise click.BadParameter("must be at least 1", param_hint="--workers")
    _host, sep, port = health_listen.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter("expected host:port", param_hint="--health-listen")
    settings = ControllerSettings(
        leader=LeaderSettings(
            enabled=leader_elect,
            lease_name=lease_name,
            lease_namespace=lease_namespace or pod_namespace() or "edgecache-system",
            lease_duration_seconds=lease_duration,
            renew_deadline_seconds=renew_deadline,
            retry_period_seconds=retry_period,
        ),
        health_address=health_listen,
        workers=workers,
        resync_seconds=resync,
        listing_refresh_seconds=listing_refresh,
        cache_dir=cache_dir,
    )
    try:
        controller = Controller(settings, _api_client(settings_connection))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        asyncio.run(_run(controller))
    except (OSError, EdgeCacheError) as exc:
        click.echo(f"edgecache controller: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
