"""The official ``kubernetes`` client, connected like every other edgecache component.

The controller (and anything else written against the ``kubernetes`` package) gets its
``Configuration``/``ApiClient`` from the same :class:`~edgecache.k8s.connection.ConnectionSettings`
that ``--server``/``--kubeconfig``/in-cluster fill, instead of the package's own kubeconfig
loader: one way to connect, one set of flags. A token file is re-read on rotation through the
client's ``refresh_api_key_hook``. The package is imported only here, when asked for, so the
rest of edgecache does not need it installed.

The official client talks to one server: the first of ``settings.servers``.
"""

from __future__ import annotations

from typing import Any

from edgecache.errors import ConfigError
from edgecache.k8s.connection import ConnectionSettings
from edgecache.k8s.credentials import TokenSource

__all__ = ["official_api_client", "official_configuration"]


def _client_module() -> Any:
    try:
        from kubernetes import client
    except ImportError as exc:
        raise ConfigError(
            "the 'kubernetes' package is not installed: pip install 'edgecache[controller]'"
        ) from exc
    return client


def official_configuration(settings: ConnectionSettings) -> Any:
    """A ``kubernetes.client.Configuration`` for ``settings`` (checked first)."""
    settings.check()
    client = _client_module()
    configuration = client.Configuration()
    configuration.host = settings.servers[0]
    configuration.verify_ssl = not settings.insecure_skip_tls_verify
    configuration.ssl_ca_cert = settings.certificate_authority
    configuration.cert_file = settings.client_certificate
    configuration.key_file = settings.client_key
    tokens = TokenSource(settings)

    def refresh(config: Any) -> None:
        token = tokens.token()
        if token:
            config.api_key["authorization"] = token
        else:
            config.api_key.pop("authorization", None)

    if settings.token or settings.token_file:
        configuration.api_key_prefix = {"authorization": "Bearer"}
        configuration.refresh_api_key_hook = refresh
        refresh(configuration)
    return configuration


def official_api_client(
    settings: ConnectionSettings, *, user_agent: str, connection_pool_size: int | None = None
) -> Any:
    """A ``kubernetes.client.ApiClient`` for ``settings`` that sends ``user_agent`` (start it
    with the component name, e.g. ``edgecache-controller/0.1``: the hub records by it).

    ``connection_pool_size``: connections kept to the server; a component holding several
    watches open plus workers needs more than the client's default of one per CPU."""
    configuration = official_configuration(settings)
    if connection_pool_size is not None:
        configuration.connection_pool_maxsize = connection_pool_size
    api_client = _client_module().ApiClient(configuration)
    api_client.user_agent = user_agent
    return api_client
