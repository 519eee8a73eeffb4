"""Whether the block being fetched is one a peer asked this node for (a forwarded request).

The block server sets it around its fetch; :class:`~edgecache.pool._source.PeerSource` reads it
and skips, so a request a peer forwarded here goes to this node's tiers and backend only and is
never forwarded again, whatever this node believes about the block's owner. Context variables
follow the fetch onto the engine's loop (``run_coroutine_threadsafe`` copies the context).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

__all__ = ["forwarded", "is_forwarded", "is_serving", "serving"]

_FORWARDED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "edgecache_pool_forwarded", default=False
)


def is_forwarded() -> bool:
    """True inside the fetch of a block a peer asked for."""
    return _FORWARDED.get()


@contextlib.contextmanager
def forwarded() -> Iterator[None]:
    """Mark the fetches inside as serving a peer's request."""
    token = _FORWARDED.set(True)
    try:
        yield
    finally:
        _FORWARDED.reset(token)


_SERVING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "edgecache_pool_serving", default=False
)


def is_serving() -> bool:
    """True inside the fetch of any block another process asked this node's server for (a
    peer's, or a local reader's through its agent): such a fetch is never relayed."""
    return _SERVING.get()


@contextlib.contextmanager
def serving() -> Iterator[None]:
    """Mark the fetches inside as serving another process's block request."""
    token = _SERVING.set(True)
    try:
        yield
    finally:
        _SERVING.reset(token)
