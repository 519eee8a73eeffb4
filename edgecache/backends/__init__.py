"""Backends: the plugin boundary between the cache and object stores.

The core ships ``file`` and ``memory``; ``s3`` and ``oss`` come from the plugin distributions in
``plugins/``. Plugins subclass :class:`Backend` and register in the ``edgecache.backends``
entry-point group.
"""

from __future__ import annotations

from edgecache.backends._base import CLIENT_BINDING_OPTIONS, Backend, ObjectChangedError
from edgecache.backends._registry import (
    ENTRY_POINT_GROUP,
    available_backends,
    check_protocol,
    get_backend,
    register_backend,
)

__all__ = [
    "CLIENT_BINDING_OPTIONS",
    "ENTRY_POINT_GROUP",
    "Backend",
    "ObjectChangedError",
    "available_backends",
    "check_protocol",
    "get_backend",
    "register_backend",
]
