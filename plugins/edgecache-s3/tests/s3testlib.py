"""Helpers shared by the S3 plugin tests (fixtures are in conftest.py)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import boto3

REGION = "us-east-1"
KEY = "AKIDEDGECACHETEST"
SECRET = "s3cr3t-Value-That-Must-Not-Leak"


def s3_client(endpoint: str, key: str = "any", secret: str = "any") -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def put(client: Any, path: str, data: bytes) -> str:
    bucket, key = path.split("/", 1)
    client.put_object(Bucket=bucket, Key=key, Body=data)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class AuthMoto:
    endpoint: str
    key: str
    secret: str
    bucket: str
    """Holds ``hello.txt`` (b"hello, edge")."""
