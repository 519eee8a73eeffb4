"""The object store: the state of the emulated cluster, and the write semantics of the API server.

Every write takes the next value of one global, monotonic resourceVersion and appends exactly one
event to the bounded history (``_history``) that watches replay. Write semantics follow the API
server:
``generateName``, 409 AlreadyExists and Conflict, ``generation`` bumps on spec changes, status
subresources, finalizers (deletion waits until they are removed), no-op updates that do not bump
the resourceVersion, namespace deletion that deletes the namespace's objects, CRDs that start or
stop serving their resources, garbage collection (``_owners``), and lists that are consistent
snapshots across pages or rebuilt at an earlier resourceVersion.

Stored objects are never mutated in place: a write replaces the dict. Readers inside the package
therefore share references without copying; the public helpers hand out deep copies.
The store is thread-safe: the test thread seeds it while the server's loop thread serves it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import json
import random
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import _status
from ._admission import accept_crd, admit_new, check_kind, now_rfc3339
from ._binder import PV_GROUP_RESOURCE, PVC_GROUP_RESOURCE, volume_updates
from ._history import EventHistory, StoredEvent
from ._owners import OwnerIndex, owner_uids
from ._patch import APPLY_PATCH, apply_patch
from ._resources import CRD_GROUP_RESOURCE, NAMESPACE_GROUP_RESOURCE, ResourceRegistry, ResourceType
from ._schema import FieldValidation, apply_schema
from ._status import APIError
from ._validation import validate_metadata

JSONObject = dict[str, Any]
Predicate = Callable[[Mapping[str, Any]], bool]
ObjectKey = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)
_SERVER_OWNED = (
    "uid",
    "creationTimestamp",
    "namespace",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


@dataclass(frozen=True)
class ListPage:
    items: list[JSONObject]
    resource_version: int
    continue_token: str
    remaining: int | None


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _spec_part(obj: Mapping[str, Any]) -> JSONObject:
    """Everything that counts toward ``metadata.generation``: all but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _comparable(obj: Mapping[str, Any]) -> JSONObject:
    meta = {k: v for k, v in _meta(obj).items() if k not in ("resourceVersion", "managedFields")}
    return {**obj, "metadata": meta}


