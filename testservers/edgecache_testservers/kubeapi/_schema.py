"""Custom resources against their CRD's structural schema: defaulting, pruning, validation.

What the API server does to every custom resource written by a client, in this order: ``default``
values fill missing fields, fields the schema does not declare are dropped (unless
``x-kubernetes-preserve-unknown-fields``), nulls in non-nullable fields are dropped, then types,
``required``, ``enum``, ``pattern``, lengths, item counts and bounds are checked and any failure is
a 422 ``Invalid`` listing every cause. Undeclared fields are reported per the write's
``fieldValidation``: ``Strict`` (kubectl's default) refuses them with 400, ``Warn`` (the server's
default) answers with ``Warning`` headers, ``Ignore`` drops them silently. A controller that
writes a status field missing from its schema therefore loses it here, as it would on a real
cluster. ``format`` is not checked.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ._status import APIError

JSONObject = dict[str, Any]
_ROOT_KEPT = ("apiVersion", "kind", "metadata")
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def _show(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass
class FieldValidation:
    """A write's ``fieldValidation`` (``Strict``, ``Warn``, ``Ignore``) and the warnings it got."""

    mode: str = "Warn"
    warnings: list[str] = field(default_factory=list)


class _Walker:
    def __init__(self) -> None:
        self.causes: list[tuple[str, str]] = []  # (field, message)
        self.unknown: list[str] = []  # pruned fields, for fieldValidation

    def fail(self, path: str, message: str) -> None:
        self.causes.append((path, f"{path}: {message}"))

    def walk(self, schema: JSONObject, value: Any, path: str) -> Any:
        kind = schema.get("type")
        if schema.get("x-kubernetes-int-or-string"):
            if not isinstance(value, (int, str)) or isinstance(value, bool):
                self.fail(path, f"Invalid value: {_show(value)}: must be an integer or a string")
            elif isinstance(value, str):
                self._string(schema, value, path)  # a quantity's pattern applies to its strings
            return value
        if kind:
            expected = _PY_TYPES.get(str(kind), ())
            wrong_bool = isinstance(value, bool) and kind in ("integer", "number")
            if not isinstance(value, expected) or wrong_bool:
                self.fail(
                    path,
                    f"Invalid value: {_show(value)}: {path} in body must be of type {kind}",
                )
                return value
        if "enum" in schema and value not in schema["enum"]:
            supported = ", ".join(_show(v) for v in schema["enum"])
            self.fail(path, f"Unsupported value: {_show(value)}: supported values: {supported}")
        if isinstance(value, dict):
            return self._object(schema, value, path)
        if isinstance(value, list):
            return self._array(schema, value, path)
        if isinstance(value, str):
            self._string(schema, value, path)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self._number(schema, value, path)
        return value

    def _object(self, schema: JSONObject, value: JSONObject, path: str) -> JSONObject:
        properties: JSONObject = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields")) or additional is True
        if schema.get("x-kubernetes-embedded-resource"):
            properties = {**{k: {} for k in _ROOT_KEPT}, **properties}
        result: JSONObject = {}
        for key, sub in properties.items():
            if key not in value and isinstance(sub, dict) and "default" in sub:
                value = {**value, key: copy.deepcopy(sub["default"])}
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            sub_schema = properties.get(key)
            if sub_schema is None and isinstance(additional, dict):
                sub_schema = additional
            if sub_schema is None:
                if preserve:
                    result[key] = item
                else:
                    self.unknown.append(child)  # pruned: the schema does not declare it
                continue
            if item is None and not sub_schema.get("nullable"):
                continue  # nulls of non-nullable fields are dropped
            result[key] = item if item is None else self.walk(sub_schema, item, child)
        for key in schema.get("required") or []:
            if key not in result:
                self.fail(f"{path}.{key}" if path else key, "Required value")
        return result

    def _array(self, schema: JSONObject, value: list[Any], path: str) -> list[Any]:
        if "minItems" in schema and len(value) < int(schema["minItems"]):
            self.fail(
                path, f"Invalid value: {len(value)}: must have at least {schema['minItems']} items"
            )
        if "maxItems" in schema and len(value) > int(schema["maxItems"]):
            self.fail(path, f"Too many: {len(value)}: must have at most {schema['maxItems']} items")
        items = schema.get("items")
        if not isinstance(items, dict):
            return value
        return [self.walk(items, item, f"{path}[{index}]") for index, item in enumerate(value)]

    def _string(self, schema: JSONObject, value: str, path: str) -> None:
        if "minLength" in schema and len(value) < int(schema["minLength"]):
            self.fail(
                path,
                f"Invalid value: {_show(value)}: at least {schema['minLength']} chars",
            )
        if "maxLength" in schema and len(value) > int(schema["maxLength"]):
            self.fail(path, f"Too long: may not be more than {schema['maxLength']} bytes")
        pattern = schema.get("pattern")
        if pattern and not re.search(str(pattern), value):
            self.fail(
                path, f"Invalid value: {_show(value)}: {path} in body should match '{pattern}'"
            )

    def _number(self, schema: JSONObject, value: float, path: str) -> None:
        if "minimum" in schema and value < schema["minimum"]:
            self.fail(
                path,
                f"Invalid value: {_show(value)}: must be >= {schema['minimum']}",
            )
        if "maximum" in schema and value > schema["maximum"]:
            self.fail(
                path,
                f"Invalid value: {_show(value)}: must be <= {schema['maximum']}",
            )


def apply_schema(
    schema: JSONObject,
    obj: JSONObject,
    *,
    kind: str,
    group: str,
    validation: FieldValidation | None = None,
) -> JSONObject:
    """``obj`` defaulted and pruned by ``schema`` (``openAPIV3Schema``); 422 with every cause."""
    walker = _Walker()
    body = {k: v for k, v in obj.items() if k not in _ROOT_KEPT}
    checked = walker.walk({**schema, "type": "object"}, body, "")
    name = str((obj.get("metadata") or {}).get("name", ""))
    if walker.unknown and validation is not None and validation.mode != "Ignore":
        unknown = [f'unknown field "{path}"' for path in walker.unknown]
        if validation.mode == "Strict":
            raise APIError(
                400,
                "BadRequest",
                f"{kind} in version {obj.get('apiVersion', '')!r} cannot be handled as a {kind}: "
                f"strict decoding error: {', '.join(unknown)}",
            )
        validation.warnings.extend(unknown)
    if walker.causes:
        raise APIError(
            422,
            "Invalid",
            f'{kind}.{group} "{name}" is invalid: ' + ", ".join(m for _, m in walker.causes),
            details={
                "name": name,
                "group": group,
                "kind": kind,
                "causes": [
                    {"reason": "FieldValueInvalid", "message": m, "field": f}
                    for f, m in walker.causes
                ],
            },
        )
    return {**{k: obj[k] for k in _ROOT_KEPT if k in obj}, **checked}
