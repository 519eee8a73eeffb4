"""Patch application by ``Content-Type``: JSON merge patch, strategic merge patch, JSON patch.

Strategic merge lives in ``_strategic``. Server-side apply (``application/apply-patch+yaml``) is
treated as a JSON merge of the applied configuration: no field managers, no removal of fields a
manager stopped applying.
"""

from __future__ import annotations

import copy
from typing import Any

from ._status import APIError, bad_request
from ._strategic import strategic_merge

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_PATCH_CBOR = "application/apply-patch+cbor"
PATCH_TYPES = (MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH, APPLY_PATCH)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> tuple[Any, str]:
    current = doc
    for part in parts[:-1]:
        if isinstance(current, list):
            current = current[int(part)]
        elif isinstance(current, dict) and part in current:
            current = current[part]
        else:
            raise bad_request(f"path component {part!r} not found")
    return current, parts[-1]


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch (``add``, ``remove``, ``replace``, ``move``, ``copy``, ``test``)."""
    if not isinstance(operations, list):
        raise bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(target)
    try:
        for op in operations:
            doc = _apply_operation(doc, op)
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise bad_request(f"the json patch could not be applied: {exc}") from exc
    return doc


def _get(doc: Any, parts: list[str]) -> Any:
    current = doc
    for part in parts:
        current = current[int(part)] if isinstance(current, list) else current[part]
    return current


def _apply_operation(doc: Any, op: dict[str, Any]) -> Any:
    kind = op.get("op")
    parts = _pointer(str(op.get("path", "")))
    if kind == "test":
        if _get(doc, parts) != op.get("value"):
            raise APIError(422, "Invalid", f"test operation failed at {op.get('path')}")
        return doc
    if kind in ("move", "copy"):
        source = _pointer(str(op.get("from", "")))
        value = copy.deepcopy(_get(doc, source))
        if kind == "move":
            doc = _apply_operation(doc, {"op": "remove", "path": op["from"]})
        return _apply_operation(doc, {"op": "add", "path": op["path"], "value": value})
    if not parts:
        if kind in ("add", "replace"):
            return copy.deepcopy(op.get("value"))
        raise bad_request("cannot remove the whole document")
    parent, last = _parent(doc, parts)
    if kind == "add":
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            parent.insert(index, copy.deepcopy(op.get("value")))
        else:
            parent[last] = copy.deepcopy(op.get("value"))
    elif kind == "remove":
        if isinstance(parent, list):
            del parent[int(last)]
        else:
            del parent[last]
    elif kind == "replace":
        if isinstance(parent, list):
            parent[int(last)] = copy.deepcopy(op.get("value"))
        else:
            if last not in parent:
                raise KeyError(last)
            parent[last] = copy.deepcopy(op.get("value"))
    else:
        raise bad_request(f"unknown json patch operation {kind!r}")
    return doc


def apply_patch(target: Any, patch: Any, content_type: str) -> Any:
    """Apply a patch body of the given ``Content-Type`` to ``target``."""
    if content_type == JSON_PATCH:
        return json_patch(target, patch)
    if content_type == STRATEGIC_MERGE_PATCH:
        return strategic_merge(target, patch)
    return merge_patch(target, patch)
