"""The on-disk format of one SSD block: a small header, then the (maybe LZ4-compressed) bytes.

The SSD tier writes every block with :func:`encode_block` and reads it back with
:func:`decode_block`. The header carries the key digest (a block renamed or copied to the wrong
name is detected), the raw length and an xxh3-64 checksum of the raw bytes; any mismatch raises
:class:`CorruptBlockError`, which the tier turns into a miss. Compression is LZ4 frame format and
is kept only where it saves at least the configured fraction, so incompressible data costs nothing
to read.

Layout (little endian, 48 bytes)::

    magic "ECB1" | flags u8 | pad 3 | raw_len u64 | stored_len u64 | xxh3_64(raw) u64 | digest 16B
"""

from __future__ import annotations

import os
import struct

import lz4.frame
import xxhash

from edgecache.errors import CorruptBlockError

__all__ = [
    "HEADER_SIZE",
    "CorruptBlockError",
    "decode_block",
    "decode_block_into",
    "encode_block",
    "parse_header",
]

_MAGIC = b"ECB1"
_HEADER = struct.Struct("<4sB3xQQQ16s")
HEADER_SIZE = _HEADER.size
_FLAG_LZ4 = 1
_SAMPLE_BYTES = 64 * 1024


def _compress_if_it_pays(data: bytes, *, mode: str, min_saving: float) -> bytes | None:
    if mode == "none" or len(data) < 512:
        return None
    if mode == "auto" and len(data) > 2 * _SAMPLE_BYTES:
        # A sample decides for the whole block: incompressible data (media, already-compressed
        # archives) then costs one 64 KiB trial instead of a full pass.
        sample = data[:_SAMPLE_BYTES]
        trial = lz4.frame.compress(sample, store_size=False)
        if len(trial) > len(sample) * (1 - min_saving / 2):
            return None
    packed: bytes = lz4.frame.compress(data, content_checksum=False, store_size=True)
    if len(packed) > len(data) * (1 - min_saving):
        return None
    return packed


def encode_block(data: bytes, *, digest: str, compression: str, min_saving: float) -> bytes:
    """Serialise a block for the SSD tier (header + payload)."""
    packed = _compress_if_it_pays(data, mode=compression, min_saving=min_saving)
    payload = data if packed is None else packed
    header = _HEADER.pack(
        _MAGIC,
        0 if packed is None else _FLAG_LZ4,
        len(data),
        len(payload),
        xxhash.xxh3_64_intdigest(data),
        bytes.fromhex(digest),
    )
    return header + payload


def parse_header(header: bytes, *, digest: str) -> tuple[bool, int, int, int]:
    """Check a header; return (compressed, raw_len, stored_len, checksum)."""
    if len(header) < HEADER_SIZE:
        raise CorruptBlockError("truncated header")
    magic, flags, raw_len, stored_len, checksum, key = _HEADER.unpack_from(header)
    if magic != _MAGIC:
        raise CorruptBlockError("bad magic")
    if key != bytes.fromhex(digest):
        raise CorruptBlockError("block belongs to another key")
    return bool(flags & _FLAG_LZ4), raw_len, stored_len, checksum


def decode_block(header: bytes, payload: bytes, *, digest: str) -> bytes:
    """Verify and return the raw bytes of a block read as ``header`` + ``payload``."""
    compressed, raw_len, stored_len, checksum = parse_header(header, digest=digest)
    if len(payload) != stored_len:
        raise CorruptBlockError(f"payload is {len(payload)} bytes, header says {stored_len}")
    if compressed:
        try:
            data: bytes = lz4.frame.decompress(payload)
        except RuntimeError as exc:
            raise CorruptBlockError(f"LZ4 frame does not decode: {exc}") from exc
    else:
        data = payload
    if len(data) != raw_len or xxhash.xxh3_64_intdigest(data) != checksum:
        raise CorruptBlockError("checksum mismatch")
    return data


def decode_block_into(fd: int, header: bytes, out: memoryview, *, digest: str) -> None:
    """Verify the block open as ``fd`` (its ``header`` already read) and put its raw bytes in
    ``out``, which must be exactly the raw length.

    An uncompressed payload is read straight into ``out`` and checked there: one copy, where
    reading it as bytes and then joining it into a larger buffer costs two.
    """
    compressed, raw_len, stored_len, checksum = parse_header(header, digest=digest)
    if raw_len != len(out):
        raise CorruptBlockError(f"block holds {raw_len} bytes, the read expects {len(out)}")
    if compressed:
        out[:] = decode_block(header, os.pread(fd, stored_len + 1, HEADER_SIZE), digest=digest)
        return
    got = os.preadv(fd, [out], HEADER_SIZE)
    if got != stored_len or os.fstat(fd).st_size != HEADER_SIZE + stored_len:
        raise CorruptBlockError(f"payload is {got} bytes or more, header says {stored_len}")
    if xxhash.xxh3_64_intdigest(out) != checksum:
        raise CorruptBlockError("checksum mismatch")
