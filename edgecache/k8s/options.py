"""The connection flags every Kubernetes-facing command takes, defined once.

``edgecache hub``, ``edgecache agent`` and ``edgecache controller`` accept the same
``--server URL[,URL...]``, ``--kubeconfig FILE``, ``--certificate-authority``,
``--client-certificate``/``--client-key``, ``--token``/``--token-file``; with none of them, a
command running in a pod connects in-cluster. :func:`connection_options` adds the flags to a
click command and hands it one ``connection`` argument; :meth:`ConnectionFlags.resolve` turns
that into :class:`~edgecache.k8s.connection.ConnectionSettings` (a mistake is a click usage
error: one line, exit 2).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from edgecache.errors import ConfigError
from edgecache.k8s.connection import ConnectionSettings
from edgecache.k8s.resolve import resolve_connection

__all__ = ["ConnectionFlags", "connection_options"]

_Command = TypeVar("_Command", bound=Callable[..., Any])


@dataclass(frozen=True)
class ConnectionFlags:
    """What the user gave on the command line (None: not given)."""

    servers: str | None = None
    kubeconfig: Path | None = None
    certificate_authority: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None
    token: str | None = None
    token_file: str | None = None

    def resolve(self, settings: ConnectionSettings) -> None:
        """Fill ``settings`` from the flags, then the kubeconfig, then in-cluster; raise
        ``click.UsageError`` when that gives no usable connection."""
        if self.servers:
            settings.servers = [u.strip() for u in self.servers.split(",") if u.strip()]
        settings.certificate_authority = self.certificate_authority
        settings.client_certificate = self.client_certificate
        settings.client_key = self.client_key
        settings.token = self.token
        settings.token_file = self.token_file
        if self.token and self.token_file:
            raise click.UsageError("give --token or --token-file, not both")
        if bool(self.client_certificate) != bool(self.client_key):
            raise click.UsageError("--client-certificate and --client-key go together")
        try:
            resolve_connection(settings, kubeconfig=self.kubeconfig)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc


def connection_options(
    *, token_help: str = "Bearer token to authenticate with."
) -> Callable[[_Command], _Command]:
    """Decorate a click command with the connection flags; it receives ``connection``."""

    def decorate(command: _Command) -> _Command:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs["connection"] = ConnectionFlags(
                **{name: kwargs.pop(name) for name in ConnectionFlags.__dataclass_fields__}
            )
            return command(*args, **kwargs)

        options = [
            click.option(
                "--server",
                "servers",
                help="API server URL(s), comma separated (failover in order). Without "
                "--server or --kubeconfig, a pod connects in-cluster.",
            ),
            click.option(
                "--kubeconfig",
                type=click.Path(dir_okay=False, path_type=Path),
                help="kubeconfig whose current context fills what the other flags leave unset.",
            ),
            click.option(
                "--certificate-authority",
                type=click.Path(dir_okay=False),
                help="CA of the API server (PEM).",
            ),
            click.option(
                "--client-certificate", type=click.Path(dir_okay=False), help="Client cert (PEM)."
            ),
            click.option("--client-key", type=click.Path(dir_okay=False), help="Its key (PEM)."),
            click.option("--token", help=token_help),
            click.option(
                "--token-file",
                type=click.Path(dir_okay=False),
                help="File holding that token (re-read when it rotates).",
            ),
        ]
        decorated: Any = wrapper
        for option in reversed(options):
            decorated = option(decorated)
        return decorated  # type: ignore[no-any-return]

    return decorate
