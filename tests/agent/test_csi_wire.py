"""Our csi.proto is wire-compatible with the CSI v1 spec: kubelet's bytes decode to the fields
it means. The expected bytes are encoded here by hand from the spec's field numbers (protobuf's
wire format: a tag is field_number << 3 | wire_type), not produced by the generated code."""

from __future__ import annotations

from edgecache.agent._csi_proto import csi_pb2


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return varint(number << 3 | 0) + varint(value)
    return varint(number << 3 | 2) + varint(len(value)) + value


def test_node_publish_request_fields_are_the_specs() -> None:
    # NodePublishVolumeRequest: volume_id 1, target_path 4, volume_capability 5, readonly 6,
    # volume_context 8; VolumeCapability: mount 2, access_mode 3; AccessMode.mode 1, where
    # MULTI_NODE_READER_ONLY is 3.
    capability = field(2, b"") + field(3, field(1, 3))
    wire = (
        field(1, b"default/images/0a1b2c3d")
        + field(4, b"/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/pv/mount")
        + field(5, capability)
        + field(6, 1)
        + field(8, field(1, b"csi.storage.k8s.io/pod.name") + field(2, b"trainer-0"))
    )
    request = csi_pb2.NodePublishVolumeRequest.FromString(wire)
    assert request.volume_id == "default/images/0a1b2c3d"
    assert request.target_path.endswith("/kubernetes.io~csi/pv/mount")
    assert request.volume_capability.WhichOneof("access_type") == "mount"
    assert request.volume_capability.access_mode.mode == (
        csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_READER_ONLY
    )
    assert request.readonly is True
    assert dict(request.volume_context) == {"csi.storage.k8s.io/pod.name": "trainer-0"}
    block = csi_pb2.VolumeCapability.FromString(field(1, b""))  # BlockVolume is field 1
    assert block.WhichOneof("access_type") == "block"


def test_answers_encode_as_the_spec_says() -> None:
    info = csi_pb2.NodeGetInfoResponse(node_id="a1")
    info.accessible_topology.segments["apps.openyurt.io/nodepool"] = "pool-a"
    segment = field(1, b"apps.openyurt.io/nodepool") + field(2, b"pool-a")
    assert info.SerializeToString() == field(1, b"a1") + field(3, field(1, segment))

    plugin = csi_pb2.GetPluginInfoResponse(name="csi.edgecache.io", vendor_version="0.1.0")
    assert plugin.SerializeToString() == field(1, b"csi.edgecache.io") + field(2, b"0.1.0")

    probe = csi_pb2.ProbeResponse()
    probe.ready.value = True  # google.protobuf.BoolValue in field 1, its value in field 1
    assert probe.SerializeToString() == field(1, field(1, 1))

    # NodeServiceCapability.rpc 1 -> RPC.type 1, GET_VOLUME_STATS = 2; the list is field 1.
    rpc = csi_pb2.NodeServiceCapability.RPC
    caps = csi_pb2.NodeGetCapabilitiesResponse(
        capabilities=[csi_pb2.NodeServiceCapability(rpc=rpc(type=rpc.GET_VOLUME_STATS))]
    )
    assert caps.SerializeToString() == field(1, field(1, field(1, 2)))

    # PluginCapability.service 1 -> Service.type 1, VOLUME_ACCESSIBILITY_CONSTRAINTS = 2.
    service = csi_pb2.PluginCapability.Service
    plugin_caps = csi_pb2.GetPluginCapabilitiesResponse(
        capabilities=[
            csi_pb2.PluginCapability(service=service(type=service.VOLUME_ACCESSIBILITY_CONSTRAINTS))
        ]
    )
    assert plugin_caps.SerializeToString() == field(1, field(1, field(1, 2)))


def test_service_and_method_names_are_the_specs() -> None:
    services = csi_pb2.DESCRIPTOR.services_by_name
    assert csi_pb2.DESCRIPTOR.package == "csi.v1"
    assert [m.name for m in services["Identity"].methods] == [
        "GetPluginInfo",
        "GetPluginCapabilities",
        "Probe",
    ]
    assert {m.name for m in services["Node"].methods} == {
        "NodePublishVolume",
        "NodeUnpublishVolume",
        "NodeGetVolumeStats",
        "NodeGetCapabilities",
        "NodeGetInfo",
    }
