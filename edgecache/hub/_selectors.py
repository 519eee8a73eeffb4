"""Label and field selectors, applied locally when the hub answers a LIST or WATCH offline.

An offline LIST whose exact selector was never recorded is answered from a broader recorded list
(same namespace or cluster-wide, no selector) filtered here, with the kube-apiserver's grammar:
``k``, ``!k``, ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)`` for labels and
``path=v``, ``path==v``, ``path!=v`` for fields (any dotted path, e.g. ``spec.nodeName``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from edgecache.errors import ConfigError

__all__ = ["LabelMatcher", "field_matcher", "label_matcher"]

LabelMatcher = Callable[[Mapping[str, str]], bool]

_SET_TERM = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s*\((.*)\)\s*$")


def _terms(selector: str) -> list[str]:
    terms: list[str] = []
    depth = 0
    start = 0
    for index, char in enumerate(selector):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(selector[start:index])
            start = index + 1
    terms.append(selector[start:])
    return [term.strip() for term in terms if term.strip()]


def _label_term(term: str) -> LabelMatcher:
    set_match = _SET_TERM.match(term)
    if set_match:
        key, operator, values_text = set_match.groups()
        values = frozenset(v.strip() for v in values_text.split(",") if v.strip())
        if operator == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if "!=" in term:
        key, value = (part.strip() for part in term.split("!=", 1))
        return lambda labels: labels.get(key) != value
    if "==" in term or "=" in term:
        key, value = (part.strip() for part in term.replace("==", "=", 1).split("=", 1))
        return lambda labels: labels.get(key) == value
    if term.startswith("!"):
        key = term[1:].strip()
        return lambda labels: key not in labels
    if re.search(r"[\s()<>]", term):
        raise ConfigError(f"unsupported label selector term: {term!r}")
    return lambda labels: term in labels


def label_matcher(selector: str) -> LabelMatcher | None:
    """A predicate over an object's labels, or None for an empty selector (matches all)."""
    matchers = [_label_term(term) for term in _terms(selector)]
    if not matchers:
        return None
    return lambda labels: all(match(labels) for match in matchers)


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_matcher(selector: str) -> Callable[[Mapping[str, Any]], bool] | None:
    """A predicate over a whole object, or None for an empty selector (matches all)."""
    checks: list[tuple[str, str, bool]] = []
    for term in _terms(selector):
        if "!=" in term:
            path, value = term.split("!=", 1)
            checks.append((path.strip(), value.strip(), False))
        elif "=" in term:
            path, value = term.replace("==", "=", 1).split("=", 1)
            checks.append((path.strip(), value.strip(), True))
        else:
            raise ConfigError(f"unsupported field selector term: {term!r}")
    if not checks:
        return None

    def matches(obj: Mapping[str, Any]) -> bool:
        return all((_field_value(obj, path) == value) == equal for path, value, equal in checks)

    return matches
