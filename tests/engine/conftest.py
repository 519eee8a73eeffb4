"""Fixtures of the read-engine tests: a moto S3 server (real HTTP on 127.0.0.1) and buckets."""

from __future__ import annotations

import uuid

import pytest
from enginetestlib import Bucket


@pytest.fixture
def bucket(moto_endpoint: str) -> Bucket:
    made = Bucket(moto_endpoint, f"b-{uuid.uuid4().hex[:10]}")
    made.client().create_bucket(Bucket=made.name)  # type: ignore[attr-defined]
    return made
