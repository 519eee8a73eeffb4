"""The hub's upstream side over HTTPS: kubeconfig (CA data, client certificate), the hub's own
identity for clients without credentials, client tokens judged alone, token files that rotate."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from edgecache_testservers.kubeapi import KubeAPIServer, objects

from edgecache.hub import HubServer
from edgecache.k8s import apply_kubeconfig

from .conftest import fast_settings

PODS = "/api/v1/namespaces/default/pods"


def _last_pods_request(api: KubeAPIServer) -> Any:
    """The newest request for the pods list (the hub's own probes interleave with it)."""
    return next(r for r in reversed(api.requests) if r.path == PODS)


AGENT = {"User-Agent": "edgecache-agent/0.1"}


async def test_kubeconfig_identity_and_client_tokens(tmp_path: Path) -> None:
    async with KubeAPIServer(tls=True, tokens={"ops-token": "ops"}) as api:
        assert api.url.startswith("https://") and api.pki is not None
        api.seed(objects.pods(2))
        cert, key = api.pki.client_cert("system:node:edge-1", ("system:nodes",))
        kubeconfig = tmp_path / "kubeconfig"
        ca_data = base64.b64encode(api.pki.ca_cert.read_bytes()).decode()
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "edge",
                    "contexts": [{"name": "edge", "context": {"cluster": "c", "user": "node"}}],
                    "clusters": [
                        {
                            "name": "c",
                            "cluster": {"server": api.url, "certificate-authority-data": ca_data},
                        }
                    ],
                    "users": [
                        {
                            "name": "node",
                            "user": {"client-certificate": str(cert), "client-key": str(key)},
                        }
                    ],
                }
            )
        )
        settings = fast_settings(tmp_path / "hub", [])
        apply_kubeconfig(kubeconfig, settings.upstream)
        assert settings.upstream.servers == [api.url]
        async with HubServer(settings) as hub, aiohttp.ClientSession(hub.url) as http:
            async with http.get(PODS, headers=AGENT) as anonymous:
                assert anonymous.status == 200  # forwarded with the hub's certificate
            assert _last_pods_request(api).client_cert == "system:node:edge-1"
            own = {**AGENT, "Authorization": "Bearer ops-token"}
            async with http.get(PODS, headers=own) as with_token:
                assert with_token.status == 200
            assert (
                _last_pods_request(api).user == "ops" and _last_pods_request(api).client_cert == ""
            )
            bad = {**AGENT, "Authorization": "Bearer forged"}
            async with http.get(PODS, headers=bad) as forged:
                assert forged.status == 401  # not masked by the hub's own certificate


async def test_token_file_is_reread_when_it_rotates(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    async with KubeAPIServer(tls=True, tokens={"first": "a", "second": "b"}) as api:
        assert api.pki is not None
        settings = fast_settings(tmp_path / "hub", api.url)
        settings.upstream.certificate_authority = str(api.pki.ca_cert)
        settings.upstream.token_file = str(token_file)
        async with HubServer(settings) as hub, aiohttp.ClientSession(hub.url) as http:
            async with http.get(PODS, headers=AGENT) as first:
                assert first.status == 200
            assert _last_pods_request(api).user == "a"
            token_file.write_text("second\n")
            os.utime(token_file, (1, 1))  # a new mtime even within the same clock tick
            async with http.get(PODS, headers=AGENT) as second:
                assert second.status == 200
            assert _last_pods_request(api).user == "b"
