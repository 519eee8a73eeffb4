"""Helpers shared by the OSS plugin tests (fixtures are in conftest.py)."""

from __future__ import annotations

import socket

KEY = "LTAIedgecacheTestKey"
SECRET = "oss-s3cr3t-That-Must-Not-Leak"
STS_KEY = "STS.edgecacheTempKey"
STS_SECRET = "sts-s3cr3t-Value-Not-To-Leak"
TOKEN = "sts-token-that-must-not-leak"
BUCKET = "edgecache-oss-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
