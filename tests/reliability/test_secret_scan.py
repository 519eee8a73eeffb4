"""No secret leaves where it was given (issue #15): the main components run with known secret
values through normal use and failures, then every place a secret could end up is scanned.

Secrets: the Kubernetes bearer token and the kubeconfig client key of the hub and the
controller (a wrong token too, for a controller that is refused), the pool peer token of the
agent, OSS keys in a Kubernetes Secret that a Dataset's ``encryptOptions`` name (the agent reads
it through the hub; the OSS endpoint does not answer), S3 keys in the environment of ``edgecache
cat/ls/prefetch`` (against moto, and against an endpoint that does not answer). Failures: the
API server stops (hub offline, agent and controller retrying), the OSS and S3 endpoints are
closed, a peer asks with a wrong token.

Scanned: each process's stderr (its log and its error messages), ``/metrics``, ``/healthz`` and
``/readyz`` of hub, agent and controller, their ``/proc/<pid>/cmdline`` and ``comm`` (secrets are
given in files and the environment, so they must not appear there), every file under the cache
directories, the agent's root and the hub's store, and every object the components wrote to
the API (Dataset status, CacheReports) besides the Secret itself. Each secret is looked for as
given and base64-encoded; the client key by a line of its PEM body."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from agent.conftest import (
    EDGECACHE,
    AgentProcess,
    ServiceProcess,
    dataset,
    runtime,
    seed_cluster,
    wait_for,
)
from click.testing import CliRunner
from edgecache_testservers.kubeapi import KubeAPIServer, objects

from edgecache.cli import main
from edgecache.k8s.objects import API_VERSION

TOKEN = "k8s-token-7f1e9c2ab04d"
WRONG_TOKEN = "wrong-token-55aa01c3"
PEER_TOKEN = "peer-token-3c9d8e7f6a5b"
WRONG_PEER_TOKEN = "forged-peer-token-0b1c"
OSS_ID, OSS_SECRET = "LTAIscanid8f2d", "oss-secret-9a8b7c6d5e4f"
S3_KEY, S3_SECRET = "AKIASCANKEY7Q2W", "s3-secret-1q2w3e4r5t6y"
CLOSED = "http://127.0.0.1:1"


def forms(value: str) -> list[bytes]:
    """How a secret can appear: as given, and base64-encoded (a Secret's data, a header)."""
    raw = value.encode()
    return [raw, base64.b64encode(raw).rstrip(b"=")]


class Scanner:
    def __init__(self, secrets: dict[str, list[bytes]]) -> None:
        self.secrets = secrets
        self.findings: list[str] = []
        self.places = 0

    def scan(self, where: str, data: bytes) -> None:
        self.places += 1
        for name, needles in self.secrets.items():
            if any(n in data for n in needles):
                self.findings.append(f"{name} in {where}")

    def scan_tree(self, root: Path) -> None:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    self.scan(str(path), path.read_bytes())

    def scan_process(self, name: str, pid: int) -> None:
        for part in ("cmdline", "comm"):
            with contextlib.suppress(OSError):
                self.scan(f"/proc/{pid}/{part} of {name}", Path(f"/proc/{pid}/{part}").read_bytes())

    def scan_url(self, name: str, url: str) -> None:
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                body = answer.read()
        except urllib.error.HTTPError as exc:  # a 503 of /readyz offline is an answer too
            body = exc.read()
        self.scan(f"{url} of {name}", body)


def kubeconfig(path: Path, api: KubeAPIServer, token_or_cert: dict[str, str]) -> Path:
    assert api.pki is not None
    ca = base64.b64encode(api.pki.ca_cert.read_bytes()).decode()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [
                    {"name": "c", "cluster": {"server": api.url, "certificate-authority-data": ca}}
                ],
                "users": [{"name": "u", "user": token_or_cert}],
            }
        )
    )
    return path


def health_of(first_line: str) -> str:
    """The health URL a service's first line names (``health http://...`` or ``health on``)."""
    found = re.search(r"health (?:on )?(http://[^\s),]+)", first_line)
    assert found, first_line
    return found[1]


def oss_dataset(name: str) -> dict[str, Any]:
    obj = dataset(name, "oss://bucket/prefix/")
    mount = obj["spec"]["mounts"][0]
    mount["options"] = {"fs.oss.endpoint": CLOSED}
    mount["encryptOptions"] = [
        {"name": option, "valueFrom": {"secretKeyRef": {"name": "oss-creds", "key": key}}}
        for option, key in (("fs.oss.accessKeyId", "id"), ("fs.oss.accessKeySecret", "secret"))
    ]
    return obj


