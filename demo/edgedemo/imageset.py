"""The demo's dataset: generated image-sized objects and a few shards, and the manifest that
every phase checks its bytes against.

The manifest maps each key (relative to the Dataset's mount) to its size and xxh3-64 digest; it is
written once, next to the cloud, and read by the readers, so "wrong bytes" is an exact check,
never a size comparison."""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import xxhash

from edgedemo.profiles import Profile

BUCKET = "test-fluid"
PREFIX = "images/images/"
"""Where the seed demo's Dataset mounts from: ``oss://test-fluid/images/images/``."""


def digest(data: bytes) -> str:
    return xxhash.xxh3_64_hexdigest(data)


@dataclass(frozen=True)
class Manifest:
    files: dict[str, tuple[int, str]]
    """Key relative to the mount -> (size in bytes, xxh3-64 hex digest)."""

    @property
    def total_bytes(self) -> int:
        return sum(size for size, _ in self.files.values())

    @property
    def images(self) -> list[str]:
        return sorted(k for k in self.files if k.endswith(".jpg"))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({k: list(v) for k, v in self.files.items()}))

    @classmethod
    def load(cls, path: Path) -> Manifest:
        raw = json.loads(path.read_text())
        return cls({k: (int(v[0]), str(v[1])) for k, v in raw.items()})


def generate(profile: Profile) -> Iterator[tuple[str, bytes]]:
    """``(key relative to the mount, bytes)``: images in class folders, then the shards. Random
    bytes behind a JPEG marker: incompressible, as real JPEGs are, so LZ4 cannot flatter us."""
    sizes = random.Random(14)
    low, high = (math.log(b) for b in profile.image_bytes)
    for i in range(profile.images):
        size = int(math.exp(sizes.uniform(low, high)))
        yield f"val/n{i % 10:08d}/{i:06d}.jpg", b"\xff\xd8\xff\xe0" + os.urandom(size - 4)
    for i in range(profile.shards):
        yield f"shards/train-{i:03d}.tar", os.urandom(profile.shard_bytes)
