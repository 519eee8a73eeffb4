"""Which backend serves a URL protocol: built-ins, the ``edgecache.backends`` entry points, fsspec.

Resolution order for a protocol ``p``:

1. backends registered in this process with :func:`register_backend` (refuses silent overrides);
2. installed plugins: entry points of group ``edgecache.backends`` named ``p`` (the core itself
   registers ``file`` and ``memory`` this way), those of the plugin made for ``p``
   (``PLUGIN_PACKAGES``) first;
3. protocols that need a dedicated plugin (``s3``, ``oss``...) fail here with
   :class:`BackendNotInstalledError` naming the package to install;
4. any other protocol fsspec knows is wrapped by :class:`GenericBackend`; fsspec's own "install
   package X" errors are translated to :class:`BackendNotInstalledError`.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution, entry_points
from typing import Any

from fsspec.registry import known_implementations
from fsspec.registry import registry as fsspec_registry

from edgecache.backends._base import Backend
from edgecache.backends.generic import GenericBackend
from edgecache.errors import BackendNotInstalledError, ConfigError

__all__ = [
    "ENTRY_POINT_GROUP",
    "available_backends",
    "check_protocol",
    "get_backend",
    "register_backend",
]

ENTRY_POINT_GROUP = "edgecache.backends"

#: Protocols whose data paths need an edgecache plugin (object versions, Fluid-style options,
#: WAN-tuned fetching) and the distribution that provides it.
PLUGIN_PACKAGES: dict[str, str] = {
    "s3": "edgecache-s3",
    "s3a": "edgecache-s3",
    "oss": "edgecache-oss",
}

_registered: dict[str, type[Backend]] = {}
_lock = threading.Lock()
_scanned: tuple[object, dict[str, list[EntryPoint]]] | None = None
"""The plugins' entry points as last scanned, with what the scan depended on."""


def _plugins() -> dict[str, list[EntryPoint]]:
    """The ``edgecache.backends`` entry points by name.

    Scanning them reads the metadata of every installed distribution (about 50 ms for 120 of
    them), which every new engine and every spawned worker paid: the scan is kept while
    ``sys.path`` (where distributions are found) stays the same.
    """
    global _scanned
    depends_on = (tuple(sys.path), entry_points)
    scanned = _scanned
    if scanned is None or scanned[0] != depends_on:
        found: dict[str, list[EntryPoint]] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            found.setdefault(ep.name, []).append(ep)
        scanned = _scanned = (depends_on, found)
    return scanned[1]


def register_backend(protocol: str, cls: type[Backend], *, clobber: bool = False) -> None:
    """Register ``cls`` for ``protocol`` in this process (tests, embedding applications).

    Replacing another class, whether registered here or installed as a plugin (the built-in
    ``file`` and ``memory`` included), needs ``clobber=True``: a silent override would send
    every ``protocol://`` URL of the process through a different backend.
    """
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise TypeError(f"{cls!r} is not a subclass of edgecache.backends.Backend")
    with _lock:
        existing = _registered.get(protocol)
        if existing is not None and existing is not cls and not clobber:
            raise ValueError(
                f"backend for {protocol!r} is already registered ({existing.__qualname__}); "
                "pass clobber=True to replace it"
            )
        if existing is None and not clobber:
            name = f"{cls.__module__}:{cls.__qualname__}"
            for ep in _plugins().get(protocol, []):
                if ep.value != name:
                    raise ValueError(
                        f"backend for {protocol!r} is installed as a plugin ({ep.value}); "
                        "pass clobber=True to replace it"
                    )
        _registered[protocol] = cls


def _from_known_plugin(protocol: str) -> list[EntryPoint]:
    """The entry points for ``protocol`` of the plugin made for it (``edgecache-s3`` for
    ``s3``), read from that one distribution: a spawned worker's first ``fsspec.open`` would
    otherwise read the metadata of every installed distribution (hundreds of ms of file reads
    on a busy disk) to find it."""
    package = PLUGIN_PACKAGES.get(protocol)
    if package is None:
        return []
    try:
        found = distribution(package).entry_points
    except PackageNotFoundError:
        return []
    return [ep for ep in found if ep.group == ENTRY_POINT_GROUP and ep.name == protocol]


def _from_entry_points(protocol: str) -> type[Backend] | None:
    for ep in _from_known_plugin(protocol) or _plugins().get(protocol, []):
        try:
            cls = ep.load()
        except ImportError as exc:
            raise BackendNotInstalledError(
                f"the backend plugin for {protocol}:// ({ep.value}) failed to import: {exc}"
            ) from exc
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise BackendNotInstalledError(
                f"entry point {ep.name} = {ep.value} in group {ENTRY_POINT_GROUP} is not a "
                "Backend subclass"
            )
        return cls
    return None


def backend_class(protocol: str) -> type[Backend] | None:
    """The dedicated backend class for ``protocol``, or None when fsspec's generic one applies."""
    if not protocol or not protocol.replace("-", "").replace("+", "").isalnum():
        raise ConfigError(f"{protocol!r} is not a URL protocol")
    cls = _registered.get(protocol) or _from_entry_points(protocol)
    if cls is not None:
        return cls
    if protocol in PLUGIN_PACKAGES:
        package = PLUGIN_PACKAGES[protocol]
        raise BackendNotInstalledError(
            f"no edgecache backend for {protocol}:// is installed; install it with "
            f"`pip install {package}` (or `pip install -e plugins/{package}` from a checkout)"
        )
    return None


def check_protocol(protocol: str) -> type[Backend] | None:
    """Raise :class:`BackendNotInstalledError` unless a backend can serve ``protocol`` (the
    controller checks Dataset mounts this way, building nothing); return its dedicated class,
    or None when fsspec's generic one applies."""
    if protocol == "edgecache":
        # A cache of a cache: the outer engine would call the inner filesystem's blocking
        # methods from its own event loop thread, and wait for ever.
        raise ConfigError(
            "edgecache:// cannot be the target of edgecache (name the store it caches: "
            "edgecache::s3://..., edgecache::file://...)"
        )
    cls = backend_class(protocol)
    if cls is None and protocol not in known_implementations and protocol not in fsspec_registry:
        raise BackendNotInstalledError(
            f"unknown protocol {protocol}://: no edgecache backend and no fsspec implementation "
            f"is registered for it (installed edgecache backends: "
            f"{', '.join(available_backends())})"
        )
    return cls


def get_backend(protocol: str, options: Mapping[str, Any] | None = None) -> Backend:
    """A configured backend for ``protocol`` (``file``, ``memory``, ``s3``...)."""
    options = options or {}
    cls = check_protocol(protocol)
    try:
        if cls is not None:
            return cls(protocol, options)
        return GenericBackend(protocol, options)
    except ImportError as exc:
        raise BackendNotInstalledError(f"{protocol}://: {exc}") from exc
    except (TypeError, ValueError) as exc:
        # The store's client refusing an option (a misspelt name, a string where it wants a
        # number: -o max_paths=0) is the user's input, not a bug of ours.
        names = ", ".join(sorted(options)) or "none"
        raise ConfigError(
            f"{protocol}:// client options rejected ({names}): {type(exc).__name__}: {exc}"
        ) from exc


def available_backends() -> list[str]:
    """Protocols with a dedicated backend installed or registered."""
    names = set(_registered) | set(_plugins())
    return sorted(names)
