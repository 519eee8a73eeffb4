"""Kubernetes label and field selectors: parsed once, matched against objects or label maps.

One implementation for every part of edgecache that filters Kubernetes objects itself: the edge
hub answering LIST/WATCH offline, and the in-process API server of the tests. Label selectors
follow the Kubernetes grammar
(``=``, ``==``, ``!=``, ``in``, ``notin``, ``key``, ``!key``). Field selectors take ``=``,
``==`` and ``!=`` on any dotted path into the object (``metadata.name``, ``spec.nodeName``,
``status.phase``); a missing field compares as the empty string, as for ``spec.nodeName=`` on
unscheduled pods.

Which field paths a resource supports is the API server's decision, not the grammar's: the API
server converts each field label through the function registered for the resource's kind
(``AddFieldLabelConversionFunc``), or the default one, which takes ``metadata.name`` and
``metadata.namespace`` only; anything else is a 400. :func:`check_field_labels` applies that
table, checked against the Kubernetes sources (``pkg/apis/core/v1/conversion.go`` and the
``conversion.go`` of batch/v1, certificates, resource), so an offline answer refuses what the
server refuses instead of returning an empty list. Two things a reader may expect are not there:
apps/v1 ReplicaSets take no ``status.replicas`` (their storage lists it as selectable, but no
conversion is registered for apps/v1: kubernetes/kubernetes#135136), and the pod alias
``spec.host`` (old v1 clients) is not translated. Custom resources take ``metadata.name``,
``metadata.namespace`` and the ``selectableFields`` their CRD version declares: checked when the
caller knows them (the test API server), not checked otherwise (the hub offline).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edgecache.errors import ConfigError

__all__ = [
    "FieldSelector",
    "LabelSelector",
    "SelectorError",
    "check_field_labels",
    "selector_predicate",
]


class SelectorError(ConfigError):
    """A selector that does not parse (an API server answers it with 400 BadRequest)."""


_KEY = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_./]*)?[A-Za-z0-9]$")


@dataclass(frozen=True)
class _Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "exists":
            return present
        if self.operator == "!exists":
            return not present
        if self.operator in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" also match objects that lack the label.
        return not present or labels[self.key] not in self.values


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``( )``."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


_SET_RE = re.compile(r"^(\S+)\s+(in|notin)\s*\((.*)\)$")


def _parse_requirement(text: str) -> _Requirement:
    match = _SET_RE.match(text)
    if match:
        key, operator, values = match.groups()
        items = frozenset(v.strip() for v in values.split(",") if v.strip())
        return _checked(_Requirement(key, operator, items), text)
    for token, operator in (("!=", "!="), ("==", "="), ("=", "=")):
        if token in text:
            key, _, value = text.partition(token)
            return _checked(_Requirement(key.strip(), operator, frozenset({value.strip()})), text)
    if text.startswith("!"):
        return _checked(_Requirement(text[1:].strip(), "!exists", frozenset()), text)
    return _checked(_Requirement(text, "exists", frozenset()), text)


_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _checked(requirement: _Requirement, text: str) -> _Requirement:
    name = requirement.key.rpartition("/")[2]
    if not _KEY.match(name) or len(name) > 63:
        raise SelectorError(
            f'unable to parse requirement: invalid label key "{requirement.key}" in "{text}"'
        )
    for value in sorted(requirement.values):
        if len(value) > 63 or not _VALUE.match(value):
            raise SelectorError(
                f"unable to parse requirement: values[0][{requirement.key}]: Invalid value: "
                f'"{value}": a valid label must be an empty string or consist of alphanumeric '
                "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                "character (at most 63)"
            )
    return requirement


@dataclass(frozen=True)
class LabelSelector:
    """A parsed ``labelSelector``; the empty selector matches everything."""

    requirements: tuple[_Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        if not text:
            return cls()
        return cls(tuple(_parse_requirement(part) for part in _split_top_level(text)))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether the object's ``metadata.labels`` satisfy every requirement."""
        return self.matches_labels((obj.get("metadata") or {}).get("labels") or {})

    def matches_labels(self, labels: Mapping[str, str]) -> bool:
        """Whether a label map satisfies every requirement."""
        return all(r.matches(labels) for r in self.requirements)


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return ""
        current = current[part]
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    if isinstance(current, (str, int, float)):
        return str(current)
    return ""


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _split_unescaped(text: str, separator: str) -> list[str]:
    return [p for p in re.split(r"(?<!\\)" + re.escape(separator), text)]


