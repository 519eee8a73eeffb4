"""Owner references: which stored objects depend on which, for garbage collection.

The store keeps this index up to date on every write. When an object is removed, its dependents
whose owners are all gone are deleted in turn (background propagation, done at once rather than by
a separate controller); ``propagationPolicy=Orphan`` instead strips the owner reference from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Location = tuple[tuple[str, str], tuple[str, str]]
"""``((group, plural), (namespace, name))``: where an object is stored."""


def owner_uids(obj: Mapping[str, Any]) -> set[str]:
    references = (obj.get("metadata") or {}).get("ownerReferences") or []
    return {str(ref.get("uid")) for ref in references if isinstance(ref, dict) and ref.get("uid")}


def _uid(obj: Mapping[str, Any] | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("uid") or "")


class OwnerIndex:
    """Object uids to locations, and owner uids to the locations of their dependents."""

    def __init__(self) -> None:
        self._locations: dict[str, Location] = {}
        self._dependents: dict[str, set[Location]] = {}

    def stored(
        self, location: Location, old: Mapping[str, Any] | None, new: Mapping[str, Any]
    ) -> None:
        """Record a write of ``new`` (replacing ``old``, if any) at ``location``."""
        if old is not None:
            self.dropped(location, old)
        if uid := _uid(new):
            self._locations[uid] = location
        for owner in owner_uids(new):
            self._dependents.setdefault(owner, set()).add(location)

    def dropped(self, location: Location, obj: Mapping[str, Any]) -> None:
        """Record the removal of ``obj`` from ``location``."""
        uid = _uid(obj)
        if uid and self._locations.get(uid) == location:
            del self._locations[uid]
        for owner in owner_uids(obj):
            dependents = self._dependents.get(owner)
            if dependents is not None:
                dependents.discard(location)
                if not dependents:
                    del self._dependents[owner]

    def exists(self, uid: str) -> bool:
        return uid in self._locations

    def dependents(self, uid: str) -> list[Location]:
        return sorted(self._dependents.get(uid, ()))

    def clear(self) -> None:
        self._locations.clear()
        self._dependents.clear()
