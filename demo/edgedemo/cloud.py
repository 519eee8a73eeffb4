"""The embedded cloud: object storage and the Kubernetes control plane, far from the site.

The OSS test server (request signatures checked) holds the dataset; the Kubernetes API test
server is the cluster's control plane. The site reaches each through its own WAN emulator with the
profile's latency and bandwidth, so every byte the site pulls is counted and the link can be cut.
The cloud's own clients (the controller, the admin's ``kubectl``) talk to the servers directly,
as they would inside the cloud's network. All of it runs in this process, on threads, listening
on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass, field
from types import TracebackType

from edgecache_testservers.kubeapi import KubeAPIServer
from edgecache_testservers.oss import OSSServer
from edgecache_testservers.wan import WANEmulator, WANProfile

from edgedemo.imageset import BUCKET, PREFIX, Manifest, digest, generate
from edgedemo.profiles import Profile


@dataclass(frozen=True)
class LinkBytes:
    """Bytes that crossed the site's WAN link, per direction and service."""

    data_down: int = 0
    data_up: int = 0
    api_down: int = 0
    api_up: int = 0

    @property
    def data(self) -> int:
        return self.data_down + self.data_up

    @property
    def api(self) -> int:
        return self.api_down + self.api_up

    def __sub__(self, other: LinkBytes) -> LinkBytes:
        return LinkBytes(
            self.data_down - other.data_down,
            self.data_up - other.data_up,
            self.api_down - other.api_down,
            self.api_up - other.api_up,
        )


@dataclass
class Cloud:
    profile: Profile
    access_key: str = field(default_factory=lambda: "LTAI" + secrets.token_hex(8))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    oss: OSSServer | None = None
    api: KubeAPIServer | None = None
    data_link: WANEmulator | None = None
    api_link: WANEmulator | None = None
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __enter__(self) -> Cloud:
        link = WANProfile(rtt_ms=self.profile.rtt_ms, mbit=self.profile.mbit)
        try:
            self.oss = self._stack.enter_context(
                OSSServer(credentials={self.access_key: self.secret_key})
            )
            # Bookmarks every few seconds, as a real API server's watch cache sends them.
            self.api = self._stack.enter_context(KubeAPIServer(bookmark_interval_seconds=5.0))
            self.data_link = self._stack.enter_context(WANEmulator(self.oss.endpoint, link))
            self.api_link = self._stack.enter_context(WANEmulator(self.api.url, link))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.close()

    # ------------------------------------------------------------------------- facts

    @property
    def oss_endpoint_for_site(self) -> str:
        """What the site (and the Dataset's ``fs.oss.endpoint``) uses: across the WAN."""
        assert self.data_link is not None
        return self.data_link.endpoint

    @property
    def api_url_for_site(self) -> str:
        assert self.api_link is not None
        return self.api_link.endpoint

    @property
    def api_url(self) -> str:
        """The control plane as the cloud's own components see it (no WAN)."""
        assert self.api is not None
        return self.api.url

    def link_bytes(self) -> LinkBytes:
        assert self.data_link is not None and self.api_link is not None
        return LinkBytes(
            self.data_link.bytes_down,
            self.data_link.bytes_up,
            self.api_link.bytes_down,
            self.api_link.bytes_up,
        )

    # ------------------------------------------------------------------------ actions

    def seed_dataset(self) -> Manifest:
        assert self.oss is not None
        self.oss.create_bucket(BUCKET)
        files: dict[str, tuple[int, str]] = {}
        for key, data in generate(self.profile):
            self.oss.put_object(BUCKET, PREFIX + key, data)
            files[key] = (len(data), digest(data))
        return Manifest(files)

    def cut(self) -> None:
        """The WAN goes silent (a blackhole, as when a link drops): nothing answers, so clients
        learn it from their own timeouts and probes, not from a polite refusal."""
        assert self.data_link is not None and self.api_link is not None
        self.data_link.cut("blackhole")
        self.api_link.cut("blackhole")

    def restore(self) -> None:
        assert self.data_link is not None and self.api_link is not None
        self.data_link.restore()
        self.api_link.restore()
