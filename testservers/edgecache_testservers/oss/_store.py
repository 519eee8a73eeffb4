"""The OSS test server's state: buckets, objects, appendable objects and multipart uploads.

Below the HTTP handlers and above nothing: plain in-memory data with the service's rules (sorted
keys, listing with prefix/delimiter/marker/max-keys, part numbers 1..10000, a minimum part size,
append positions). A lock makes it safe to seed from a test thread while the server's loop serves.
"""

from __future__ import annotations

import bisect
import hashlib
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ._crc64 import crc64
from ._errors import OSSError, no_such_bucket, no_such_key, no_such_upload

MAX_PART_NUMBER = 10_000


@dataclass(frozen=True)
class StoredObject:
    """One object version. ``etag`` is the bare upper-case hex the service quotes in ``ETag``."""

    key: str
    data: bytes
    etag: str
    last_modified: float
    content_type: str = "application/octet-stream"
    object_type: str = "Normal"
    """``Normal``, ``Multipart`` or ``Appendable``."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """User metadata: ``x-oss-meta-*`` headers, lower-cased names."""
    crc64: int | None = None

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class Part:
    number: int
    data: bytes
    etag: str
    last_modified: float
    crc64: int | None


@dataclass
class Upload:
    upload_id: str
    key: str
    initiated: float
    content_type: str
    metadata: Mapping[str, str]
    parts: dict[int, Part] = field(default_factory=dict)


@dataclass
class Bucket:
    name: str
    created: float
    acl: str = "private"
    """``private``, ``public-read`` or ``public-read-write``."""
    objects: dict[str, StoredObject] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    """``objects``' keys, sorted (listing walks it with bisect)."""
    uploads: dict[str, Upload] = field(default_factory=dict)


@dataclass(frozen=True)
class ListPage:
    objects: Sequence[StoredObject]
    prefixes: Sequence[str]
    truncated: bool
    next_marker: str
    """The last key or common prefix returned when ``truncated``; listing resumes after it."""


def md5_etag(data: bytes) -> str:
    return hashlib.md5(data).hexdigest().upper()


