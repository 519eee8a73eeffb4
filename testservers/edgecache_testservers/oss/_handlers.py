"""OSS operations over HTTP: which request is which operation, and how each one answers.

Between the server (authentication, request log, faults: ``_server``) and the store. Requests are
path-style, ``/bucket/key`` with the key percent-encoded (``oss2`` addresses any IP or
``localhost`` endpoint this way; ``/`` in keys arrives as ``%2F``). Operations covered:
ListBuckets; PutBucket, DeleteBucket, GetBucketInfo, GetBucketLocation, GetBucketAcl, ListObjects
(v1 and v2), ListMultipartUploads, DeleteMultipleObjects; GetObject (Range, conditional headers),
HeadObject, GetObjectMeta, PutObject, CopyObject, AppendObject, DeleteObject; multipart
InitiateMultipartUpload, UploadPart, CompleteMultipartUpload, AbortMultipartUpload, ListParts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import unquote

from aiohttp import web

from . import _xml
from ._errors import OSSError, invalid_argument
from ._store import Store, StoredObject

MAX_KEY_BYTES = 1023
MAX_LIST_KEYS = 1000
DEFAULT_LIST_KEYS = 100


@dataclass(frozen=True)
class Target:
    """What a request addresses: the service (no bucket), a bucket (no key) or an object."""

    bucket: str
    key: str


def parse_target(request: web.Request) -> Target:
    raw = request.rel_url.raw_path.lstrip("/")
    if not raw:
        return Target("", "")
    bucket, _, key = raw.partition("/")
    return Target(unquote(bucket), unquote(key))


def operation_of(
    method: str, target: Target, query: Mapping[str, str], headers: Mapping[str, str]
) -> str:
    """The OSS API name of a request (used for routing, the request log and fault matching)."""
    if not target.bucket:
        return "ListBuckets" if method == "GET" else "Unsupported"
    if not target.key:
        if method == "GET":
            for param, name in (
                ("bucketInfo", "GetBucketInfo"),
                ("location", "GetBucketLocation"),
                ("acl", "GetBucketAcl"),
                ("uploads", "ListMultipartUploads"),
            ):
                if param in query:
                    return name
            return "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"
        if method == "PUT":
            return "PutBucket" if not query else "Unsupported"
        if method == "DELETE":
            return "DeleteBucket" if not query else "Unsupported"
        if method == "POST" and "delete" in query:
            return "DeleteMultipleObjects"
        return "Unsupported"
    if method == "GET":
        return "ListParts" if "uploadId" in query else "GetObject"
    if method == "HEAD":
        return "GetObjectMeta" if "objectMeta" in query else "HeadObject"
    if method == "PUT":
        if "uploadId" in query and "partNumber" in query:
            return "UploadPart"
        if "x-oss-copy-source" in headers:
            return "CopyObject"
        return "PutObject"
    if method == "POST":
        if "append" in query:
            return "AppendObject"
        if "uploads" in query:
            return "InitiateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "Unsupported"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    return "Unsupported"


def http_date(seconds: float) -> str:
    return formatdate(seconds, usegmt=True)


def _int_param(query: Mapping[str, str], name: str, default: int) -> int:
    text = query.get(name, "")
    if text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise invalid_argument(f"{name} is not an integer.", name, text) from None


def _content_md5(request: web.Request, body: bytes) -> str:
    """Checks a sent ``Content-MD5``; returns the body's MD5 in base64 for the answer."""
    digest = hashlib.md5(body).digest()
    sent = request.headers.get("Content-MD5")
    if sent is not None:
        try:
            valid = base64.b64decode(sent, validate=True) == digest
        except (binascii.Error, ValueError):
            valid = False
        if not valid:
            raise OSSError(
                400,
                "InvalidDigest",
                "The Content-MD5 you specified was invalid.",
                CalculatedDigest=base64.b64encode(digest).decode(),
            )
    return base64.b64encode(digest).decode()


def _metadata(request: web.Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items() if k.lower().startswith("x-oss-meta-")}


