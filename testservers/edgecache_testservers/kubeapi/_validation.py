"""Object metadata validation, as the API server applies it to every write from a client.

Names follow the rule of their resource (DNS-1123 subdomain for most, DNS-1123 label for
namespaces and services, path segments for RBAC objects); label keys and values follow the label
syntax. A failure is a 422 ``Invalid`` ``Status``, so a controller that builds bad names from user
input fails here as it would against a real cluster. Objects seeded by tests are not validated.
"""

from __future__ import annotations

import re
from typing import Any

from . import _status
from ._resources import ResourceType

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_LABEL_RESOURCES = {("", "namespaces"), ("", "services")}


def _name_problem(resource: ResourceType, name: str) -> str | None:
    if resource.group == "rbac.authorization.k8s.io":
        if name in (".", "..") or "/" in name or "%" in name:
            return "may not be '.' or '..' and may not contain '/' or '%'"
        return None
    if resource.group_resource in _DNS_LABEL_RESOURCES:
        if len(name) > 63 or not _LABEL.match(name):
            return "a lowercase RFC 1123 label must consist of lower case alphanumerics or '-'"
        return None
    if len(name) > 253 or not _SUBDOMAIN.match(name):
        return (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character"
        )
    return None


def _label_problem(key: str, value: Any) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        return f"metadata.labels: Invalid value: {key!r}: prefix part must be a DNS-1123 subdomain"
    if len(name) > 63 or not _LABEL_NAME.match(name):
        return f"metadata.labels: Invalid value: {key!r}: name part must be a valid label name"
    if not isinstance(value, str) or len(value) > 63 or (value and not _LABEL_NAME.match(value)):
        return f"metadata.labels: Invalid value: {value!r}: must be a valid label value"
    return None


def validate_metadata(resource: ResourceType, obj: dict[str, Any]) -> None:
    """Raise 422 if the object's name or labels are not acceptable to the API server."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    problem = _name_problem(resource, name)
    if problem is not None:
        raise _status.invalid(
            resource.kind,
            resource.group,
            name,
            "metadata.name",
            f"Invalid value: {name!r}: {problem}",
        )
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        raise _status.invalid(
            resource.kind, resource.group, name, "metadata.labels", "must be a map"
        )
    for key, value in labels.items():
        problem = _label_problem(str(key), value)
        if problem is not None:
            raise _status.APIError(
                422,
                "Invalid",
                f'{resource.kind} "{name}" is invalid: {problem}',
                details={"name": name, "kind": resource.kind, "group": resource.group},
            )
