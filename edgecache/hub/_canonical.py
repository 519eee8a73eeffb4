"""The canonical request target: the first check every request passes, before it is classified.

The hub decides what a request may see (classification, offline grants, the record key) from its
path, and the upstream decides from the bytes it receives. Those must be the same request, or a
token refused ``/api/v1/pods`` could send ``/api/v1/pods/..``: classified as pods, normalised to
``/api/v1/`` on the way (by an HTTP client or a proxy) and answered 200, which used to become an
offline grant for pods (issue #10). So the hub accepts only targets that every party reads the
same way, refuses everything else with a 400 ``Status`` (nothing is canonicalised or guessed),
and forwards the accepted target byte for byte (``yarl.URL(..., encoded=True)``).

Refused in the path: ``.`` and ``..`` segments, empty segments (``//``, a trailing ``/``), an
escape of an unreserved character (``%2e``, ``%6f``: a second spelling of the same path), an
escaped ``/`` (``%2F``: a segment boundary only for some readers), escaped control characters,
malformed escapes, characters outside RFC 3986 ``pchar``, non-UTF-8 bytes. Refused in the query:
malformed escapes, ``;`` (Go's API server drops such pairs, Python parsers keep them), and
characters outside RFC 3986 ``query``.
"""

from __future__ import annotations

import re
import string
from urllib.parse import unquote_to_bytes

from edgecache.errors import ConfigError

__all__ = ["NonCanonicalRequestError", "canonical_target"]

_UNRESERVED = frozenset((string.ascii_letters + string.digits + "-._~").encode())
_PCHAR = frozenset(string.ascii_letters + string.digits + "-._~" + "!$&'()*+,;=" + ":@" + "%")
_QUERY_CHARS = (_PCHAR - {";"}) | {"/", "?"}
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class NonCanonicalRequestError(ConfigError):
    """A request target with more than one reading; answered 400 BadRequest."""


def _check_segment(segment: str, path: str) -> None:
    if segment in ("", ".", ".."):
        what = "an empty segment" if not segment else f"a {segment!r} segment"
        raise NonCanonicalRequestError(f"path {path!r} has {what}")
    if not set(segment) <= _PCHAR or _ESCAPE.search(segment):
        raise NonCanonicalRequestError(f"path {path!r} has characters or escapes not allowed")
    if "%" not in segment:
        return
    for escape in re.findall(r"%([0-9A-Fa-f]{2})", segment):
        byte = int(escape, 16)
        if byte in _UNRESERVED:
            raise NonCanonicalRequestError(
                f"path {path!r} escapes {chr(byte)!r}, which must be written as it is"
            )
        if byte == 0x2F:
            raise NonCanonicalRequestError(f"path {path!r} has an escaped '/' (%2F) in a segment")
        if byte < 0x20 or byte == 0x7F:
            raise NonCanonicalRequestError(f"path {path!r} has an escaped control character")
    try:
        unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NonCanonicalRequestError(f"path {path!r} is not UTF-8 once unescaped") from exc


def canonical_target(raw_path: str, raw_query: str) -> str:
    """The request target to classify and forward (``raw_path`` and ``raw_query`` as received,
    still escaped), or :class:`NonCanonicalRequestError` when it has another reading."""
    if not raw_path.startswith("/"):
        raise NonCanonicalRequestError(f"path {raw_path!r} does not start with '/'")
    if raw_path != "/":
        for segment in raw_path[1:].split("/"):
            _check_segment(segment, raw_path)
    if raw_query:
        if not set(raw_query) <= _QUERY_CHARS or _ESCAPE.search(raw_query):
            raise NonCanonicalRequestError(
                "query has characters or escapes not allowed (';' included)"
            )
        return f"{raw_path}?{raw_query}"
    return raw_path
