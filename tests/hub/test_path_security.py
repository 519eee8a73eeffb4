"""One canonical request path: what the hub classifies, authorises, records and forwards is the
same request, so a token can never get offline data the upstream refused it (issue #10, item 1).

The upstream is the test API server with RBAC: ``ADMIN`` may read everything, ``LIMITED`` only
API discovery (``system:discovery``). Requests go through a real hub: with ``curl --path-as-is``
(which sends ``..`` and ``%2e%2e`` unnormalised, as an attacker would) and with aiohttp using
``encoded=True`` URLs for the property test over path variants.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from edgecache_testservers.kubeapi import KubeAPIServer, objects
from edgecache_testservers.kubeapi.rbac import ADMIN, DISCOVERY
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from yarl import URL

from edgecache.hub import HubServer

from .conftest import cut, fast_settings

ADMIN_TOKEN = "admin-token"
LIMITED_TOKEN = "limited-token"
KUBELET = "kubelet/v1.32.0 (linux/amd64) kubernetes/abc"
SECRET_PATH = "/api/v1/namespaces/kube-system/pods"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def _api() -> KubeAPIServer:
    return KubeAPIServer(
        tokens={ADMIN_TOKEN: "admin", LIMITED_TOKEN: "limited"},
        authorization={"admin": ADMIN, "limited": DISCOVERY},
    )


async def curl(url: str, path: str, token: str) -> tuple[int, dict[str, Any]]:
    """GET ``path`` exactly as written (``--path-as-is``), as kubelet with ``token``."""
    result = await asyncio.to_thread(
        subprocess.run,
        [
            "curl",
            "--silent",
            "--path-as-is",
            "--max-time",
            "10",
            "--header",
            f"Authorization: Bearer {token}",
            "--user-agent",
            KUBELET,
            "--write-out",
            "\n%{http_code}",
            url + path,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    body, _, code = result.stdout.rpartition("\n")
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        parsed = {"raw": body}
    return int(code), parsed


@pytest.fixture
async def rbac_hub(tmp_path: Path) -> AsyncIterator[tuple[KubeAPIServer, HubServer]]:
    with _api() as api:
        api.seed([objects.namespace("kube-system")])
        api.seed(objects.pods(3, "kube-system", prefix="system"))
        api.seed(objects.pods(2))
        async with HubServer(fast_settings(tmp_path / "hub", api.url)) as hub:
            yield api, hub


async def test_issue_repro_dot_dot_does_not_become_a_grant(
    rbac_hub: tuple[KubeAPIServer, HubServer],
) -> None:
    api, hub = rbac_hub
    # The admin's kubelet reads kube-system pods online: they are recorded.
    status, body = await curl(hub.url, SECRET_PATH, ADMIN_TOKEN)
    assert status == 200 and len(body["items"]) == 3
    # The limited token is refused by the upstream for pods...
    status, body = await curl(hub.url, "/api/v1/pods", LIMITED_TOKEN)
    assert status == 403 and body["reason"] == "Forbidden"
    # ...and every non-canonical spelling is refused by the hub itself, never forwarded.
    before = len(api.requests)
    for path in (
        "/api/v1/pods/..",
        "/api/v1/pods/%2e%2e",
        "/api/v1/pods/%2E%2E/",
        "/api/v1/pods/.",
        "/api/v1/./pods",
        "/api//v1/pods",
        "/api/v1/namespaces/kube-system%2Fpods",
        "/api/v1/pods/",
        "/api/v1/p%6fds",
    ):
        status, body = await curl(hub.url, path, LIMITED_TOKEN)
        assert status == 400, (path, status, body)
        assert body["kind"] == "Status" and body["reason"] == "BadRequest", body
    assert not [r for r in api.requests[before:] if "pods" in r.path]
    # Discovery, which the limited token may read, still works.
    status, body = await curl(hub.url, "/api/v1", LIMITED_TOKEN)
    assert status == 200 and body["kind"] == "APIResourceList"
    # Offline, the limited token gets nothing of what the admin recorded.
    await cut(api, hub)
    for path in (SECRET_PATH, "/api/v1/pods", "/api/v1/namespaces/kube-system/pods/system-00000"):
        status, body = await curl(hub.url, path, LIMITED_TOKEN)
        # 403 where something recorded could answer, 503 where nothing could: never data.
        assert status in (403, 503) and body["kind"] == "Status", (path, status, body)
    status, body = await curl(hub.url, SECRET_PATH, LIMITED_TOKEN)
    assert status == 403 and "never read pods" in body["message"]
    status, body = await curl(hub.url, SECRET_PATH, ADMIN_TOKEN)
    assert status == 200 and len(body["items"]) == 3


# --- property: any spelling of any path, two tokens, never offline data the upstream refused ---

_BASES = [
    ["api", "v1", "namespaces", "kube-system", "pods"],
    ["api", "v1", "namespaces", "kube-system", "pods", "system-00000"],
    ["api", "v1", "pods"],
    ["api", "v1", "namespaces", "default", "pods"],
    ["api", "v1"],
    ["api"],
    ["apis"],
    ["api", "v1", "watch", "namespaces", "kube-system", "pods"],
]
#: Spellings of "." and ".." (each escaped form too): the climb out of a resource.
_DOTS = ["..", "%2e%2e", "%2E%2e", ".%2e", ".", "%2e"]
# fmt: off
_TRICKS = [
    *_DOTS, "", "%2F", "..%2F", "%2Fpods", "pods", "kube-system", "namespaces", "%70ods",
    "p%6fds", "%00", "%zz", "a;b", "pods%3F", "%25", "system-00000",
]
# fmt: on
_QUERIES = [
    "",
    "watch=true",
    "watch=1&resourceVersion=0",
    "labelSelector=app%3Dsystem",
    "limit=1",
    "fieldSelector=metadata.name%3Dsystem-00000",
    "x=1;watch=true",
    "labelSelector=%zz",
    "labelSelector=app+in+(system)",
]


@st.composite
def path_variants(draw: st.DrawFn) -> str:
    segments = list(draw(st.sampled_from(_BASES)))
    for _ in range(draw(st.integers(0, 2))):
        segments.insert(draw(st.integers(0, len(segments))), draw(st.sampled_from(_TRICKS)))
    if draw(st.booleans()):
        segments.append(draw(st.sampled_from(_DOTS)))
    path = "/" + "/".join(segments) + draw(st.sampled_from(["", "", "/"]))
    query = draw(st.sampled_from(_QUERIES))
    return path + ("?" + query if query else "")


_POD_NAMES = frozenset({"system-00000", "system-00001", "pod-00000", "pod-00001"})


def _objects_in(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if isinstance(value.get("metadata"), dict):
            yield value
        for child in value.values():
            yield from _objects_in(child)
    elif isinstance(value, list):
        for child in value:
            yield from _objects_in(child)


def _has_pod_data(body: bytes) -> bool:
    """Whether an answer carries a seeded pod (a list item, a GET or a watch event): an object
    whose metadata names it. A 403 Status may name a pod in its message and details; discovery
    names the Pod kind: neither is pod data."""
    for line in body.splitlines() or [body]:
        try:
            parsed = json.loads(line)
        except ValueError:
            if b'"spec"' in line:
                return True  # a pod cut off mid-stream
            continue
        if any(o["metadata"].get("name") in _POD_NAMES for o in _objects_in(parsed)):
            return True
    return False


async def _get(http: aiohttp.ClientSession, base: str, target: str, token: str) -> bytes:
    headers = {"Authorization": f"Bearer {token}", "User-Agent": KUBELET}
    async with http.get(
        URL(base + target, encoded=True), headers=headers, timeout=aiohttp.ClientTimeout(5)
    ) as response:
        # Watches offline stay open: the first bytes are what matters.
        if response.status == 200 and "watch" in target:
            try:
                return await asyncio.wait_for(response.content.read(1 << 16), 0.5)
            except TimeoutError:
                return b""
        return await response.read()


async def _scenario(api: KubeAPIServer, cache_dir: Path, variants: list[str]) -> None:
    settings = fast_settings(cache_dir, api.url)
    async with HubServer(settings) as hub, aiohttp.ClientSession() as http:
        # The data to protect is recorded, and the oracle sees it in the admin's answer.
        assert _has_pod_data(await _get(http, hub.url, SECRET_PATH, ADMIN_TOKEN))
        for target in variants:
            forwarded = len(api.requests)
            await _get(http, hub.url, target, ADMIN_TOKEN)
            limited_body = await _get(http, hub.url, target, LIMITED_TOKEN)
            assert not _has_pod_data(limited_body), target
            # Whatever went upstream went byte for byte as the client wrote it.
            sent = {r.target for r in api.requests[forwarded:] if r.path != "/readyz"}
            assert sent <= {target}, (target, sent)
        await cut(api, hub)
        for target in [*variants, SECRET_PATH, "/api/v1/pods", SECRET_PATH + "/system-00000"]:
            body = await _get(http, hub.url, target, LIMITED_TOKEN)
            assert not _has_pod_data(body), (target, body[:300])
    await asyncio.to_thread(api.start)


@pytest.fixture(scope="module")
def rbac_api() -> Iterator[KubeAPIServer]:
    with _api() as api:
        api.seed([objects.namespace("kube-system")])
        api.seed(objects.pods(2, "kube-system", prefix="system"))
        api.seed(objects.pods(2))
        yield api


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variants=st.lists(path_variants(), min_size=1, max_size=6))
@example(variants=["/api/v1/pods/..", "/api/v1/pods/%2e%2e", "/api/v1/pods/%2E%2E/"])
def test_no_spelling_of_a_path_yields_refused_data_offline(
    rbac_api: KubeAPIServer, variants: list[str]
) -> None:
    with tempfile.TemporaryDirectory(prefix="hub-paths-") as directory:
        asyncio.run(_scenario(rbac_api, Path(directory), variants))
