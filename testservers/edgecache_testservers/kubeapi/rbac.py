"""Authorization for the test API server (``KubeAPIServer(authorization=...)``): RBAC-style rules
per user, checked after authentication, as the kube-apiserver's RBAC authorizer does.

A request is a *resource* request (verb, API group, resource[/subresource], namespace, name:
classified by the handlers exactly as they serve it) or a *non-resource* request (discovery roots,
``/version``, ``/openapi/...``, health): the same split as the API server's RequestInfo. A user
with no rules is refused (403 Forbidden); ``rules=None`` allows everyone (the default).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from . import _status

__all__ = ["ADMIN", "DISCOVERY", "Authorizer", "Rule"]


@dataclass(frozen=True)
class Rule:
    """One RBAC policy rule, bound in ``namespaces`` (``"*"``: a ClusterRoleBinding)."""

    verbs: Collection[str] = ("*",)
    api_groups: Collection[str] = ("*",)
    #: ``pods``, ``pods/status`` (a subresource is not covered by its resource) or ``*``.
    resources: Collection[str] = ("*",)
    resource_names: Collection[str] = ()
    namespaces: Collection[str] = ("*",)
    #: Non-resource URLs: exact, or a prefix ending in ``*`` (``/apis/*``); ``*`` for all.
    non_resource_urls: Collection[str] = ()

    def allows_resource(
        self, verb: str, group: str, resource: str, namespace: str, name: str
    ) -> bool:
        return (
            _matches(self.verbs, verb)
            and _matches(self.api_groups, group)
            and _matches(self.resources, resource)
            and (not self.resource_names or name in self.resource_names)
            and ("*" in self.namespaces or (bool(namespace) and namespace in self.namespaces))
        )

    def allows_path(self, verb: str, path: str) -> bool:
        if not _matches(self.verbs, verb):
            return False
        for url in self.non_resource_urls:
            if url == "*" or url == path or (url.endswith("*") and path.startswith(url[:-1])):
                return True
        return False


def _matches(allowed: Collection[str], value: str) -> bool:
    return "*" in allowed or value in allowed


#: Everything (cluster-admin).
ADMIN: Sequence[Rule] = (Rule(non_resource_urls=("*",)),)
#: API discovery and health only (the ``system:discovery`` ClusterRole).
DISCOVERY: Sequence[Rule] = (
    Rule(
        verbs=("get",),
        resources=(),
        non_resource_urls=(
            "/api",
            "/api/*",
            "/apis",
            "/apis/*",
            "/healthz",
            "/livez",
            "/openapi",
            "/openapi/*",
            "/readyz",
            "/version",
            "/version/",
        ),
    ),
)


class Authorizer:
    """Rules per user name; raises the API server's 403 ``Status`` for a refused request."""

    def __init__(self, rules: Mapping[str, Sequence[Rule]] | None) -> None:
        self.rules = None if rules is None else dict(rules)

    def check_resource(
        self,
        user: str,
        verb: str,
        group: str,
        resource: str,
        namespace: str,
        name: str,
    ) -> None:
        if self.rules is None:
            return
        if any(
            r.allows_resource(verb, group, resource, namespace, name)
            for r in self.rules.get(user, ())
        ):
            return
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        plural = resource.split("/", 1)[0]
        raise _status.forbidden(
            f'{plural} "{name}" is forbidden: ' if name else f"{plural} is forbidden: ",
            f'User "{user}" cannot {verb} resource "{resource}" in API group "{group}" {scope}',
        )

    def check_path(self, user: str, method: str, path: str) -> None:
        if self.rules is None:
            return
        verb = "get" if method in ("GET", "HEAD") else method.lower()
        if any(r.allows_path(verb, path) for r in self.rules.get(user, ())):
            return
        raise _status.forbidden("", f'User "{user}" cannot {verb} path "{path}"')