class Store:
    """All buckets of one test server. ``min_part_size_bytes``: the service's 100 KiB rule for
    every part but the last, enforced at completion (``EntityTooSmall``)."""

    def __init__(self, *, min_part_size_bytes: int = 100 * 1024, crc: bool = True) -> None:
        self.min_part_size_bytes = min_part_size_bytes
        self.crc = crc
        self._lock = threading.Lock()
        self.buckets: dict[str, Bucket] = {}

    def _crc(self, data: bytes) -> int | None:
        return crc64(data) if self.crc else None

    # ---------------------------------------------------------------------------- buckets

    def create_bucket(self, name: str, *, acl: str = "private", exist_ok: bool = True) -> Bucket:
        with self._lock:
            if name in self.buckets:
                if not exist_ok:
                    raise OSSError(
                        409,
                        "BucketAlreadyExists",
                        "The requested bucket name is not available.",
                        BucketName=name,
                    )
                return self.buckets[name]
            bucket = self.buckets[name] = Bucket(name, time.time(), acl)
            return bucket

    def delete_bucket(self, name: str) -> None:
        with self._lock:
            bucket = self.bucket(name)
            if bucket.objects or bucket.uploads:
                raise OSSError(
                    409,
                    "BucketNotEmpty",
                    "The bucket you tried to delete is not empty.",
                    BucketName=name,
                )
            del self.buckets[name]

    def bucket(self, name: str) -> Bucket:
        bucket = self.buckets.get(name)
        if bucket is None:
            raise no_such_bucket(name)
        return bucket

    # ---------------------------------------------------------------------------- objects

    def get(self, bucket_name: str, key: str) -> StoredObject:
        obj = self.bucket(bucket_name).objects.get(key)
        if obj is None:
            raise no_such_key(key)
        return obj

    def _store(self, bucket: Bucket, obj: StoredObject) -> StoredObject:
        if obj.key not in bucket.objects:
            bisect.insort(bucket.keys, obj.key)
        bucket.objects[obj.key] = obj
        return obj

    def put(
        self,
        bucket_name: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        obj = StoredObject(
            key,
            bytes(data),
            md5_etag(data),
            time.time(),
            content_type,
            "Normal",
            dict(metadata or {}),
            self._crc(data),
        )
        with self._lock:
            return self._store(self.bucket(bucket_name), obj)

    def copy(
        self,
        source: StoredObject,
        bucket_name: str,
        key: str,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        obj = StoredObject(
            key,
            source.data,
            source.etag,
            time.time(),
            content_type or source.content_type,
            "Normal" if source.object_type == "Appendable" else source.object_type,
            dict(source.metadata if metadata is None else metadata),
            source.crc64,
        )
        with self._lock:
            return self._store(self.bucket(bucket_name), obj)

    def append(
        self,
        bucket_name: str,
        key: str,
        position: int,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        with self._lock:
            bucket = self.bucket(bucket_name)
            old = bucket.objects.get(key)
            if old is not None and old.object_type != "Appendable":
                raise OSSError(409, "ObjectNotAppendable", "The object is not appendable.", Key=key)
            length = old.size if old is not None else 0
            if position != length:
                raise OSSError(
                    409,
                    "PositionNotEqualToLength",
                    "Position is not equal to file length.",
                    headers={"x-oss-next-append-position": str(length)},
                    Key=key,
                )
            content = (old.data if old is not None else b"") + data
            obj = StoredObject(
                key,
                content,
                # The service gives appendable objects an opaque ETag that changes on each append.
                md5_etag(content),
                time.time(),
                old.content_type if old is not None else content_type,
                "Appendable",
                dict(old.metadata if old is not None else metadata or {}),
                self._crc(content),
            )
            return self._store(bucket, obj)

    def delete(self, bucket_name: str, key: str) -> bool:
        """Delete ``key``; ``False`` if it was absent (the service answers 204 all the same)."""
        with self._lock:
            bucket = self.bucket(bucket_name)
            if bucket.objects.pop(key, None) is None:
                return False
            del bucket.keys[bisect.bisect_left(bucket.keys, key)]
            return True

    def list_page(
        self,
        bucket_name: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        after: str = "",
        max_keys: int = 100,
    ) -> ListPage:
        """Sorted keys and common prefixes (rolled up at ``delimiter``) strictly after ``after``."""
        with self._lock:
            bucket = self.bucket(bucket_name)
            keys = bucket.keys
            start = bisect.bisect_right(keys, after) if after else 0
            start = max(start, bisect.bisect_left(keys, prefix))
            objects: list[StoredObject] = []
            prefixes: list[str] = []
            last = ""
            index = start
            while index < len(keys):
                key = keys[index]
                if not key.startswith(prefix):
                    break
                common = ""
                if delimiter:
                    cut = key.find(delimiter, len(prefix))
                    if cut >= 0:
                        common = key[: cut + len(delimiter)]
                if common and (common == last or common <= after):
                    # Inside a prefix already returned (or the marker itself): skip past it.
                    index = bisect.bisect_left(keys, _after_prefix(common), index + 1)
                    continue
                if len(objects) + len(prefixes) >= max_keys:
                    return ListPage(objects, prefixes, True, last)
                if common:
                    prefixes.append(common)
                    last = common
                    index = bisect.bisect_left(keys, _after_prefix(common), index + 1)
                else:
                    objects.append(bucket.objects[key])
                    last = key
                    index += 1
            return ListPage(objects, prefixes, False, "")

    # ------------------------------------------------------------------- multipart uploads

    def initiate(
        self,
        bucket_name: str,
        key: str,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> Upload:
        upload = Upload(
            secrets.token_hex(16).upper(), key, time.time(), content_type, dict(metadata or {})
        )
        with self._lock:
            self.bucket(bucket_name).uploads[upload.upload_id] = upload
        return upload

    def upload(self, bucket_name: str, key: str, upload_id: str) -> Upload:
        upload = self.bucket(bucket_name).uploads.get(upload_id)
        if upload is None or upload.key != key:
            raise no_such_upload(upload_id)
        return upload

    def upload_part(
        self, bucket_name: str, key: str, upload_id: str, number: int, data: bytes
    ) -> Part:
        if not 1 <= number <= MAX_PART_NUMBER:
            raise OSSError(
                400,
                "InvalidArgument",
                f"Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive.",
                ArgumentName="partNumber",
                ArgumentValue=str(number),
            )
        part = Part(number, bytes(data), md5_etag(data), time.time(), self._crc(data))
        with self._lock:
            self.upload(bucket_name, key, upload_id).parts[number] = part
        return part

    def complete(
        self,
        bucket_name: str,
        key: str,
        upload_id: str,
        chosen: Sequence[tuple[int, str]] | None,
    ) -> StoredObject:
        """Assemble the parts named in ``chosen`` ((number, etag), ascending), or all of them."""
        with self._lock:
            bucket = self.bucket(bucket_name)
            upload = self.upload(bucket_name, key, upload_id)
            if chosen is None:
                parts = [upload.parts[n] for n in sorted(upload.parts)]
            else:
                parts = []
                previous = 0
                for number, etag in chosen:
                    if number <= previous:
                        raise OSSError(
                            400,
                            "InvalidPartOrder",
                            "The list of parts was not in ascending order.",
                        )
                    previous = number
                    part = upload.parts.get(number)
                    if part is None or part.etag != etag.strip('"').upper():
                        raise OSSError(
                            400,
                            "InvalidPart",
                            "One or more of the specified parts could not be found or the "
                            "specified entity tag might not have matched the part's entity tag.",
                            PartNumber=str(number),
                            ETag=etag,
                        )
                    parts.append(part)
            if not parts:
                raise OSSError(
                    400, "InvalidRequest", "The multipart upload has no parts to complete."
                )
            for part in parts[:-1]:
                if len(part.data) < self.min_part_size_bytes:
                    raise OSSError(
                        400,
                        "EntityTooSmall",
                        "Your proposed upload is smaller than the minimum allowed size.",
                        PartNumber=str(part.number),
                        MinSizeAllowed=str(self.min_part_size_bytes),
                    )
            data = b"".join(part.data for part in parts)
            digest = hashlib.md5(b"".join(bytes.fromhex(p.etag) for p in parts)).hexdigest()
            obj = StoredObject(
                key,
                data,
                f"{digest.upper()}-{len(parts)}",
                time.time(),
                upload.content_type,
                "Multipart",
                upload.metadata,
                self._crc(data),
            )
            del bucket.uploads[upload_id]
            return self._store(bucket, obj)

    def abort(self, bucket_name: str, key: str, upload_id: str) -> None:
        with self._lock:
            self.upload(bucket_name, key, upload_id)
            del self.bucket(bucket_name).uploads[upload_id]


def _after_prefix(prefix: str) -> str:
    """The smallest string greater than every string that starts with ``prefix``."""
    return prefix + "\U0010ffff"
