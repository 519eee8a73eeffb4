"""OSS XML documents: the answers the handlers send and the request bodies they read.

OSS XML has no namespace (S3's ``xmlns`` is what makes ``oss2`` fail against S3 servers) and
URL-encodes keys and prefixes when the request says ``encoding-type=url``. Dates are ISO 8601 with
milliseconds and ``Z``. Pure functions of store data; nothing here knows about HTTP.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Sequence
from urllib.parse import quote
from xml.sax.saxutils import escape

from ._errors import malformed_xml
from ._store import Bucket, ListPage, Part, StoredObject, Upload

OWNER_ID = "1234567890123456"
OWNER_NAME = "edgecache-test"
_HEADER = '<?xml version="1.0" encoding="UTF-8"?>\n'


def iso8601(seconds: float) -> str:
    """OSS's format: whole seconds, always ``.000Z`` (``oss2`` parses nothing else)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))


def _element(tag: str, value: object) -> str:
    return f"<{tag}>{escape(str(value))}</{tag}>"


def _document(root: str, children: Iterable[str]) -> bytes:
    return (_HEADER + f"<{root}>" + "".join(children) + f"</{root}>").encode()


def _owner() -> str:
    return f"<Owner>{_element('ID', OWNER_ID)}{_element('DisplayName', OWNER_NAME)}</Owner>"


class _Encoder:
    def __init__(self, url: bool) -> None:
        self.url = url

    def __call__(self, text: str) -> str:
        return quote(text, safe="/") if self.url else text


def _contents(objects: Sequence[StoredObject], encode: _Encoder, owner: bool) -> list[str]:
    return [
        "<Contents>"
        + _element("Key", encode(obj.key))
        + _element("LastModified", iso8601(obj.last_modified))
        + _element("ETag", f'"{obj.etag}"')
        + _element("Type", obj.object_type)
        + _element("Size", obj.size)
        + _element("StorageClass", "Standard")
        + (_owner() if owner else "")
        + "</Contents>"
        for obj in objects
    ]


def _prefixes(prefixes: Sequence[str], encode: _Encoder) -> list[str]:
    return [
        f"<CommonPrefixes>{_element('Prefix', encode(prefix))}</CommonPrefixes>"
        for prefix in prefixes
    ]


def list_objects(
    bucket: str,
    page: ListPage,
    *,
    prefix: str,
    marker: str,
    delimiter: str,
    max_keys: int,
    url_encoded: bool,
) -> bytes:
    encode = _Encoder(url_encoded)
    head = [
        _element("Name", bucket),
        _element("Prefix", encode(prefix)),
        _element("Marker", encode(marker)),
        _element("MaxKeys", max_keys),
        _element("Delimiter", encode(delimiter)),
    ]
    if url_encoded:
        head.append(_element("EncodingType", "url"))
    head.append(_element("IsTruncated", str(page.truncated).lower()))
    if page.truncated:
        head.append(_element("NextMarker", encode(page.next_marker)))
    body = _contents(page.objects, encode, True) + _prefixes(page.prefixes, encode)
    return _document("ListBucketResult", head + body)


def list_objects_v2(
    bucket: str,
    page: ListPage,
    *,
    prefix: str,
    delimiter: str,
    start_after: str,
    continuation_token: str,
    next_token: str,
    max_keys: int,
    fetch_owner: bool,
    url_encoded: bool,
) -> bytes:
    encode = _Encoder(url_encoded)
    head = [_element("Name", bucket), _element("Prefix", encode(prefix))]
    if start_after:
        head.append(_element("StartAfter", encode(start_after)))
    if continuation_token:
        head.append(_element("ContinuationToken", continuation_token))
    head += [_element("MaxKeys", max_keys), _element("Delimiter", encode(delimiter))]
    if url_encoded:
        head.append(_element("EncodingType", "url"))
    head.append(_element("IsTruncated", str(page.truncated).lower()))
    if page.truncated:
        head.append(_element("NextContinuationToken", next_token))
    head.append(_element("KeyCount", len(page.objects) + len(page.prefixes)))
    body = _contents(page.objects, encode, fetch_owner) + _prefixes(page.prefixes, encode)
    return _document("ListBucketResult", head + body)


def _bucket_fields(bucket: Bucket, region: str, endpoint_host: str) -> list[str]:
    return [
        _element("CreationDate", iso8601(bucket.created)),
        _element("ExtranetEndpoint", endpoint_host),
        _element("IntranetEndpoint", endpoint_host),
        _element("Location", f"oss-{region}"),
        _element("Name", bucket.name),
        _element("Region", region),
        _element("StorageClass", "Standard"),
    ]


def list_buckets(
    buckets: Sequence[Bucket],
    *,
    region: str,
    endpoint_host: str,
    prefix: str,
    marker: str,
    max_keys: int,
    truncated: bool,
) -> bytes:
    head = [_element("Prefix", prefix), _element("Marker", marker), _element("MaxKeys", max_keys)]
    head.append(_element("IsTruncated", str(truncated).lower()))
    if truncated and buckets:
        head.append(_element("NextMarker", buckets[-1].name))
    head.append(_owner())
    entries = [
        "<Bucket>" + "".join(_bucket_fields(b, region, endpoint_host)) + "</Bucket>"
        for b in buckets
    ]
    return _document("ListAllMyBucketsResult", [*head, "<Buckets>", *entries, "</Buckets>"])


