"""The on-disk format of one SSD block: a small header, then the (maybe LZ4-compressed) bytes.

The SSD tier writes every block with :func:`encode_block` and reads it back whole with
:func:`read_block` / :func:`read_block_into`, or in parts with :class:`BlockFile`. The header
carries the key digest (a block renamed or copied to the wrong name is detected), the raw length
and an xxh3-64 checksum of the raw bytes; any mismatch raises :class:`CorruptBlockError`, which
the tier turns into a miss. Compression is LZ4 frame format and is kept only where it saves at
least the configured fraction, so incompressible data costs nothing to read.

Layout (little endian, 48 bytes)::

    magic "ECB1" | flags u8 | segment log2 u8 | pad 2 | raw_len u64 | stored_len u64 |
    xxh3_64(raw) u64 | digest 16B

An uncompressed block of at least two segments is stored *segmented* (flag 2): its bytes are
preceded by a table of n + 1 xxh3-64 checksums, that of the other n entries, then one per
segment of ``2 ** segment log2`` bytes (the last one shorter). A read of a part of the block
(``f.read(1 MiB)`` of a 4 MiB block) then reads and verifies only the segments it covers,
while they are still in the CPU's cache, instead of reading and hashing the whole block for
every part; a whole read still checks the one checksum of the header (and the table's own).
The segment size is a function of the raw length (:func:`segment_bytes_for`), so a reader
checks it like every other field.

Every field is checked before any length in it is used: flags and padding must be what a writer
writes, the raw length at most what the reader expects (its block size), the stored length equal
to the raw length (uncompressed), the raw length plus the table (segmented) or not larger (LZ4
is kept only when it saves). So a flipped bit anywhere in the header is a
:class:`CorruptBlockError` (a miss), never a read of 2**56 bytes.

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
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import lz4.frame
import xxhash

from edgecache.errors import CorruptBlockError

__all__ = [
    "HEADER_SIZE",
    "BlockFile",
    "BlockFileInfo",
    "CorruptBlockError",
    "Failed",
    "Header",
    "decode_block",
    "decode_block_bytes",
    "encode_block",
    "inspect_block_file",
    "is_block_name",
    "parse_header",
    "read_block",
    "read_block_into",
    "segment_bytes_for",
    "uncompressed_file_bytes",
]

_MAGIC = b"ECB1"
_HEADER = struct.Struct("<4sBB2sQQQ16s")
_PAD = b"\0\0"
_DIGEST_NAME = re.compile(r"[0-9a-f]{32}")
_NO_TABLE: array[int] = array("Q")
"""The checksums of a block that is not segmented."""
HEADER_SIZE = _HEADER.size
_FLAG_LZ4 = 1
_FLAG_SEGMENTED = 2
_SAMPLE_BYTES = 64 * 1024
_MIN_SEGMENT_LOG2 = 14
_MAX_SEGMENT_LOG2 = 16
_MIN_SEGMENTED_BYTES = 64 * 1024
"""Smaller blocks (small files, sparse pages) are read whole: one checksum is cheaper."""
_ONE_READ_BYTES = 64 * 1024
"""A block stored in up to this many bytes (a small file, a page: never segmented) is read
with its header in one system call; a larger one as header, then payload."""
_CHECK_STEP_BYTES = 1024 * 1024
"""A whole block read into a buffer is read and hashed this much at a time: the hash reads
bytes the read just put in the CPU's cache."""


