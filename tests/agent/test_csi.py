"""The CSI node service through a real gRPC client on its unix socket, as kubelet calls it.

Publishing really bind-mounts (root is needed: those tests skip cleanly without it); every test
that can mount unmounts whatever is left under its directories at teardown, even on failure.
Requests that must be refused are refused before any mount: they run as any user, and as root
they would leave a mount behind (which the tests look for) if a check let them through.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import grpc
import pytest

import edgecache
from edgecache.agent._csi import parse_csi_endpoint
from edgecache.agent._csi_node import TARGET_MARKER, NodeSettings
from edgecache.agent._csi_proto import csi_pb2, csi_pb2_grpc
from edgecache.agent._csi_server import CsiServer
from edgecache.errors import ConfigError, ViewNotReadyError
from edgecache.k8s.objects import CSI_DRIVER, NODEPOOL_LABEL, volume_handle

AccessMode = csi_pb2.VolumeCapability.AccessMode
VOLUME_ID = volume_handle("default", "images", "0a1b2c3d")
POD_UID = "6f1c2d3e-0000-4000-8000-000000000001"


# -- the world the service lives in --------------------------------------------------------


@dataclass
class FakeResolver:
    """The agent's view manager as the service sees it: ready views, or why not."""

    root: pathlib.Path
    not_ready: dict[tuple[str, str], str] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    answer: pathlib.Path | None = None  # a wrong answer, to see the service refuse it
    broken: bool = False

    def ready_view(self, namespace: str, dataset: str) -> pathlib.Path:
        self.calls.append((namespace, dataset))
        if self.broken:
            raise KeyError("a bug in the view manager")
        if (namespace, dataset) in self.not_ready:
            raise ViewNotReadyError(self.not_ready[namespace, dataset])
        return self.answer or self.root / "datasets" / namespace / dataset


@dataclass
class Node:
    """One node's directories: the agent's views and kubelet's pods directory."""

    base: pathlib.Path
    views_root: pathlib.Path
    kubelet_dir: pathlib.Path
    view: pathlib.Path  # the view of default/images, with files in it
    files: dict[str, bytes]

    @property
    def pods_dir(self) -> pathlib.Path:
        return self.kubelet_dir / "pods"

    def target(self, pv: str = "pv-images", *, pod_uid: str = POD_UID) -> pathlib.Path:
        """kubelet's target path for a CSI volume; its parent exists, as kubelet makes it."""
        parent = self.pods_dir / pod_uid / "volumes" / "kubernetes.io~csi" / pv
        parent.mkdir(parents=True, exist_ok=True)
        return parent / "mount"


@pytest.fixture
def node(tmp_path: pathlib.Path) -> Iterator[Node]:
    views_root = tmp_path / "views"
    view = views_root / "datasets" / "default" / "images"
    (view / "train").mkdir(parents=True)
    files = {"a.bin": os.urandom(70_000), "train/b.txt": b"plain text\n", "empty": b""}
    for name, data in files.items():
        (view / name).write_bytes(data)
    kubelet_dir = tmp_path / "kubelet"
    (kubelet_dir / "pods").mkdir(parents=True)
    yield Node(tmp_path, views_root, kubelet_dir, view, files)
    _unmount_everything_under(tmp_path)


def _mountinfo() -> list[tuple[str, str, list[str]]]:
    """(mount point, root, per-mount options) of each mount, read straight from the kernel."""
    entries = []
    for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        entries.append((point, fields[3], fields[5].split(",")))
    return entries


def mounts_under(base: pathlib.Path) -> list[tuple[str, str, list[str]]]:
    prefix = os.fspath(base) + "/"
    return [entry for entry in _mountinfo() if entry[0].startswith(prefix)]


def _unmount_everything_under(base: pathlib.Path) -> None:
    for point, _, _ in sorted(mounts_under(base), key=lambda entry: -len(entry[0])):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)