class Store:
    """Objects by group resource, the global resourceVersion and the bounded event history."""

    def __init__(
        self,
        registry: ResourceRegistry,
        *,
        history_size: int = 10_000,
        require_namespaces: bool = True,
    ) -> None:
        self.registry = registry
        self.require_namespaces = require_namespaces
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str], dict[ObjectKey, JSONObject]] = {}
        self._history = EventHistory(history_size)
        self._snapshots: OrderedDict[str, tuple[int, list[JSONObject]]] = OrderedDict()
        self._snapshot_ids = itertools.count(1)
        self._cluster_ips = itertools.count(10)
        self._owners = OwnerIndex()
        self._binding = False
        for name in DEFAULT_NAMESPACES:
            self._commit_create(
                self._namespace_type(), "", {"metadata": {"name": name}}, admit=True
            )

    # ----------------------------------------------------------------- versions and history

    @property
    def resource_version(self) -> int:
        """The current (latest committed) resourceVersion."""
        with self._lock:
            return self._history.resource_version

    @property
    def compacted_resource_version(self) -> int:
        """Watches may start at any resourceVersion at or above this one."""
        with self._lock:
            return self._history.compacted

    def events_after(self, resource_version: int) -> tuple[list[StoredEvent], int] | None:
        """Events after ``resource_version`` and the RV they reach; ``None`` if compacted."""
        with self._lock:
            return self._history.after(resource_version)

    def compact(self) -> None:
        """Forget all history and pagination snapshots, as an etcd compaction does."""
        with self._lock:
            self._history.compact()
            self._snapshots.clear()

    def add_waiter(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        with self._lock:
            self._history.add_waiter(loop, event)

    def remove_waiter(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        with self._lock:
            self._history.remove_waiter(loop, event)

    def _record(
        self, kind: str, resource: ResourceType, obj: JSONObject, old: JSONObject | None
    ) -> None:
        namespace = _meta(obj).get("namespace", "")
        rv = self._history.resource_version
        self._history.append(StoredEvent(rv, kind, resource.group_resource, namespace, obj, old))

    def _next_rv(self) -> str:
        return str(self._history.next_version())

    # ----------------------------------------------------------------------------- reading

    def _table(self, resource: ResourceType) -> dict[ObjectKey, JSONObject]:
        return self._objects.setdefault(resource.group_resource, {})

    def _namespace_type(self) -> ResourceType:
        resource = self.registry.lookup("", "v1", "namespaces")
        assert resource is not None
        return resource

    def _key(self, resource: ResourceType, namespace: str | None, name: str) -> ObjectKey:
        return ((namespace or "") if resource.namespaced else "", name)

    def get(self, resource: ResourceType, namespace: str | None, name: str) -> JSONObject:
        """The stored object (a shared reference: do not mutate), or 404."""
        with self._lock:
            obj = self._table(resource).get(self._key(resource, namespace, name))
        if obj is None:
            raise _status.not_found(resource.group, resource.plural, name)
        return obj

    def list_page(
        self,
        resource: ResourceType,
        namespace: str | None,
        predicate: Predicate,
        *,
        limit: int = 0,
        continue_token: str = "",
        at_resource_version: int | None = None,
    ) -> ListPage:
        """A page of matching objects sorted by namespace/name, consistent across pages.

        ``at_resource_version``: the state as it was then (``resourceVersionMatch=Exact``),
        rebuilt from the event history; 410 if that history is compacted.
        """
        with self._lock:
            if continue_token:
                snapshot_id, offset, rv = _decode_continue(continue_token)
                snapshot = self._snapshots.get(snapshot_id)
                if snapshot is None:
                    raise _status.gone(
                        "The provided continue parameter is too old to display a consistent list "
                        "result. You can start a new list without the continue parameter."
                    )
                rv, items = snapshot
            else:
                offset, snapshot_id = 0, ""
                rv = self._history.resource_version
                table = self._table(resource)
                if at_resource_version is not None and at_resource_version != rv:
                    table = self._table_at(resource, at_resource_version)
                    rv = at_resource_version
                keys = sorted(k for k in table if namespace is None or k[0] == namespace)
                items = [table[k] for k in keys if predicate(table[k])]
            if limit <= 0 or offset + limit >= len(items):
                return ListPage(items[offset:], rv, "", None)
            if not snapshot_id:
                snapshot_id = str(next(self._snapshot_ids))
                self._snapshots[snapshot_id] = (rv, items)
                while len(self._snapshots) > 256:
                    self._snapshots.popitem(last=False)
            end = offset + limit
            token = _encode_continue(snapshot_id, end, rv)
            return ListPage(items[offset:end], rv, token, len(items) - end)

    def _table_at(
        self, resource: ResourceType, resource_version: int
    ) -> dict[ObjectKey, JSONObject]:
        """A resource's objects as of an earlier resourceVersion: later events undone."""
        found = self.events_after(resource_version)
        if found is None or resource_version > self._history.resource_version:
            raise _status.gone(
                f"too old resource version: {resource_version} ({self._history.compacted})"
            )
        table = dict(self._table(resource))
        for event in reversed(found[0]):
            if event.group_resource != resource.group_resource:
                continue
            meta = _meta(event.object)
            key = self._key(resource, meta.get("namespace"), str(meta.get("name", "")))
            if event.type == "ADDED":
                table.pop(key, None)
            elif event.old is not None:
                table[key] = event.old
        return table

    def namespace_exists(self, namespace: str) -> bool:
        with self._lock:
            return ("", namespace) in self._objects.get(NAMESPACE_GROUP_RESOURCE, {})

    # ----------------------------------------------------------------------------- writing

    def create(
        self,
        resource: ResourceType,
        namespace: str | None,
        body: JSONObject,
        *,
        dry_run: bool = False,
        validation: FieldValidation | None = None,
    ) -> JSONObject:
        """POST: admit a new object (status reset for resources with a status subresource)."""
        with self._lock:
            return self._commit_create(
                resource, namespace or "", body, admit=True, dry_run=dry_run, validation=validation
            )

    def put(self, obj: JSONObject) -> JSONObject:
        """Test helper: create or replace an object exactly as given (status kept), by its kind."""
        resource = self.resource_of(obj)
        meta = _meta(obj)
        with self._lock:
            existing = self._table(resource).get(
                self._key(resource, meta.get("namespace"), str(meta.get("name")))
            )
            if existing is None:
                return self._commit_create(resource, meta.get("namespace", ""), obj, admit=False)
            return self._commit_update(resource, existing, copy.deepcopy(obj), subresource="*")

    def seed(self, objects: Iterable[JSONObject]) -> int:
        """Test helper: put many objects under one lock and one watch wake-up; returns the RV."""
        with self._lock:
            self._history.hold()
            try:
                for obj in objects:
                    self.put(obj)
            finally:
                self._history.release()
            return self._history.resource_version

    def resource_of(self, obj: Mapping[str, Any]) -> ResourceType:
        resource = self.registry.by_kind(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        if resource is None:
            raise _status.bad_request(
                f"no resource serves {obj.get('apiVersion')} {obj.get('kind')}"
            )
        return resource

    def _commit_create(
        self,
        resource: ResourceType,
        namespace: str,
        body: JSONObject,
        *,
        admit: bool,
        dry_run: bool = False,
        validation: FieldValidation | None = None,
    ) -> JSONObject:
        obj = copy.deepcopy(body)
        if not isinstance(obj, dict):
            raise _status.bad_request("the body of the request must be a JSON object")
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _status.bad_request("metadata must be an object")
        check_kind(resource, obj)
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            name = str(meta["generateName"]) + "".join(random.choices(_GENERATE_ALPHABET, k=5))
        if not name:
            raise _status.invalid(
                resource.kind,
                resource.group,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            )
        meta["name"] = name
        if resource.namespaced:
            body_ns = meta.get("namespace") or ""
            if namespace and body_ns and body_ns != namespace:
                raise _status.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            namespace = namespace or body_ns
            if not namespace:
                raise _status.invalid(
                    resource.kind, resource.group, name, "metadata.namespace", "Required value"
                )
            meta["namespace"] = namespace
            if self.require_namespaces and not self.namespace_exists(namespace):
                raise _status.not_found("", "namespaces", namespace)
        else:
            meta.pop("namespace", None)
        table = self._table(resource)
        key = self._key(resource, namespace, name)
        if key in table:
            raise _status.already_exists(resource.group, resource.plural, name)
        if not admit and resource.group_resource == CRD_GROUP_RESOURCE and "status" not in obj:
            accept_crd(obj)  # a seeded CRD is served, so it is Established too
        if admit:
            if resource.schema is not None:
                obj = apply_schema(
                    resource.schema,
                    obj,
                    kind=resource.kind,
                    group=resource.group,
                    validation=validation,
                )
                meta = obj["metadata"]
            validate_metadata(resource, obj)
            admit_new(resource, obj, self._cluster_ips)
        meta.pop("resourceVersion", None)
        # Admitted objects get fresh server-owned fields; seeded ones keep what the test gave.
        if admit or "uid" not in meta:
            meta["uid"] = str(uuid.uuid4())
        if admit or "creationTimestamp" not in meta:
            meta["creationTimestamp"] = now_rfc3339()
        meta.setdefault("generation", 1)
        if admit:
            for field in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(field, None)
        if dry_run:
            meta["resourceVersion"] = str(self._history.resource_version)
            return obj
        return self._write(resource, key, obj, None)

    def _write(
        self, resource: ResourceType, key: ObjectKey, new: JSONObject, old: JSONObject | None
    ) -> JSONObject:
        """Store ``new`` (replacing ``old``) under a new resourceVersion and record the event
        (ADDED or MODIFIED); a written CRD changes what the server serves."""
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._set(resource, key, new, old)
        self._record("ADDED" if old is None else "MODIFIED", resource, new, old)
        if resource.group_resource == CRD_GROUP_RESOURCE:
            self.registry.register_crd(new)
        self._bind_volumes(resource)
        return new

    def _bind_volumes(self, resource: ResourceType) -> None:
        """After a PV or PVC write: static binding, as the PV controller does (``_binder``)."""
        if self._binding or resource.group_resource not in (PV_GROUP_RESOURCE, PVC_GROUP_RESOURCE):
            return
        self._binding = True
        try:
            # One pass sees one state; a PV bound in it may change its claim's phase: repeat
            # until nothing changes (two passes at most).
            while updates := volume_updates(
                self._objects.get(PV_GROUP_RESOURCE, {}),
                self._objects.get(PVC_GROUP_RESOURCE, {}),
            ):
                for group_resource, key, obj in updates:
                    served = self.registry.versions_of(*group_resource)
                    self._write(served[0], key, obj, self._objects[group_resource][key])
        finally:
            self._binding = False

    def update(
        self,
        resource: ResourceType,
        namespace: str | None,
        name: str,
        body: JSONObject,
        *,
        subresource: str = "",
        dry_run: bool = False,
        validation: FieldValidation | None = None,
    ) -> JSONObject:
        """PUT: replace an object, 409 if ``metadata.resourceVersion`` is given and stale."""
        if not isinstance(body, dict):
            raise _status.bad_request("the body of the request must be a JSON object")
        with self._lock:
            existing = self.get(resource, namespace, name)
            body = copy.deepcopy(body)
            meta = body.setdefault("metadata", {})
            if meta.get("name", name) != name:
                raise _status.bad_request(
                    f"the name of the object ({meta.get('name')}) does not match the name "
                    f"on the URL ({name})"
                )
            sent_rv = meta.get("resourceVersion")
            if sent_rv and sent_rv != _meta(existing).get("resourceVersion"):
                raise _status.conflict(
                    resource.group,
                    resource.plural,
                    name,
                    _MODIFIED,
                )
            check_kind(resource, body)
            return self._commit_update(
                resource,
                existing,
                body,
                subresource=subresource,
                dry_run=dry_run,
                validation=validation,
            )

    def patch(
        self,
        resource: ResourceType,
        namespace: str | None,
        name: str,
        patch: Any,
        content_type: str,
        *,
        subresource: str = "",
        dry_run: bool = False,
        validation: FieldValidation | None = None,
    ) -> JSONObject:
        """PATCH: apply a merge, strategic-merge, JSON or apply patch to the current object."""
        with self._lock:
            try:
                existing = self.get(resource, namespace, name)
            except APIError:
                if content_type != APPLY_PATCH or not isinstance(patch, dict):
                    raise
                patch.setdefault("metadata", {}).setdefault("name", name)
                return self.create(
                    resource, namespace, patch, dry_run=dry_run, validation=validation
                )
            patched = apply_patch(existing, patch, content_type)
            if not isinstance(patched, dict):
                raise _status.bad_request("the patch produced something that is not an object")
            meta = patched.setdefault("metadata", {})
            sent_rv = _meta(patch).get("resourceVersion") if isinstance(patch, dict) else None
            if sent_rv and sent_rv != _meta(existing).get("resourceVersion"):
                raise _status.conflict(
                    resource.group,
                    resource.plural,
                    name,
                    _MODIFIED,
                )
            if meta.get("name") != name:
                raise _status.bad_request("metadata.name cannot be changed by a patch")
            meta.pop("resourceVersion", None)
            check_kind(resource, patched)
            return self._commit_update(
                resource,
                existing,
                patched,
                subresource=subresource,
                dry_run=dry_run,
                validation=validation,
            )

    def _commit_update(
        self,
        resource: ResourceType,
        existing: JSONObject,
        new: JSONObject,
        *,
        subresource: str,
        dry_run: bool = False,
        validation: FieldValidation | None = None,
    ) -> JSONObject:
        old_meta = _meta(existing)
        if resource.has_status and subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(existing)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        elif resource.has_status and subresource == "":
            if "status" in existing:
                new["status"] = copy.deepcopy(existing["status"])
            else:
                new.pop("status", None)
        if resource.schema is not None and subresource != "*":
            new = apply_schema(
                resource.schema,
                new,
                kind=resource.kind,
                group=resource.group,
                validation=validation,
            )
        meta = new.setdefault("metadata", {})
        if subresource != "*":
            validate_metadata(resource, {"metadata": {**meta, "name": old_meta["name"]}})
        # Fields the server owns survive any client write.
        for field in _SERVER_OWNED:
            if subresource == "*":  # a test's put(): keep what it gave, fill what it left out
                if field in old_meta:
                    meta.setdefault(field, old_meta[field])
            elif field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        meta["name"] = old_meta["name"]
        if _spec_part(new) != _spec_part(existing):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        else:
            meta["generation"] = old_meta.get("generation", 1)
        meta["resourceVersion"] = old_meta.get("resourceVersion")
        if _comparable(new) == _comparable(existing):
            return existing  # a no-op write: no new resourceVersion, no event
        if dry_run:
            return new
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(resource, new)
        return self._write(
            resource, self._key(resource, meta.get("namespace"), meta["name"]), new, existing
        )

    def delete(
        self,
        resource: ResourceType,
        namespace: str | None,
        name: str,
        *,
        preconditions: Mapping[str, Any] | None = None,
        dry_run: bool = False,
        propagation: str = "Background",
    ) -> tuple[JSONObject, bool]:
        """DELETE: remove the object, or mark it for deletion if it has finalizers.

        Returns the object and whether it is gone (``False``: it waits for its finalizers).
        ``propagation``: ``Orphan`` keeps dependents (their owner reference is removed); otherwise
        dependents left without any owner are deleted too.
        """
        with self._lock:
            existing = self.get(resource, namespace, name)
            meta = _meta(existing)
            for field in ("uid", "resourceVersion"):
                wanted = (preconditions or {}).get(field)
                if wanted and wanted != meta.get(field):
                    raise _status.conflict(
                        resource.group,
                        resource.plural,
                        name,
                        f"Precondition failed: {field}: {wanted}, "
                        f"{field} in object meta: {meta.get(field)}",
                    )
            if dry_run:
                return existing, True
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return existing, False
                marked = copy.deepcopy(existing)
                marked["metadata"]["deletionTimestamp"] = now_rfc3339()
                marked["metadata"]["deletionGracePeriodSeconds"] = 0
                key = self._key(resource, namespace, name)
                return self._write(resource, key, marked, existing), False
            return self._remove(resource, existing, propagation=propagation), True

    def _set(
        self, resource: ResourceType, key: ObjectKey, obj: JSONObject, old: JSONObject | None
    ) -> None:
        self._table(resource)[key] = obj
        self._owners.stored((resource.group_resource, key), old, obj)

    def _remove(
        self, resource: ResourceType, obj: JSONObject, *, propagation: str = "Background"
    ) -> JSONObject:
        meta = _meta(obj)
        key = self._key(resource, meta.get("namespace"), meta["name"])
        previous = self._table(resource).pop(key)
        self._owners.dropped((resource.group_resource, key), previous)
        gone = {**obj, "metadata": {**meta, "resourceVersion": self._next_rv()}}
        self._record("DELETED", resource, gone, previous)
        if resource.group_resource == NAMESPACE_GROUP_RESOURCE:
            self._delete_namespace_contents(meta["name"])
        elif resource.group_resource == CRD_GROUP_RESOURCE:
            self._delete_crd_objects(obj)
        self._collect_dependents(str(meta.get("uid", "")), orphan=propagation == "Orphan")
        self._bind_volumes(resource)
        return gone

    def _collect_dependents(self, owner_uid: str, *, orphan: bool) -> None:
        """Garbage collection of the dependents of a removed owner."""
        for group_resource, key in self._owners.dependents(owner_uid):
            served = self.registry.versions_of(*group_resource)
            dependent = self._objects.get(group_resource, {}).get(key)
            if not served or dependent is None:
                continue
            if orphan:
                kept = copy.deepcopy(dependent)
                references = kept["metadata"].get("ownerReferences") or []
                kept["metadata"]["ownerReferences"] = [
                    r for r in references if r.get("uid") != owner_uid
                ]
                if not kept["metadata"]["ownerReferences"]:
                    del kept["metadata"]["ownerReferences"]
                self._commit_update(served[0], dependent, kept, subresource="*")
            elif not any(self._owners.exists(uid) for uid in owner_uids(dependent)):
                self.delete(served[0], key[0] or None, key[1])

    def _delete_namespace_contents(self, namespace: str) -> None:
        for resource in self.registry.all():
            if not resource.namespaced or resource.group_resource not in self._objects:
                continue
            table = self._objects[resource.group_resource]
            for key in sorted(k for k in table if k[0] == namespace):
                if key in table:
                    self._remove(resource, table[key])

    def _delete_crd_objects(self, crd: JSONObject) -> None:
        spec = crd.get("spec") or {}
        group_resource = (
            str(spec.get("group", "")),
            str((spec.get("names") or {}).get("plural", "")),
        )
        served = self.registry.versions_of(*group_resource)
        table = self._objects.pop(group_resource, {})
        for key, obj in table.items():
            self._owners.dropped((group_resource, key), obj)
            if served:
                gone = {**obj, "metadata": {**_meta(obj), "resourceVersion": self._next_rv()}}
                self._record("DELETED", served[0], gone, obj)
        self.registry.unregister_crd(_meta(crd)["name"])
        for obj in table.values():
            self._collect_dependents(str(_meta(obj).get("uid", "")), orphan=False)

    def delete_collection(
        self,
        resource: ResourceType,
        namespace: str | None,
        predicate: Predicate,
        *,
        dry_run: bool = False,
    ) -> list[JSONObject]:
        """DELETE on a collection: delete every matching object."""
        with self._lock:
            page = self.list_page(resource, namespace, predicate)
            deleted: list[JSONObject] = []
            for obj in page.items:
                meta = _meta(obj)
                result, _ = self.delete(
                    resource, meta.get("namespace"), meta["name"], dry_run=dry_run
                )
                deleted.append(result)
            return deleted


def _encode_continue(snapshot_id: str, offset: int, rv: int) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "id": snapshot_id, "offset": offset})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_continue(token: str) -> tuple[str, int, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(data["id"]), int(data["offset"]), int(data["rv"])
    except (ValueError, KeyError, TypeError) as exc:
        raise _status.bad_request(f"continue key is not valid: {exc}") from exc
