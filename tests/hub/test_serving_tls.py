"""The hub serving HTTPS: client certificates as credentials (forwarded by impersonation),
kubectl with a bearer token (kubectl sends tokens only over TLS), refusals offline, and no
smuggled Impersonate-* headers on the hub's own identity."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import make_mocked_request
from edgecache_testservers.kubeapi import KubeAPIServer, objects
from edgecache_testservers.kubeapi.fixtures import kubectl_path
from multidict import CIMultiDict

from edgecache.hub import HubServer
from edgecache.hub._proxy import _outgoing_headers

from .conftest import fast_settings

PODS = "/api/v1/namespaces/default/pods"


def _last_pods_request(api: KubeAPIServer) -> Any:
    """The newest request for the pods list (the hub's own probes interleave with it)."""
    return next(r for r in reversed(api.requests) if r.path == PODS)


AGENT = {"User-Agent": "edgecache-agent/0.1"}


async def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    """A kubectl subprocess on a thread: the hub serves on this test's event loop meanwhile."""
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60, check=False
    )


def _client_context(ca: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


async def test_client_certificates_and_tokens_over_https(tmp_path: Path) -> None:
    async with KubeAPIServer(tls=True, tokens={"ops-token": "ops"}) as api:
        pki = api.pki
        assert pki is not None
        api.seed(objects.pods(3))
        settings = fast_settings(tmp_path / "hub", api.url)
        settings.upstream.certificate_authority = str(pki.ca_cert)
        hub_cert = pki.client_cert("system:node:edge-1", ("system:nodes",))
        settings.upstream.client_certificate, settings.upstream.client_key = map(str, hub_cert)
        settings.listen.tls_cert_file = str(pki.server_cert)  # valid for 127.0.0.1
        settings.listen.tls_key_file = str(pki.server_key)
        settings.listen.client_ca_file = str(pki.ca_cert)
        alice = pki.client_cert("alice", ("edge-operators",))
        mallory = pki.client_cert("mallory")
        async with HubServer(settings) as hub:
            assert hub.url.startswith("https://")
            kubectl = kubectl_path()
            tokened = [
                *(kubectl or "kubectl", "--server", hub.url, "--kubeconfig", "/dev/null"),
                *("--certificate-authority", str(pki.ca_cert), "--token", "ops-token"),
                *("--cache-dir", str(tmp_path / "kubectl-cache")),
            ]
            async with aiohttp.ClientSession(headers=AGENT) as http:
                async with http.get(
                    hub.url + PODS, ssl=_client_context(pki.ca_cert, alice)
                ) as as_alice:
                    assert as_alice.status == 200
                if kubectl:
                    online = await _run([*tokened, "get", "pods", "-o", "name"])
                    assert online.returncode == 0, online.stderr
                    assert _last_pods_request(api).user == "ops"

                assert hub.recorder is not None
                await hub.recorder.drain()
                await api.astop()
                await hub.health.wait_for(False, within_seconds=10)

                async with http.get(
                    hub.url + PODS, ssl=_client_context(pki.ca_cert, alice)
                ) as alice_offline:
                    assert alice_offline.status == 200
                    assert len((await alice_offline.json())["items"]) == 3
                async with http.get(
                    hub.url + PODS, ssl=_client_context(pki.ca_cert, mallory)
                ) as mallory_offline:
                    assert mallory_offline.status == 401  # a valid cert, never seen online
            if kubectl:
                offline = await _run([*tokened, "get", "pods", "-o", "name"])
                assert offline.returncode == 0, offline.stderr
                assert offline.stdout == online.stdout
                wrong = [arg if arg != "ops-token" else "guessed" for arg in tokened]
                refused = await _run([*wrong, "get", "pods"])
                assert refused.returncode != 0 and "never accepted upstream" in refused.stderr


def test_local_clients_cannot_smuggle_impersonation_through_the_hub_identity() -> None:
    smuggled = make_mocked_request(
        "GET", PODS, headers={"Impersonate-User": "admin", "Impersonate-Group": "system:masters"}
    )
    assert "Impersonate-User" not in _outgoing_headers(smuggled, CIMultiDict())
    certificate_user = CIMultiDict([("Impersonate-User", "alice")])
    assert _outgoing_headers(smuggled, certificate_user).getall("Impersonate-User") == ["alice"]
    own_token = make_mocked_request(
        "GET", PODS, headers={"Authorization": "Bearer t", "Impersonate-User": "bob"}
    )
    # With its own token the client's impersonation is the upstream's to judge.
    assert _outgoing_headers(own_token, CIMultiDict())["Impersonate-User"] == "bob"
