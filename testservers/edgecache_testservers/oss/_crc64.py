"""CRC-64/ECMA as OSS reports it in ``x-oss-hash-crc64ecma`` (and ``oss2`` checks after uploads).

Computed with ``crcmod``'s C extension, which ``oss2`` itself depends on; without ``crcmod`` the
server omits the header, which clients accept (they then skip the check).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

_POLY = 0x142F0E1EBA9EA3693
_XOROUT = 0xFFFFFFFFFFFFFFFF


def _load() -> Callable[[bytes], int] | None:
    try:
        crcmod = importlib.import_module("crcmod")
    except ImportError:
        return None
    function: Callable[[bytes], int] = crcmod.mkCrcFun(_POLY, initCrc=0, xorOut=_XOROUT, rev=True)
    return function


_CRC64 = _load()


def crc64(data: bytes) -> int | None:
    """The CRC-64/ECMA of ``data``, or ``None`` when ``crcmod`` is not installed."""
    return _CRC64(data) if _CRC64 is not None else None
