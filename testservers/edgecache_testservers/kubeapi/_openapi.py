"""A minimal OpenAPI v3 document set, so ``kubectl apply`` works without ``--validate=false``.

``/openapi/v3`` lists one document per served group/version; each declares every kind of that
group/version as an object that keeps unknown fields, and a PATCH operation per kind that accepts
the ``fieldValidation`` parameter: kubectl then delegates validation to the server instead of
fetching OpenAPI v2. No field-level schemas are served; objects are accepted as they come, as by a
schemaless CRD. ``/openapi/v2`` is not served (kubectl asks it only in protobuf).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ._resources import ResourceRegistry, ResourceType

JSONObject = dict[str, Any]


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _document(resources: list[ResourceType]) -> JSONObject:
    schemas: JSONObject = {}
    for r in resources:
        group_name = r.group or "core"
        schemas[f"io.edgecache.test.{group_name}.{r.version}.{r.kind}"] = {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "x-kubernetes-group-version-kind": [
                {"group": r.group, "version": r.version, "kind": r.kind}
            ],
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": {_item_path(r): _patch_operation(r) for r in resources},
        "components": {"schemas": schemas},
    }


def _item_path(r: ResourceType) -> str:
    prefix = "/" + _gv_path(r.group, r.version)
    if r.namespaced:
        return f"{prefix}/namespaces/{{namespace}}/{r.plural}/{{name}}"
    return f"{prefix}/{r.plural}/{{name}}"


def _patch_operation(r: ResourceType) -> JSONObject:
    """The PATCH operation of an object, declaring ``fieldValidation``: kubectl then leaves
    validation to the server (which accepts any fields) instead of downloading OpenAPI v2."""
    return {
        "patch": {
            "operationId": f"patch{r.kind}",
            "x-kubernetes-group-version-kind": {
                "group": r.group,
                "version": r.version,
                "kind": r.kind,
            },
            "parameters": [
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": {"200": {"description": "OK"}},
        }
    }


def documents(registry: ResourceRegistry) -> dict[str, JSONObject]:
    """Group/version path (``api/v1``, ``apis/apps/v1``) to its OpenAPI v3 document."""
    by_gv: dict[str, list[ResourceType]] = {}
    for resource in registry.all():
        by_gv.setdefault(_gv_path(resource.group, resource.version), []).append(resource)
    return {path: _document(resources) for path, resources in by_gv.items()}


def index(registry: ResourceRegistry) -> JSONObject:
    """The ``/openapi/v3`` discovery document, with content hashes as kubectl expects."""
    paths: JSONObject = {}
    for path, document in documents(registry).items():
        digest = (
            hashlib.sha512(json.dumps(document, sort_keys=True).encode()).hexdigest()[:32].upper()
        )
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}
