"""Fixtures of the read-engine tests: a moto S3 server (real HTTP on 127.0.0.1) and buckets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from enginetestlib import Bucket
from moto.server import ThreadedMotoServer


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(moto_endpoint: str) -> Bucket:
    made = Bucket(moto_endpoint, f"b-{uuid.uuid4().hex[:10]}")
    made.client().create_bucket(Bucket=made.name)  # type: ignore[attr-defined]
    return made
