"""Block keys: how a byte range of a remote object is named inside the cache.

The fs layer cuts an object into blocks and asks the cache for each by :class:`BlockKey`. The key
includes the backend identity (protocol *and* endpoint: two S3 endpoints with the same bucket never
collide), the normalised path, the object version (ETag/mtime/size: a changed object gets new keys,
so stale bytes cannot be served) and the block index. On disk a block is named by the key's
digest, so no object name can reach the filesystem.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import xxhash

__all__ = ["BlockKey"]


@dataclass(frozen=True, slots=True)
class BlockKey:
    """Identity of one block of one version of one object."""

    backend: str
    """Backend identity, e.g. ``s3|http://10.0.0.1:9000`` or ``file``."""
    path: str
    """Normalised object path as the backend names it (``bucket/key``, ``/data/x``)."""
    version: str
    """Object version token (ETag, version id, or size+mtime)."""
    index: int
    """Block number: the block covers ``[index * block_size, (index + 1) * block_size)``."""
    block_size: int
    """Block size in bytes; part of the key so two block sizes never mix their blocks."""
    digest: str = field(init=False, compare=False, repr=False)
    """32 hex characters (xxh3-128 of the fields): the block's on-disk and index name."""

    def __post_init__(self) -> None:
        # NUL separators: no field can contain one, so distinct tuples give distinct input.
        raw = "\0".join(
            (self.backend, self.path, self.version, str(self.index), str(self.block_size))
        )
        object.__setattr__(self, "digest", xxhash.xxh3_128_hexdigest(raw.encode()))

    @property
    def start(self) -> int:
        """Offset of the block's first byte in the object."""
        return self.index * self.block_size
