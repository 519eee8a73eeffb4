"""``edgecache agent --csi-endpoint``: kubelet's calls reach the agent's own views.

The agent runs as users run it (a subprocess against the API test server, a ``file://``
Dataset for its pool); the test is kubelet, with a real gRPC client on the agent's socket.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from edgecache_testservers.kubeapi import KubeAPIServer

from edgecache.agent._csi_proto import csi_pb2, csi_pb2_grpc
from edgecache.k8s.objects import NODEPOOL_LABEL, volume_handle

from .conftest import AgentProcess, dataset, runtime, tree, wait_for

AccessMode = csi_pb2.VolumeCapability.AccessMode


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="csi", dir="/tmp"))  # a socket path fits 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _unmount_under(base: Path) -> None:
    prefix = f"{base}/"
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        point = line.split(" ")[4].replace("\\040", " ")
        if point.startswith(prefix):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)


def _publish(
    node: csi_pb2_grpc.NodeStub, target: Path, name: str
) -> csi_pb2.NodePublishVolumeResponse:
    capability = csi_pb2.VolumeCapability(
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=AccessMode.MULTI_NODE_READER_ONLY)
    )
    capability.mount.SetInParent()
    return node.NodePublishVolume(
        csi_pb2.NodePublishVolumeRequest(
            volume_id=volume_handle("default", name, "0a1b2c3d"),
            target_path=str(target),
            volume_capability=capability,
            readonly=True,
        ),
        timeout=10,
    )


def test_the_agent_serves_csi_for_its_views(
    cluster: KubeAPIServer, tmp_path: Path, agents: list[AgentProcess], socket_dir: Path
) -> None:
    source = tmp_path / "bucket"
    source.mkdir()
    files = {"a.bin": os.urandom(50_000), "b.txt": b"through CSI\n"}
    for name, data in files.items():
        (source / name).write_bytes(data)
    cluster.create(dataset("images", f"file://{source}"))
    cluster.create(runtime("images"))
    kubelet = tmp_path / "kubelet"
    target_parent = kubelet / "pods" / "uid-1" / "volumes" / "kubernetes.io~csi" / "pv-images"
    target_parent.mkdir(parents=True)
    target = target_parent / "mount"
    socket_path = socket_dir / "csi.sock"
    a1 = AgentProcess(
        tmp_path,
        "a1",
        cluster.url,
        extra=(f"--csi-endpoint=unix://{socket_path}", f"--kubelet-dir={kubelet}"),
    ).start()
    agents.append(a1)
    try:
        assert stat.S_IMODE(socket_path.lstat().st_mode) == 0o600
        with grpc.insecure_channel(f"unix://{socket_path}") as channel:
            identity = csi_pb2_grpc.IdentityStub(channel)
            node = csi_pb2_grpc.NodeStub(channel)
            assert identity.Probe(csi_pb2.ProbeRequest(), timeout=10).ready.value is True
            info = wait_for(
                lambda: (
                    (i := node.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), timeout=10))
                    and i.accessible_topology.segments
                    and i
                ),
                what="the nodepool in NodeGetInfo",
            )
            assert info.node_id == "a1"
            assert dict(info.accessible_topology.segments) == {NODEPOOL_LABEL: "pool-a"}

            with pytest.raises(grpc.RpcError) as caught:
                _publish(node, target, "unknown")
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "not placed on node a1" in (caught.value.details() or "")
            assert not target.exists()

            if os.geteuid() != 0:
                pytest.skip("publishing bind-mounts: needs root")

            def published() -> bool:
                try:
                    _publish(node, target, "images")  # kubelet retries the same way
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    return False
                return True

            wait_for(published, what="a publish once the view is ready")
            assert tree(target) == files
            with pytest.raises(OSError):
                (target / "x").write_bytes(b"")
            node.NodeUnpublishVolume(
                csi_pb2.NodeUnpublishVolumeRequest(
                    volume_id=volume_handle("default", "images", "0a1b2c3d"),
                    target_path=str(target),
                ),
                timeout=10,
            )
            assert not target.exists()
            assert tree(a1.view("images")) == files
    finally:
        _unmount_under(tmp_path)
    assert a1.stop() == 0
    assert not socket_path.exists()


def test_a_bad_csi_endpoint_is_a_usage_error(tmp_path: Path) -> None:
    from .conftest import EDGECACHE

    result = subprocess.run(
        [
            EDGECACHE,
            "agent",
            "--node-name=a1",
            "--server=http://127.0.0.1:9",
            f"--root={tmp_path / 'root'}",
            f"--cache-dir={tmp_path / 'cache'}",
            "--csi-endpoint=tcp://127.0.0.1:10000",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unix:///" in result.stderr and "Traceback" not in result.stderr
