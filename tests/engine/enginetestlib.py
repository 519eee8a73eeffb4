"""Helpers of the read-engine tests: a bucket on the moto test server."""

from __future__ import annotations

from dataclasses import dataclass

import boto3


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
