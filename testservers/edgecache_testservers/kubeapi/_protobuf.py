"""Decoding of the protobuf request bodies that kubectl's typed commands send.

kubectl's generators (``kubectl create namespace|configmap|secret|serviceaccount|service|
deployment|job|cronjob|role|clusterrole|rolebinding|clusterrolebinding``) post
``application/vnd.kubernetes.protobuf`` rather than JSON, and client-go does not fall back to JSON
when refused. This module decodes the ``k8s\\x00`` envelope (``runtime.Unknown``) and those kinds
into the JSON form the store keeps, with the field numbers of the Kubernetes ``generated.proto``
files (checked against what kubectl 1.32 sends and prints with ``--dry-run=client -o json``).
Any field outside the tables below is refused with 415, so a body is never silently truncated.
Responses are always JSON, which client-go accepts.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any, Union

from ._status import APIError, unsupported_media_type

MAGIC = b"k8s\x00"

# A field: (JSON name, type). A type is a scalar name, a nested message table, or a one-item list
# holding a message table for a repeated message. "int"/"bool" are plain fields (zero omitted, as
# JSON omits them); "optint"/"optbool" are pointers in Go (present means set, zero kept).
Message = dict[int, tuple[str, Union[str, "Message", list["Message"]]]]

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
    10: ("deletionGracePeriodSeconds", "optint"),
    11: ("labels", "map_string"),
    12: ("annotations", "map_string"),
    14: ("finalizers", "repeated_string"),
}
LABEL_SELECTOR: Message = {
    1: ("matchLabels", "map_string"),
    2: (
        "matchExpressions",
        [{1: ("key", "string"), 2: ("operator", "string"), 3: ("values", "repeated_string")}],
    ),
}
CONTAINER: Message = {
    1: ("name", "string"),
    2: ("image", "string"),
    3: ("command", "repeated_string"),
    4: ("args", "repeated_string"),
    5: ("workingDir", "string"),
    6: (
        "ports",
        [
            {
                1: ("name", "string"),
                2: ("hostPort", "int"),
                3: ("containerPort", "int"),
                4: ("protocol", "string"),
                5: ("hostIP", "string"),
            }
        ],
    ),
    7: ("env", [{1: ("name", "string"), 2: ("value", "string")}]),
    8: ("resources", {1: ("limits", "map_quantity"), 2: ("requests", "map_quantity")}),
    13: ("terminationMessagePath", "string"),
    14: ("imagePullPolicy", "string"),
    16: ("stdin", "bool"),
    17: ("stdinOnce", "bool"),
    18: ("tty", "bool"),
    20: ("terminationMessagePolicy", "string"),
}
POD_TEMPLATE: Message = {
    1: ("metadata", OBJECT_META),
    2: (
        "spec",
        {
            2: ("containers", [CONTAINER]),
            3: ("restartPolicy", "string"),
            4: ("terminationGracePeriodSeconds", "optint"),
            5: ("activeDeadlineSeconds", "optint"),
            6: ("dnsPolicy", "string"),
            7: ("nodeSelector", "map_string"),
            8: ("serviceAccountName", "string"),
            9: ("serviceAccount", "string"),
            10: ("nodeName", "string"),
            11: ("hostNetwork", "bool"),
            12: ("hostPID", "bool"),
            13: ("hostIPC", "bool"),
            16: ("hostname", "string"),
            17: ("subdomain", "string"),
            19: ("schedulerName", "string"),
            20: ("initContainers", [CONTAINER]),
            24: ("priorityClassName", "string"),
        },
    ),
}
JOB_SPEC: Message = {
    1: ("parallelism", "optint"),
    2: ("completions", "optint"),
    3: ("activeDeadlineSeconds", "optint"),
    4: ("selector", LABEL_SELECTOR),
    5: ("manualSelector", "optbool"),
    6: ("template", POD_TEMPLATE),
    7: ("backoffLimit", "optint"),
    8: ("ttlSecondsAfterFinished", "optint"),
}
# Status is reset when an object is created, so only the zero values kubectl sends are accepted.
_ZERO_STATUS: Message = {n: (f"field{n}", "zero") for n in range(1, 16)}
SUBJECTS: list[Message] = [
    {
        1: ("kind", "string"),
        2: ("apiGroup", "string"),
        3: ("name", "string"),
        4: ("namespace", "string"),
    }
]
ROLE_REF: Message = {1: ("apiGroup", "string"), 2: ("kind", "string"), 3: ("name", "string")}
RULES: list[Message] = [
    {
        1: ("verbs", "repeated_string"),
        2: ("apiGroups", "repeated_string"),
        3: ("resources", "repeated_string"),
        4: ("resourceNames", "repeated_string"),
        5: ("nonResourceURLs", "repeated_string"),
    }
]
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
        4: ("immutable", "optbool"),
    },
    ("v1", "Secret"): {
        1: ("metadata", OBJECT_META),
        2: ("data", "map_bytes"),
        3: ("type", "string"),
        4: ("stringData", "map_string"),
        5: ("immutable", "optbool"),
    },
    ("v1", "ServiceAccount"): {
        1: ("metadata", OBJECT_META),
        4: ("automountServiceAccountToken", "optbool"),
    },
    ("v1", "Service"): {
        1: ("metadata", OBJECT_META),
        2: (
            "spec",
            {
                1: (
                    "ports",
                    [
                        {
                            1: ("name", "string"),
                            2: ("protocol", "string"),
                            3: ("port", "int"),
                            4: ("targetPort", "int_or_string"),
                            5: ("nodePort", "int"),
                        }
                    ],
                ),
                2: ("selector", "map_string"),
                3: ("clusterIP", "string"),
                4: ("type", "string"),
                5: ("externalIPs", "repeated_string"),
                7: ("sessionAffinity", "string"),
                8: ("loadBalancerIP", "string"),
                10: ("externalName", "string"),
                11: ("externalTrafficPolicy", "string"),
                12: ("healthCheckNodePort", "int"),
                13: ("publishNotReadyAddresses", "bool"),
            },
        ),
        3: ("status", {1: ("loadBalancer", {})}),
    },
    ("apps/v1", "Deployment"): {
        1: ("metadata", OBJECT_META),
        2: (
            "spec",
            {
                1: ("replicas", "optint"),
                2: ("selector", LABEL_SELECTOR),
                3: ("template", POD_TEMPLATE),
                4: ("strategy", {1: ("type", "string")}),
                5: ("minReadySeconds", "int"),
                6: ("revisionHistoryLimit", "optint"),
                7: ("paused", "bool"),
                9: ("progressDeadlineSeconds", "optint"),
            },
        ),
        3: ("status", _ZERO_STATUS),
    },
    ("batch/v1", "Job"): {
        1: ("metadata", OBJECT_META),
        2: ("spec", JOB_SPEC),
        3: ("status", _ZERO_STATUS),
    },
    ("batch/v1", "CronJob"): {
        1: ("metadata", OBJECT_META),
        2: (
            "spec",
            {
                1: ("schedule", "string"),
                2: ("startingDeadlineSeconds", "optint"),
                3: ("concurrencyPolicy", "string"),
                4: ("suspend", "optbool"),
                5: ("jobTemplate", {1: ("metadata", OBJECT_META), 2: ("spec", JOB_SPEC)}),
                6: ("successfulJobsHistoryLimit", "optint"),
                7: ("failedJobsHistoryLimit", "optint"),
            },
        ),
        3: ("status", _ZERO_STATUS),
    },
    ("rbac.authorization.k8s.io/v1", "Role"): {1: ("metadata", OBJECT_META), 2: ("rules", RULES)},
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): {
        1: ("metadata", OBJECT_META),
        2: ("rules", RULES),
    },
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): {
        1: ("metadata", OBJECT_META),
        2: ("subjects", SUBJECTS),
        3: ("roleRef", ROLE_REF),
    },
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): {
        1: ("metadata", OBJECT_META),
        2: ("subjects", SUBJECTS),
        3: ("roleRef", ROLE_REF),
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


def _refuse(where: str, number: int) -> APIError:
    return unsupported_media_type(
        f"application/vnd.kubernetes.protobuf ({where} field {number} is not decoded by "
        "the test server; send JSON)"
    )


def _decode(data: bytes, message: Message, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, value in _fields(data):
        if number not in message:
            raise _refuse(where, number)
        name, kind = message[number]
        child = f"{where}.{name}"
        if isinstance(kind, list):  # a repeated message
            assert isinstance(value, bytes)
            out.setdefault(name, []).append(_decode(value, kind[0], child))
        elif isinstance(kind, dict):
            assert isinstance(value, bytes)
            decoded = _decode(value, kind, child)
            if decoded:
                out[name] = decoded
        else:
            _scalar(out, name, kind, value, where, number)
    return out


def _scalar(
    out: dict[str, Any], name: str, kind: str, value: int | bytes, where: str, number: int
) -> None:
    if kind == "zero":  # a status field kubectl sends empty; anything else is not expected
        if value:
            raise _refuse(where, number)
        return
    if kind in ("int", "bool", "optint", "optbool"):
        assert isinstance(value, int)
        if value or kind.startswith("opt"):
            out[name] = bool(value) if kind.endswith("bool") else value
        return
    assert isinstance(value, bytes)
    if kind == "string":
        if value:  # gogo-protobuf writes empty strings; JSON omits them
            out[name] = value.decode()
    elif kind == "time":  # metav1.Time: seconds = 1, nanos = 2
        seconds = dict(_fields(value)).get(1, 0)
        if isinstance(seconds, int) and seconds:
            stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
            out[name] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    elif kind == "repeated_string":
        out.setdefault(name, []).append(value.decode())
    elif kind == "int_or_string":  # intstr.IntOrString: type = 1, intVal = 2, strVal = 3
        parts = dict(_fields(value))
        text = parts.get(3, b"")
        assert isinstance(text, bytes)
        out[name] = text.decode() if parts.get(1) == 1 else parts.get(2, 0)
    else:  # map entries: a message with key = 1 and value = 2
        entry = dict(_fields(value))
        key, item = entry.get(1, b""), entry.get(2, b"")
        assert isinstance(key, bytes) and isinstance(item, bytes)
        if kind == "map_string":
            entry_value = item.decode()
        elif kind == "map_quantity":  # resource.Quantity: string = 1
            quantity = dict(_fields(item)).get(1, b"")
            assert isinstance(quantity, bytes)
            entry_value = quantity.decode()
        else:
            entry_value = base64.b64encode(item).decode()
        out.setdefault(name, {})[key.decode()] = entry_value


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
