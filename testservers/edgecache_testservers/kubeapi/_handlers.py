"""HTTP routing: URL paths and verbs of the Kubernetes REST API mapped onto the store.

Sits between the aiohttp server (``_server.py``: lifecycle, auth, faults) and the store. Parses
``/api/v1/...`` and ``/apis/<group>/<version>/...`` paths (namespaced and cluster-scoped, the
``status`` subresource, the legacy ``/watch/`` prefix), turns query parameters into store calls, and
renders lists, single objects, watch streams and ``Status`` errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from edgecache.k8s.selectors import (
    CustomResourceFields,
    FieldSelector,
    SelectorError,
    check_field_labels,
    selector_predicate,
)

from . import _discovery, _openapi, _status
from ._patch import APPLY_PATCH, APPLY_PATCH_CBOR, PATCH_TYPES, STRATEGIC_MERGE_PATCH, apply_patch
from ._protobuf import decode_object
from ._resources import ResourceType
from ._scale import replicas_of, to_scale
from ._schema import FieldValidation
from ._status import APIError, bad_request
from ._store import Store
from ._table import TABLE_MEDIA, render_table, wants_table
from ._watch import WatchOptions, WatchStream
from .rbac import Authorizer

JSONObject = dict[str, Any]
VerbHandler = Callable[["web.Request", "Target"], Awaitable[web.StreamResponse]]
_TRUE = ("1", "true", "True")
#: Where the server's middleware leaves the authenticated user name for the handlers.
USER_KEY = web.RequestKey("edgecache_testservers.kubeapi.user", str)


def json_response(
    body: Any, *, status: int = 200, content_type: str = "application/json"
) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        headers={"Content-Type": content_type},
    )


def error_response(error: APIError) -> web.Response:
    return json_response(error.status(), status=error.code)


def _field_validation(request: web.Request) -> FieldValidation:
    mode = request.query.get("fieldValidation", "Warn") or "Warn"
    if mode not in ("Strict", "Warn", "Ignore"):
        raise _status.bad_request(f'fieldValidation must be Strict, Warn or Ignore, not "{mode}"')
    return FieldValidation(mode)


def _warned(response: web.Response, validation: FieldValidation) -> web.Response:
    """``Warning`` headers as the API server sends them (RFC 7234 code 299)."""
    for warning in validation.warnings:
        response.headers.add("Warning", "299 - " + json.dumps(warning))
    return response


def _selector_predicate(
    label: str | None, field: str | None, resource: ResourceType
) -> Callable[[Mapping[str, Any]], bool]:
    """The request's selectors as one predicate, evaluated as the API server does (aliases such
    as the pod's ``spec.host``, computed values); a selector that does not parse, or a field the
    resource does not support, is a 400 (as the API server answers)."""
    custom = (
        CustomResourceFields(resource.selectable_fields, resource.namespaced)
        if resource.from_crd
        else None
    )
    try:
        fields = check_field_labels(
            FieldSelector.parse(field),
            group=resource.group,
            resource=resource.plural,
            custom=custom,
        )
        return selector_predicate(label, fields)
    except SelectorError as exc:
        raise bad_request(str(exc)) from exc


@dataclass(frozen=True)
class Target:
    """What a resource URL names."""

    resource: ResourceType
    namespace: str | None
    name: str
    subresource: str
    legacy_watch: bool


class APIHandlers:
    """The request handlers of one server; ``watch_started`` lets the server track open watches."""

    def __init__(
        self,
        store: Store,
        *,
        bookmark_interval_seconds: Callable[[], float],
        aggregated_discovery: bool,
        tables: bool,
        on_watch: Callable[[WatchStream, asyncio.BaseTransport | None], Callable[[], None]],
        authorizer: Authorizer | None = None,
    ) -> None:
        self.store = store
        self._authorizer = authorizer or Authorizer(None)
        self._bookmark_interval = bookmark_interval_seconds
        self._aggregated = aggregated_discovery
        self._tables = tables
        self._on_watch = on_watch

    # ------------------------------------------------------------------------- discovery

    async def version(self, request: web.Request) -> web.Response:
        return json_response(_discovery.version_info())

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def core(self, request: web.Request) -> web.Response:
        if self._aggregated and _discovery.wants_aggregated(request.headers.get("Accept", "")):
            body = _discovery.aggregated(self.store.registry, core=True)
            return json_response(body, content_type=_discovery.AGGREGATED_CONTENT_TYPE)
        return json_response(_discovery.core_versions(request.host))

    async def groups(self, request: web.Request) -> web.Response:
        if self._aggregated and _discovery.wants_aggregated(request.headers.get("Accept", "")):
            body = _discovery.aggregated(self.store.registry, core=False)
            return json_response(body, content_type=_discovery.AGGREGATED_CONTENT_TYPE)
        return json_response(_discovery.group_list(self.store.registry))

    async def openapi_index(self, request: web.Request) -> web.Response:
        return json_response(_openapi.index(self.store.registry))

    async def openapi_document(self, request: web.Request) -> web.Response:
        path = request.match_info["tail"]
        document = _openapi.documents(self.store.registry).get(path)
        if document is None:
            return error_response(_status.path_not_found(request.path))
        return json_response(document)

    # ----------------------------------------------------------------------------- routing

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Every ``/api/...`` and ``/apis/...`` request that is not a discovery root."""
        try:
            return await self._dispatch(request)
        except APIError as error:
            return error_response(error)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        registry = self.store.registry
        if parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) == 2:
            found = _discovery.api_group(registry, parts[1])
            if found is None:
                raise _status.path_not_found(request.path)
            return json_response(found)
        else:
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            listing = _discovery.resource_list(registry, group, version)
            if listing is None:
                raise _status.path_not_found(request.path)
            return json_response(listing)
        target = self._target(request.path, group, version, rest)
        verb_handler = self._verb(request.method, target)
        self._authorize(request, target)
        return await verb_handler(request, target)

    def _authorize(self, request: web.Request, target: Target) -> None:
        """RBAC on what is about to be served (the classification the handlers use)."""
        method = request.method
        if method in ("GET", "HEAD"):
            watch = target.legacy_watch or request.query.get("watch") in ("1", "true", "True")
            verb = "watch" if watch else ("get" if target.name else "list")
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, "")
            if method == "DELETE":
                verb = "delete" if target.name else "deletecollection"
        resource = target.resource.plural
        if target.subresource:
            resource += "/" + target.subresource
        self._authorizer.check_resource(
            request.get(USER_KEY, ""),
            verb or method.lower(),
            target.resource.group,
            resource,
            target.namespace or "",
            target.name,
        )

    def _target(self, path: str, group: str, version: str, rest: list[str]) -> Target:
        registry = self.store.registry
        legacy_watch = rest[0] == "watch"
        if legacy_watch:
            rest = rest[1:]
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            candidate = registry.lookup(group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise _status.path_not_found(path)
        resource = registry.lookup(group, version, rest[0])
        if resource is None:
            raise _status.path_not_found(path)
        name = rest[1] if len(rest) > 1 else ""
        subresource = rest[2] if len(rest) > 2 else ""
        served = {"status": resource.has_status, "scale": resource.has_scale}
        if subresource and not served.get(subresource):
            raise _status.path_not_found(path)
        return Target(resource, namespace, name, subresource, legacy_watch)

    def _verb(self, method: str, target: Target) -> VerbHandler:
        table: dict[tuple[str, bool], VerbHandler] = {
            ("GET", False): self.list_objects,
            ("GET", True): self.get,
            ("POST", False): self.create,
            ("PUT", True): self.update,
            ("PATCH", True): self.patch,
            ("DELETE", True): self.delete,
            ("DELETE", False): self.delete_collection,
        }
        handler = table.get((method, bool(target.name)))
        if handler is None:
            raise _status.method_not_allowed(method, target.resource.plural)
        if target.legacy_watch and method != "GET":
            raise _status.method_not_allowed(method, target.resource.plural)
        return handler

    # ----------------------------------------------------------------------------- helpers

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        content_type = request.content_type
        if content_type == "application/vnd.kubernetes.protobuf":
            return decode_object(raw)
        if "cbor" in content_type:
            raise _status.unsupported_media_type(content_type)
        try:
            if "yaml" in content_type:
                return yaml.safe_load(raw.decode())
            return json.loads(raw or b"null")
        except (ValueError, yaml.YAMLError) as exc:
            raise _status.bad_request(f"the request body could not be decoded: {exc}") from exc

    def _render(self, request: web.Request, target: Target, obj: JSONObject) -> JSONObject:
        if obj.get("apiVersion") != target.resource.api_version:
            obj = {**obj, "apiVersion": target.resource.api_version}
        return obj

    def _object_response(
        self, request: web.Request, target: Target, obj: JSONObject, *, status: int = 200
    ) -> web.Response:
        obj = self._render(request, target, obj)
        if self._tables and wants_table(request.headers.get("Accept", "")):
            table = render_table(
                target.resource,
                [obj],
                resource_version=None,
                include_object=request.query.get("includeObject", "Metadata"),
            )
            return json_response(table, status=status, content_type=TABLE_MEDIA)
        return json_response(obj, status=status)

    def _namespaced_write(self, target: Target) -> None:
        if target.resource.namespaced and target.namespace is None:
            raise _status.method_not_allowed("write", target.resource.plural)

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        return request.query.get("dryRun") == "All"

    # ------------------------------------------------------------------------------- verbs

    async def get(self, request: web.Request, target: Target) -> web.StreamResponse:
        if target.legacy_watch or request.query.get("watch") in _TRUE:
            return await self.watch(request, target, name=target.name)
        obj = self.store.get(target.resource, target.namespace, target.name)
        if target.subresource == "scale":
            return json_response(to_scale(obj))
        return self._object_response(request, target, obj)

    async def list_objects(self, request: web.Request, target: Target) -> web.StreamResponse:
        if target.legacy_watch or request.query.get("watch") in _TRUE:
            return await self.watch(request, target, name="")
        query = request.query
        predicate = _selector_predicate(
            query.get("labelSelector"), query.get("fieldSelector"), target.resource
        )
        requested_rv = query.get("resourceVersion", "")
        if requested_rv not in ("", "0") and requested_rv.isdigit():
            current = self.store.resource_version
            if int(requested_rv) > current:
                raise APIError(
                    504,
                    "Timeout",
                    f"Too large resource version: {requested_rv}, current: {current}",
                )
        try:
            limit = int(query.get("limit", "0") or "0")
        except ValueError as exc:
            raise _status.bad_request(f"invalid limit: {exc}") from exc
        if requested_rv == "0":
            limit = 0  # kube-apiserver 1.32 serves resourceVersion=0 from its watch cache, unpaged
        exact = query.get("resourceVersionMatch") == "Exact" and requested_rv.isdigit()
        page = self.store.list_page(
            target.resource,
            target.namespace,
            predicate,
            limit=limit,
            continue_token=query.get("continue", ""),
            at_resource_version=int(requested_rv) if exact else None,
        )
        items = [self._render(request, target, obj) for obj in page.items]
        if self._tables and wants_table(request.headers.get("Accept", "")):
            table = render_table(
                target.resource,
                items,
                resource_version=str(page.resource_version),
                include_object=request.query.get("includeObject", "Metadata"),
            )
            if page.continue_token:
                table["metadata"]["continue"] = page.continue_token
            return json_response(table, content_type=TABLE_MEDIA)
        metadata: JSONObject = {"resourceVersion": str(page.resource_version)}
        if page.continue_token:
            metadata["continue"] = page.continue_token
            metadata["remainingItemCount"] = page.remaining
        body = {
            "kind": f"{target.resource.kind}List",
            "apiVersion": target.resource.api_version,
            "metadata": metadata,
            "items": items,
        }
        return json_response(body)

    async def watch(self, request: web.Request, target: Target, *, name: str) -> web.StreamResponse:
        query = request.query
        field_selector = query.get("fieldSelector", "")
        if name:
            term = f"metadata.name={name}"
            field_selector = f"{field_selector},{term}" if field_selector else term
        predicate = _selector_predicate(query.get("labelSelector"), field_selector, target.resource)
        send_initial = query.get("sendInitialEvents") in _TRUE
        if send_initial and query.get("resourceVersionMatch") != "NotOlderThan":
            raise APIError(
                422,
                "Invalid",
                "resourceVersionMatch: Forbidden: sendInitialEvents requires setting "
                "resourceVersionMatch to NotOlderThan",
            )
        try:
            timeout = float(query["timeoutSeconds"]) if "timeoutSeconds" in query else None
        except ValueError as exc:
            raise _status.bad_request(f"invalid timeoutSeconds: {exc}") from exc
        options = WatchOptions(
            resource_version=query.get("resourceVersion", ""),
            allow_bookmarks=query.get("allowWatchBookmarks") in _TRUE,
            send_initial_events=send_initial,
            timeout_seconds=timeout,
        )
        as_table = self._tables and wants_table(request.headers.get("Accept", ""))
        include_object = query.get("includeObject", "Metadata")
        resource = target.resource

        def render(obj: JSONObject) -> JSONObject:
            if as_table:
                return render_table(
                    resource, [obj], resource_version=None, include_object=include_object
                )
            return obj

        stream = WatchStream(
            self.store,
            resource,
            target.namespace,
            predicate,
            options,
            bookmark_interval_seconds=self._bookmark_interval(),
            render=render,
        )
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": TABLE_MEDIA if as_table else "application/json"},
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        forget = self._on_watch(stream, request.transport)
        try:
            transport = request.transport
            await stream.run(
                response.write, closed=lambda: transport is None or transport.is_closing()
            )
        except (ConnectionResetError, ConnectionError):
            return response
        finally:
            forget()
        # The client may go away as the stream ends (aiohttp's ClientConnectionResetError).
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    async def create(self, request: web.Request, target: Target) -> web.StreamResponse:
        self._namespaced_write(target)
        body = await self._body(request)
        if not isinstance(body, dict):
            raise _status.bad_request("the body of the request must be an object")
        validation = _field_validation(request)
        obj = self.store.create(
            target.resource,
            target.namespace,
            body,
            dry_run=self._dry_run(request),
            validation=validation,
        )
        return _warned(self._object_response(request, target, obj, status=201), validation)

    async def update(self, request: web.Request, target: Target) -> web.StreamResponse:
        body = await self._body(request)
        if target.subresource == "scale":
            sent_rv = ((body or {}).get("metadata") or {}).get("resourceVersion")
            return self._scale_to(target, replicas_of(body), sent_rv)
        validation = _field_validation(request)
        obj = self.store.update(
            target.resource,
            target.namespace,
            target.name,
            body,
            subresource=target.subresource,
            dry_run=self._dry_run(request),
            validation=validation,
        )
        return _warned(self._object_response(request, target, obj), validation)

    async def patch(self, request: web.Request, target: Target) -> web.StreamResponse:
        content_type = request.content_type
        if content_type == APPLY_PATCH_CBOR or content_type not in PATCH_TYPES:
            raise _status.unsupported_media_type(content_type)
        if content_type == STRATEGIC_MERGE_PATCH and target.resource.from_crd is not None:
            raise _status.unsupported_media_type(
                f"{content_type} (custom resources take application/merge-patch+json, "
                "application/json-patch+json or application/apply-patch+yaml)"
            )
        body = await self._body(request)
        if target.subresource == "scale":
            current = to_scale(self.store.get(target.resource, target.namespace, target.name))
            return self._scale_to(
                target, replicas_of(apply_patch(current, body, content_type)), None
            )
        existed = content_type != APPLY_PATCH or self._exists(target)
        validation = _field_validation(request)
        obj = self.store.patch(
            target.resource,
            target.namespace,
            target.name,
            body,
            content_type,
            subresource=target.subresource,
            dry_run=self._dry_run(request),
            validation=validation,
        )
        response = self._object_response(request, target, obj, status=200 if existed else 201)
        return _warned(response, validation)

    def _scale_to(
        self, target: Target, replicas: int, resource_version: str | None
    ) -> web.Response:
        patch: JSONObject = {"spec": {"replicas": replicas}}
        if resource_version:
            patch["metadata"] = {"resourceVersion": resource_version}
        obj = self.store.patch(
            target.resource, target.namespace, target.name, patch, "application/merge-patch+json"
        )
        return json_response(to_scale(obj))

    def _exists(self, target: Target) -> bool:
        try:
            self.store.get(target.resource, target.namespace, target.name)
        except APIError:
            return False
        return True

    async def delete(self, request: web.Request, target: Target) -> web.StreamResponse:
        options: Any = None
        if request.can_read_body:
            options = await self._body(request)
        options = options if isinstance(options, dict) else {}
        propagation = options.get("propagationPolicy") or request.query.get("propagationPolicy")
        if options.get("orphanDependents") or request.query.get("orphanDependents") in _TRUE:
            propagation = "Orphan"
        obj, gone = self.store.delete(
            target.resource,
            target.namespace,
            target.name,
            preconditions=options.get("preconditions"),
            dry_run=self._dry_run(request),
            propagation=propagation or "Background",
        )
        return self._object_response(request, target, obj, status=200 if gone else 202)

    async def delete_collection(self, request: web.Request, target: Target) -> web.StreamResponse:
        query = request.query
        predicate = _selector_predicate(
            query.get("labelSelector"), query.get("fieldSelector"), target.resource
        )
        deleted = self.store.delete_collection(
            target.resource, target.namespace, predicate, dry_run=self._dry_run(request)
        )
        body = {
            "kind": f"{target.resource.kind}List",
            "apiVersion": target.resource.api_version,
            "metadata": {"resourceVersion": str(self.store.resource_version)},
            "items": [self._render(request, target, obj) for obj in deleted],
        }
        return json_response(body)