def bucket_info(bucket: Bucket, *, region: str, endpoint_host: str) -> bytes:
    fields = _bucket_fields(bucket, region, endpoint_host)
    fields += [
        _owner(),
        "<AccessControlList>" + _element("Grant", bucket.acl) + "</AccessControlList>",
        _element("DataRedundancyType", "LRS"),
        "<ServerSideEncryptionRule><SSEAlgorithm>None</SSEAlgorithm></ServerSideEncryptionRule>",
    ]
    return _document("BucketInfo", ["<Bucket>", *fields, "</Bucket>"])


def bucket_acl(acl: str) -> bytes:
    grant = "<AccessControlList>" + _element("Grant", acl) + "</AccessControlList>"
    return _document("AccessControlPolicy", [_owner(), grant])


def bucket_location(region: str) -> bytes:
    return (_HEADER + _element("LocationConstraint", f"oss-{region}")).encode()


def initiate_multipart(bucket: str, upload: Upload, url_encoded: bool) -> bytes:
    encode = _Encoder(url_encoded)
    children = [_element("Bucket", bucket), _element("Key", encode(upload.key))]
    if url_encoded:
        children.append(_element("EncodingType", "url"))
    children.append(_element("UploadId", upload.upload_id))
    return _document("InitiateMultipartUploadResult", children)


def complete_multipart(
    bucket: str, obj: StoredObject, *, location: str, url_encoded: bool
) -> bytes:
    encode = _Encoder(url_encoded)
    children = [_element("EncodingType", "url")] if url_encoded else []
    children += [
        _element("Location", location),
        _element("Bucket", bucket),
        _element("Key", encode(obj.key)),
        _element("ETag", f'"{obj.etag}"'),
    ]
    return _document("CompleteMultipartUploadResult", children)


def list_parts(
    bucket: str,
    upload: Upload,
    parts: Sequence[Part],
    *,
    marker: int,
    max_parts: int,
    truncated: bool,
) -> bytes:
    children = [
        _element("Bucket", bucket),
        _element("Key", upload.key),
        _element("UploadId", upload.upload_id),
        _element("PartNumberMarker", marker),
        _element("NextPartNumberMarker", parts[-1].number if parts else marker),
        _element("MaxParts", max_parts),
        _element("IsTruncated", str(truncated).lower()),
    ]
    for part in parts:
        children.append(
            "<Part>"
            + _element("PartNumber", part.number)
            + _element("LastModified", iso8601(part.last_modified))
            + _element("ETag", f'"{part.etag}"')
            + (_element("HashCrc64ecma", part.crc64) if part.crc64 is not None else "")
            + _element("Size", len(part.data))
            + "</Part>"
        )
    return _document("ListPartsResult", children)


def list_uploads(
    bucket: str, uploads: Sequence[Upload], *, prefix: str, url_encoded: bool
) -> bytes:
    encode = _Encoder(url_encoded)
    children = [
        _element("Bucket", bucket),
        _element("KeyMarker", ""),
        _element("UploadIdMarker", ""),
        _element("NextKeyMarker", ""),
        _element("NextUploadIdMarker", ""),
        _element("Delimiter", ""),
        _element("Prefix", encode(prefix)),
        _element("MaxUploads", 1000),
        _element("IsTruncated", "false"),
    ]
    if url_encoded:
        children.append(_element("EncodingType", "url"))
    for upload in uploads:
        children.append(
            "<Upload>"
            + _element("Key", encode(upload.key))
            + _element("UploadId", upload.upload_id)
            + _element("Initiated", iso8601(upload.initiated))
            + "</Upload>"
        )
    return _document("ListMultipartUploadsResult", children)


def copy_result(obj: StoredObject) -> bytes:
    return _document(
        "CopyObjectResult",
        [_element("ETag", f'"{obj.etag}"'), _element("LastModified", iso8601(obj.last_modified))],
    )


def delete_result(deleted: Sequence[str], *, url_encoded: bool) -> bytes:
    encode = _Encoder(url_encoded)
    children = [_element("EncodingType", "url")] if url_encoded else []
    children += [f"<Deleted>{_element('Key', encode(key))}</Deleted>" for key in deleted]
    return _document("DeleteResult", children)


# ------------------------------------------------------------------------------ request bodies


def _parse(body: bytes) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise malformed_xml() from None


def parse_delete(body: bytes) -> tuple[list[str], bool]:
    """Keys of a ``<Delete>`` request and whether it is ``Quiet``."""
    root = _parse(body)
    if root.tag != "Delete":
        raise malformed_xml()
    quiet = (root.findtext("Quiet") or "false").strip().lower() == "true"
    keys = [node.findtext("Key") or "" for node in root.findall("Object")]
    if not keys or len(keys) > 1000:
        raise malformed_xml("A Delete request names between 1 and 1000 objects.")
    return keys, quiet


def parse_complete(body: bytes) -> list[tuple[int, str]]:
    """(part number, ETag) pairs of a ``<CompleteMultipartUpload>`` request, in request order."""
    root = _parse(body)
    if root.tag != "CompleteMultipartUpload":
        raise malformed_xml()
    parts = []
    for node in root.findall("Part"):
        try:
            number = int(node.findtext("PartNumber") or "")
        except ValueError:
            raise malformed_xml("PartNumber is not an integer.") from None
        parts.append((number, (node.findtext("ETag") or "").strip()))
    return parts
