"""OSS request signatures, verified the way the service does: V1, V2 and V4, headers or URL.

Sits between the HTTP layer (which hands over the method, bucket, key, decoded query and headers)
and the store. It recomputes the signature from the request as received, with the secret of the
access key id the request names, and refuses a mismatch with the service's codes:
``InvalidAccessKeyId`` (unknown id), ``SignatureDoesNotMatch`` (wrong secret or tampered request),
``RequestTimeTooSkewed`` (``Date`` more than 15 minutes off), ``AccessDenied`` (expired URL).

- V1 (``Authorization: OSS AK:SIG``; URL ``OSSAccessKeyId/Expires/Signature``): HMAC-SHA1 over
  VERB, Content-MD5, Content-Type, Date, the ``x-oss-`` headers and ``/bucket/key`` with the
  sub-resources of a fixed list. This is what ``oss2.Auth`` (and so ossfs) sends.
- V2 (``OSS2 AccessKeyId:...,AdditionalHeaders:...,Signature:...``): HMAC-SHA256, every query
  parameter signed, ``oss2.AuthV2``.
- V4 (``OSS4-HMAC-SHA256 Credential=AK/date/region/oss/aliyun_v4_request, ...``; URL
  ``x-oss-signature-version=OSS4-HMAC-SHA256``): a derived signing key over a canonical request,
  ``oss2.AuthV4``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote

from ._errors import OSSError, access_denied

MAX_SKEW_SECONDS = 15 * 60
"""The service refuses a ``Date`` further than this from its clock."""

# The sub-resources that V1 signs (oss2.auth.ProviderAuth._subresource_key_set, the service's list).
V1_SUBRESOURCES = frozenset(
    [
        "response-content-type",
        "response-content-language",
        "response-cache-control",
        "logging",
        "response-content-encoding",
        "acl",
        "uploadId",
        "uploads",
        "partNumber",
        "group",
        "link",
        "delete",
        "website",
        "location",
        "objectInfo",
        "objectMeta",
        "response-expires",
        "response-content-disposition",
        "cors",
        "lifecycle",
        "restore",
        "qos",
        "referer",
        "stat",
        "bucketInfo",
        "append",
        "position",
        "security-token",
        "live",
        "comp",
        "status",
        "vod",
        "startTime",
        "endTime",
        "x-oss-process",
        "symlink",
        "callback",
        "callback-var",
        "tagging",
        "encryption",
        "versions",
        "versioning",
        "versionId",
        "policy",
        "requestPayment",
        "x-oss-traffic-limit",
        "qosInfo",
        "asyncFetch",
        "x-oss-request-payer",
        "sequential",
        "inventory",
        "inventoryId",
        "continuation-token",
        "worm",
        "wormId",
        "wormExtend",
        "replication",
        "replicationLocation",
        "replicationProgress",
        "transferAcceleration",
        "cname",
        "metaQuery",
        "x-oss-ac-source-ip",
        "x-oss-ac-subnet-mask",
        "x-oss-ac-vpc-id",
        "x-oss-ac-forward-allow",
        "resourceGroup",
        "style",
        "styleName",
        "x-oss-async-process",
        "regionList",
        "x-oss-write-get-object-response",
    ]
)
V4_DEFAULT_SIGNED_HEADERS = frozenset({"content-type", "content-md5"})


@dataclass(frozen=True)
class SignedRequest:
    """What a signature covers, as the server received it (query and key already decoded)."""

    method: str
    bucket: str
    key: str
    query: Sequence[tuple[str, str]]
    headers: Mapping[str, str]
    """Lower-cased header names."""


@dataclass(frozen=True)
class Principal:
    """Who sent a request: ``access_key_id`` is empty for anonymous requests."""

    access_key_id: str
    auth_version: str
    """``""`` (anonymous), ``"v1"``, ``"v2"`` or ``"v4"``."""
    presigned: bool = False


ANONYMOUS = Principal("", "")


class Verifier:
    """Checks signatures against ``credentials`` (access key id -> secret).

    ``security_tokens``: access key ids that are STS credentials, with the token each request must
    carry (``x-oss-security-token`` header, or ``security-token`` in a presigned URL).
    ``clock``: seconds since the epoch (tests move it to exercise skew and expiry).
    """

    def __init__(
        self,
        credentials: Mapping[str, str],
        *,
        security_tokens: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credentials = dict(credentials)
        self.security_tokens = dict(security_tokens or {})
        self.clock = clock

    def verify(self, request: SignedRequest) -> Principal:
        authorization = request.headers.get("authorization", "")
        params = dict(request.query)
        if authorization.startswith("OSS "):
            return self._verify_v1_header(request, authorization[4:])
        if authorization.startswith("OSS2 "):
            return self._verify_v2_header(request, authorization[5:])
        if authorization.startswith("OSS4-HMAC-SHA256 "):
            return self._verify_v4_header(request, authorization[17:])
        if authorization:
            raise OSSError(
                400, "InvalidArgument", "Authorization header is invalid.", Authorization="***"
            )
        if "Signature" in params and "OSSAccessKeyId" in params:
            return self._verify_v1_url(request, params)
        if params.get("x-oss-signature-version") == "OSS4-HMAC-SHA256":
            return self._verify_v4_url(request, params)
        if params.get("x-oss-signature-version") == "OSS2":
            return self._verify_v2_url(request, params)
        return ANONYMOUS

    # ----------------------------------------------------------------------------- helpers

    def _secret(self, access_key_id: str) -> str:
        secret = self.credentials.get(access_key_id)
        if secret is None:
            raise OSSError(
                403,
                "InvalidAccessKeyId",
                "The OSS Access Key Id you provided does not exist in our records.",
                OSSAccessKeyId=access_key_id,
            )
        return secret

    def _check_token(self, access_key_id: str, token: str | None) -> None:
        expected = self.security_tokens.get(access_key_id)
        if expected is None:
            return
        if token is None:
            raise access_denied("The security token is required for temporary credentials.")
        if not hmac.compare_digest(token, expected):
            raise OSSError(
                403, "InvalidSecurityToken", "The security token you provided is invalid."
            )

    def _check_date(self, request: SignedRequest) -> None:
        text = request.headers.get("x-oss-date") or request.headers.get("date", "")
        try:
            if "," in text:
                moment = parsedate_to_datetime(text).timestamp()
            else:
                moment = datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        except (TypeError, ValueError):
            raise access_denied("OSS authentication requires a valid Date.") from None
        if abs(self.clock() - moment) > MAX_SKEW_SECONDS:
            raise OSSError(
                403,
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
                RequestTime=text,
                MaxAllowedSkewMilliseconds=str(MAX_SKEW_SECONDS * 1000),
            )

    @staticmethod
    def _mismatch(access_key_id: str, string_to_sign: str) -> OSSError:
        return OSSError(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            StringToSign=string_to_sign,
            OSSAccessKeyId=access_key_id,
        )

    def _check_expiry(self, expires_at: float) -> None:
        if self.clock() > expires_at:
            raise access_denied("Request has expired.")

    # ---------------------------------------------------------------------------------- V1

    @staticmethod
    def _v1_string_to_sign(request: SignedRequest, date: str) -> str:
        headers = request.headers
        oss_headers = sorted((k, v) for k, v in headers.items() if k.startswith("x-oss-"))
        canonical_headers = "".join(f"{k}:{v}\n" for k, v in oss_headers)
        resource = f"/{request.bucket}/{request.key}" if request.bucket else "/"
        sub = sorted((k, v) for k, v in request.query if k in V1_SUBRESOURCES)
        if sub:
            resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in sub)
        return "\n".join(
            [
                request.method,
                headers.get("content-md5", ""),
                headers.get("content-type", ""),
                date,
                canonical_headers + resource,
            ]
        )

    def _v1_check(self, access_key_id: str, signature: str, string_to_sign: str) -> None:
        digest = hmac.new(
            self._secret(access_key_id).encode(), string_to_sign.encode(), hashlib.sha1
        ).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), signature):
            raise self._mismatch(access_key_id, string_to_sign)

    def _verify_v1_header(self, request: SignedRequest, credential: str) -> Principal:
        access_key_id, _, signature = credential.strip().rpartition(":")
        self._secret(access_key_id)
        self._check_date(request)
        date = request.headers.get("x-oss-date") or request.headers.get("date", "")
        self._v1_check(access_key_id, signature, self._v1_string_to_sign(request, date))
        self._check_token(access_key_id, request.headers.get("x-oss-security-token"))
        return Principal(access_key_id, "v1")

    def _verify_v1_url(self, request: SignedRequest, params: dict[str, str]) -> Principal:
        access_key_id = params["OSSAccessKeyId"]
        self._secret(access_key_id)
        expires = params.get("Expires", "")
        try:
            self._check_expiry(float(expires))
        except ValueError:
            raise access_denied("Expires is invalid.") from None
        self._v1_check(
            access_key_id, params["Signature"], self._v1_string_to_sign(request, expires)
        )
        self._check_token(access_key_id, params.get("security-token"))
        return Principal(access_key_id, "v1", presigned=True)

    # ---------------------------------------------------------------------------------- V2

    @staticmethod
    def _v2_string_to_sign(
        request: SignedRequest, date: str, additional: Sequence[str], skip: frozenset[str]
    ) -> str:
        headers = request.headers
        canonical = sorted(
            (k, v) for k, v in headers.items() if k.startswith("x-oss-") or k in additional
        )
        resource = _uri_encode(f"/{request.bucket}/{request.key}" if request.bucket else "/")
        params = sorted((_uri_encode(k), _uri_encode(v)) for k, v in request.query if k not in skip)
        if params:
            resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in params)
        return (
            f"{request.method}\n{headers.get('content-md5', '')}\n"
            f"{headers.get('content-type', '')}\n{date}\n"
            + "".join(f"{k}:{v}\n" for k, v in canonical)
            + ";".join(sorted(additional))
            + "\n"
            + resource
        )

    def _v2_check(self, access_key_id: str, signature: str, string_to_sign: str) -> None:
        digest = hmac.new(
            self._secret(access_key_id).encode(), string_to_sign.encode(), hashlib.sha256
        ).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), signature):
            raise self._mismatch(access_key_id, string_to_sign)

    def _verify_v2_header(self, request: SignedRequest, value: str) -> Principal:
        fields = dict(part.strip().split(":", 1) for part in value.split(",") if ":" in part)
        access_key_id = fields.get("AccessKeyId", "")
        self._secret(access_key_id)
        self._check_date(request)
        additional = [h for h in fields.get("AdditionalHeaders", "").split(";") if h]
        string_to_sign = self._v2_string_to_sign(
            request, request.headers.get("date", ""), additional, frozenset()
        )
        self._v2_check(access_key_id, fields.get("Signature", ""), string_to_sign)
        self._check_token(access_key_id, request.headers.get("x-oss-security-token"))
        return Principal(access_key_id, "v2")

    def _verify_v2_url(self, request: SignedRequest, params: dict[str, str]) -> Principal:
        access_key_id = params.get("x-oss-access-key-id", "")
        self._secret(access_key_id)
        expires = params.get("x-oss-expires", "")
        try:
            self._check_expiry(float(expires))
        except ValueError:
            raise access_denied("x-oss-expires is invalid.") from None
        additional = [h for h in params.get("x-oss-additional-headers", "").split(";") if h]
        string_to_sign = self._v2_string_to_sign(
            request, expires, additional, frozenset({"x-oss-signature"})
        )
        self._v2_check(access_key_id, params.get("x-oss-signature", ""), string_to_sign)
        self._check_token(access_key_id, params.get("security-token"))
        return Principal(access_key_id, "v2", presigned=True)

    # ---------------------------------------------------------------------------------- V4

    def _v4_check(
        self,
        request: SignedRequest,
        *,
        credential: str,
        signature: str,
        additional: Sequence[str],
        date_time: str,
        skip: frozenset[str],
    ) -> str:
        access_key_id, _, scope = credential.partition("/")
        scope_parts = scope.split("/")
        if len(scope_parts) != 4 or scope_parts[3] != "aliyun_v4_request":
            raise OSSError(400, "InvalidArgument", "Invalid credential in Authorization header.")
        day, region, product, _ = scope_parts
        secret = self._secret(access_key_id)
        headers = request.headers
        signed = sorted(
            (k, v)
            for k, v in headers.items()
            if k.startswith("x-oss-") or k in V4_DEFAULT_SIGNED_HEADERS or k in additional
        )
        uri = _uri_encode(f"/{request.bucket}/{request.key}" if request.bucket else "/", "/")
        query = "&".join(
            f"{k}={v}" if v else k
            for k, v in sorted(
                (_uri_encode(k), _uri_encode(v)) for k, v in request.query if k not in skip
            )
        )
        canonical_request = "\n".join(
            [
                request.method,
                uri,
                query,
                "".join(f"{k}:{v}\n" for k, v in signed),
                ";".join(sorted(additional)),
                headers.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD"),
            ]
        )
        string_to_sign = "\n".join(
            [
                "OSS4-HMAC-SHA256",
                date_time,
                scope,
                hashlib.sha256(canonical_request.encode()).hexdigest(),
            ]
        )
        key = ("aliyun_v4" + secret).encode()
        for part in (day, region, product, "aliyun_v4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise self._mismatch(access_key_id, string_to_sign)
        return access_key_id

    def _verify_v4_header(self, request: SignedRequest, value: str) -> Principal:
        fields = dict(part.strip().split("=", 1) for part in value.split(",") if "=" in part)
        self._check_date(request)
        access_key_id = self._v4_check(
            request,
            credential=fields.get("Credential", ""),
            signature=fields.get("Signature", ""),
            additional=[h for h in fields.get("AdditionalHeaders", "").split(";") if h],
            date_time=request.headers.get("x-oss-date", ""),
            skip=frozenset(),
        )
        self._check_token(access_key_id, request.headers.get("x-oss-security-token"))
        return Principal(access_key_id, "v4")

    def _verify_v4_url(self, request: SignedRequest, params: dict[str, str]) -> Principal:
        date_time = params.get("x-oss-date", "")
        try:
            start = datetime.strptime(date_time, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            self._check_expiry(start.timestamp() + float(params.get("x-oss-expires", "")))
        except ValueError:
            raise access_denied("x-oss-date or x-oss-expires is invalid.") from None
        access_key_id = self._v4_check(
            request,
            credential=params.get("x-oss-credential", ""),
            signature=params.get("x-oss-signature", ""),
            additional=[h for h in params.get("x-oss-additional-headers", "").split(";") if h],
            date_time=date_time,
            skip=frozenset({"x-oss-signature"}),
        )
        self._check_token(access_key_id, params.get("x-oss-security-token"))
        return Principal(access_key_id, "v4", presigned=True)


def _uri_encode(text: str, safe: str = "") -> str:
    """RFC 3986 encoding of UTF-8 bytes (unreserved characters kept), as V2 and V4 sign."""
    return quote(text, safe=safe + "-_.~")
