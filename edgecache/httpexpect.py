"""The ``Expect`` header on edgecache's aiohttp servers (the hub, the peer block server).

aiohttp answers an expectation it does not know with a 417 whose text quotes the header; a
header holding bytes that are not UTF-8 makes that answer fail to encode, and the client gets
a 500 instead (found by the reliability suite's fuzzing, issue #15). Routes given
:func:`expect_handler` answer ``100-continue`` as aiohttp does and anything else with a plain
417 that quotes nothing.
"""

from __future__ import annotations

from aiohttp import hdrs, web

__all__ = ["expect_handler"]


async def expect_handler(request: web.Request) -> None:
    """An ``expect_handler`` for ``router.add_route``: 100 Continue, or 417."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text="unknown Expect header\n")
    if request.writer is not None:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # aiohttp counts body bytes from here: the interim answer is not part of the body.
        request.writer.output_size = 0
