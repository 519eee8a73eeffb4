"""Fixtures of the S3 plugin tests: moto servers on 127.0.0.1, started inside the test run.

- ``moto_endpoint``: an in-process ``ThreadedMotoServer`` (port 0) that accepts any credentials,
  with one bucket (``bucket``) and a fresh key prefix per test (``prefix``).
- ``auth_moto``: a moto server in a child process with IAM authentication switched on, so
  signatures are really checked and a wrong secret gets 403. It runs in its own process because
  moto's switch is process-wide and would break every other in-process server.

Every test runs with the AWS environment variables cleared and no AWS config files, so nothing
from the machine leaks in.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from s3testlib import KEY, REGION, SECRET, AuthMoto, free_port, s3_client

from edgecache.backends import Backend, get_backend
from edgecache.testing.backend_suite import run


@pytest.fixture(autouse=True)
def clean_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: Any) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "EDGECACHE_SECRETS_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path_factory.getbasetemp() / "no-aws-config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def client(moto_endpoint: str) -> Any:
    return s3_client(moto_endpoint)


@pytest.fixture(scope="session")
def bucket(client: Any) -> str:
    name = "edgecache-test"
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def prefix(bucket: str) -> str:
    """``bucket/<unique>``: where this test's objects live."""
    return f"{bucket}/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_options(moto_endpoint: str) -> dict[str, Any]:
    return {"endpoint_url": moto_endpoint, "key": KEY, "secret": SECRET}


@pytest.fixture(scope="session")
def auth_moto() -> Iterator[AuthMoto]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="edge")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="edge", PolicyName="s3", PolicyDocument=json.dumps(policy))
        access = iam.create_access_key(UserName="edge")["AccessKey"]
        setup = s3_client(endpoint, "setup", "setup")
        setup.create_bucket(Bucket="auth-bucket")
        setup.put_object(Bucket="auth-bucket", Key="hello.txt", Body=b"hello, edge")
        # From now on moto checks every request's signature against IAM's keys.
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=10).close()
        yield AuthMoto(endpoint, access["AccessKeyId"], access["SecretAccessKey"], "auth-bucket")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def backends() -> Iterator[Callable[..., Backend]]:
    """``get_backend(protocol, options)``, each closed when the test ends: an S3 client left
    open is reported unclosed by whichever later test the garbage collector runs in."""
    made: list[Backend] = []

    def make(protocol: str, options: dict[str, Any]) -> Backend:
        made.append(get_backend(protocol, options))
        return made[-1]

    yield make
    for backend in made:
        run(backend.close)
