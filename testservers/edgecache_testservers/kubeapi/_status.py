"""Kubernetes ``Status`` errors: how the test API server says no.

Every failure the server returns (404, 409, 410, 422, 400, 401, 503) is a ``metav1.Status`` object,
as a real kube-apiserver returns it, so clients (client-go in kubectl, the Python ``kubernetes``
client, the edge hub) exercise their real error paths. Handlers raise :class:`APIError`; the HTTP
layer turns it into a response, and the watch layer into an ``ERROR`` event.
"""

from __future__ import annotations

from typing import Any

JSONObject = dict[str, Any]


class APIError(Exception):
    """A request the server refuses, carrying the ``Status`` fields a real server would send."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: JSONObject | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> JSONObject:
        """The ``Status`` object for this error."""
        body: JSONObject = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(name: str, group: str, plural: str) -> JSONObject:
    details: JSONObject = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return details


def _qualified(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> APIError:
    """404 for a named object that does not exist."""
    return APIError(
        404,
        "NotFound",
        f'{_qualified(group, plural)} "{name}" not found',
        details=_details(name, group, plural),
    )


def path_not_found(path: str) -> APIError:
    """404 for a URL that names no served resource."""
    return APIError(404, "NotFound", f"the server could not find the requested resource ({path})")


def already_exists(group: str, plural: str, name: str) -> APIError:
    """409 for a create of a name already taken."""
    return APIError(
        409,
        "AlreadyExists",
        f'{_qualified(group, plural)} "{name}" already exists',
        details=_details(name, group, plural),
    )


def conflict(group: str, plural: str, name: str, why: str) -> APIError:
    """409 for a write whose precondition (resourceVersion, uid) no longer holds."""
    return APIError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(group, plural)} "{name}": {why}',
        details=_details(name, group, plural),
    )


def invalid(kind: str, group: str, name: str, field: str, why: str) -> APIError:
    """422 for an object that fails validation."""
    details: JSONObject = {
        "name": name,
        "kind": kind,
        "causes": [{"reason": "FieldValueRequired", "message": why, "field": field}],
    }
    if group:
        details["group"] = group
    return APIError(
        422,
        "Invalid",
        f'{kind}{"." + group if group else ""} "{name}" is invalid: {field}: {why}',
        details=details,
    )


def bad_request(message: str) -> APIError:
    """400 for a request the server cannot parse or that contradicts its URL."""
    return APIError(400, "BadRequest", message)


def gone(message: str) -> APIError:
    """410 for a resourceVersion or continue token older than the retained history."""
    return APIError(410, "Expired", message)


def unauthorized() -> APIError:
    """401 for a request without accepted credentials."""
    return APIError(401, "Unauthorized", "Unauthorized")


def forbidden(prefix: str, why: str) -> APIError:
    """403 for an authenticated user the authorizer refuses (``prefix`` names the object)."""
    return APIError(403, "Forbidden", f"{prefix}{why}")


def method_not_allowed(verb: str, plural: str) -> APIError:
    """405 for a verb the resource does not support."""
    return APIError(
        405,
        "MethodNotAllowed",
        f"the server does not allow this method on the requested resource ({verb} {plural})",
    )


def unsupported_media_type(content_type: str) -> APIError:
    """415 for a patch or body type the server does not understand."""
    return APIError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format: {content_type}",
    )


def service_unavailable(message: str) -> APIError:
    """503, used by fault injection to emulate an overloaded or restarting server."""
    return APIError(503, "ServiceUnavailable", message)
