"""How a long-running Kubernetes-facing command runs: hub, controller and agent alike.

Each command parses its flags into settings, then hands its component to :func:`run_service`:
logging set up once (``-v`` adds edgecache's own INFO events; the libraries' INFO lines, e.g.
every 404 of a probe, stay out), SIGINT/SIGTERM set the stop event the component runs until,
one line on stdout says what it serves once it is ready (tests and the demo wait for that
line), and a failure of the component is one line on stderr and exit 1 (a mistake in the
flags was already a click usage error, exit 2).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

import click

from edgecache.addresses import parse_address
from edgecache.errors import ConfigError, EdgeCacheError

__all__ = ["address_flag", "announce", "configure_logging", "positive_flag", "run_service"]

Main = Callable[[asyncio.Event], Awaitable[None]]
"""A component's body: runs until the event is set, then returns after stopping cleanly."""


def configure_logging(*, verbose: bool) -> None:
    """Warnings and errors of everything on stderr; with ``verbose`` edgecache's INFO too."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if verbose:
        logging.getLogger("edgecache").setLevel(logging.INFO)


def positive_flag(value: float, flag: str) -> float:
    """``value`` if it is above zero, else a usage error naming ``flag``."""
    if value <= 0:
        raise click.BadParameter("must be positive", param_hint=flag)
    return value


def address_flag(value: str, flag: str) -> str:
    """``value`` if it is ``host:port``, else a usage error naming ``flag``."""
    try:
        parse_address(value, option=flag)
    except ConfigError as exc:
        raise click.BadParameter("expected host:port", param_hint=flag) from exc
    return value


def run_service(name: str, main: Main) -> None:
    """Run ``main`` on a new event loop until SIGINT/SIGTERM; a failure is one line on stderr
    (``edgecache NAME: ...``) and exit 1."""

    async def until_signalled() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await main(stop)

    try:
        asyncio.run(until_signalled())
    except (OSError, EdgeCacheError) as exc:
        click.echo(f"edgecache {name}: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


def announce(line: str) -> None:
    """The one line on stdout that says the component is serving (flushed: a pipe is read)."""
    click.echo(line)
    sys.stdout.flush()