def segment_bytes_for(raw_len: int) -> int:
    """The segment size of an uncompressed block of ``raw_len`` bytes (0: not segmented, under
    64 KiB): a quarter of the block rounded down to a power of two, between 16 KiB and 64 KiB
    (a 4 MiB block has 64 segments, a 520-byte table; a read of 64 KiB reads and hashes 64 KiB)."""
    if raw_len < _MIN_SEGMENTED_BYTES:
        return 0
    log2 = min(max((raw_len // 4).bit_length() - 1, _MIN_SEGMENT_LOG2), _MAX_SEGMENT_LOG2)
    return 1 << log2


def uncompressed_file_bytes(raw_len: int) -> int:
    """Bytes of the file of a block of ``raw_len`` bytes stored uncompressed (what the SSD
    quota counts): the header, the segment table if any, the bytes."""
    segment = segment_bytes_for(raw_len)
    table = 8 * (1 - (-raw_len // segment)) if segment else 0
    return HEADER_SIZE + table + raw_len


def _segment_checksums(data: bytes | memoryview, segment: int) -> list[int]:
    view = memoryview(data)
    return [xxhash.xxh3_64_intdigest(view[o : o + segment]) for o in range(0, len(view), segment)]


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
    segment = 0 if packed is not None else segment_bytes_for(len(data))
    if packed is not None:
        flags, payload = _FLAG_LZ4, packed
    elif segment:
        checksums = _segment_checksums(data, segment)
        entries = struct.pack(f"<{len(checksums)}Q", *checksums)
        table = struct.pack("<Q", xxhash.xxh3_64_intdigest(entries)) + entries
        flags, payload = _FLAG_SEGMENTED, table + data
    else:
        flags, payload = 0, data
    header = _HEADER.pack(
        _MAGIC,
        flags,
        segment.bit_length() - 1 if segment else 0,
        _PAD,
        len(data),
        len(payload),
        xxhash.xxh3_64_intdigest(data),
        bytes.fromhex(digest),
    )
    return header + payload


class Header(NamedTuple):
    """What a checked header says."""

    compressed: bool
    raw_len: int
    stored_len: int
    checksum: int
    """xxh3-64 of the raw bytes."""
    segment_bytes: int
    """Segment size of a segmented block, else 0."""

    @property
    def table_len(self) -> int:
        """Bytes of the segment table (0 unless segmented)."""
        return self.stored_len - self.raw_len if self.segment_bytes else 0

    @property
    def data_offset(self) -> int:
        """Where the raw (or compressed) bytes start in the file."""
        return HEADER_SIZE + self.table_len


def parse_header(header: bytes, *, digest: str, max_raw_len: int) -> Header:
    """Check a header (its first :data:`HEADER_SIZE` bytes).

    ``max_raw_len`` is the most bytes the block can hold (the key's block size): no length
    larger than that is ever returned, so a caller may read ``stored_len`` bytes safely.
    """
    if len(header) < HEADER_SIZE:
        raise CorruptBlockError("truncated header")
    magic, flags, log2, pad, raw_len, stored_len, checksum, key = _HEADER.unpack_from(header)
    if magic != _MAGIC:
        raise CorruptBlockError("bad magic")
    if flags not in (0, _FLAG_LZ4, _FLAG_SEGMENTED) or pad != _PAD:
        raise CorruptBlockError(f"bad flags or padding ({flags:#x}, {pad.hex()})")
    if key != bytes.fromhex(digest):
        raise CorruptBlockError("block belongs to another key")
    if raw_len > max_raw_len:
        raise CorruptBlockError(f"header says {raw_len} bytes, a block holds at most {max_raw_len}")
    segment = segment_bytes_for(raw_len) if flags == _FLAG_SEGMENTED else 0
    if log2 != (segment.bit_length() - 1 if segment else 0) or (
        flags == _FLAG_SEGMENTED and not segment
    ):
        raise CorruptBlockError(f"segment size 2**{log2} is not that of {raw_len} bytes")
    compressed = flags == _FLAG_LZ4
    if segment:
        expected = uncompressed_file_bytes(raw_len) - HEADER_SIZE
        if stored_len != expected:
            raise CorruptBlockError(f"header says {stored_len} bytes stored, not {expected}")
    elif stored_len > raw_len or (not compressed and stored_len != raw_len):
        raise CorruptBlockError(f"header says {stored_len} bytes stored for {raw_len} raw")
    return Header(compressed, raw_len, stored_len, checksum, segment)


def _checked_table(table: bytes, head: Header) -> array[int]:
    """The segment checksums of a segmented block, once the table's own checksum matches."""
    if len(table) != head.table_len:
        raise CorruptBlockError("segment table is cut short")
    entries = memoryview(table)[8:]
    if xxhash.xxh3_64_intdigest(entries) != int.from_bytes(table[:8], "little"):
        raise CorruptBlockError("segment table checksum mismatch")
    # A copy of the 8-byte entries as they are, where unpacking them made 64 Python ints
    # per block a reader opens; each is made when its segment is checked.
    checksums = array("Q")
    checksums.frombytes(entries)
    if sys.byteorder == "big":
        checksums.byteswap()
    return checksums


def decode_block(header: bytes, payload: bytes, *, digest: str, max_raw_len: int) -> bytes:
    """Verify and return the raw bytes of a block read as ``header`` + ``payload`` (all that
    follows the header: a segmented block's table included)."""
    head = parse_header(header, digest=digest, max_raw_len=max_raw_len)
    if len(payload) != head.stored_len:
        raise CorruptBlockError(f"payload is {len(payload)} bytes, header says {head.stored_len}")
    if head.compressed:
        try:
            data: bytes = lz4.frame.decompress(payload)
        except RuntimeError as exc:
            raise CorruptBlockError(f"LZ4 frame does not decode: {exc}") from exc
    elif head.segment_bytes:
        _checked_table(payload[: head.table_len], head)
        data = payload[head.table_len :]
    else:
        data = payload
    if len(data) != head.raw_len or xxhash.xxh3_64_intdigest(data) != head.checksum:
        raise CorruptBlockError("checksum mismatch")
    return data


def _table_of(start: bytes, fd: int, head: Header) -> array[int]:
    """The checked segment checksums of the segmented block open as ``fd``, whose file begins
    with ``start`` (the rest of the table is read if ``start`` holds only part of it)."""
    table = start[HEADER_SIZE : head.data_offset]
    if len(table) < head.table_len:
        table = os.pread(fd, head.table_len, HEADER_SIZE)
    return _checked_table(table, head)


def _read_head(fd: int, *, digest: str, max_raw_len: int) -> tuple[Header, array[int]]:
    """The checked header of the block open as ``fd`` and, if segmented, its checked segment
    checksums (read in one system call with the header: at most ~8 KiB for the largest blocks)."""
    limit = segment_bytes_for(max_raw_len)
    guess = 8 * (1 - (-max_raw_len // limit)) if limit else 0
    start = os.pread(fd, HEADER_SIZE + guess, 0)
    head = parse_header(start, digest=digest, max_raw_len=max_raw_len)
    return head, _table_of(start, fd, head) if head.segment_bytes else _NO_TABLE


def _check_length(fd: int, head: Header) -> os.stat_result:
    """The file's status, once its length is the one its header says (a longer or shorter
    file is damage, not a block)."""
    st = os.fstat(fd)
    if st.st_size != HEADER_SIZE + head.stored_len:
        raise CorruptBlockError(f"file is not the {head.stored_len} bytes the header says")
    return st


def read_block(fd: int, *, digest: str, max_raw_len: int) -> bytes:
    """The verified raw bytes of the block open as ``fd``."""
    # A small block (a small file, a page) comes with its header in one read: one system
    # call fewer per warm small-file read, for a copy of the few KiB it holds.
    start = os.pread(fd, HEADER_SIZE + _ONE_READ_BYTES + 1, 0)
    head = parse_header(start, digest=digest, max_raw_len=max_raw_len)
    if head.stored_len <= _ONE_READ_BYTES and len(start) == HEADER_SIZE + head.stored_len:
        # All of the file, and not a byte more (that would be damage): no table is this small.
        payload = start[HEADER_SIZE:]
    else:
        if head.segment_bytes:
            _table_of(start, fd, head)  # checked, though the whole read needs none of it
        # One byte more than the header says: a longer file is damage, not a block. Read in
        # one system call and checked by one hash: hashing it a segment (or 256 KiB) at a
        # time while in the CPU's cache measured no faster here (a warm f.read(4 MiB): 670
        # against 750 us), and one call for 64 segments costs fewer Python calls.
        payload = os.pread(fd, head.stored_len - head.table_len + 1, head.data_offset)
    return _decoded(payload, head)


def _decoded(payload: bytes, head: Header) -> bytes:
    """The raw bytes of the payload read after ``head`` (the table left out), verified."""
    if len(payload) != head.stored_len - head.table_len:
        raise CorruptBlockError(f"payload is not the {head.stored_len} bytes the header says")
    if head.compressed:
        try:
            data: bytes = lz4.frame.decompress(payload)
        except RuntimeError as exc:
            raise CorruptBlockError(f"LZ4 frame does not decode: {exc}") from exc
    else:
        data = payload
    if len(data) != head.raw_len or xxhash.xxh3_64_intdigest(data) != head.checksum:
        raise CorruptBlockError("checksum mismatch")
    return data


def decode_block_bytes(blob: bytes, *, digest: str, max_raw_len: int) -> bytes:
    """Verify and return the raw bytes of a block serialised by :func:`encode_block` as one
    ``bytes`` (the pool's wire carries blocks this way, checksum included)."""
    return decode_block(
        blob[:HEADER_SIZE], blob[HEADER_SIZE:], digest=digest, max_raw_len=max_raw_len
    )


def read_block_into(fd: int, out: memoryview, *, digest: str) -> None:
    """Verify the block open as ``fd`` and put its raw bytes in ``out``, which must be exactly
    the raw length.

    An uncompressed payload is read straight into ``out`` and hashed there, a step at a time
    while the step is in the CPU's cache: one copy, where reading it as bytes and then joining
    it into a larger buffer costs two.
    """
    head, _ = _read_head(fd, digest=digest, max_raw_len=len(out))
    if head.raw_len != len(out):
        raise CorruptBlockError(f"block holds {head.raw_len} bytes, the read expects {len(out)}")
    if head.compressed:
        out[:] = read_block(fd, digest=digest, max_raw_len=len(out))
        return
    _check_length(fd, head)
    hasher = xxhash.xxh3_64()
    for o in range(0, len(out), _CHECK_STEP_BYTES):
        step = out[o : o + _CHECK_STEP_BYTES]
        if os.preadv(fd, [step], head.data_offset + o) != len(step):
            raise CorruptBlockError(f"payload ends before the {head.stored_len} bytes it says")
        hasher.update(step)
    if hasher.intdigest() != head.checksum:
        raise CorruptBlockError("checksum mismatch")


Failed = Callable[[BaseException, tuple[int, int] | None], None]
"""What a :class:`BlockFile` calls when a read finds its file damaged or fails: with the error
and the (device, inode) of the file it read."""


class BlockFile:
    """One block file open for reads of parts of it, each verified when read.

    A segmented block is read segment by segment: a read of ``[lo, hi)`` reads the segments
    that cover it and checks them against the table (checked itself when the file was opened),
    so every byte returned was verified after this read brought it from disk. A block stored
    whole (LZ4, or too small to be segmented) is read and verified once, here, and its parts
    are served from that copy. The segments of the last read that did not end on a segment
    boundary are kept, so small sequential reads (``readline``, 4 KiB) read each one once.

    CorruptBlockError from the constructor: the file is damaged. A read that finds it damaged
    (or fails with an OSError) closes the file, tells ``failed`` (the tier counts and removes
    it) and returns None, as every read after it does. The reader calls this object itself,
    not a wrapper that handles the errors: a warm 64 KiB read is ~10 us, a Python call ~0.5.
    """

    def __init__(self, fd: int, *, digest: str, max_raw_len: int, failed: Failed) -> None:
        self._fd = -1
        """Ours to close once construction succeeded (until then the caller's)."""
        head, checksums = _read_head(fd, digest=digest, max_raw_len=max_raw_len)
        self.length = head.raw_len
        """The block's raw length."""
        self._failed = failed
        self._whole: bytes | None = None
        self._segment = head.segment_bytes
        self._data_offset = head.data_offset
        self._checksums = checksums
        self._kept_start = self._kept_end = 0
        self._kept = b""
        self.identity: tuple[int, int] | None = None
        """(device, inode) of the open file, when it stays open (the tier removes a damaged
        file only if it is still this one)."""
        if head.segment_bytes:
            st = _check_length(fd, head)
            self.identity = (st.st_dev, st.st_ino)
            self._fd = fd
        else:
            # All of it is in memory now: the caller closes the file.
            self._whole = read_block(fd, digest=digest, max_raw_len=max_raw_len)

    @property
    def holds_file(self) -> bool:
        """Whether the file stays open (segmented: read per part) rather than held in memory."""
        return self._fd >= 0

    def read(self, lo: int, hi: int) -> bytes | None:
        """Verified bytes ``[lo, hi)`` of the block (``0 <= lo < hi <= length``); None once the
        file was found damaged (or closed)."""
        whole = self._whole
        if whole is not None:
            return whole if (lo, hi) == (0, len(whole)) else whole[lo:hi]
        fd, segment = self._fd, self._segment
        if fd < 0:
            return None
        try:
            if lo % segment == 0 and hi - lo == segment:
                # The one-segment read (64 KiB of a 4 MiB block): every step of the general
                # path below costs this read's time, which is a few microseconds in all.
                data = os.pread(fd, segment, self._data_offset + lo)
                if (
                    len(data) == segment
                    and xxhash.xxh3_64_intdigest(data) == self._checksums[lo // segment]
                ):
                    return data
                self._verify(data, lo, segment)  # raises, saying what is wrong
            if self._kept_start <= lo and hi <= self._kept_end:
                return self._kept[lo - self._kept_start : hi - self._kept_start]
            first = lo - lo % segment
            last = min(hi + (-hi % segment), self.length)
            data = os.pread(fd, last - first, self._data_offset + first)
            self._verify(data, first, last - first)
        except (CorruptBlockError, OSError) as exc:
            self._fail(exc)
            return None
        if (first, last) == (lo, hi):
            return data
        self._kept, self._kept_start, self._kept_end = data, first, last
        return data[lo - first : hi - first]

    def read_into(self, lo: int, out: memoryview) -> bool:
        """Put verified bytes ``[lo, lo + len(out))`` of the block into ``out``; False once the
        file was found damaged (or closed)."""
        hi = lo + len(out)
        segment = self._segment
        if (
            self._whole is None
            and self._fd >= 0
            and lo % segment == 0
            and (hi % segment == 0 or hi == self.length)
        ):
            try:
                got = os.preadv(self._fd, [out], self._data_offset + lo)
                self._verify(out[:got], lo, len(out))
            except (CorruptBlockError, OSError) as exc:
                self._fail(exc)
                return False
            return True
        data = self.read(lo, hi)
        if data is None:
            return False
        out[:] = data
        return True

    def _verify(self, data: bytes | memoryview, first: int, length: int) -> None:
        if len(data) != length:
            raise CorruptBlockError("payload ends before the length its header says")
        segment, checksums = self._segment, self._checksums
        index = first // segment
        if length <= segment:  # the common 16-64 KiB read: one checksum, no slicing
            if xxhash.xxh3_64_intdigest(data) != checksums[index]:
                raise CorruptBlockError(f"checksum mismatch in segment {index}")
            return
        view = memoryview(data)
        for o in range(0, length, segment):
            if xxhash.xxh3_64_intdigest(view[o : o + segment]) != checksums[index]:
                raise CorruptBlockError(f"checksum mismatch in segment {index}")
            index += 1

    def _fail(self, exc: BaseException) -> None:
        identity = self.identity
        self.close()
        self._failed(exc, identity)

    def close(self) -> None:
        """Let go of the file and the bytes held (the bytes read stay valid)."""
        self._whole = None
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __del__(self) -> None:
        # A file object dropped without close() (a handle never closed) must not leak its fd.
        if getattr(self, "_fd", -1) >= 0:
            self.close()


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
        head = parse_header(header, digest=digest, max_raw_len=sys.maxsize)
    except CorruptBlockError:
        return None
    if st.st_size != HEADER_SIZE + head.stored_len:
        return None
    return BlockFileInfo(digest, head.raw_len, st.st_size, st.st_mtime)
