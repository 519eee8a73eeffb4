"""The CSI node service's contract with the rest of the agent.

    kubelet --NodePublishVolume(volume handle)--> CSI node service --ready_view(ns, name)-->
        view manager (ViewResolver) --> <root>/datasets/<ns>/<name>/  --bind, ro--> pod target

The service knows nothing of how a view is built: it asks a :class:`ViewResolver` for the
directory of a ready view, and a :class:`~edgecache.errors.ViewNotReadyError` from it becomes a
retryable gRPC error whose message reaches the pod's events. It needs no gRPC to import: the
command checks ``--csi-endpoint`` with :func:`parse_csi_endpoint` before anything starts.
"""

from __future__ import annotations

import os
import pathlib
from typing import Protocol

from edgecache.errors import ConfigError, quoted

__all__ = ["ViewResolver", "parse_csi_endpoint"]


class ViewResolver(Protocol):
    """Finds the materialised view of a dataset that can be published now."""

    def ready_view(self, namespace: str, dataset: str) -> pathlib.Path:
        """The view directory ``<root>/datasets/<namespace>/<dataset>/`` once it is ready.

        Raises :class:`~edgecache.errors.ViewNotReadyError` (its message says why: not loaded
        yet, unknown dataset, larger than its quota) while it cannot be published. Called from
        the service's event loop: it must answer from memory or local disk, without waiting on
        the network.
        """
        ...


def parse_csi_endpoint(endpoint: str) -> pathlib.Path:
    """The socket path of ``unix:///absolute/path`` (the form CSI sidecars use)."""
    prefix = "unix://"
    path = endpoint[len(prefix) :] if endpoint.startswith(prefix) else ""
    if not path.startswith("/") or "\0" in path or os.path.normpath(path) != path:
        raise ConfigError(
            f"CSI endpoint {quoted(endpoint)} is not unix:///absolute/path (e.g. "
            "unix:///csi/csi.sock)"
        )
    return pathlib.Path(path)
