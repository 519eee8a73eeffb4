"""Finding the API server: flags first, then a kubeconfig, then the pod's service account.

``edgecache hub``, ``edgecache agent`` and ``edgecache controller`` all connect "with
``--server URL``, ``--kubeconfig FILE``, or in-cluster" (design 2.5); this is that rule, once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from edgecache.k8s.connection import ConnectionSettings
from edgecache.k8s.incluster import SERVICE_ACCOUNT_DIR, apply_in_cluster, in_cluster
from edgecache.k8s.kubeconfig import apply_kubeconfig

__all__ = ["resolve_connection"]


def resolve_connection(
    settings: ConnectionSettings,
    *,
    kubeconfig: Path | None = None,
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> ConnectionSettings:
    """Complete ``settings`` and return them, checked.

    What is already set (flags) wins; the kubeconfig's current context fills what is unset;
    when still no server is known and the process runs in a pod (``KUBERNETES_SERVICE_HOST``
    set), its service account does. Raises :class:`~edgecache.errors.ConfigError` when no
    source names a server or the result cannot be used.
    """
    if kubeconfig is not None:
        apply_kubeconfig(kubeconfig, settings)
    environ = os.environ if environ is None else environ
    if not settings.servers and in_cluster(environ):
        apply_in_cluster(settings, environ=environ, service_account_dir=service_account_dir)
    settings.servers = [url.rstrip("/") for url in settings.servers]
    settings.check()
    return settings
