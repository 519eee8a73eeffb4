"""``edgecache hub``: the command line over :class:`~edgecache.hub.HubServer`.

Flags become :class:`~edgecache.hub.HubSettings`; the server runs until SIGINT/SIGTERM. Mistakes
print one line on stderr: bad flags exit 2, an upstream that cannot be reached with an empty
store (nothing to serve) exits 1. When ready, one line on stdout names both listen URLs.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import click

from edgecache.hub._config import DEFAULT_COMPONENTS, HubSettings
from edgecache.hub._server import HubServer
from edgecache.k8s.health import HealthSettings
from edgecache.k8s.options import ConnectionFlags, connection_options
from edgecache.k8s.service import (
    address_flag,
    announce,
    configure_logging,
    positive_flag,
    run_service,
)

__all__ = ["hub_command"]


def _components(value: str | None) -> frozenset[str] | None:
    if value is None:
        return DEFAULT_COMPONENTS
    if value.strip() == "*":
        return None
    names = frozenset(part.strip().lower() for part in value.split(",") if part.strip())
    if not names:
        raise click.BadParameter("give component names or '*'", param_hint="--components")
    return names


async def _serve(settings: HubSettings, stop: asyncio.Event) -> None:
    hub = HubServer(settings)
    await hub.start()
    mode = "online" if hub.health.online else "offline (serving from the store)"
    announce(f"edgecache hub: serving {hub.url} (health {hub.health_url}), {mode}")
    try:
        await stop.wait()
    finally:
        await hub.stop()


@click.command(
    "hub", context_settings={"help_option_names": ["-h", "--help"], "show_default": True}
)
@connection_options(token_help="Bearer token the hub adds for clients that bring none.")
@click.option("--listen", default="127.0.0.1:10261", help="host:port of the API proxy.")
@click.option(
    "--health-listen", default="127.0.0.1:10267", help="host:port of /healthz /readyz /metrics."
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory of the hub's store.",
)
@click.option(
    "--components",
    default=None,
    help="Components (User-Agent prefixes) to record, comma separated, or '*' for all. "
    "[default: " + ",".join(sorted(DEFAULT_COMPONENTS)) + "]",
)
@click.option(
    "--tls-cert-file",
    type=click.Path(dir_okay=False),
    help="Serve the API proxy over HTTPS with this certificate (PEM).",
)
@click.option("--tls-private-key-file", type=click.Path(dir_okay=False), help="Its key.")
@click.option(
    "--client-ca-file",
    type=click.Path(dir_okay=False),
    help="With HTTPS: accept client certificates signed by this CA.",
)
@click.option("--nodepool", help="This node's nodepool: EndpointSlices keep its endpoints.")
@click.option(
    "--probe-interval",
    type=float,
    default=HealthSettings.probe_interval_seconds,
    help="Seconds between health probes of the upstream (a hung link is noticed within "
    "about this plus 3 s).",
)
@click.option("-v", "--verbose", is_flag=True, help="Also log informational events.")
def hub_command(
    *,
    connection: ConnectionFlags,
    listen: str,
    health_listen: str,
    cache_dir: Path,
    components: str | None,
    nodepool: str | None,
    tls_cert_file: str | None,
    tls_private_key_file: str | None,
    client_ca_file: str | None,
    probe_interval: float,
    verbose: bool,
) -> None:
    """Run the edge hub: a local Kubernetes API proxy that keeps answering offline.

    Online it proxies every request to the cloud API server(s) and records what the listed
    components read; when the upstream cannot be reached it answers reads from that record,
    refuses writes with a 503 Status, and keeps watches open until the link is back.

    \b
    Examples:
      edgecache hub --server https://10.0.0.1:6443 --cache-dir /var/lib/edgecache/hub \\
          --kubeconfig /etc/kubernetes/kubelet.conf --nodepool hangzhou
      edgecache hub --server http://127.0.0.1:8080 --cache-dir /tmp/hub --components '*'
      kubectl --server http://127.0.0.1:10261 get pods -A     # through the hub
    """
    configure_logging(verbose=verbose)
    settings = HubSettings(cache_dir=cache_dir)
    connection.resolve(settings.upstream)
    settings.health.probe_interval_seconds = positive_flag(probe_interval, "--probe-interval")
    settings.recording.components = _components(components)
    settings.filters.nodepool = nodepool
    if bool(tls_cert_file) != bool(tls_private_key_file):
        raise click.UsageError("--tls-cert-file and --tls-private-key-file go together")
    if client_ca_file and not tls_cert_file:
        raise click.UsageError(
            "--client-ca-file needs --tls-cert-file (client certificates need TLS)"
        )
    settings.listen.tls_cert_file = tls_cert_file
    settings.listen.tls_key_file = tls_private_key_file
    settings.listen.client_ca_file = client_ca_file
    settings.listen.address = listen
    settings.listen.health_address = health_listen
    address_flag(listen, "--listen")
    address_flag(health_listen, "--health-listen")
    run_service("hub", functools.partial(_serve, settings))