def _object_headers(obj: StoredObject) -> dict[str, str]:
    headers = {
        "ETag": f'"{obj.etag}"',
        "Last-Modified": http_date(obj.last_modified),
        "Content-Type": obj.content_type,
        "Accept-Ranges": "bytes",
        "x-oss-object-type": obj.object_type,
        "x-oss-storage-class": "Standard",
        **obj.metadata,
    }
    if obj.crc64 is not None:
        headers["x-oss-hash-crc64ecma"] = str(obj.crc64)
    if obj.object_type == "Appendable":
        headers["x-oss-next-append-position"] = str(obj.size)
    return headers


def resolve_range(header: str, size: int, *, standard: bool) -> tuple[int, int] | None:
    """The inclusive byte range a ``Range`` header selects, or ``None`` for the whole object.

    OSS by default ignores a range that is malformed or out of bounds (200 with the whole object);
    with ``x-oss-range-behavior: standard`` it clips the end and refuses a start past the end
    (416 ``InvalidRange``), as HTTP does.
    """
    spec = header.strip()
    if not spec.startswith("bytes=") or "," in spec:
        return None
    first, dash, last = spec[6:].strip().partition("-")
    if not dash:
        return None
    try:
        start = int(first) if first.strip() else None
        end = int(last) if last.strip() else None
    except ValueError:
        return None
    if start is None and end is None:
        return None
    if (start is not None and start < 0) or (end is not None and end < 0):
        return None
    if start is None:  # suffix: the last ``end`` bytes
        assert end is not None
        if end == 0 or size == 0:
            if standard:
                raise _invalid_range(header, size)
            return None
        if end > size and not standard:
            return None
        return max(size - end, 0), size - 1
    if end is not None and end < start:
        return None
    if start >= size:
        if standard:
            raise _invalid_range(header, size)
        return None
    if end is None or end >= size:
        if end is not None and not standard:
            return None
        end = size - 1
    return start, end


def _invalid_range(header: str, size: int) -> OSSError:
    return OSSError(
        416,
        "InvalidRange",
        "The requested range cannot be satisfied",
        headers={"Content-Range": f"bytes */{size}"},
        RangeRequested=header,
        ActualObjectSize=str(size),
    )


def _check_conditions(request: web.Request, obj: StoredObject) -> None:
    """If-Match/If-Unmodified-Since (412 when false), If-None-Match/If-Modified-Since (304)."""
    etag = f'"{obj.etag}"'
    modified = int(obj.last_modified)
    if_match = request.headers.get("If-Match")
    if if_match is not None and if_match.strip() not in (etag, obj.etag, "*"):
        raise OSSError(
            412,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
            Condition="If-Match",
        )
    since = _parse_http_date(request.headers.get("If-Unmodified-Since"))
    if since is not None and modified > since:
        raise OSSError(
            412,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
            Condition="If-Unmodified-Since",
        )
    if_none = request.headers.get("If-None-Match")
    if if_none is not None and if_none.strip() in (etag, obj.etag, "*"):
        raise OSSError(304, "NotModified", "Not Modified")
    since = _parse_http_date(request.headers.get("If-Modified-Since"))
    if if_none is None and since is not None and modified <= since:
        raise OSSError(304, "NotModified", "Not Modified")


