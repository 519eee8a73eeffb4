"""How a component reaches a Kubernetes API server: the connection settings.

The first thing every Kubernetes-facing part of edgecache builds (the edge hub's upstream, the
controller, the node agent). They are filled from flags (:mod:`.options`), a kubeconfig
(:mod:`.kubeconfig`) or the pod's service account (:mod:`.incluster`); the client side then
reads them through :mod:`.credentials` (the bearer token) and :mod:`.tls` (the SSL context), or
through :mod:`.official` for the ``kubernetes`` package. :mod:`.resolve` puts the sources together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgecache.errors import ConfigError

__all__ = ["ConnectionSettings"]


@dataclass
class ConnectionSettings:
    """Where the API server is and who we are to it."""

    #: Base URLs of the API servers, tried in order; the first that answers is used and the
    #: others take over when it stops answering (failover). No trailing slash.
    servers: list[str] = field(default_factory=list)
    #: PEM file of the CA that signed the server's certificate (None: the system CAs).
    certificate_authority: str | None = None
    #: PEM client certificate and key presented to the server (our own identity).
    client_certificate: str | None = None
    client_key: str | None = None
    #: Bearer token sent with our own requests.
    token: str | None = None
    #: File holding that token; re-read when it changes (projected service-account tokens
    #: rotate every hour or so, and the kubelet replaces the file).
    token_file: str | None = None
    #: Skip TLS verification of the server (only for test clusters; never the default).
    insecure_skip_tls_verify: bool = False
    #: Seconds to wait for a TCP/TLS connection. Short, because a WAN that cannot connect within
    #: a few seconds is down for our purposes and the next server (or a local copy) should answer.
    connect_timeout_seconds: float = 3.0
    #: Seconds without data before a non-watch request is given up (watches have no limit).
    read_timeout_seconds: float = 60.0

    def check(self) -> None:
        """Raise :class:`ConfigError` for settings no client could use."""
        if not self.servers:
            raise ConfigError(
                "no API server given: use --server URL, --kubeconfig FILE, or run in a pod "
                "(in-cluster service account)"
            )
        for url in self.servers:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"API server URL (--server) must be http(s), got {url!r}")
        if self.token and self.token_file:
            raise ConfigError("give a token or a token file, not both")
        if bool(self.client_certificate) != bool(self.client_key):
            raise ConfigError("a client certificate and its key go together")

    @property
    def uses_tls(self) -> bool:
        return any(url.startswith("https://") for url in self.servers)
