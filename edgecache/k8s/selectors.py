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
server refuses instead of returning an empty list, and it returns the selector as the server
then evaluates it: the pod alias ``spec.host`` (old v1 clients) becomes ``spec.nodeName``, and
labels whose value the server computes (``spec.hostNetwork`` of a pod and ``spec.unschedulable``
of a node default to ``false``, a Job's ``status.successful`` is its ``status.succeeded``, an
Event's ``source`` falls back to ``reportingComponent``) read it as the server's
``ToSelectableFields`` does. apps/v1 ReplicaSets take no ``status.replicas`` (their storage lists
it as selectable, but no conversion is registered for apps/v1: kubernetes/kubernetes#135136).

Custom resources take ``metadata.name``, ``metadata.namespace`` (namespaced ones only) and the
``selectableFields`` their CRD declares for the version asked (Kubernetes 1.31+,
:class:`CustomResourceFields`), refusing the rest with the server's message; a missing field
compares as the empty string, as the server's JSONPath lookup (missing keys allowed) gives it.
A caller that does not know the CRD (the hub offline, when no CRD was recorded) gets
:class:`FieldLabelsUnknownError` for any other label: whether the server accepts it is unknown.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgecache.errors import ConfigError, EdgeCacheError

__all__ = [
    "CustomResourceFields",
    "FieldLabelsUnknownError",
    "FieldSelector",
    "LabelSelector",
    "SelectorError",
    "built_in_group",
    "check_field_labels",
    "selector_predicate",
]


class SelectorError(ConfigError):
    """A selector that does not parse (an API server answers it with 400 BadRequest)."""


class FieldLabelsUnknownError(EdgeCacheError):
    """A field label of a resource whose definition the caller does not know (a custom resource
    without its CRD): only the server can say whether it is supported."""


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


#: How the server computes one field label's value from an object (its ``ToSelectableFields``).
FieldValue = Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True)
class FieldSelector:
    """A parsed ``fieldSelector``: a conjunction of ``path=value`` / ``path!=value`` terms."""

    terms: tuple[tuple[str, bool, str], ...] = ()
    """``(path, equal, value)`` triples."""
    values: Mapping[str, FieldValue] = field(default_factory=dict, compare=False, hash=False)
    """Labels whose value is not simply the object's field of that dotted path (set by
    :func:`check_field_labels` for the resource); the others read the path."""

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
        return all((self._value(obj, path) == value) == equal for path, equal, value in self.terms)

    def _value(self, obj: Mapping[str, Any], path: str) -> str:
        computed = self.values.get(path)
        return computed(obj) if computed is not None else _field_value(obj, path)

    def exact_value(self, path: str) -> str | None:
        """The value this selector pins ``path`` to, if any."""
        for term_path, equal, value in self.terms:
            if term_path == path and equal:
                return value
        return None


def selector_predicate(
    label: str | None, fields: str | FieldSelector | None
) -> Callable[[Mapping[str, Any]], bool]:
    """One predicate for both selectors of a request (the field selector as text, or as
    :func:`check_field_labels` returned it for the resource)."""
    labels = LabelSelector.parse(label)
    if not isinstance(fields, FieldSelector):
        fields = FieldSelector.parse(fields)
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


#: Kubernetes' own API groups with a dot (Kubernetes 1.32); groups without a dot (``""``, apps,
#: batch, policy, autoscaling) are all built in: CRD groups must contain a dot.
_BUILT_IN_GROUPS = frozenset(
    {
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "certificates.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "flowcontrol.apiserver.k8s.io",
        "internal.apiserver.k8s.io",
        "networking.k8s.io",
        "node.k8s.io",
        "rbac.authorization.k8s.io",
        "resource.k8s.io",
        "scheduling.k8s.io",
        "storage.k8s.io",
        "storagemigration.k8s.io",
    }
)

#: Old names the server converts before evaluating (``ConvertFieldLabel`` returning another
#: label): ``spec.host`` is kept "for backwards compatibility with old v1 clients".
_FIELD_ALIASES: dict[tuple[str, str], dict[str, str]] = {
    ("", "pods"): {"spec.host": "spec.nodeName"}
}


def _or_default(path: str, default: str) -> FieldValue:
    return lambda obj: _field_value(obj, path) or default


def _event_source(obj: Mapping[str, Any]) -> str:
    return _field_value(obj, "source.component") or _field_value(obj, "reportingComponent")


#: Field labels whose value the server's ``ToSelectableFields`` computes rather than copies
#: (a Go zero value where the JSON omits the field, another field, a fallback); the other
#: labels of the table read the object's field of the same dotted path.
_FIELD_VALUES: dict[tuple[str, str], dict[str, FieldValue]] = {
    ("", "pods"): {
        "spec.hostNetwork": _or_default("spec.hostNetwork", "false"),
        # Accepted by the conversion but absent from the pod's field set: always "".
        "status.podIPs": lambda obj: "",
    },
    ("", "nodes"): {"spec.unschedulable": _or_default("spec.unschedulable", "false")},
    ("", "replicationcontrollers"): {"status.replicas": _or_default("status.replicas", "0")},
    ("batch", "jobs"): {"status.successful": _or_default("status.succeeded", "0")},
    ("", "events"): {"source": _event_source},
}


@dataclass(frozen=True)
class CustomResourceFields:
    """What a CRD version says about field selectors on its custom resources."""

    selectable: frozenset[str] | None
    """The version's ``selectableFields`` as labels: the JSON path without its leading dot
    (``spec.color`` for ``.spec.color``), as the server names them; ``None`` when the CRD is
    not known (its scope may be: a recorded object without a namespace)."""
    namespaced: bool | None
    """Only namespaced custom resources take ``metadata.namespace``; ``None`` when the scope is
    not known either (no CRD and no object recorded), so ``metadata.namespace`` is unknown."""

    @classmethod
    def from_crd(cls, crd: Mapping[str, Any], version: str) -> CustomResourceFields | None:
        """The fields of ``version`` of a ``CustomResourceDefinition`` object, or ``None`` when
        it serves no such version."""
        spec = crd.get("spec")
        if not isinstance(spec, Mapping):
            return None
        for entry in spec.get("versions") or []:
            if isinstance(entry, Mapping) and entry.get("name") == version:
                if not entry.get("served", True):
                    return None
                selectable = frozenset(
                    str(item.get("jsonPath", "")).removeprefix(".")
                    for item in entry.get("selectableFields") or []
                    if isinstance(item, Mapping)
                )
                return cls(selectable, spec.get("scope", "Namespaced") == "Namespaced")
        return None


def built_in_group(group: str) -> bool:
    """Whether ``group`` is one of Kubernetes' own API groups (else: custom or aggregated)."""
    return "." not in group or group in _BUILT_IN_GROUPS


def check_field_labels(
    selector: FieldSelector,
    *,
    group: str,
    resource: str,
    custom: CustomResourceFields | None = None,
) -> FieldSelector:
    """The selector as the server evaluates it on ``resource`` (aliases converted, computed
    values attached); :class:`SelectorError` (the server's 400 message) for a field label the
    resource does not support. A custom resource is checked against ``custom`` (its CRD
    version); while its selectable fields are unknown (no ``custom``, for a resource outside
    Kubernetes' own groups, or ``custom.selectable`` is ``None``), labels other than
    ``metadata.name`` and ``metadata.namespace`` raise :class:`FieldLabelsUnknownError`."""
    if not selector.terms or (group, resource) in _UNCHECKED:
        return selector
    aliases = _FIELD_ALIASES.get((group, resource), {})
    if custom is None and not built_in_group(group):
        custom = CustomResourceFields(None, namespaced=True)
    if custom is not None:
        accepted = (
            {"metadata.name", "metadata.namespace"} if custom.namespaced else {"metadata.name"}
        )
        unknown = []
        for path, _equal, _value in selector.terms:
            if path == "metadata.namespace" and custom.namespaced is None:
                unknown.append(path)
                continue
            if path in accepted or (custom.selectable is not None and path in custom.selectable):
                continue
            if custom.selectable is not None or path in _DEFAULT_FIELD_LABELS:
                raise SelectorError(f"field label not supported: {path}")
            unknown.append(path)
        if unknown:
            raise FieldLabelsUnknownError(
                f"field label {unknown[0]} of {resource}.{group}: its "
                "CustomResourceDefinition is not known"
            )
        return selector
    supported = _FIELD_LABELS.get((group, resource))
    for path, _equal, _value in selector.terms:
        if supported is None and path not in _DEFAULT_FIELD_LABELS:
            raise SelectorError(
                f'"{path}" is not a known field selector: only "metadata.name", '
                '"metadata.namespace"'
            )
        if supported is not None and path not in supported and path not in aliases:
            raise SelectorError(f"field label not supported: {path}")
    terms = tuple((aliases.get(path, path), equal, value) for path, equal, value in selector.terms)
    return FieldSelector(terms, _FIELD_VALUES.get((group, resource), {}))
