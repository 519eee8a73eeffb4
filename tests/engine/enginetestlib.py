"""Helpers of the read-engine tests: a bucket on the moto test server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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

    def put_tree(self, prefix: str, directory: Path) -> None:
        """Every file under ``directory`` as ``prefix/<relative path>`` (a zarr array or a
        parquet directory written locally: no S3 client of the test's own is left open)."""
        client = self.client()
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(directory).as_posix()}"
            client.put_object(Bucket=self.name, Key=key, Body=path.read_bytes())  # type: ignore[attr-defined]

    def get_tree(self, prefix: str, directory: Path) -> Path:
        """The objects under ``prefix/`` as files under ``directory`` (returned)."""
        client = self.client()
        pages = client.get_paginator("list_objects_v2").paginate(  # type: ignore[attr-defined]
            Bucket=self.name, Prefix=f"{prefix}/"
        )
        for page in pages:
            for item in page.get("Contents", []):
                target = directory / item["Key"][len(prefix) + 1 :]
                target.parent.mkdir(parents=True, exist_ok=True)
                body = client.get_object(Bucket=self.name, Key=item["Key"])["Body"]  # type: ignore[attr-defined]
                target.write_bytes(body.read())
        return directory
