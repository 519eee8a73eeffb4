"""Reading a kubeconfig into connection settings (``--kubeconfig FILE`` of every command).

What a client of ours needs: the current context's cluster server, CA and TLS verification
switch, and the user's token, token file or client certificate. Credential plugins (``exec``,
``auth-provider``) are not run: such a user is refused with a clear error. Inline ``*-data``
fields are written to private files in a temporary directory because Python's ``ssl`` loads
certificate chains from files.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import Any

from edgecache.errors import ConfigError
from edgecache.k8s.connection import ConnectionSettings
from edgecache.yamlio import load_yaml_documents, read_text_file

__all__ = ["apply_kubeconfig"]


def _named(entries: Any, name: str, what: str, path: Path) -> dict[str, Any]:
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(what) or {}
            if isinstance(value, dict):
                return value
    raise ConfigError(f"kubeconfig {path}: no {what} named {name!r}")


def _resolve(path: Path, value: str) -> str:
    candidate = Path(value)
    return str(candidate if candidate.is_absolute() else path.parent / candidate)


def _inline(data_b64: str, suffix: str) -> str:
    directory = Path(tempfile.mkdtemp(prefix="edgecache-kubeconfig-"))
    target = directory / suffix
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64decode(data_b64))
    return str(target)


def apply_kubeconfig(path: Path, settings: ConnectionSettings) -> None:
    """Fill unset fields of ``settings`` from the kubeconfig's current context."""
    # A kubeconfig is user input like any other file: bounded before it is parsed.
    documents = load_yaml_documents(read_text_file(path), source=f"kubeconfig {path}")
    config = documents[0] if documents else None
    if not isinstance(config, dict):
        raise ConfigError(f"kubeconfig {path} is not a mapping")
    context_name = config.get("current-context")
    if not context_name:
        raise ConfigError(f"kubeconfig {path} has no current-context")
    context = _named(config.get("contexts"), context_name, "context", path)
    cluster = _named(config.get("clusters"), context.get("cluster", ""), "cluster", path)
    user: dict[str, Any] = {}
    if context.get("user"):
        user = _named(config.get("users"), context["user"], "user", path)

    if not settings.servers:
        server = cluster.get("server")
        if not server:
            raise ConfigError(f"kubeconfig {path}: cluster has no server")
        settings.servers = [str(server).rstrip("/")]
    if settings.certificate_authority is None:
        if cluster.get("certificate-authority"):
            settings.certificate_authority = _resolve(path, cluster["certificate-authority"])
        elif cluster.get("certificate-authority-data"):
            settings.certificate_authority = _inline(cluster["certificate-authority-data"], "ca")
    if cluster.get("insecure-skip-tls-verify"):
        settings.insecure_skip_tls_verify = True
    if settings.client_certificate is None:
        if user.get("client-certificate"):
            settings.client_certificate = _resolve(path, user["client-certificate"])
        elif user.get("client-certificate-data"):
            settings.client_certificate = _inline(user["client-certificate-data"], "cert")
    if settings.client_key is None:
        if user.get("client-key"):
            settings.client_key = _resolve(path, user["client-key"])
        elif user.get("client-key-data"):
            settings.client_key = _inline(user["client-key-data"], "key")
    if settings.token is None and settings.token_file is None:
        if user.get("token"):
            settings.token = str(user["token"])
        elif user.get("tokenFile"):
            settings.token_file = _resolve(path, user["tokenFile"])
    has_credentials = settings.token or settings.token_file or settings.client_certificate
    for plugin in ("exec", "auth-provider"):
        if user.get(plugin) and not has_credentials:
            raise ConfigError(
                f"kubeconfig {path}: user {context['user']!r} authenticates with an {plugin!r} "
                "plugin, which edgecache does not run; give --token-file or a client certificate"
            )
