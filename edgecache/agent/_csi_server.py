"""The CSI node plugin's gRPC server on a unix socket (``--csi-endpoint unix:///csi/csi.sock``).

    kubelet, node-driver-registrar --gRPC, unix socket--> CsiServer
        csi.v1.Identity -> IdentityService (_csi_identity)
        csi.v1.Node     -> NodeService (_csi_node) -> ViewResolver (the agent's view manager)

The socket is only ever reachable with mode 0600 (root: kubelet and the registrar run as root):
gRPC binds it inside a fresh directory of mode 0700 beside the endpoint, it is chmod-ed there,
then renamed onto the endpoint path, so no other user can connect in between, and a stale
socket of an earlier run is replaced in one step. A path that exists and is not a socket is
never touched. ``grpc.aio`` serves on the agent's own event loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import shutil
import stat
import tempfile
from collections.abc import Callable

import grpc

from edgecache.agent._csi import ViewResolver
from edgecache.agent._csi_identity import IdentityService
from edgecache.agent._csi_node import NodeService, NodeSettings
from edgecache.agent._csi_proto import csi_pb2_grpc
from edgecache.errors import ConfigError

__all__ = ["SOCKET_MODE", "CsiServer"]

log = logging.getLogger(__name__)

SOCKET_MODE = 0o600
"""Only root may talk to the plugin: whoever can call NodePublishVolume can mount views."""

_UNIX_SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


class CsiServer:
    """Serves CSI Identity and Node on a unix socket until :meth:`stop`."""

    def __init__(
        self,
        socket_path: pathlib.Path,
        settings: NodeSettings,
        resolver: ViewResolver,
        *,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        """``ready`` answers Probe: the agent's readiness (its views loaded from local state)."""
        self.socket_path = socket_path
        self._services = (IdentityService(ready=ready), NodeService(settings, resolver))
        self._server: grpc.aio.Server | None = None
        self._socket_ino: int | None = None

    def _new_server(self) -> grpc.aio.Server:
        # Made in start(), on the loop that serves: a grpc.aio server belongs to one loop.
        server = grpc.aio.server()
        identity, node = self._services
        # The generated registration functions carry no annotations (see pyproject's mypy notes).
        csi_pb2_grpc.add_IdentityServicer_to_server(identity, server)  # type: ignore[no-untyped-call]
        csi_pb2_grpc.add_NodeServicer_to_server(node, server)  # type: ignore[no-untyped-call]
        return server

    async def start(self) -> None:
        """Bind the socket (mode 0600) and start serving; :class:`ConfigError` if it cannot."""
        parent = self.socket_path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            if self.socket_path.exists() and not stat.S_ISSOCK(self.socket_path.lstat().st_mode):
                raise ConfigError(
                    f"CSI endpoint {os.fspath(self.socket_path)!r} exists and is not a socket: "
                    "refusing to replace it"
                )
            private = pathlib.Path(tempfile.mkdtemp(prefix=".csi", dir=parent))
        except OSError as exc:
            raise ConfigError(f"CSI endpoint directory {os.fspath(parent)!r}: {exc}") from exc
        self._server = server = self._new_server()
        try:
            bound = private / "s"
            if len(os.fsencode(bound)) > _UNIX_SOCKET_PATH_MAX:
                raise ConfigError(
                    f"CSI endpoint {self.socket_path}: its directory's path is too long"
                )
            try:
                port = server.add_insecure_port(f"unix://{bound}")
            except RuntimeError as exc:  # grpc's "Failed to bind to address"
                raise OSError(str(exc)) from exc
            if port == 0:
                raise OSError("gRPC could not bind the socket")
            await server.start()
            os.chmod(bound, SOCKET_MODE)
            os.rename(bound, self.socket_path)
            self._socket_ino = self.socket_path.lstat().st_ino
        except OSError as exc:
            await server.stop(None)
            self._server = None
            raise ConfigError(f"CSI endpoint {os.fspath(self.socket_path)!r}: {exc}") from exc
        finally:
            shutil.rmtree(private, ignore_errors=True)
        log.info("CSI node service listening on unix://%s", self.socket_path)

    async def stop(self, grace_seconds: float | None = 5.0) -> None:
        """Stop serving (calls in flight get ``grace_seconds``) and remove our socket."""
        if self._server is not None:
            await self._server.stop(grace_seconds)
            self._server = None
        # Only the socket this server made: a newer agent may already have replaced it.
        with contextlib.suppress(OSError):
            if self._socket_ino is not None and self.socket_path.lstat().st_ino == self._socket_ino:
                self.socket_path.unlink()
        self._socket_ino = None
