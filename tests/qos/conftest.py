"""Fixtures of the WAN QoS tests: the S3 test server (moto, real HTTP on 127.0.0.1) behind the
WAN emulator's thin link, a fresh bucket per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest
from edgecache_testservers.wan import WANEmulator
from qoslib import LINK, Site


@pytest.fixture
def site(moto_endpoint: str) -> Iterator[Site]:
    bucket = f"qos-{uuid.uuid4().hex[:10]}"
    boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    with WANEmulator(moto_endpoint, LINK) as wan:
        yield Site(moto_endpoint, bucket, wan)
