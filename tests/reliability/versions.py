"""Objects whose every version is recognisable from its bytes (the reliability suite's readers
and tests): a read that mixes two versions, or is cut short, matches none."""

from __future__ import annotations


def version_bytes(name: str, version: int, size: int) -> bytes:
    """Version ``version`` of object ``name``: a header naming both, then a pattern of them,
    ``size`` bytes in all. A read that mixes versions, or is cut short, does not equal it."""
    unit = f"{name}:v{version}:".encode()
    return (unit * (size // len(unit) + 1))[:size]


def parse_version(name: str, data: bytes) -> int | None:
    """The version whose bytes ``data`` are exactly, or None (a mix, a cut, garbage)."""
    prefix = f"{name}:v".encode()
    if not data.startswith(prefix):
        return None
    end = data.find(b":", len(prefix))
    try:
        version = int(data[len(prefix) : end])
    except ValueError:
        return None
    return version if data == version_bytes(name, version, len(data)) else None
