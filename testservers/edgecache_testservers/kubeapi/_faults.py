"""Test controls applied before a request reaches the API: authentication, faults, the request log.

Authentication accepts bearer tokens from a fixed set (with optional user names) and may admit
anonymous requests, as an API server with token auth does. Faults let a test make the server answer
a status (503 by default), drop the connection without an answer, or hang, for a number of requests
or until cleared, optionally only for paths with a given prefix. Every request is logged with its
User-Agent, credentials and final status, so tests can assert what a proxy sent upstream.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

ANONYMOUS = "system:anonymous"
FaultMode = Literal["status", "close", "hang"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    query: str
    user_agent: str
    authorization: str
    user: str
    """The authenticated user: the token's user name, ``system:anonymous``, or ``""`` if refused."""
    client_cert: str
    """The CN of the verified client certificate presented, ``""`` if none (TLS only)."""
    status: int
    watch: bool
    target: str = ""
    """The request target exactly as received: escaped path and query, never normalised."""


@dataclass
class Fault:
    """An injected failure; ``remaining=None`` means until :meth:`FaultPlan.clear`."""

    mode: FaultMode = "status"
    status: int = 503
    remaining: int | None = None
    path_prefix: str = ""
    methods: frozenset[str] = field(default_factory=frozenset)
    watch: bool | None = None
    """``True``: only watch requests; ``False``: only others; ``None``: both."""
    hits: int = 0


class FaultPlan:
    """The faults in force; the first matching fault with requests remaining applies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str, *, watch: bool) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining == 0 or not path.startswith(fault.path_prefix):
                    continue
                if fault.methods and method not in fault.methods:
                    continue
                if fault.watch is not None and fault.watch != watch:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                fault.hits += 1
                return fault
        return None


class Authenticator:
    """Bearer-token authentication; ``tokens=None`` turns authentication off (everyone is admin)."""

    def __init__(
        self,
        tokens: Collection[str] | Mapping[str, str] | None,
        *,
        allow_anonymous: bool,
    ) -> None:
        if tokens is None:
            self.users: dict[str, str] | None = None
        elif isinstance(tokens, Mapping):
            self.users = dict(tokens)
        else:
            self.users = {token: f"user-{index}" for index, token in enumerate(sorted(tokens))}
        self.allow_anonymous = allow_anonymous

    def authenticate(self, authorization: str, cert_user: str | None = None) -> str | None:
        """The user for an ``Authorization`` header or a verified client certificate's CN.

        ``None`` refuses the request with 401. A token, when sent, decides alone, as in Kubernetes
        where a bad token is rejected even if a client certificate would have been accepted.
        """
        if self.users is None:
            return cert_user or "admin"
        scheme, _, token = authorization.partition(" ")
        if not authorization:
            if cert_user:
                return cert_user
            return ANONYMOUS if self.allow_anonymous else None
        if scheme.lower() != "bearer":
            return None
        return self.users.get(token.strip())
