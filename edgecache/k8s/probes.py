"""The probe endpoint of a long-running component: ``/healthz``, ``/readyz`` and ``/metrics``.

kubelet's liveness and readiness probes and Prometheus scrape these on the controller and the
node agent (the hub serves its own app on a socket it binds itself, with the same metrics
rendering). Each component says what alive and ready mean for it; rendering
:data:`edgecache.metrics.REGISTRY` and serving the three paths are here, once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgecache.metrics import REGISTRY

__all__ = ["ProbeServer", "metrics_response", "start_probe_server"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def metrics_response() -> web.Response:
    """Every edgecache metric of this process, in Prometheus' text format."""
    # The full content type (with the exposition format's version), as Prometheus asks for.
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _metrics(request: web.Request) -> web.Response:
    return metrics_response()


@dataclass
class ProbeServer:
    runner: web.AppRunner
    url: str
    """Where it answers (``http://127.0.0.1:PORT`` when it listens on every address)."""

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_probe_server(address: str, *, healthz: Handler, readyz: Handler) -> ProbeServer:
    """Serve the three endpoints on ``address`` (``HOST:PORT``; an empty host or ``0.0.0.0`` is
    every address, port 0 any free one)."""
    host, _, port = address.rpartition(":")
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
    return ProbeServer(runner, f"http://{shown}:{bound[1]}")
