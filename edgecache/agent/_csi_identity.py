"""The CSI Identity service: who this plugin is, what it offers, and whether the agent is ready.

node-driver-registrar / kubelet --GetPluginInfo--> csi.edgecache.io + edgecache version
                                --GetPluginCapabilities--> topology-constrained volumes
                                --Probe--> ready = the agent's own readiness
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf import wrappers_pb2

import edgecache
from edgecache.agent._csi_proto import csi_pb2, csi_pb2_grpc
from edgecache.k8s.objects import CSI_DRIVER

__all__ = ["IdentityService"]


class IdentityService(csi_pb2_grpc.IdentityServicer):
    """CSI v1 Identity service of the edgecache node plugin."""

    def __init__(self, *, ready: Callable[[], bool]) -> None:
        self._ready = ready

    async def GetPluginInfo(
        self, request: csi_pb2.GetPluginInfoRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name=CSI_DRIVER, vendor_version=edgecache.__version__)

    async def GetPluginCapabilities(
        self, request: csi_pb2.GetPluginCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.GetPluginCapabilitiesResponse:
        # No CONTROLLER_SERVICE: the controller makes PVs itself and nothing is attached
        # (CSIDriver attachRequired: false). Views exist only on their pool's nodes, hence the
        # topology constraint that NodeGetInfo's nodepool segment answers.
        service = csi_pb2.PluginCapability.Service
        return csi_pb2.GetPluginCapabilitiesResponse(
            capabilities=[
                csi_pb2.PluginCapability(
                    service=service(type=service.VOLUME_ACCESSIBILITY_CONSTRAINTS)
                )
            ]
        )

    async def Probe(
        self, request: csi_pb2.ProbeRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.ProbeResponse:
        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=self._ready()))
