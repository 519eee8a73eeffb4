"""Rendezvous (highest-random-weight) hashing: which pool member owns a block.

Every node computes, for a block's key digest, a score per live member (xxh3-64 of the member's
name and the digest) and picks the highest. Nodes that see the same members pick the same owner
without talking to each other, and a member joining or leaving moves only the blocks it wins or
held (1/N of them), never reshuffles the rest: the owner a block had stays its owner, so what
the pool cached stays useful when a node comes or goes.
"""

from __future__ import annotations

from collections.abc import Iterable

import xxhash

from edgecache.pool._members import Member

__all__ = ["owner_of", "ranked"]


def _score(member: Member, digest: str) -> int:
    # NUL separator: a name cannot contain one, so (name, digest) pairs never collide.
    return xxhash.xxh3_64_intdigest(f"{member.name}\0{digest}".encode())


def ranked(digest: str, members: Iterable[Member]) -> list[Member]:
    """``members`` by their score for ``digest``, the owner first (ties by name)."""
    return sorted(members, key=lambda m: (-_score(m, digest), m.name))


def owner_of(digest: str, members: Iterable[Member]) -> Member | None:
    """The owner of the block with key digest ``digest`` among ``members`` (None: no member)."""
    best: Member | None = None
    best_score = -1
    for member in members:
        score = _score(member, digest)
        if score > best_score or (score == best_score and best and member.name < best.name):
            best, best_score = member, score
    return best
