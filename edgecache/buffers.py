"""New ``bytes`` objects filled in place: how a read hands out bytes made by one copy.

A file's ``read(n)`` must return ``bytes``. The cache assembles them from block files (the
blocks of a whole-file read, read in parallel threads). Pure Python offers only ``bytearray``
(a second copy to turn it into ``bytes``) or a zero-filled buffer (``bytes(n)``, ``BytesIO``: a
pass over every byte before the read, which for a fresh 128 MiB buffer also takes every page
fault in user code). :func:`filled_bytes` instead makes the object as CPython's own ``os.read``
does: the C API ``PyBytes_FromStringAndSize(NULL, n)`` (documented: "the contents are
uninitialized", for the caller to fill), ``PyBytes_AsString`` for its buffer and
``PyMemoryView_FromMemory`` for a writable view of it, here through :mod:`ctypes`. The object is
handed to nobody until it is filled, and the writable view on it is released before it is
returned.

The view does not own the object, so the contract on ``fill`` is strict: it must not return (or
raise) while any thread still writes into the view or a slice of it, and it must keep no slice
of it. :meth:`~edgecache.cache.TieredCache.get_cached_many_into`, which fills the pieces of a
multi-block read on I/O threads, waits for every thread before it returns for that reason.
Where ``ctypes.pythonapi`` does not exist (PyPy, GraalPy), a ``bytearray`` is filled and copied
once into ``bytes``.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

__all__ = ["filled_bytes"]

_PYBUF_WRITE = 0x200
_C_API = getattr(ctypes, "pythonapi", None)
if _C_API is not None:
    _new_bytes = _C_API.PyBytes_FromStringAndSize
    _new_bytes.restype = ctypes.py_object
    _new_bytes.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    _bytes_buffer = _C_API.PyBytes_AsString
    _bytes_buffer.restype = ctypes.c_void_p
    _bytes_buffer.argtypes = (ctypes.py_object,)
    # A view straight on that buffer: a ctypes array type per length would be made (and cached
    # by ctypes) for every distinct read size.
    _view_of = _C_API.PyMemoryView_FromMemory
    _view_of.restype = ctypes.py_object
    _view_of.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int)


def filled_bytes(size: int, fill: Callable[[memoryview], bool]) -> bytes | None:
    """A new ``bytes`` of ``size`` bytes, filled by ``fill(view)`` (a writable byte view of
    all of it, valid only during the call); None if ``fill`` returns False (what it wrote is
    dropped). ``fill`` must write every byte: the others are undefined. It must not return
    while another thread still writes into the view, nor keep a slice of it."""
    if size <= 0:
        return b"" if fill(memoryview(bytearray())) else None
    if _C_API is None:
        buffer = bytearray(size)
        with memoryview(buffer) as plain:
            complete = fill(plain)
        return bytes(buffer) if complete else None
    out: bytes = _new_bytes(None, size)
    view: memoryview = _view_of(_bytes_buffer(out), size, _PYBUF_WRITE)
    with view:
        complete = fill(view)
    return out if complete else None
