"""``edgecache controller``: the command line over :class:`~edgecache.controller.Controller`.

Connects like ``edgecache hub`` (the shared flags of :mod:`edgecache.k8s.options`: ``--server``,
``--kubeconfig``, or in-cluster), runs until SIGINT/SIGTERM and then releases its Lease so a
standby replica takes over at once. When serving, one line on stdout names the health URL.
Mistakes print one line on stderr and exit 2.
"""

from __future__ import annotations

import asyncio
import functools

import click

from edgecache.controller._controller import Controller, ControllerSettings
from edgecache.controller._leader import LeaderSettings
from edgecache.errors import ConfigError
from edgecache.k8s import (
    ConnectionFlags,
    ConnectionSettings,
    connection_options,
    official_api_client,
    pod_namespace,
)
from edgecache.k8s.objects import CONTROLLER_USER_AGENT
from edgecache.k8s.service import (
    address_flag,
    announce,
    configure_logging,
    positive_flag,
    run_service,
)

__all__ = ["controller_command"]


async def _serve(controller: Controller, stop: asyncio.Event) -> None:
    task = asyncio.create_task(controller.run(stop))
    started = asyncio.create_task(controller.started.wait())
    await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if controller.started.is_set():
        identity = controller.settings.leader.identity
        announce(f"edgecache controller: {identity} serving health on {controller.health_url}")
    await task


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
    configure_logging(verbose=verbose)
    settings_connection = ConnectionSettings()
    connection.resolve(settings_connection)
    for value, flag in (
        (lease_duration, "--lease-duration"),
        (renew_deadline, "--renew-deadline"),
        (retry_period, "--retry-period"),
        (resync, "--resync"),
        (listing_refresh, "--listing-refresh"),
    ):
        positive_flag(value, flag)
    if renew_deadline >= lease_duration:
        raise click.UsageError("--renew-deadline must be shorter than --lease-duration")
    if retry_period >= renew_deadline:
        raise click.UsageError("--retry-period must be shorter than --renew-deadline")
    if workers < 1:
        raise click.BadParameter("must be at least 1", param_hint="--workers")
    address_flag(health_listen, "--health-listen")
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
        api_client = official_api_client(
            settings_connection,
            user_agent=CONTROLLER_USER_AGENT,
            connection_pool_size=32,  # seven watches and the workers
        )
        controller = Controller(settings, api_client)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    run_service("controller", functools.partial(_serve, controller))