@dataclass(frozen=True)
class FieldSelector:
    """A parsed ``fieldSelector``: a conjunction of ``path=value`` / ``path!=value`` terms."""

    terms: tuple[tuple[str, bool, str], ...] = ()
    """``(path, equal, value)`` triples."""

    @classmethod
    def parse(cls, text: str | None) -> FieldSelector:
        if not text:
            return cls()
        terms: list[tuple[str, bool, str]] = []
        for part in _split_unescaped(text, ","):
            if not part.strip():
                continue
            for token, equal in (("!=", False), ("==", True), ("=", True)):
                pieces = _split_unescaped(part, token)
                if len(pieces) >= 2:
                    path = pieces[0].strip()
                    value = _unescape(token.join(pieces[1:]))
                    terms.append((path, equal, value))
                    break
            else:
                raise SelectorError(f'invalid selector: "{text}"; can\'t understand "{part}"')
        return cls(tuple(terms))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all((_field_value(obj, path) == value) == equal for path, equal, value in self.terms)

    def exact_value(self, path: str) -> str | None:
        """The value this selector pins ``path`` to, if any."""
        for term_path, equal, value in self.terms:
            if term_path == path and equal:
                return value
        return None


def selector_predicate(label: str | None, field: str | None) -> Callable[[Mapping[str, Any]], bool]:
    """One predicate for both selectors of a request."""
    labels = LabelSelector.parse(label)
    fields = FieldSelector.parse(field)
    if not labels.requirements and not fields.terms:
        return lambda obj: True
    return lambda obj: labels.matches(obj) and fields.matches(obj)


#: Field labels of built-in resources with a conversion of their own, by (group, resource), from
#: the ``AddFieldLabelConversionFunc`` calls of Kubernetes 1.32. A resource listed here supports
#: exactly these, and refuses the rest with "field label not supported".
_FIELD_LABELS: dict[tuple[str, str], frozenset[str]] = {
    ("", "pods"): frozenset(
        {
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        }
    ),
    ("", "nodes"): frozenset({"metadata.name", "spec.unschedulable"}),
    ("", "namespaces"): frozenset({"metadata.name", "status.phase"}),
    ("", "secrets"): frozenset({"metadata.name", "metadata.namespace", "type"}),
    ("", "services"): frozenset(
        {"metadata.name", "metadata.namespace", "spec.clusterIP", "spec.type"}
    ),
    ("", "replicationcontrollers"): frozenset(
        {"metadata.name", "metadata.namespace", "status.replicas"}
    ),
    ("", "events"): frozenset(
        {
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
    ("batch", "jobs"): frozenset({"metadata.name", "metadata.namespace", "status.successful"}),
    ("certificates.k8s.io", "certificatesigningrequests"): frozenset(
        {"metadata.name", "spec.signerName"}
    ),
    ("certificates.k8s.io", "clustertrustbundles"): frozenset({"metadata.name", "spec.signerName"}),
    ("resource.k8s.io", "resourceslices"): frozenset(
        {"metadata.name", "spec.nodeName", "spec.driver"}
    ),
}
#: What every other resource supports (Kubernetes' ``DefaultMetaV1FieldSelectorConversion``).
_DEFAULT_FIELD_LABELS = frozenset({"metadata.name", "metadata.namespace"})
#: Built-in resources whose field labels this table does not pin down: not checked.
#: (events.k8s.io Events take the core names and translate them to ``regarding.*``.)
_UNCHECKED = frozenset({("events.k8s.io", "events")})


def _built_in(group: str) -> bool:
    """Kubernetes' own API groups (custom resources live in dotted groups of their own)."""
    return "." not in group or group.endswith(".k8s.io")


def check_field_labels(
    selector: FieldSelector,
    *,
    group: str,
    resource: str,
    selectable_fields: frozenset[str] | None = None,
) -> None:
    """Raise :class:`SelectorError` (the server's 400 message) for a field path the resource
    does not support. A custom resource is checked only when ``selectable_fields`` (its CRD
    version's ``selectableFields``, as field paths without the leading dot) is given: only the
    CRD says which fields it declares."""
    if not selector.terms or (group, resource) in _UNCHECKED:
        return
    if _built_in(group):
        supported = _FIELD_LABELS.get((group, resource))
    elif selectable_fields is None:
        return
    else:
        supported = _DEFAULT_FIELD_LABELS | selectable_fields
    for path, _equal, _value in selector.terms:
        if supported is None and path not in _DEFAULT_FIELD_LABELS:
            raise SelectorError(
                f'"{path}" is not a known field selector: only "metadata.name", '
                '"metadata.namespace"'
            )
        if supported is not None and path not in supported:
            raise SelectorError(f"field label not supported: {path}")
