"""Pool membership: who the live peers of this node are, from a static list or from Leases.

Place in the data path::

    PeerSource.fetch --> Membership.live() --> owner_of(digest, live) --> that peer's server

A :class:`Member` is a name (the node name, or the address for a static list) and the address
its block server listens on. Every membership offers :meth:`Membership.live`, the members it
believes alive now, this node included; :meth:`Membership.suspect` is how a reader reports a
peer that did not answer, which is then left out for ``cooldown_seconds`` (so one dead peer
costs one timeout, not one per block) until it answers a probe again.

:class:`StaticMembership` is the list given in settings (``peers``, for tests and sites without
Kubernetes); :mod:`edgecache.pool._leases` gets the list from Leases through the local hub.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from edgecache.addresses import parse_address
from edgecache.errors import ConfigError, quoted
from edgecache.metrics import PEER_MEMBERS

__all__ = ["Member", "Membership", "StaticMembership", "parse_member"]


@dataclass(frozen=True, slots=True)
class Member:
    """One node of the pool as its peers reach it."""

    name: str
    """Stable name, the input of rendezvous hashing (node name; a static entry's address)."""
    address: str
    """``HOST:PORT`` of its block server."""


def parse_member(entry: str, *, option: str = "peers") -> Member:
    """A static list entry, ``[NAME=]HOST:PORT``; the name defaults to the address."""
    name, sep, address = entry.strip().rpartition("=")
    if not sep:
        name, address = address, address
    parse_address(address, option=option)
    if not name:
        raise ConfigError(f"{option}: {quoted(entry)} has an empty name before '='")
    return Member(name.strip(), address.strip())


class Membership:
    """The members of the pool and the peers left out for a while after failing.

    Subclasses keep :attr:`members` current; readers call :meth:`live` and :meth:`suspect`.
    """

    def __init__(self, me: Member, *, cooldown_seconds: float) -> None:
        self.me = me
        self.cooldown_seconds = cooldown_seconds
        self.members: tuple[Member, ...] = (me,)
        """Everyone this node believes in the pool (itself included), before cooldowns."""
        self._suspected: dict[str, float] = {}
        """Member name -> monotonic time until which it is left out."""

    def live(self) -> tuple[Member, ...]:
        """The members believed alive now: :attr:`members` less those in cooldown."""
        if not self._suspected:
            return self.members
        now = time.monotonic()
        for name, until in list(self._suspected.items()):
            if until <= now:
                del self._suspected[name]
        return tuple(m for m in self.members if m.name not in self._suspected)

    def suspect(self, member: Member) -> None:
        """``member`` did not answer: leave it out for ``cooldown_seconds``."""
        if member != self.me:
            self._suspected[member.name] = time.monotonic() + self.cooldown_seconds

    def cleared(self, member: Member) -> None:
        """``member`` answered: it is in again."""
        self._suspected.pop(member.name, None)

    def set_members(self, members: Iterable[Member]) -> None:
        """Replace the member list (this node is always in it)."""
        found = {m.name: m for m in members}
        found[self.me.name] = self.me
        self.members = tuple(sorted(found.values(), key=lambda m: m.name))
        PEER_MEMBERS.set(len(self.members))

    async def start(self) -> None:
        """Begin keeping the list current (nothing to do for a static list)."""

    async def stop(self) -> None:
        """Stop keeping it current (and leave the pool, where that means something)."""


class StaticMembership(Membership):
    """A fixed list of members (settings ``peers``); liveness from failures alone."""

    def __init__(self, me: Member, peers: Iterable[Member], *, cooldown_seconds: float) -> None:
        peers = list(peers)
        # The entry with our advertised address is us, under the name it gives (the name the
        # other nodes hash on): every node must rank the same names.
        me = next((p for p in peers if p.address == me.address), me)
        super().__init__(me, cooldown_seconds=cooldown_seconds)
        self.set_members(peers)
