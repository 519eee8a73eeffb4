"""Strategic merge patch for built-in kinds, with the patch merge keys of the Kubernetes API.

Lists are merged item by item where the API declares a merge key (containers and volumes by
``name``, volume mounts by ``mountPath``, container ports by ``containerPort``, service ports by
``port``, conditions by ``type``, owner references by ``uid``); ``metadata.finalizers`` merges as a
set. Directives: ``$patch: delete|replace`` (items and maps), ``$retainKeys``,
``$deleteFromPrimitiveList/<field>`` and ``$setElementOrder/<field>``. Other lists are replaced.
Custom resources do not accept strategic merge patches (the handlers answer 415), as on a real
server.
"""

from __future__ import annotations

import copy
from typing import Any

# Field name -> candidate merge keys (the first key every item carries wins).
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "env": ("name",),
    "imagePullSecrets": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "ports": ("containerPort", "port"),
    "conditions": ("type",),
    "addresses": ("type",),
    "ownerReferences": ("uid",),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey",),
    "resourceClaims": ("name",),
}
SET_FIELDS = frozenset({"finalizers"})
_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


def _merge_key(field: str, *lists: list[Any]) -> str | None:
    for key in MERGE_KEYS.get(field, ()):
        if all(isinstance(item, dict) and key in item for items in lists for item in items):
            return key
    return None


def _identity(item: Any, key: str | None) -> Any:
    if key is not None and isinstance(item, dict):
        return item.get(key)
    return item if not isinstance(item, (dict, list)) else repr(item)


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    current_list = current if isinstance(current, list) else []
    if field in SET_FIELDS and all(not isinstance(v, (dict, list)) for v in patch):
        return [*current_list, *(v for v in patch if v not in current_list)]
    wanted = [item for item in patch if not (isinstance(item, dict) and "$patch" in item)]
    key = _merge_key(field, current_list, patch)
    if key is None:
        return copy.deepcopy(wanted)
    merged = {item[key]: copy.deepcopy(item) for item in current_list}
    order = [item[key] for item in current_list]
    for item in patch:
        identity = item[key]
        if item.get("$patch") == "delete":
            merged.pop(identity, None)
            continue
        if identity not in merged:
            order.append(identity)
        merged[identity] = strategic_merge(merged.get(identity), item)
    return [merged[identity] for identity in order if identity in merged]


def _reorder(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    wanted = [_identity(item, key) for item in order]
    ranked = {identity: index for index, identity in enumerate(wanted)}
    return sorted(items, key=lambda item: ranked.get(_identity(item, key), len(ranked)))


def strategic_merge(current: Any, patch: Any) -> Any:
    """``current`` with the strategic merge ``patch`` applied."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    result: dict[str, Any] = copy.deepcopy(current) if isinstance(current, dict) else {}
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    for field, value in patch.items():
        if field.startswith("$"):
            continue
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(field, None)
        elif isinstance(value, list):
            result[field] = _merge_list(field, result.get(field), value)
        else:
            result[field] = strategic_merge(result.get(field), value)
    for directive, values in patch.items():
        if directive.startswith(_DELETE_PRIMITIVE) and isinstance(values, list):
            field = directive[len(_DELETE_PRIMITIVE) :]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in values]
        elif directive.startswith(_ORDER) and isinstance(values, list):
            field = directive[len(_ORDER) :]
            if isinstance(result.get(field), list):
                key = _merge_key(field, result[field], values)
                result[field] = _reorder(result[field], values, key)
    return result
