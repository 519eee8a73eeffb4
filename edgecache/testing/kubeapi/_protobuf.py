"""Decoding of the protobuf request bodies that kubectl's typed commands send.

``kubectl create namespace|configmap|secret|serviceaccount`` post
``application/vnd.kubernetes.protobuf`` rather than JSON, and client-go does not fall back to JSON
when refused. This module decodes the ``k8s\\x00`` envelope (``runtime.Unknown``) and those few
kinds into the JSON form the store keeps. Any field outside the tables below is refused with 415,
so a body is never silently truncated. Responses are always JSON, which client-go accepts.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any, Union

from ._status import APIError, unsupported_media_type

MAGIC = b"k8s\x00"

# A field: (JSON name, type); a type is a scalar name or a nested message table.
Message = dict[int, tuple[str, Union[str, "Message"]]]

OBJECT_META: Message = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    4: ("selfLink", "string"),
    5: ("uid", "string"),
    6: ("resourceVersion", "string"),
    7: ("generation", "int"),
    8: ("creationTimestamp", "time"),
    9: ("deletionTimestamp", "time"),
    10: ("deletionGracePeriodSeconds", "int"),
    11: ("labels", "map_string"),
    12: ("annotations", "map_string"),
    14: ("finalizers", "repeated_string"),
}
KINDS: dict[tuple[str, str], Message] = {
    ("v1", "Namespace"): {
        1: ("metadata", OBJECT_META),
        2: ("spec", {1: ("finalizers", "repeated_string")}),
        3: ("status", {1: ("phase", "string")}),
    },
    ("v1", "ConfigMap"): {
        1: ("metadata", OBJECT_META),
        2: ("data", "map_string"),
        3: ("binaryData", "map_bytes"),
        4: ("immutable", "bool"),
    },
    ("v1", "Secret"): {
        1: ("metadata", OBJECT_META),
        2: ("data", "map_bytes"),
        3: ("type", "string"),
        4: ("stringData", "map_string"),
        5: ("immutable", "bool"),
    },
    ("v1", "ServiceAccount"): {
        1: ("metadata", OBJECT_META),
        4: ("automountServiceAccountToken", "bool"),
    },
}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """``(field number, value)`` pairs: ints for varints, bytes for length-delimited fields."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            fields.append((number, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            fields.append((number, data[pos : pos + length]))
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return fields


def _decode(data: bytes, message: Message, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, value in _fields(data):
        if number not in message:
            raise unsupported_media_type(
                f"application/vnd.kubernetes.protobuf ({where} field {number} is not decoded by "
                "the test server; send JSON)"
            )
        name, kind = message[number]
        if isinstance(kind, dict):
            assert isinstance(value, bytes)
            decoded = _decode(value, kind, f"{where}.{name}")
            if decoded:
                out[name] = decoded
        elif kind == "string":
            assert isinstance(value, bytes)
            if value:  # gogo-protobuf writes empty strings; JSON omits them
                out[name] = value.decode()
        elif kind == "time":  # metav1.Time: seconds = 1, nanos = 2
            assert isinstance(value, bytes)
            seconds = dict(_fields(value)).get(1, 0)
            if isinstance(seconds, int) and seconds:
                stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
                out[name] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif kind in ("int", "bool"):
            assert isinstance(value, int)
            if value or kind == "bool":
                out[name] = bool(value) if kind == "bool" else value
        elif kind == "repeated_string":
            assert isinstance(value, bytes)
            out.setdefault(name, []).append(value.decode())
        else:  # map entries: a message with key = 1 and value = 2
            assert isinstance(value, bytes)
            entry = dict(_fields(value))
            key, item = entry.get(1, b""), entry.get(2, b"")
            assert isinstance(key, bytes) and isinstance(item, bytes)
            text = item.decode() if kind == "map_string" else base64.b64encode(item).decode()
            out.setdefault(name, {})[key.decode()] = text
    return out


def decode_object(body: bytes) -> dict[str, Any]:
    """A JSON object from a ``k8s\\x00``-framed protobuf body, or 415 if it cannot be decoded."""
    if not body.startswith(MAGIC):
        raise unsupported_media_type("application/vnd.kubernetes.protobuf (no k8s envelope)")
    try:
        envelope = dict(_fields(body[len(MAGIC) :]))
        type_meta = envelope.get(1, b"")
        raw = envelope.get(2, b"")
        assert isinstance(type_meta, bytes) and isinstance(raw, bytes)
        meta = {n: v.decode() for n, v in _fields(type_meta) if isinstance(v, bytes)}
        api_version, kind = meta.get(1, ""), meta.get(2, "")
        message = KINDS.get((api_version, kind))
        if message is None:
            raise unsupported_media_type(
                f"application/vnd.kubernetes.protobuf ({api_version} {kind} is not decoded by "
                "the test server; send JSON)"
            )
        return {"apiVersion": api_version, "kind": kind, **_decode(raw, message, kind)}
    except APIError:
        raise
    except (ValueError, AssertionError, UnicodeDecodeError) as exc:
        raise unsupported_media_type(f"application/vnd.kubernetes.protobuf ({exc})") from exc
