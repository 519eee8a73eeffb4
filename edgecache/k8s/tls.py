"""TLS towards the API server: the SSL context our clients connect with.

Built from :class:`~edgecache.k8s.connection.ConnectionSettings`: the cluster CA (or the system
CAs), verification (off only when asked for a test cluster), and optionally our client
certificate. The hub builds two: with its identity for requests it makes on its own behalf, and
without for clients that bring their own credentials, so the server judges those alone.
"""

from __future__ import annotations

import ssl

from edgecache.errors import ConfigError
from edgecache.k8s.connection import ConnectionSettings

__all__ = ["client_ssl_context"]


def client_ssl_context(
    settings: ConnectionSettings, *, identity: bool = True
) -> ssl.SSLContext | None:
    """The SSL context for ``settings`` (None when no server is ``https://``); with
    ``identity`` the client certificate is presented. Unreadable files raise
    :class:`~edgecache.errors.ConfigError`."""
    if not settings.uses_tls:
        return None
    try:
        if settings.insecure_skip_tls_verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cafile=settings.certificate_authority)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the API server's CA {settings.certificate_authority}: {exc}"
        ) from exc
    if identity and settings.client_certificate:
        try:
            context.load_cert_chain(settings.client_certificate, settings.client_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load client certificate: {exc}") from exc
    return context