def _parse_http_date(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return None


@dataclass
class Answer:
    """A handler's result: the response and how many body bytes it carries."""

    response: web.StreamResponse
    body_bytes: int = 0
    range: str = ""
    data: memoryview | None = None
    """Object data of a GetObject answer (so a fault can send part of it)."""


def _xml_answer(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> Answer:
    response = web.Response(
        status=status, body=body, content_type="application/xml", headers=dict(headers or {})
    )
    return Answer(response, len(body))


class Handlers:
    """The operations, over one :class:`Store`. ``region``: e.g. ``cn-hangzhou`` (``Location`` is
    ``oss-<region>``); ``endpoint_host`` is what bucket documents name as their endpoints."""

    def __init__(self, store: Store, *, region: str, endpoint_host: str = "127.0.0.1") -> None:
        self.store = store
        self.region = region
        self.endpoint_host = endpoint_host

    async def handle(self, request: web.Request, target: Target, operation: str) -> Answer:
        method = getattr(self, f"_{operation}", None)
        if method is None:
            raise OSSError(
                501, "NotImplemented", "The OSS test server does not implement this request."
            )
        answer: Answer = await method(request, target)
        return answer

    # --------------------------------------------------------------------------- service

    async def _ListBuckets(self, request: web.Request, target: Target) -> Answer:
        query = request.rel_url.query
        prefix = query.get("prefix", "")
        marker = query.get("marker", "")
        max_keys = _int_param(query, "max-keys", DEFAULT_LIST_KEYS)
        names = sorted(n for n in self.store.buckets if n.startswith(prefix) and n > marker)
        chosen = [self.store.buckets[n] for n in names[:max_keys]]
        return _xml_answer(
            _xml.list_buckets(
                chosen,
                region=self.region,
                endpoint_host=self.endpoint_host,
                prefix=prefix,
                marker=marker,
                max_keys=max_keys,
                truncated=len(names) > max_keys,
            )
        )

    # ---------------------------------------------------------------------------- bucket

    async def _PutBucket(self, request: web.Request, target: Target) -> Answer:
        await request.read()
        acl = request.headers.get("x-oss-acl", "private")
        self.store.create_bucket(target.bucket, acl=acl, exist_ok=True)
        return Answer(web.Response(status=200, headers={"Location": f"/{target.bucket}"}))

    async def _DeleteBucket(self, request: web.Request, target: Target) -> Answer:
        self.store.delete_bucket(target.bucket)
        return Answer(web.Response(status=204))

    async def _GetBucketInfo(self, request: web.Request, target: Target) -> Answer:
        bucket = self.store.bucket(target.bucket)
        return _xml_answer(
            _xml.bucket_info(bucket, region=self.region, endpoint_host=self.endpoint_host)
        )

    async def _GetBucketLocation(self, request: web.Request, target: Target) -> Answer:
        self.store.bucket(target.bucket)
        return _xml_answer(_xml.bucket_location(self.region))

    async def _GetBucketAcl(self, request: web.Request, target: Target) -> Answer:
        bucket = self.store.bucket(target.bucket)
        return _xml_answer(_xml.bucket_acl(bucket.acl))

    async def _ListObjects(self, request: web.Request, target: Target) -> Answer:
        query = request.rel_url.query
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        marker = query.get("marker", "")
        max_keys = self._max_keys(query)
        page = self.store.list_page(
            target.bucket, prefix=prefix, delimiter=delimiter, after=marker, max_keys=max_keys
        )
        return _xml_answer(
            _xml.list_objects(
                target.bucket,
                page,
                prefix=prefix,
                marker=marker,
                delimiter=delimiter,
                max_keys=max_keys,
                url_encoded=query.get("encoding-type") == "url",
            )
        )

    async def _ListObjectsV2(self, request: web.Request, target: Target) -> Answer:
        query = request.rel_url.query
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        start_after = query.get("start-after", "")
        token = query.get("continuation-token", "")
        after = _decode_token(token) if token else start_after
        max_keys = self._max_keys(query)
        page = self.store.list_page(
            target.bucket, prefix=prefix, delimiter=delimiter, after=after, max_keys=max_keys
        )
        return _xml_answer(
            _xml.list_objects_v2(
                target.bucket,
                page,
                prefix=prefix,
                delimiter=delimiter,
                start_after=start_after,
                continuation_token=token,
                next_token=_encode_token(page.next_marker) if page.truncated else "",
                max_keys=max_keys,
                fetch_owner=query.get("fetch-owner") == "true",
                url_encoded=query.get("encoding-type") == "url",
            )
        )

    @staticmethod
    def _max_keys(query: Mapping[str, str]) -> int:
        max_keys = _int_param(query, "max-keys", DEFAULT_LIST_KEYS)
        if not 0 <= max_keys <= MAX_LIST_KEYS:
            raise invalid_argument(
                f"max-keys must be between 0 and {MAX_LIST_KEYS}.", "max-keys", str(max_keys)
            )
        return max_keys

    async def _ListMultipartUploads(self, request: web.Request, target: Target) -> Answer:
        query = request.rel_url.query
        prefix = query.get("prefix", "")
        bucket = self.store.bucket(target.bucket)
        uploads = sorted(
            (u for u in bucket.uploads.values() if u.key.startswith(prefix)),
            key=lambda u: (u.key, u.initiated),
        )
        return _xml_answer(
            _xml.list_uploads(
                target.bucket,
                uploads,
                prefix=prefix,
                url_encoded=query.get("encoding-type") == "url",
            )
        )

    async def _DeleteMultipleObjects(self, request: web.Request, target: Target) -> Answer:
        body = await request.read()
        if "Content-MD5" not in request.headers:
            raise OSSError(
                400,
                "MissingArgument",
                "Missing Some Required Arguments.",
                ArgumentName="Content-MD5",
            )
        _content_md5(request, body)
        keys, quiet = _xml.parse_delete(body)
        self.store.bucket(target.bucket)
        for key in keys:
            self.store.delete(target.bucket, key)
        url_encoded = request.rel_url.query.get("encoding-type") == "url"
        return _xml_answer(_xml.delete_result([] if quiet else keys, url_encoded=url_encoded))

    # ---------------------------------------------------------------------------- object

    async def _GetObject(self, request: web.Request, target: Target) -> Answer:
        obj = self.store.get(target.bucket, target.key)
        _check_conditions(request, obj)
        headers = _object_headers(obj)
        range_header = request.headers.get("Range", "")
        selected = None
        if range_header:
            standard = request.headers.get("x-oss-range-behavior", "").lower() == "standard"
            selected = resolve_range(range_header, obj.size, standard=standard)
        if selected is None:
            body = memoryview(obj.data)
            status = 200
        else:
            start, end = selected
            body = memoryview(obj.data)[start : end + 1]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{obj.size}"
        response = web.Response(status=status, body=body, headers=headers)
        return Answer(response, len(body), range_header, body)

    async def _HeadObject(self, request: web.Request, target: Target) -> Answer:
        obj = self.store.get(target.bucket, target.key)
        _check_conditions(request, obj)
        headers = _object_headers(obj)
        headers["Content-Length"] = str(obj.size)
        return Answer(web.Response(status=200, headers=headers))

    async def _GetObjectMeta(self, request: web.Request, target: Target) -> Answer:
        obj = self.store.get(target.bucket, target.key)
        headers = {
            "ETag": f'"{obj.etag}"',
            "Last-Modified": http_date(obj.last_modified),
            "Content-Length": str(obj.size),
        }
        if obj.crc64 is not None:
            headers["x-oss-hash-crc64ecma"] = str(obj.crc64)
        return Answer(web.Response(status=200, headers=headers))

    def _check_key(self, key: str) -> None:
        if len(key.encode()) > MAX_KEY_BYTES or key.startswith(("/", "\\")):
            raise OSSError(400, "InvalidObjectName", "The specified object is not valid.", Key=key)

    def _check_overwrite(self, request: web.Request, target: Target) -> None:
        forbid = request.headers.get("x-oss-forbid-overwrite", "").lower() == "true"
        if forbid and target.key in self.store.bucket(target.bucket).objects:
            raise OSSError(
                409,
                "FileAlreadyExists",
                "The object you specified already exists and can not be overwritten.",
                Key=target.key,
            )

    async def _PutObject(self, request: web.Request, target: Target) -> Answer:
        self._check_key(target.key)
        body = await request.read()
        md5 = _content_md5(request, body)
        self._check_overwrite(request, target)
        obj = self.store.put(
            target.bucket,
            target.key,
            body,
            content_type=request.headers.get("Content-Type", "application/octet-stream"),
            metadata=_metadata(request),
        )
        return Answer(web.Response(status=200, headers=self._write_headers(obj, md5)))

    @staticmethod
    def _write_headers(obj: StoredObject, md5: str | None = None) -> dict[str, str]:
        headers = {"ETag": f'"{obj.etag}"'}
        if md5 is not None:
            headers["Content-MD5"] = md5
        if obj.crc64 is not None:
            headers["x-oss-hash-crc64ecma"] = str(obj.crc64)
        return headers

    async def _CopyObject(self, request: web.Request, target: Target) -> Answer:
        self._check_key(target.key)
        await request.read()
        source = request.headers["x-oss-copy-source"]
        path = unquote(source.partition("?")[0]).lstrip("/")
        source_bucket, _, source_key = path.partition("/")
        obj = self.store.get(source_bucket, source_key)
        self._check_overwrite(request, target)
        replace = request.headers.get("x-oss-metadata-directive", "COPY").upper() == "REPLACE"
        copied = self.store.copy(
            obj,
            target.bucket,
            target.key,
            content_type=request.headers.get("Content-Type") if replace else None,
            metadata=_metadata(request) if replace else None,
        )
        answer = _xml_answer(_xml.copy_result(copied), headers=self._write_headers(copied))
        return answer

    async def _AppendObject(self, request: web.Request, target: Target) -> Answer:
        self._check_key(target.key)
        body = await request.read()
        md5 = _content_md5(request, body)
        query = request.rel_url.query
        if query.get("position", "") == "":
            raise invalid_argument("position is required.", "position", "")
        obj = self.store.append(
            target.bucket,
            target.key,
            _int_param(query, "position", 0),
            body,
            content_type=request.headers.get("Content-Type", "application/octet-stream"),
            metadata=_metadata(request),
        )
        headers = self._write_headers(obj, md5)
        headers["x-oss-next-append-position"] = str(obj.size)
        return Answer(web.Response(status=200, headers=headers))

    async def _DeleteObject(self, request: web.Request, target: Target) -> Answer:
        self.store.delete(target.bucket, target.key)
        return Answer(web.Response(status=204))

    # ------------------------------------------------------------------------- multipart

    async def _InitiateMultipartUpload(self, request: web.Request, target: Target) -> Answer:
        self._check_key(target.key)
        await request.read()
        upload = self.store.initiate(
            target.bucket,
            target.key,
            content_type=request.headers.get("Content-Type", "application/octet-stream"),
            metadata=_metadata(request),
        )
        url_encoded = request.rel_url.query.get("encoding-type") == "url"
        return _xml_answer(_xml.initiate_multipart(target.bucket, upload, url_encoded))

    async def _UploadPart(self, request: web.Request, target: Target) -> Answer:
        query = request.rel_url.query
        body = await request.read()
        md5 = _content_md5(request, body)
        part = self.store.upload_part(
            target.bucket,
            target.key,
            query["uploadId"],
            _int_param(query, "partNumber", 0),
            body,
        )
        headers = {"ETag": f'"{part.etag}"', "Content-MD5": md5}
        if part.crc64 is not None:
            headers["x-oss-hash-crc64ecma"] = str(part.crc64)
        return Answer(web.Response(status=200, headers=headers))

    async def _CompleteMultipartUpload(self, request: web.Request, target: Target) -> Answer:
        query = request.rel_url.query
        body = await request.read()
        complete_all = request.headers.get("x-oss-complete-all", "").lower() == "yes"
        if complete_all and body:
            raise OSSError(
                400, "InvalidArgument", "x-oss-complete-all is set: the body must be empty."
            )
        chosen = None if complete_all else _xml.parse_complete(body)
        obj = self.store.complete(target.bucket, target.key, query["uploadId"], chosen)
        location = f"http://{self.endpoint_host}/{target.bucket}/{target.key}"
        return _xml_answer(
            _xml.complete_multipart(
                target.bucket,
                obj,
                location=location,
                url_encoded=query.get("encoding-type") == "url",
            ),
            headers=self._write_headers(obj),
        )

    async def _AbortMultipartUpload(self, request: web.Request, target: Target) -> Answer:
        self.store.abort(target.bucket, target.key, request.rel_url.query["uploadId"])
        return Answer(web.Response(status=204))

    async def _ListParts(self, request: web.Request, target: Target) -> Answer:
        query = request.rel_url.query
        upload = self.store.upload(target.bucket, target.key, query["uploadId"])
        marker = _int_param(query, "part-number-marker", 0)
        max_parts = _int_param(query, "max-parts", 1000)
        numbers = sorted(n for n in upload.parts if n > marker)
        parts = [upload.parts[n] for n in numbers[:max_parts]]
        return _xml_answer(
            _xml.list_parts(
                target.bucket,
                upload,
                parts,
                marker=marker,
                max_parts=max_parts,
                truncated=len(numbers) > max_parts,
            )
        )


def _encode_token(marker: str) -> str:
    return base64.urlsafe_b64encode(marker.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, ValueError):
        raise invalid_argument(
            "The continuation token provided is incorrect.", "continuation-token", token
        ) from None