@contextlib.contextmanager
def services(base: Path, api: KubeAPIServer) -> Iterator[dict[str, Any]]:
    """Hub (kubeconfig with a client key, a token file), controller (kubeconfig with the
    token), a controller with a wrong token, an agent (through the hub, pool token)."""
    assert api.pki is not None
    cert, key = api.pki.client_cert("system:node:a1", ("system:nodes",))
    (base / "token").write_text(TOKEN + "\n")
    (base / "peer-token").write_text(PEER_TOKEN + "\n")
    hub_config = kubeconfig(
        base / "hub.kubeconfig",
        api,
        {
            "client-certificate-data": base64.b64encode(cert.read_bytes()).decode(),
            "client-key-data": base64.b64encode(key.read_bytes()).decode(),
        },
    )
    started: dict[str, Any] = {}
    try:
        hub = ServiceProcess(
            base / "hub.log",
            [
                EDGECACHE,
                "hub",
                f"--kubeconfig={hub_config}",
                f"--token-file={base / 'token'}",
                f"--cache-dir={base / 'hub-store'}",
                "--listen=127.0.0.1:0",
                "--health-listen=127.0.0.1:0",
                "--probe-interval=0.2",
            ],
        )
        started["hub"] = hub
        for name, user in (("controller", {"token": TOKEN}), ("refused", {"token": WRONG_TOKEN})):
            config = kubeconfig(base / f"{name}.kubeconfig", api, user)
            started[name] = ServiceProcess(
                base / f"{name}.log",
                [
                    EDGECACHE,
                    "controller",
                    f"--kubeconfig={config}",
                    "--no-leader-elect",
                    "--health-listen=127.0.0.1:0",
                    f"--cache-dir={base / f'{name}-cache'}",
                    "--resync=1",
                ],
            )
        # A refused controller may stop at once (exit 1, one line) or keep retrying: both fine.
        refused = started["refused"]
        with open(refused.log, "ab") as err:
            refused.process = subprocess.Popen(
                refused.command, stdout=subprocess.PIPE, stderr=err, env=dict(os.environ)
            )
        # Python starts slowly on a loaded machine: hub and controller start side by side.
        with ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(hub.start), pool.submit(started["controller"].start)]:
                future.result()
        hub_url = hub.first_line.split("serving ", 1)[1].split(" ", 1)[0]
        agent = AgentProcess(
            base,
            "a1",
            hub_url,
            extra=(
                "--peer-listen=127.0.0.1:0",
                f"--peer-token-file={base / 'peer-token'}",
                "--peers=a1=127.0.0.1:1",
            ),
        ).start()
        started["agent"] = agent
        yield started
    finally:
        for process in started.values():
            process.stop()