@pytest.fixture(scope="session")
def can_bind_mount() -> bool:
    """Whether this process may bind-mount (root with CAP_SYS_ADMIN in its mount namespace)."""
    if os.geteuid() != 0:
        return False
    probe = pathlib.Path(tempfile.mkdtemp(prefix="csi-probe"))
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(os.fsencode(probe), os.fsencode(probe), None, 0x1000, None) != 0:
            return False
        libc.umount2(os.fsencode(probe), 0)
        return True
    finally:
        probe.rmdir()


@pytest.fixture
def needs_mount(can_bind_mount: bool) -> None:
    if not can_bind_mount:
        pytest.skip("bind mounts need root (CAP_SYS_ADMIN); this test publishes for real")


@pytest.fixture
def socket_dir() -> Iterator[pathlib.Path]:
    # Not under tmp_path: a unix socket path must fit in 108 bytes.
    path = pathlib.Path(tempfile.mkdtemp(prefix="csi", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class Plugin:
    """A running CSI server and a gRPC client connected to its socket."""

    server: CsiServer
    channel: grpc.aio.Channel
    identity: csi_pb2_grpc.IdentityStub
    node: csi_pb2_grpc.NodeStub
    resolver: FakeResolver
    readiness: list[bool]
    nodepool: list[str | None]


@pytest.fixture
async def plugin(node: Node, socket_dir: pathlib.Path) -> AsyncIterator[Plugin]:
    resolver = FakeResolver(node.views_root)
    readiness, nodepool = [True], ["hangzhou"]
    settings = NodeSettings(
        node_id="edge-node-1",
        views_root=node.views_root,
        kubelet_dir=node.kubelet_dir,
        nodepool=lambda: nodepool[0],
    )
    server = CsiServer(socket_dir / "csi.sock", settings, resolver, ready=lambda: readiness[0])
    await server.start()
    channel = grpc.aio.insecure_channel(f"unix://{server.socket_path}")
    try:
        yield Plugin(
            server,
            channel,
            csi_pb2_grpc.IdentityStub(channel),
            csi_pb2_grpc.NodeStub(channel),
            resolver,
            readiness,
            nodepool,
        )
    finally:
        await channel.close()
        await server.stop(None)
        _unmount_everything_under(node.base)


def publish_request(
    target: pathlib.Path | str,
    *,
    volume_id: str = VOLUME_ID,
    mode: int = AccessMode.MULTI_NODE_READER_ONLY,
    block: bool = False,
) -> csi_pb2.NodePublishVolumeRequest:
    """What kubelet sends for the controller's PV (ReadOnlyMany, csi.readOnly, pod info)."""
    capability = csi_pb2.VolumeCapability(access_mode=AccessMode(mode=mode))
    if block:
        capability.block.SetInParent()
    else:
        capability.mount.SetInParent()
    return csi_pb2.NodePublishVolumeRequest(
        volume_id=volume_id,
        target_path=os.fspath(target),
        volume_capability=capability,
        readonly=True,
        volume_context={
            "datasetNamespace": "default",
            "datasetName": "images",
            "csi.storage.k8s.io/pod.name": "trainer-0",
            "csi.storage.k8s.io/pod.namespace": "default",
        },
    )


def unpublish_request(target: pathlib.Path) -> csi_pb2.NodeUnpublishVolumeRequest:
    return csi_pb2.NodeUnpublishVolumeRequest(volume_id=VOLUME_ID, target_path=os.fspath(target))


async def rpc_error(call: Callable[[], object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call()  # type: ignore[misc]
    return caught.value


def tree(root: pathlib.Path) -> dict[str, bytes]:
    return {
        os.fspath(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# -- Identity --------------------------------------------------------------------------------


async def test_plugin_info_names_the_driver_and_version(plugin: Plugin) -> None:
    info = await plugin.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    assert info.name == CSI_DRIVER == "csi.edgecache.io"
    assert info.vendor_version == edgecache.__version__


async def test_plugin_capabilities_are_topology_without_a_controller(plugin: Plugin) -> None:
    answer = await plugin.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest())
    service = csi_pb2.PluginCapability.Service
    assert [cap.service.type for cap in answer.capabilities] == [
        service.VOLUME_ACCESSIBILITY_CONSTRAINTS
    ]


async def test_probe_reports_the_agents_readiness(plugin: Plugin) -> None:
    first = await plugin.identity.Probe(csi_pb2.ProbeRequest())
    assert first.HasField("ready") and first.ready.value is True
    plugin.readiness[0] = False
    second = await plugin.identity.Probe(csi_pb2.ProbeRequest())
    assert second.HasField("ready") and second.ready.value is False


# -- Node: info, capabilities, what is not served -----------------------------------------


async def test_node_info_gives_the_node_and_its_nodepool(plugin: Plugin) -> None:
    info = await plugin.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest())
    assert info.node_id == "edge-node-1"
    assert dict(info.accessible_topology.segments) == {NODEPOOL_LABEL: "hangzhou"}
    plugin.nodepool[0] = None  # the agent has not learnt its pool (yet)
    info = await plugin.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest())
    assert info.node_id == "edge-node-1" and not info.HasField("accessible_topology")


async def test_node_capabilities_are_volume_stats_only(plugin: Plugin) -> None:
    answer = await plugin.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest())
    rpc = csi_pb2.NodeServiceCapability.RPC
    assert [cap.rpc.type for cap in answer.capabilities] == [rpc.GET_VOLUME_STATS]


@pytest.mark.parametrize(
    "method", ["/csi.v1.Node/NodeStageVolume", "/csi.v1.Node/NodeExpandVolume"]
)
async def test_calls_we_do_not_serve_are_unimplemented(plugin: Plugin, method: str) -> None:
    call = plugin.channel.unary_unary(method)
    error = await rpc_error(lambda: call(b""))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


# -- the socket ------------------------------------------------------------------------------


async def test_the_socket_is_a_socket_only_root_can_use(plugin: Plugin) -> None:
    mode = plugin.server.socket_path.lstat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert os.listdir(plugin.server.socket_path.parent) == ["csi.sock"]  # no private dir left


async def test_a_stale_socket_is_replaced_and_ours_removed_on_stop(
    node: Node, socket_dir: pathlib.Path
) -> None:
    path = socket_dir / "csi.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(os.fspath(path))
    stale.close()  # what a killed agent leaves behind
    settings = NodeSettings(node_id="n", views_root=node.views_root, kubelet_dir=node.kubelet_dir)
    server = CsiServer(path, settings, FakeResolver(node.views_root))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"unix://{path}") as channel:
            info = await csi_pb2_grpc.IdentityStub(channel).GetPluginInfo(
                csi_pb2.GetPluginInfoRequest()
            )
            assert info.name == CSI_DRIVER
    finally:
        await server.stop(None)
    assert not path.exists()


async def test_a_file_at_the_endpoint_is_never_replaced(
    node: Node, socket_dir: pathlib.Path
) -> None:
    path = socket_dir / "csi.sock"
    path.write_text("not ours")
    settings = NodeSettings(node_id="n", views_root=node.views_root, kubelet_dir=node.kubelet_dir)
    server = CsiServer(path, settings, FakeResolver(node.views_root))
    with pytest.raises(ConfigError, match="not a socket"):
        await server.start()
    assert path.read_text() == "not ours"


@pytest.mark.parametrize(
    ("endpoint", "path"),
    [("unix:///csi/csi.sock", "/csi/csi.sock"), ("unix:///var/lib/x/s", "/var/lib/x/s")],
)
def test_endpoint_is_a_unix_url(endpoint: str, path: str) -> None:
    assert parse_csi_endpoint(endpoint) == pathlib.Path(path)


@pytest.mark.parametrize(
    "endpoint",
    ["", "/csi/csi.sock", "unix://csi.sock", "tcp://127.0.0.1:10000", "unix:///csi/../etc/s"],
)
def test_other_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(ConfigError, match="unix:///"):
        parse_csi_endpoint(endpoint)


# -- publishing a ready view ----------------------------------------------------------------


async def test_publish_bind_mounts_the_view_read_only(
    plugin: Plugin, node: Node, needs_mount: None
) -> None:
    target = node.target()
    await plugin.node.NodePublishVolume(publish_request(target))

    assert tree(target) == node.files  # the view's bytes, and no marker in sight
    [(point, root, options)] = mounts_under(node.base)
    assert point == os.fspath(target) and root.endswith("/datasets/default/images")
    assert "ro" in options
    with pytest.raises(OSError) as caught:
        (target / "new.txt").write_bytes(b"x")
    assert caught.value.errno == errno.EROFS
    with pytest.raises(OSError) as caught:
        (target / "a.bin").write_bytes(b"x")
    assert caught.value.errno == errno.EROFS
    # A bind mount, not a copy: what the agent adds to the view shows up in the pod.
    (node.view / "later.txt").write_bytes(b"arrived later")
    assert (target / "later.txt").read_bytes() == b"arrived later"
    assert plugin.resolver.calls == [("default", "images")]

    await plugin.node.NodeUnpublishVolume(unpublish_request(target))
    assert mounts_under(node.base) == []
    assert not target.exists()  # the directory we made, gone
    assert target.parent.is_dir()  # kubelet's, kept
    assert tree(node.view) == {**node.files, "later.txt": b"arrived later"}


async def test_publish_and_unpublish_are_idempotent(
    plugin: Plugin, node: Node, needs_mount: None
) -> None:
    target = node.target()
    for _ in range(3):
        await plugin.node.NodePublishVolume(publish_request(target))
    assert len(mounts_under(node.base)) == 1
    # A view that went not-ready later does not fail a repeated publish of a live mount.
    plugin.resolver.not_ready["default", "images"] = "refreshing"
    await plugin.node.NodePublishVolume(publish_request(target))
    assert len(mounts_under(node.base)) == 1 and tree(target) == node.files

    for _ in range(3):
        await plugin.node.NodeUnpublishVolume(unpublish_request(target))
    assert mounts_under(node.base) == [] and not target.exists()


async def test_concurrent_publishes_of_one_target_mount_once(
    plugin: Plugin, node: Node, needs_mount: None
) -> None:
    target = node.target()
    await asyncio.gather(
        *(plugin.node.NodePublishVolume(publish_request(target)) for _ in range(6))
    )
    assert len(mounts_under(node.base)) == 1 and tree(target) == node.files


async def test_two_pods_get_two_mounts_of_one_view(
    plugin: Plugin, node: Node, needs_mount: None
) -> None:
    first = node.target()
    second = node.target("pv images", pod_uid="6f1c2d3e-0000-4000-8000-000000000002")
    await plugin.node.NodePublishVolume(publish_request(first))
    await plugin.node.NodePublishVolume(publish_request(second))  # a space: escaped in mountinfo
    assert sorted(point for point, _, _ in mounts_under(node.base)) == sorted(
        [os.fspath(first), os.fspath(second)]
    )
    assert tree(second) == node.files
    await plugin.node.NodeUnpublishVolume(unpublish_request(second))
    assert [point for point, _, _ in mounts_under(node.base)] == [os.fspath(first)]
    assert tree(first) == node.files


async def test_a_target_kubelet_made_is_used_and_left_to_kubelet(
    plugin: Plugin, node: Node, needs_mount: None
) -> None:
    target = node.target()
    target.mkdir()
    await plugin.node.NodePublishVolume(publish_request(target))
    assert tree(target) == node.files
    await plugin.node.NodeUnpublishVolume(unpublish_request(target))
    assert mounts_under(node.base) == []
    assert target.is_dir() and os.listdir(target) == []  # kubelet removes what it made


async def test_a_non_empty_target_is_not_hidden_under_a_mount(
    plugin: Plugin, node: Node, needs_mount: None
) -> None:
    target = node.target()
    target.mkdir()
    (target / "someone-elses").write_text("keep")
    error = await rpc_error(lambda: plugin.node.NodePublishVolume(publish_request(target)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not empty" in (error.details() or "")
    assert mounts_under(node.base) == []
    await plugin.node.NodeUnpublishVolume(unpublish_request(target))
    assert (target / "someone-elses").read_text() == "keep"


async def test_another_mount_at_the_target_is_already_exists(
    plugin: Plugin, node: Node, needs_mount: None
) -> None:
    other = node.base / "other"
    other.mkdir()
    target = node.target()
    target.mkdir()
    mount = await asyncio.create_subprocess_exec("mount", "--bind", str(other), str(target))
    assert await mount.wait() == 0
    error = await rpc_error(lambda: plugin.node.NodePublishVolume(publish_request(target)))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert [root for _, root, _ in mounts_under(node.base)] == [os.fspath(other)]


async def test_volume_stats_of_a_published_target(
    plugin: Plugin, node: Node, needs_mount: None
) -> None:
    target = node.target()
    request = csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOLUME_ID, volume_path=str(target))
    error = await rpc_error(lambda: plugin.node.NodeGetVolumeStats(request))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    await plugin.node.NodePublishVolume(publish_request(target))
    answer = await plugin.node.NodeGetVolumeStats(request)
    usage = {item.unit: item for item in answer.usage}
    expected = os.statvfs(node.view)
    by_bytes = usage[csi_pb2.VolumeUsage.Unit.BYTES]
    assert by_bytes.total == expected.f_blocks * expected.f_frsize > 0
    assert 0 <= by_bytes.available <= by_bytes.total and 0 <= by_bytes.used <= by_bytes.total
    assert usage[csi_pb2.VolumeUsage.Unit.INODES].total == expected.f_files


# -- a view that is not ready ------------------------------------------------------------------


async def test_a_view_not_ready_is_a_retryable_error_with_the_reason(
    plugin: Plugin, node: Node
) -> None:
    reason = "dataset default/images: view not ready: 120 of 1200 files loaded"
    plugin.resolver.not_ready["default", "images"] = reason
    target = node.target()
    error = await rpc_error(lambda: plugin.node.NodePublishVolume(publish_request(target)))
    assert error.code() == grpc.StatusCode.UNAVAILABLE  # kubelet retries with back-off
    assert error.details() == reason  # shown in the pod's events
    assert not target.exists()  # never an empty directory for the pod
    assert mounts_under(node.base) == []
    # kubelet cleans up after an UNAVAILABLE: a no-op that succeeds.
    await plugin.node.NodeUnpublishVolume(unpublish_request(target))


async def test_a_resolver_answer_outside_the_views_root_is_refused(
    plugin: Plugin, node: Node
) -> None:
    elsewhere = node.base / "elsewhere"
    elsewhere.mkdir()
    plugin.resolver.answer = elsewhere
    target = node.target()
    error = await rpc_error(lambda: plugin.node.NodePublishVolume(publish_request(target)))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert not target.exists() and mounts_under(node.base) == []


async def test_a_failing_resolver_is_internal_with_its_error(plugin: Plugin, node: Node) -> None:
    plugin.resolver.broken = True
    target = node.target()
    error = await rpc_error(lambda: plugin.node.NodePublishVolume(publish_request(target)))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "a bug in the view manager" in (error.details() or "")
    assert not target.exists() and mounts_under(node.base) == []


async def test_a_link_inside_the_datasets_dir_is_not_followed(plugin: Plugin, node: Node) -> None:
    outside = node.base / "outside" / "images"
    outside.mkdir(parents=True)
    os.symlink(node.base / "outside", node.views_root / "datasets" / "linked")
    target = node.target()
    request = publish_request(target, volume_id=volume_handle("linked", "images", "0a1b2c3d"))
    error = await rpc_error(lambda: plugin.node.NodePublishVolume(request))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert not target.exists() and mounts_under(node.base) == []


# -- requests that must be refused before anything is touched ----------------------------------


WRITE_MODES = [
    AccessMode.UNKNOWN,
    AccessMode.SINGLE_NODE_WRITER,
    AccessMode.MULTI_NODE_SINGLE_WRITER,
    AccessMode.MULTI_NODE_MULTI_WRITER,
    AccessMode.SINGLE_NODE_SINGLE_WRITER,
    AccessMode.SINGLE_NODE_MULTI_WRITER,
]


def _without_capability(node: Node) -> csi_pb2.NodePublishVolumeRequest:
    request = publish_request(node.target())
    request.ClearField("volume_capability")
    return request


def _without_access_type(node: Node) -> csi_pb2.NodePublishVolumeRequest:
    request = publish_request(node.target())
    request.volume_capability.ClearField("mount")
    return request


def _through_a_link_out_of_pods(node: Node) -> csi_pb2.NodePublishVolumeRequest:
    os.symlink(node.base / "host-dir", node.pods_dir / "linked")
    return publish_request(node.pods_dir / "linked" / "mount")


Build = Callable[[Node], csi_pb2.NodePublishVolumeRequest]
BAD_PUBLISHES: list[tuple[str, Build, str]] = [
    ("block", lambda n: publish_request(n.target(), block=True), "block volumes are not"),
    ("no capability", _without_capability, "volume_capability is required"),
    ("no access type", _without_access_type, "access_type mount"),
    ("no volume id", lambda n: publish_request(n.target(), volume_id=""), "volume_id is required"),
    ("no target", lambda n: publish_request(""), "target_path is required"),
    ("relative target", lambda n: publish_request("pods/x/mount"), "normal absolute path"),
    ("dotdot target", lambda n: publish_request(f"{n.pods_dir}/../../host-dir"), "normal abs"),
    ("the root", lambda n: publish_request("/"), "normal absolute path"),
    ("host dir", lambda n: publish_request(n.base / "host-dir"), "outside kubelet's pods dir"),
    ("etc", lambda n: publish_request("/etc/edgecache-csi-test"), "outside kubelet's pods dir"),
    ("kubelet dir", lambda n: publish_request(n.kubelet_dir), "outside kubelet's pods dir"),
    ("link out of pods", _through_a_link_out_of_pods, "outside kubelet's pods directory"),
]
for _mode in WRITE_MODES:
    _name = AccessMode.Mode.Name(_mode)
    BAD_PUBLISHES.append(
        (_name, lambda n, m=_mode: publish_request(n.target(), mode=m), f"access mode {_name}")
    )
for _handle in [
    "default/../images",
    "../../etc/passwd",
    "/etc/passwd/x",
    "default/images",
    "default/images/0a1b2c3d/extra",
    "default/images/..",
    "default/Images/0a1b2c3d",
    "default/./0a1b2c3d",
    "default/images\0/0a1b2c3d",
    "default//0a1b2c3d",
]:
    BAD_PUBLISHES.append(
        (
            f"volume id {_handle!r}",
            lambda n, h=_handle: publish_request(n.target(), volume_id=h),
            "not an edgecache volume handle",
        )
    )


@pytest.mark.parametrize(
    ("build", "message"), [c[1:] for c in BAD_PUBLISHES], ids=[c[0] for c in BAD_PUBLISHES]
)
async def test_bad_publish_requests_are_invalid_and_mount_nothing(
    plugin: Plugin, node: Node, build: Build, message: str
) -> None:
    (node.base / "host-dir").mkdir()
    request = build(node)
    error = await rpc_error(lambda: plugin.node.NodePublishVolume(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (error.details() or "")
    assert plugin.resolver.calls == []
    assert mounts_under(node.base) == []
    assert not node.target().exists()
    assert os.listdir(node.base / "host-dir") == []


@pytest.mark.parametrize(
    ("volume_id", "target", "message"),
    [
        ("", "{pods}/p/mount", "volume_id is required"),
        (VOLUME_ID, "", "target_path is required"),
        (VOLUME_ID, "/etc", "outside kubelet's pods directory"),
        (VOLUME_ID, "{pods}/../../x", "normal absolute path"),
    ],
)
async def test_bad_unpublish_requests_are_invalid(
    plugin: Plugin, node: Node, volume_id: str, target: str, message: str
) -> None:
    request = csi_pb2.NodeUnpublishVolumeRequest(
        volume_id=volume_id, target_path=target.format(pods=node.pods_dir)
    )
    error = await rpc_error(lambda: plugin.node.NodeUnpublishVolume(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (error.details() or "")


async def test_unpublish_never_removes_a_directory_it_did_not_make(
    plugin: Plugin, node: Node
) -> None:
    target = node.target()
    target.mkdir()
    (target / TARGET_MARKER).write_text("")
    (target / "data").write_text("keep")
    await plugin.node.NodeUnpublishVolume(unpublish_request(target))
    assert (target / "data").read_text() == "keep"
