"""An in-process OSS (Aliyun Object Storage Service) server for tests.

ossfs cannot talk to S3 test servers (``oss2`` rejects S3's namespaced XML) and no OSS server can
be installed on our machines, so the OSS backend plugin is tested against this one: the OSS REST
protocol over real HTTP on 127.0.0.1, as ``oss2``, ``aiooss2`` and ``ossfs`` use it (path-style
addressing, OSS XML without namespace, OSS error documents), with request signatures verified
(V1, V2 and V4; headers and presigned URLs), so wrong credentials really fail.

    async with OSSServer(credentials={"AKID": "SECRET"}) as srv:   # or: with OSSServer() as srv
        srv.put_object("bucket", "dir/key", b"data")
        fs = ossfs.OSSFileSystem(endpoint=srv.endpoint, key="AKID", secret="SECRET")

Layers, bottom up: ``_errors`` -> ``_crc64``, ``_store`` (buckets, objects, uploads) -> ``_auth``
(signatures), ``_xml`` (documents) -> ``_handlers`` (operations over HTTP) -> ``_server``
(lifecycle, auth and ACLs, request log, faults). ``python -m edgecache_testservers.oss`` runs it
alone.
"""

from __future__ import annotations

from ._errors import OSSError
from ._server import DEFAULT_CREDENTIALS, Fault, OSSServer, RecordedRequest
from ._store import StoredObject

__all__ = [
    "DEFAULT_CREDENTIALS",
    "Fault",
    "OSSError",
    "OSSServer",
    "RecordedRequest",
    "StoredObject",
]
