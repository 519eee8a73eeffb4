"""Fixtures of the read-engine tests: a moto S3 server (real HTTP on 127.0.0.1) and buckets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from moto.server import ThreadedMotoServer


@dataclass(frozen=True)
class Bucket:
    """A fresh bucket on the test server, with the options that reach it."""

    endpoint: str
    name: str

    @property
    def s3_options(self) -> dict[str, str]:
        """``s3={...}`` options of ``fsspec.open`` / pandas ``storage_options``."""
        return {"endpoint_url": self.endpoint, "key": "k", "secret": "s"}

    def client(self) -> object:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="k",
            aws_secret_access_key="s",
            region_name="us-east-1",
        )

    def put(self, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=self.name, Key=key, Body=data)  # type: ignore[attr-defined]


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
