"""Kubernetes ``Status`` answers the hub gives itself (offline writes, unknown resources, refused
credentials), shaped like the kube-apiserver's so that kubectl and client libraries print the
message and react to the code and reason as they would with a real server.
"""

from __future__ import annotations

import json

from aiohttp import web

__all__ = ["status_body", "status_response"]

_REASONS = {
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    410: "Expired",
    503: "ServiceUnavailable",
}


def status_body(code: int, message: str, *, reason: str | None = None) -> dict[str, object]:
    """A ``v1/Status`` failure object."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "InternalError"),
        "code": code,
    }


def status_response(code: int, message: str, *, reason: str | None = None) -> web.Response:
    """An HTTP response carrying a ``Status`` with the same code."""
    # No Retry-After: clients (urllib3, client-go) would silently retry and hide the refusal.
    return web.Response(
        status=code,
        body=json.dumps(status_body(code, message, reason=reason)).encode(),
        content_type="application/json",
    )
