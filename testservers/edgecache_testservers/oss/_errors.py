"""OSS errors as the service returns them: an HTTP status, a ``Code`` and the ``<Error>`` document.

The bottom of the OSS test server: every layer above raises :class:`OSSError`, and the HTTP layer
turns it into the XML body (or, for HEAD, the base64 ``x-oss-err`` header) that ``oss2`` parses
into its exception classes (``NoSuchKey``, ``AccessDenied``, ``SignatureDoesNotMatch``...).
"""

from __future__ import annotations

from xml.sax.saxutils import escape


class OSSError(Exception):
    """An OSS error answer. ``details`` become extra elements of ``<Error>`` (e.g. ``Key``)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **details: str,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}
        """Extra response headers (e.g. ``x-oss-next-append-position`` on a position conflict)."""

    def to_xml(self, *, request_id: str, host_id: str) -> bytes:
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n',
            f"  <Code>{escape(self.code)}</Code>\n",
            f"  <Message>{escape(self.message)}</Message>\n",
            f"  <RequestId>{escape(request_id)}</RequestId>\n",
            f"  <HostId>{escape(host_id)}</HostId>\n",
        ]
        parts.extend(f"  <{tag}>{escape(value)}</{tag}>\n" for tag, value in self.details.items())
        parts.append("</Error>\n")
        return "".join(parts).encode()


def no_such_bucket(bucket: str) -> OSSError:
    return OSSError(404, "NoSuchBucket", "The specified bucket does not exist.", BucketName=bucket)


def no_such_key(key: str) -> OSSError:
    return OSSError(404, "NoSuchKey", "The specified key does not exist.", Key=key)


def no_such_upload(upload_id: str) -> OSSError:
    return OSSError(
        404,
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, "
        "or the upload may have been aborted or completed.",
        UploadId=upload_id,
    )


def invalid_argument(message: str, name: str, value: str) -> OSSError:
    return OSSError(400, "InvalidArgument", message, ArgumentName=name, ArgumentValue=value)


def malformed_xml(message: str = "The XML you provided was not well-formed.") -> OSSError:
    return OSSError(400, "MalformedXML", message)


def access_denied(message: str) -> OSSError:
    return OSSError(403, "AccessDenied", message)