def test_no_secret_in_logs_errors_metrics_process_titles_or_files(
    tmp_path: Path, moto_endpoint: str, reliability: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_lines = []
    with KubeAPIServer(tls=True, tokens={TOKEN: "ops"}) as api:
        seed_cluster(api)
        assert api.pki is not None
        _, key = api.pki.client_cert("system:node:a1", ("system:nodes",))
        pem = key.read_bytes()
        # The key as its PEM lines, and as the kubeconfig carries it (client-key-data).
        key_lines = [line for line in pem.splitlines() if b"-----" not in line]
        key_lines.append(base64.b64encode(pem)[40:100])
        oss_secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "oss-creds", "namespace": "default"},
            "data": {
                "id": base64.b64encode(OSS_ID.encode()).decode(),
                "secret": base64.b64encode(OSS_SECRET.encode()).decode(),
            },
        }
        api.create(oss_secret)
        api.create(oss_dataset("logs"))
        api.create(runtime("logs"))
        api.seed(objects.pods(2))
        with services(tmp_path, api) as running:
            agent = running["agent"]
            # Normal use: the controller binds (or fails) the Dataset, the agent reads the
            # Secret through the hub and fails to list OSS; a peer with a wrong token.
            wait_for(
                lambda: (
                    api.get(API_VERSION, "Dataset", "logs", "default").get("status") or {}
                ).get("phase"),
                what="the controller's status of the Dataset",
                timeout_seconds=30,
            )
            scanner = _scanner(key_lines)
            # The agent read the Secret through the hub and tried OSS with its keys.
            wait_for(
                lambda: "oss" in agent.log.read_text(errors="replace").lower(),
                what="the agent's attempt to list the OSS mount",
                timeout_seconds=30,
            )
            _ask_peer(agent, scanner)
            time.sleep(1.5)  # the agent's retries of the closed OSS endpoint, logged
            # Failure: the API server goes away while everything runs.
            api.stop()
            time.sleep(2.0)
            for name, process in running.items():
                proc = process.process
                if proc is not None and proc.poll() is None:
                    scanner.scan_process(name, proc.pid)
            for name in ("hub", "controller", "agent"):
                process = running[name]
                url = process.health_url if name == "agent" else health_of(process.first_line)
                for path in ("/healthz", "/readyz", "/metrics"):
                    scanner.scan_url(name, url + path)
        stored = [
            obj
            for kind in ("Dataset", "CacheReport", "EdgeCacheRuntime")
            for obj in _list(api, kind)
        ]
        scanner.scan("objects the components wrote to the API", yaml.safe_dump(stored).encode())
    _run_cli(tmp_path, moto_endpoint, scanner, monkeypatch)
    for log in tmp_path.rglob("*.log"):
        scanner.scan(str(log), log.read_bytes())
    for directory in ("hub-store", "controller-cache", "refused-cache", "a1", "cli-cache"):
        if (tmp_path / directory).exists():
            scanner.scan_tree(tmp_path / directory)
    # The scan can fail: where the secrets were given, it finds every one of them.
    control = _scanner(key_lines)
    for given in ("token", "peer-token", "hub.kubeconfig", "controller.kubeconfig"):
        control.scan(given, (tmp_path / given).read_bytes())
    control.scan("refused.kubeconfig", (tmp_path / "refused.kubeconfig").read_bytes())
    control.scan("the Secret", yaml.safe_dump(oss_secret).encode())
    control.scan("the environment", f"{S3_KEY} {S3_SECRET} {WRONG_PEER_TOKEN}".encode())
    assert {f.split(" in ")[0] for f in control.findings} == set(control.secrets)
    reliability.iterations += 1
    reliability.notes["places_scanned"] = scanner.places
    reliability.notes["secrets"] = len(scanner.secrets)
    reliability.notes["findings"] = len(scanner.findings)
    assert not scanner.findings, scanner.findings


def _scanner(key_lines: list[bytes]) -> Scanner:
    secrets = {
        "the bearer token": forms(TOKEN),
        "the wrong bearer token": forms(WRONG_TOKEN),
        "the pool token": forms(PEER_TOKEN),
        "the forged pool token": forms(WRONG_PEER_TOKEN),
        "the OSS key id": forms(OSS_ID),
        "the OSS key secret": forms(OSS_SECRET),
        "the S3 key": forms(S3_KEY),
        "the S3 secret": forms(S3_SECRET),
        "the kubeconfig client key": [line for line in key_lines if len(line) >= 40],
    }
    return Scanner(secrets)


def _list(api: KubeAPIServer, kind: str) -> list[Any]:
    try:
        return list(api.list_objects(API_VERSION, kind))
    except Exception:
        return []


def _ask_peer(agent: AgentProcess, scanner: Scanner) -> None:
    address = wait_for(
        lambda: next(
            (
                line.rsplit(" serving at ", 1)[1].split()[0]
                for line in agent.log.read_text(errors="replace").splitlines()
                if " serving at " in line
            ),
            None,
        ),
        what="the agent's block server address",
        timeout_seconds=15,
    )
    for token in (WRONG_PEER_TOKEN, PEER_TOKEN):
        request = urllib.request.Request(
            f"http://{address}/v1/ping", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                scanner.scan("the peer server's answer", answer.read())
        except urllib.error.HTTPError as exc:
            scanner.scan("the peer server's refusal", exc.read() + str(exc.headers).encode())


def _run_cli(base: Path, endpoint: str, scanner: Scanner, monkeypatch: pytest.MonkeyPatch) -> None:
    """``edgecache prefetch/cat/ls`` of S3 with the keys in the environment (in process, as in
    test_fuzz_inputs.py; the error boundary is the same): against moto, and against an
    endpoint that does not answer."""
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="scan")
    s3.put_object(Bucket="scan", Key="d/a.txt", Body=b"hello\n")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    cache = base / "cli-cache"
    for where, args in (
        (endpoint, ["prefetch", "s3://scan/d/"]),
        (endpoint, ["cat", "s3://scan/missing"]),
        (CLOSED, ["ls", "s3://scan/d/"]),
    ):
        options = ["-o", f"endpoint_url={where}", "-o", "retries=1", "--cache-dir", str(cache)]
        result = CliRunner().invoke(main, [*args, *options], catch_exceptions=True)
        assert isinstance(result.exception, SystemExit | None), repr(result.exception)
        scanner.scan(f"edgecache {' '.join(args)} ({where})", result.output.encode())
