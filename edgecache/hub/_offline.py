"""Offline serving: how the hub answers while the upstream is unreachable, from the store only.

* Credentials first: a client is answered only if its credentials (salted digest of its
  Authorization header, or "anonymous") were accepted upstream for its component while online;
  otherwise 401. A read is answered only if the upstream answered these credentials a read
  that showed at least as much (the same object; the same or no selector in the namespace or
  cluster-wide); otherwise 403. Writes are refused with a 503 ``Status`` saying nothing was applied.
* GET: the newest recorded copy of the object, or a 404 ``Status``.
* LIST: the recorded list with the same key, or a broader one (cluster-wide, or unselected)
  filtered locally by label and field selectors; ``limit``/``continue`` are honoured; the list
  resourceVersion is the one the items were recorded at. A selector the API server would refuse
  is refused (400), checked as the server checks it: built-in field labels from the server's
  table, a custom resource's from its recorded CustomResourceDefinition (``selectableFields``);
  a custom field label whose CRD was never recorded cannot be checked, and gets a 503 unless
  the upstream answered that very list online.
* WATCH: initial events (for ``sendInitialEvents=true``, ending with the initial-events-end
  bookmark, and for the legacy resourceVersion ""/"0" form), then periodic bookmarks; the stream
  stays open until the hub goes back online, then ends so that clients re-list upstream. A watch
  from a resourceVersion older than the store's gets 410 Gone, so the client re-lists (from us).
* Discovery, OpenAPI and server-side tables: the recorded raw answer for the same request.
* Unknown resources get a 404 ``Status``; known but never recorded answers a 503 ``Status``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from edgecache.errors import ConfigError
from edgecache.hub._config import OfflineSettings
from edgecache.hub._recording import raw_key
from edgecache.hub._requestinfo import WRITE_VERBS, RequestInfo
from edgecache.hub._status import status_body, status_response
from edgecache.hub._store import DamagedRecordError, HubStore, ListRecord, StoredObject
from edgecache.hub._watches import WatchRegistry
from edgecache.k8s.selectors import (
    CustomResourceFields,
    FieldLabelsUnknownError,
    FieldSelector,
    LabelSelector,
    built_in_group,
    check_field_labels,
)
from edgecache.metrics import HUB_REQUESTS

__all__ = ["OfflineResponder"]

_INITIAL_EVENTS_END = "k8s.io/initial-events-end"
_CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"


def _rv_older(candidate: str, current: str) -> bool:
    """Whether resourceVersion ``candidate`` predates ``current`` (opaque unless numeric)."""
    if candidate.isdigit() and current.isdigit():
        return int(candidate) < int(current)
    return candidate != current


def _encode_continue(rv: str, namespace: str, name: str) -> str:
    raw = json.dumps({"rv": rv, "start": [namespace, name]}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[str, tuple[str, str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(data["rv"]), (str(data["start"][0]), str(data["start"][1]))
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error) as exc:
        raise ConfigError(f"invalid continue token: {exc}") from exc


def _item_kind(record: ListRecord) -> str:
    return record.kind[: -len("List")] if record.kind.endswith("List") else record.kind


class OfflineResponder:
    """Answers requests from the store."""

    def __init__(
        self,
        store: HubStore,
        settings: OfflineSettings,
        watches: WatchRegistry,
        *,
        recorded_components: frozenset[str] | None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.watches = watches
        #: What ``--components`` records (None: every component), for the 503 that says why a
        #: component has no answers.
        self.recorded_components = recorded_components
        self._accepted: set[tuple[str, str]] = set()
        self._grants: set[tuple[str, str, str, str, str, str]] = set()

    async def respond(
        self, request: web.Request, info: RequestInfo, component: str, digest: str
    ) -> web.StreamResponse:
        try:
            return await self._respond(request, info, component, digest)
        except sqlite3.Error as exc:
            HUB_REQUESTS.labels(verb=info.verb, served_from="rejected").inc()
            return status_response(
                503, f"edgecache hub is offline and its store cannot be read: {exc}"
            )

    async def _respond(
        self, request: web.Request, info: RequestInfo, component: str, digest: str
    ) -> web.StreamResponse:
        verb = info.verb
        if verb in WRITE_VERBS or request.method not in ("GET", "HEAD"):
            HUB_REQUESTS.labels(verb=verb, served_from="rejected").inc()
            return status_response(
                503,
                "edgecache hub is offline (the upstream API server is unreachable): "
                f"{request.method} {request.path} was rejected and nothing was applied; "
                "retry when the connection is back",
            )
        if not await self._authorised(component, digest):
            HUB_REQUESTS.labels(verb=verb, served_from="rejected").inc()
            if not await self.store.read(self.store.knows_component, component):
                return status_response(503, self._unrecorded_component(request, component))
            return status_response(
                401,
                "edgecache hub is offline and these credentials were never accepted upstream "
                f"for component {component!r}; offline answers need credentials seen online",
            )
        fields = FieldSelector()
        if verb in ("list", "watch"):
            # What the API server would refuse is refused here too (400), never answered with
            # an empty or unfiltered list; like the server, whoever asks: the refusal shows no
            # recorded data, only that the request is malformed.
            try:
                LabelSelector.parse(info.label_selector)
                fields = await self._server_fields(info, component)
            except ConfigError as exc:
                HUB_REQUESTS.labels(verb=verb, served_from="rejected").inc()
                return status_response(400, str(exc), reason="BadRequest")
            except FieldLabelsUnknownError as exc:
                HUB_REQUESTS.labels(verb=verb, served_from="rejected").inc()
                if not await self.store.read(self.store.knows_resource, info.gvr):
                    return status_response(404, "the server could not find the requested resource")
                return status_response(
                    503,
                    "edgecache hub is offline and cannot tell whether the API server accepts "
                    f"this field selector ({exc}: never recorded); retry when the upstream is "
                    "back",
                )
        if verb in ("get", "list", "watch") and not await self._granted(component, digest, info):
            HUB_REQUESTS.labels(verb=verb, served_from="rejected").inc()
            if not await self.store.read(self.store.knows_resource, info.gvr):
                return status_response(404, "the server could not find the requested resource")
            if not await self._recorded(info, component):
                # Nothing could answer it anyway: say so (retry online), not "forbidden".
                return await self._not_found(info, f"this read of {info.resource}")
            scope = f"namespace {info.namespace!r}" if info.namespace else "all namespaces"
            what = f"{info.resource} {info.name!r}" if info.name else info.resource
            if info.selector:
                what += f" with selector {info.selector!r}"
            return status_response(
                403,
                f"edgecache hub is offline and these credentials never read {what} in {scope} "
                "while online, so the hub does not answer for the upstream",
            )
        try:
            HUB_REQUESTS.labels(verb=verb, served_from="store").inc()
            if verb == "get":
                return await self._get(info, component)
            if verb == "list":
                return await self._list(request, info, component, fields)
            if verb == "watch":
                return await self._watch(request, info, component, fields)
            return await self._raw(request, component)
        except ConfigError as exc:  # a continue token that does not decode
            return status_response(400, str(exc), reason="BadRequest")

    async def _server_fields(self, info: RequestInfo, component: str) -> FieldSelector:
        """The request's field selector checked and converted as the API server would (raises
        :class:`SelectorError` for its 400). A custom resource is checked against its recorded
        CRD; without one, a list the upstream answered online with this very selector proves
        it was accepted (:class:`FieldLabelsUnknownError` otherwise)."""
        selector = FieldSelector.parse(info.field_selector)
        custom = None
        if selector.terms and not built_in_group(info.group):
            custom = await self._custom_fields(info)
        try:
            return check_field_labels(
                selector, group=info.group, resource=info.resource, custom=custom
            )
        except FieldLabelsUnknownError:
            record = await self.store.read(
                self.store.find_list, component, info.gvr, info.namespace, info.selector
            )
            if record is not None and record.selector == info.selector:
                return selector
            raise

    async def _custom_fields(self, info: RequestInfo) -> CustomResourceFields | None:
        """What the recorded CRD of a custom resource (recorded by any component: it decides
        only which selectors are valid, not what anyone is shown) says about its fields; ``None``
        for a version the CRD does not serve."""
        try:
            body = await self.store.read(
                self.store.get_object, None, _CRDS, "", f"{info.resource}.{info.group}"
            )
            crd = json.loads(body) if body is not None else None
        except (DamagedRecordError, ValueError):
            crd = None
        if isinstance(crd, dict):
            return CustomResourceFields.from_crd(crd, info.version)
        # Without the CRD, recorded objects still tell its scope (metadata.namespace is refused
        # on cluster-scoped custom resources).
        namespaced = await self.store.read(self.store.scoped_by_namespace, info.gvr)
        return CustomResourceFields(None, namespaced=namespaced)

    def _unrecorded_component(self, request: web.Request, component: str) -> str:
        agent = request.headers.get("User-Agent", "")
        seen = f"component {component!r} (from User-Agent {agent[:120]!r})"
        recorded = self.recorded_components
        if recorded is not None and component not in recorded:
            flag = ",".join(sorted(recorded | {component}))
            return (
                f"edgecache hub is offline and has no answers for {seen}: it does not record "
                f"that component; to record it while online, run the hub with "
                f"--components {flag} (or --components '*')"
            )
        return (
            f"edgecache hub is offline and has no answers for {seen}: it records that "
            "component, but no request of it succeeded through the hub while online"
        )

    async def _authorised(self, component: str, digest: str) -> bool:
        if (component, digest) in self._accepted:
            return True
        if await self.store.read(self.store.has_credential, component, digest):
            self._accepted.add((component, digest))
            return True
        return False

    async def _recorded(self, info: RequestInfo, component: str) -> bool:
        """Whether the store holds something that could answer this read."""
        if info.verb == "get":
            try:
                body = await self.store.read(
                    self.store.get_object, component, info.gvr, info.namespace, info.name
                )
            except DamagedRecordError:
                return False
            return body is not None
        record = await self.store.read(
            self.store.find_list, component, info.gvr, info.namespace, info.selector
        )
        return record is not None

    async def _granted(self, component: str, digest: str, info: RequestInfo) -> bool:
        key = (component, digest, *info.read_scope)
        if key in self._grants:
            return True
        if await self.store.read(self.store.has_grant, *key):
            self._grants.add(key)
            return True
        return False

    async def _raw(self, request: web.Request, component: str) -> web.StreamResponse:
        key = raw_key(request.path, request.query, request.headers.get("Accept", ""))
        raw = await self.store.read(self.store.get_raw, component, key)
        if raw is None:
            return status_response(
                503,
                f"edgecache hub is offline and {request.path} was never recorded for "
                f"component {component!r}",
            )
        return web.Response(
            status=raw.status, body=raw.body, headers={"Content-Type": raw.content_type}
        )

    async def _not_found(self, info: RequestInfo, what: str) -> web.Response:
        if await self.store.read(self.store.knows_resource, info.gvr):
            return status_response(503, f"edgecache hub is offline and {what} was never recorded")
        return status_response(404, "the server could not find the requested resource")

    async def _get(self, info: RequestInfo, component: str) -> web.StreamResponse:
        if info.subresource:
            return status_response(
                503, f"edgecache hub is offline; {info.resource}/{info.subresource} is not cached"
            )
        try:
            body = await self.store.read(
                self.store.get_object, component, info.gvr, info.namespace, info.name
            )
        except DamagedRecordError:
            return status_response(
                503,
                f"edgecache hub is offline and its recorded copy of {info.resource} "
                f"{info.name!r} was damaged on disk (dropped, not served); retry when the "
                "upstream is back",
            )
        if body is not None:
            return web.Response(body=body, content_type="application/json")
        if not await self.store.read(self.store.knows_resource, info.gvr):
            return status_response(404, "the server could not find the requested resource")
        response = status_body(404, f'{info.resource} "{info.name}" not found')
        response["details"] = {"name": info.name, "kind": info.resource}
        return web.Response(
            status=404, body=json.dumps(response).encode(), content_type="application/json"
        )

    async def _selected(
        self, info: RequestInfo, component: str, fields: FieldSelector
    ) -> tuple[ListRecord, list[StoredObject]] | None:
        selected = await self.store.read(
            self.store.select_list, component, info.gvr, info.namespace, info.selector
        )
        if selected is None:
            return None
        record, objects = selected
        if record.selector != info.selector:
            objects = _filter(objects, info.label_selector, fields)
        return record, objects

    async def _list(
        self, request: web.Request, info: RequestInfo, component: str, fields: FieldSelector
    ) -> web.StreamResponse:
        selected = await self._selected(info, component, fields)
        if selected is None:
            if "as=Table" in request.headers.get("Accept", ""):
                return await self._raw(request, component)
            return await self._not_found(info, f"a list of {info.resource}")
        record, objects = selected
        rv = record.rv
        token = request.query.get("continue", "")
        if token:
            rv, start = _decode_continue(token)
            objects = [o for o in objects if (o.namespace, o.name) > start]
        metadata: dict[str, Any] = {"resourceVersion": rv}
        limit_text = request.query.get("limit", "")
        if limit_text.isdigit() and 0 < int(limit_text) < len(objects):
            limit = int(limit_text)
            last = objects[limit - 1]
            metadata["continue"] = _encode_continue(rv, last.namespace, last.name)
            metadata["remainingItemCount"] = len(objects) - limit
            objects = objects[:limit]
        head = json.dumps(
            {"kind": record.kind, "apiVersion": record.api_version, "metadata": metadata},
            separators=(",", ":"),
        ).encode()
        body = b"".join((head[:-1], b',"items":[', b",".join(o.body for o in objects), b"]}"))
        return web.Response(body=body, content_type="application/json")

    async def _watch(
        self, request: web.Request, info: RequestInfo, component: str, fields: FieldSelector
    ) -> web.StreamResponse:
        query: Mapping[str, str] = request.query
        since = query.get("resourceVersion", "")
        send_initial = query.get("sendInitialEvents", "").lower() == "true"
        selected = await self._selected(info, component, fields)
        if selected is not None:
            record, objects = selected
        elif (
            since not in ("", "0")
            and not send_initial
            and await self.store.read(self.store.has_raw_path, component, request.path)
        ):
            # Nothing recorded as objects for this client (kubectl lists server-side tables),
            # but it only asks for news after a version it already has: there is no news
            # offline, so the watch stays open with bookmarks at that version.
            record = ListRecord("", info.selector, since, "", f"{info.group}/{info.version}")
            objects = []
        else:
            return await self._not_found(info, f"a list of {info.resource}")
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        timeout_text = query.get("timeoutSeconds", "")
        deadline = time.monotonic() + int(timeout_text) if timeout_text.isdigit() else None
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        with self.watches.register() as handle:
            await response.prepare(request)
            try:
                if not send_initial and since not in ("", "0") and _rv_older(since, record.rv):
                    gone = status_body(
                        410, f"too old resource version: {since} ({record.rv})", reason="Expired"
                    )
                    await response.write(_event("ERROR", json.dumps(gone).encode()))
                    await response.write_eof()
                    return response
                if not send_initial and since not in ("", "0") and since != record.rv:
                    # The client saw newer events than the store (recording lags by a batch):
                    # bookmarks must not send it back in time.
                    record = dataclasses.replace(record, rv=since)
                if send_initial or since in ("", "0"):
                    for obj in objects:
                        await response.write(_event("ADDED", obj.body))
                if send_initial:
                    await response.write(_bookmark(record, initial_end=True))
                while not handle.closed.is_set():
                    wait = self.settings.bookmark_interval_seconds
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            break
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):  # not wait_for: see k8s/health.py
                            await handle.closed.wait()
                    if bookmarks and not handle.closed.is_set():
                        await response.write(_bookmark(record, initial_end=False))
                await response.write_eof()
            except ConnectionResetError:
                pass  # the client went away
        return response


def _event(event_type: str, body: bytes) -> bytes:
    return b'{"type":"' + event_type.encode() + b'","object":' + body + b"}\n"


def _bookmark(record: ListRecord, *, initial_end: bool) -> bytes:
    metadata: dict[str, Any] = {"resourceVersion": record.rv}
    if initial_end:
        metadata["annotations"] = {_INITIAL_EVENTS_END: "true"}
    obj = {"kind": _item_kind(record), "apiVersion": record.api_version, "metadata": metadata}
    return _event("BOOKMARK", json.dumps(obj, separators=(",", ":")).encode())


def _filter(
    objects: list[StoredObject], labels: str, field_selector: FieldSelector
) -> list[StoredObject]:
    label_selector = LabelSelector.parse(labels)
    result: list[StoredObject] = []
    for obj in objects:
        if label_selector.requirements and not label_selector.matches_labels(
            json.loads(obj.labels)
        ):
            continue
        if field_selector.terms and not field_selector.matches(json.loads(obj.body)):
            continue
        result.append(obj)
    return result
