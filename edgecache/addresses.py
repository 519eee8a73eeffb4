"""``HOST:PORT`` addresses that edgecache's servers listen on and that peers advertise.

The hub (API proxy and probes), the controller's and agent's probe endpoints and the pool's
peer block server each take an address flag. They parse it here, once, with one error naming
the flag, and the servers that need a socket bound before they start serving (so a port in
use is a one-line error at start-up, not a traceback later) get it from
:func:`listening_socket`.
"""

from __future__ import annotations

import socket

from edgecache.errors import ConfigError, quoted

__all__ = ["listening_socket", "parse_address"]


def parse_address(value: str, *, option: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``; port 0 is any free port) as (host, port);
    a :class:`ConfigError` naming ``option`` otherwise."""
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{option}: {quoted(value)} is not HOST:PORT")
    return host, int(port)


def listening_socket(value: str, *, option: str) -> socket.socket:
    """A non-blocking TCP socket bound to ``value`` and listening; a :class:`ConfigError`
    naming ``option`` when the address is malformed or cannot be bound (in use, not ours)."""
    host, port = parse_address(value, option=option)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{option} {value}: cannot listen: {exc.strerror or exc}") from exc
    sock.listen(1024)
    sock.setblocking(False)
    return sock
