"""Backend credentials from Kubernetes Secrets, fetched from the API for one use.

A Dataset's ``encryptOptions`` name Secret keys. The controller (listing mounts) and the node
agent (reading them) fetch those values with ``get`` (Secrets are never listed or watched) and
hand them to the backend as a resolver (:class:`FetchedSecrets`), never from files on disk.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import TYPE_CHECKING

from edgecache.k8s.api import SECRET, Kube

if TYPE_CHECKING:  # the Dataset model sits above this package; only its type is needed
    from edgecache.dataset import Mount

__all__ = ["FetchedSecrets", "mount_secrets", "secret_value"]


class FetchedSecrets:
    """A Secret resolver over values fetched from the API.

    Its ``repr`` is a digest of the values: the engine registry keys backends on their options
    (resolver included), so rotated credentials get a new backend instead of the one built with
    the old ones, and no value ever appears in clear in a key or a log.
    """

    def __init__(self, values: dict[tuple[str, str], str]) -> None:
        self._values = values

    def __call__(self, name: str, key: str, namespace: str | None = None) -> str:
        try:
            return self._values[(name, key)]
        except KeyError:
            raise KeyError(f"Secret {namespace}/{name} has no key {key!r}") from None

    def __repr__(self) -> str:
        digest = hashlib.sha256(json.dumps(sorted(self._values.items())).encode()).hexdigest()
        return f"FetchedSecrets({digest[:16]})"


def secret_value(kube: Kube, name: str, key: str, namespace: str | None) -> str:
    """One key of one Secret (blocking); ``KeyError`` naming what is missing."""
    secret = kube.get_sync(SECRET, name, namespace or "default")
    if secret is None:
        raise KeyError(f"Secret {namespace}/{name} does not exist")
    if key in (secret.get("stringData") or {}):
        return str(secret["stringData"][key])
    data = secret.get("data") or {}
    if key not in data:
        raise KeyError(f"Secret {namespace}/{name} has no key {key!r}")
    return base64.b64decode(data[key]).decode("utf-8")


def mount_secrets(kube: Kube, mount: Mount, namespace: str) -> FetchedSecrets:
    """The values every ``encryptOptions`` entry of ``mount`` names (blocking)."""
    return FetchedSecrets(
        {
            (ref.name, ref.key): secret_value(kube, ref.name, ref.key, namespace)
            for _, ref in mount.encrypt_options
        }
    )
