"""The on-disk format of one SSD block: a small header, then the (maybe LZ4-compressed) bytes.

The SSD tier writes every block with :func:`encode_block` and reads it back with
:func:`decode_block`. The header carries the key digest (a block renamed or copied to the wrong
name is detected), the raw length and an xxh3-64 checksum of the raw bytes; any mismatch raises
:class:`CorruptBlockError`, which the tier turns into a miss. Compression is LZ4 frame format and
is kept only where it saves at least the configured fraction, so incompressible data costs nothing
to read.

Layout (little endian, 48 bytes)::

    magic "ECB1" | flags u8 | pad 3 | raw_len u64 | stored_len u64 | xxh3_64(raw) u64 | digest 16B

Every field is checked before any length in it is used: flags and padding must be what a writer
writes, the raw length at most what the reader expects (its block size), the stored length equal
to the raw length (uncompressed) or not larger (LZ4 is kept only when it saves). So a flipped bit
anywhere in the header is a :class:`CorruptBlockError` (a miss), never a read of 2**56 bytes.

A block file is self-describing: :func:`inspect_block_file` tells, from its name and header alone,
whether a file is one of ours and how much it holds, which is how the index is rebuilt from the
directory and how maintenance tells our files from anything else that lies there.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import sys
from dataclasses import dataclass

import lz4.frame
import xxhash

from edgecache.errors import CorruptBlockError

__all__ = [
    "HEADER_SIZE",
    "BlockFileInfo",
    "CorruptBlockError",
    "decode_block",
    "decode_block_bytes",
    "decode_block_into",
    "encode_block",
    "inspect_block_file",
    "is_block_name",
    "parse_header",
]

_MAGIC = b"ECB1"
_HEADER = struct.Struct("<4sB3sQQQ16s")
_PAD = b"\0\0\0"
_DIGEST_NAME = re.compile(r"[0-9a-f]{32}")
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
        _PAD,
        len(data),
        len(payload),
        xxhash.xxh3_64_intdigest(data),
        bytes.fromhex(digest),
    )
    return header + payload


def parse_header(header: bytes, *, digest: str, max_raw_len: int) -> tuple[bool, int, int, int]:
    """Check a header; return (compressed, raw_len, stored_len, checksum).

    ``max_raw_len`` is the most bytes the block can hold (the key's block size): no length
    larger than that is ever returned, so a caller may read ``stored_len`` bytes safely.
    """
    if len(header) < HEADER_SIZE:
        raise CorruptBlockError("truncated header")
    magic, flags, pad, raw_len, stored_len, checksum, key = _HEADER.unpack_from(header)
    if magic != _MAGIC:
        raise CorruptBlockError("bad magic")
    if flags not in (0, _FLAG_LZ4) or pad != _PAD:
        raise CorruptBlockError(f"bad flags or padding ({flags:#x}, {pad.hex()})")
    if key != bytes.fromhex(digest):
        raise CorruptBlockError("block belongs to another key")
    if raw_len > max_raw_len:
        raise CorruptBlockError(f"header says {raw_len} bytes, a block holds at most {max_raw_len}")
    compressed = flags == _FLAG_LZ4
    if stored_len > raw_len or (not compressed and stored_len != raw_len):
        raise CorruptBlockError(f"header says {stored_len} bytes stored for {raw_len} raw")
    return compressed, raw_len, stored_len, checksum


def decode_block(header: bytes, payload: bytes, *, digest: str, max_raw_len: int) -> bytes:
    """Verify and return the raw bytes of a block read as ``header`` + ``payload``."""
    compressed, raw_len, stored_len, checksum = parse_header(
        header, digest=digest, max_raw_len=max_raw_len
    )
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


def decode_block_bytes(blob: bytes, *, digest: str, max_raw_len: int) -> bytes:
    """Verify and return the raw bytes of a block serialised by :func:`encode_block` as one
    ``bytes`` (the pool's wire carries blocks this way, checksum included)."""
    return decode_block(
        blob[:HEADER_SIZE], blob[HEADER_SIZE:], digest=digest, max_raw_len=max_raw_len
    )


def decode_block_into(fd: int, header: bytes, out: memoryview, *, digest: str) -> None:
    """Verify the block open as ``fd`` (its ``header`` already read) and put its raw bytes in
    ``out``, which must be exactly the raw length.

    An uncompressed payload is read straight into ``out`` and checked there: one copy, where
    reading it as bytes and then joining it into a larger buffer costs two.
    """
    compressed, raw_len, stored_len, checksum = parse_header(
        header, digest=digest, max_raw_len=len(out)
    )
    if raw_len != len(out):
        raise CorruptBlockError(f"block holds {raw_len} bytes, the read expects {len(out)}")
    if compressed:
        payload = os.pread(fd, stored_len + 1, HEADER_SIZE)
        out[:] = decode_block(header, payload, digest=digest, max_raw_len=len(out))
        return
    got = os.preadv(fd, [out], HEADER_SIZE)
    if got != stored_len or os.fstat(fd).st_size != HEADER_SIZE + stored_len:
        raise CorruptBlockError(f"payload is {got} bytes or more, header says {stored_len}")
    if xxhash.xxh3_64_intdigest(out) != checksum:
        raise CorruptBlockError("checksum mismatch")


@dataclass(frozen=True, slots=True)
class BlockFileInfo:
    """What a block file's name and header say about it (its payload is not verified)."""

    digest: str
    raw_len: int
    """Bytes of the block once decoded."""
    file_size: int
    """Bytes the file takes (header + stored payload): what the quota counts."""
    mtime: float


def is_block_name(name: str) -> bool:
    """Whether ``name`` is a block file name (the 32 hex digits of a key digest)."""
    return _DIGEST_NAME.fullmatch(name) is not None


def inspect_block_file(path: str) -> BlockFileInfo | None:
    """The block file at ``path`` (``.../<2 hex>/<digest>``) if it is one of ours: a digest
    name in the directory of its first two digits, a valid header naming that digest, and a
    length that matches the header. None for anything else (nothing to touch)."""
    digest = os.path.basename(path)
    if not is_block_name(digest) or os.path.basename(os.path.dirname(path)) != digest[:2]:
        return None
    try:
        # Neither a symlink's target nor a FIFO (which would block) is ever one of ours.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        header = os.pread(fd, HEADER_SIZE, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        _, raw_len, stored_len, _ = parse_header(header, digest=digest, max_raw_len=sys.maxsize)
    except CorruptBlockError:
        return None
    if st.st_size != HEADER_SIZE + stored_len:
        return None
    return BlockFileInfo(digest, raw_len, st.st_size, st.st_mtime)
