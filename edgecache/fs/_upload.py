"""Files opened for writing: what ``fs.open(path, "wb")`` returns.

Place in the data path::

    user code -- fs.open("bkt/k", "wb") --> SpooledUpload --(close)--> ReadEngine.write("put_file")
                                                                          --> backend (async client)

An object store's client is asynchronous and bound to the read engine's loop (s3fs, ossfs made
with ``asynchronous=True``): its own file objects (``S3File``) drive it through its sync API,
which such a client does not have. So the bytes written go to a local temporary file, and on
``close`` the engine uploads it whole with the client's ``put_file`` (multipart for large
files), under the same guard as every other call: an unreachable store raises
:class:`~edgecache.errors.BackendUnavailableError`, and the object that was there (and what
the cache holds of it) stays as it was, since object stores replace objects whole. Once the
upload succeeded the cache forgets the old version. The temporary file
(``edgecache-upload-*`` in the system's temporary directory, ``TMPDIR``: it needs room for the
object) is this object's own and is removed on close, whatever happens.

A backend whose client is synchronous (``file``, ``memory``, blocking plugins) opens its own
file object instead (:class:`WriteThrough`), and the cache forgets the path once it is closed.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from typing import Any

__all__ = ["SpooledUpload", "WriteThrough"]


class SpooledUpload(io.BufferedIOBase):
    """A binary file for writing whose bytes are uploaded when it is closed (see module doc).

    ``upload(local_path)`` sends the finished file; ``close`` raises what it raises, after the
    temporary file is removed. A file left unclosed is discarded, never half-uploaded.
    """

    def __init__(self, path: str, upload: Callable[[str], None]) -> None:
        super().__init__()
        self.path = path
        """The object's path in the store."""
        self._upload = upload
        self._spool = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in close()
            prefix="edgecache-upload-", delete=False
        )

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._spool.tell()

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError(f"I/O operation on closed file {self.path}")
        written: int = self._spool.write(data)
        return written

    def flush(self) -> None:
        # Nothing reaches the store before close: an object store has no partial objects.
        if not self._spool.closed:
            self._spool.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._spool.close()
            self._upload(self._spool.name)
        finally:
            try:
                os.unlink(self._spool.name)
            finally:
                super().close()

    def discard(self) -> None:
        """Close without uploading: the store keeps what it had."""
        if self.closed:
            return
        self._spool.close()
        try:
            os.unlink(self._spool.name)
        finally:
            super().close()

    def __exit__(self, kind: object, *rest: object) -> None:
        # An error inside ``with fs.open(...) as f`` must not replace the object with the
        # part written before it.
        if kind is not None:
            self.discard()
        else:
            self.close()

    def __del__(self) -> None:
        if not getattr(self, "closed", True):
            self.discard()


class WriteThrough:
    """A synchronous backend's file opened for writing; the cache forgets the path once it is
    closed."""

    def __init__(self, handle: Any, on_close: Callable[[], None]) -> None:
        self._handle = handle
        self._on_close = on_close

    def close(self) -> None:
        try:
            self._handle.close()
        finally:
            self._on_close()

    def __enter__(self) -> WriteThrough:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __iter__(self) -> Any:
        return iter(self._handle)
