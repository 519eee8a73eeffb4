"""Connecting from inside a pod: the service account the kubelet mounts.

In a pod, the API server is at ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT``,
its CA and our token are files under ``/var/run/secrets/kubernetes.io/serviceaccount``. The
token is used as a token *file*, because projected service-account tokens rotate (see
:class:`~edgecache.k8s.credentials.TokenSource`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from edgecache.errors import ConfigError
from edgecache.k8s.connection import ConnectionSettings

__all__ = ["SERVICE_ACCOUNT_DIR", "apply_in_cluster", "in_cluster", "pod_namespace"]

#: Where the kubelet mounts a pod's service-account token, CA and namespace.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster(environ: Mapping[str, str]) -> bool:
    """Whether this process runs in a pod (the kubelet sets these for every container)."""
    return bool(environ.get("KUBERNETES_SERVICE_HOST") and environ.get("KUBERNETES_SERVICE_PORT"))


def apply_in_cluster(
    settings: ConnectionSettings,
    *,
    environ: Mapping[str, str],
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> None:
    """Fill unset fields of ``settings`` from the pod's environment and service account."""
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    port = environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError(
            "not running in a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset"
        )
    token = service_account_dir / "token"
    if not token.is_file():
        raise ConfigError(f"in-cluster: no service-account token at {token}")
    if not settings.servers:
        settings.servers = [f"https://{f'[{host}]' if ':' in host else host}:{port}"]
    ca = service_account_dir / "ca.crt"
    if settings.certificate_authority is None and ca.is_file():
        settings.certificate_authority = str(ca)
    if (
        settings.token is None
        and settings.token_file is None
        and settings.client_certificate is None
    ):
        settings.token_file = str(token)


def pod_namespace(service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> str | None:
    """The pod's own namespace, or None outside a pod."""
    try:
        return (service_account_dir / "namespace").read_text().strip() or None
    except OSError:
        return None
