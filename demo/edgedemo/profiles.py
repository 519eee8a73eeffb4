"""How big the demo is: the dataset, the link and the reader, per profile.

``full`` is what ``scripts/demo`` runs (under 3 minutes on a busy 2-core machine); ``test`` is the
same scenario made small for the test suite (under a minute). Per-object costs (listing
entries, request and response headers, three nodes listing the mount) are a few KiB per object
whatever its size, so the test profile keeps its objects few and not too small: with 200 images
of 16-64 KiB they alone put the pool's WAN bytes at 1.09-1.10x the dataset, on the demo's 1.1x
limit."""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Profile:
    name: str
    images: int
    """Small objects in the dataset (JPEG-sized: see ``image_bytes``)."""
    image_bytes: tuple[int, int]
    """Smallest and largest image, in bytes (sizes are log-uniform in between)."""
    shards: int
    """Large objects in the dataset (packed training shards)."""
    shard_bytes: int
    reads: int
    """Images the inference reader takes per phase (a random sample, random order)."""
    cpu_ms_per_image: float
    """CPU time the reader spends per image: a stand-in for the model's forward pass."""
    rtt_ms: float
    """Round-trip time of the site's WAN link."""
    mbit: float
    """Its bandwidth, Mbit/s."""
    timeout_seconds: float
    """The longest any one phase may take before the demo calls it broken."""


FULL = Profile(
    name="full",
    images=1500,
    image_bytes=(16 * KiB, 96 * KiB),
    shards=2,
    shard_bytes=8 * MiB,
    reads=150,
    cpu_ms_per_image=4.0,
    rtt_ms=40.0,
    mbit=50.0,
    timeout_seconds=150.0,
)

TEST = Profile(
    name="test",
    images=120,
    image_bytes=(32 * KiB, 96 * KiB),
    shards=1,
    shard_bytes=8 * MiB,
    reads=40,
    cpu_ms_per_image=2.0,
    rtt_ms=40.0,
    mbit=50.0,
    timeout_seconds=45.0,
)

PROFILES = {p.name: p for p in (FULL, TEST)}
