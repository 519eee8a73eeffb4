"""The canonical request target check, alone: what has one reading passes untouched, every
second spelling of a path is refused (the hub answers those 400)."""

from __future__ import annotations

import pytest

from edgecache.hub._canonical import NonCanonicalRequestError, canonical_target


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/", ""),
        ("/api", ""),
        ("/api/v1/namespaces/default/pods", "labelSelector=app%3Dweb%2Ctier+in+(a,b)&limit=5"),
        ("/apis/data.edgecache.io/v1alpha1/namespaces/x/datasets/d-1", ""),
        ("/api/v1/namespaces/default/services/web:8080/proxy/a%20b", ""),  # escapes needed
        ("/api/v1/namespaces/default/pods/caf%C3%A9", ""),  # UTF-8, escaped
        ("/api/v1/pods", "watch=true&resourceVersion=12&allowWatchBookmarks=true"),
        ("/openapi/v3/api/v1", "hash=ABC"),
    ],
)
def test_one_reading_passes_unchanged(path: str, query: str) -> None:
    assert canonical_target(path, query) == (f"{path}?{query}" if query else path)


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/v1/pods/..", ""),
        ("/api/v1/pods/.", ""),
        ("/api/v1/pods/%2e%2e", ""),
        ("/api/v1/pods/.%2E", ""),
        ("/api//v1/pods", ""),
        ("/api/v1/pods/", ""),
        ("/api/v1/namespaces/kube-system%2Fpods", ""),
        ("/api/v1/namespaces/kube-system%2fpods", ""),
        ("/api/v1/p%6Fds", ""),
        ("/api/v1/pods/a%00", ""),
        ("/api/v1/pods/%zz", ""),
        ("/api/v1/pods/%C3", ""),  # not UTF-8 once unescaped
        ("/api/v1/pods/a\\b", ""),
        ("/api/v1/pods/a b", ""),
        ("api/v1/pods", ""),
        ("/api/v1/pods", "labelSelector=a;watch=true"),
        ("/api/v1/pods", "labelSelector=%zz"),
        ("/api/v1/pods", "a=<b>"),
    ],
)
def test_second_spellings_are_refused(path: str, query: str) -> None:
    with pytest.raises(NonCanonicalRequestError):
        canonical_target(path, query)
