"""The test API server's RBAC-style authorization: rules per user on what it serves."""

from __future__ import annotations

import aiohttp
from edgecache_testservers.kubeapi import KubeAPIServer, objects
from edgecache_testservers.kubeapi.rbac import ADMIN, DISCOVERY, Rule

TOKENS = {"a": "admin", "d": "discovery", "r": "reader", "n": "nobody"}
RULES = {
    "admin": ADMIN,
    "discovery": DISCOVERY,
    "reader": [Rule(verbs=("get", "list"), resources=("pods",), namespaces=("default",))],
}


async def _status(api: KubeAPIServer, token: str, path: str, method: str = "GET") -> int:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {token}"}
        async with http.request(method, api.url + path, headers=headers, json={}) as response:
            return response.status


async def test_rules_per_user() -> None:
    async with KubeAPIServer(tokens=TOKENS, authorization=RULES) as api:
        api.seed(objects.pods(1))
        pods = "/api/v1/namespaces/default/pods"
        assert await _status(api, "a", pods) == 200
        assert await _status(api, "a", "/api/v1/pods") == 200
        assert await _status(api, "d", pods) == 403
        assert await _status(api, "d", "/api/v1") == 200
        assert await _status(api, "d", "/apis") == 200
        assert await _status(api, "r", pods) == 200
        assert await _status(api, "r", pods + "/pod-00000") == 200
        assert await _status(api, "r", pods + "/pod-00000/status") == 403  # a subresource
        assert await _status(api, "r", "/api/v1/pods") == 403  # cluster-wide: not bound there
        assert await _status(api, "r", pods + "?watch=true") == 403
        assert await _status(api, "r", pods, method="POST") == 403
        assert await _status(api, "r", "/api/v1") == 403
        assert await _status(api, "n", pods) == 403
        assert await _status(api, "n", "/readyz") == 200  # health stays public
        assert await _status(api, "x", pods) == 401
        forbidden = [r for r in api.requests if r.status == 403]
        assert forbidden and all(r.user for r in forbidden)
