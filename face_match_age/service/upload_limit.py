"""The upload limit: a request body larger than the service allows is refused with a 413 that says the limit,
checked as the body arrives, never after reading it whole.

A request whose Content-Length announces more is answered before a byte of its body is read. One that does not
announce its length (chunked) is counted as it streams in: the chunk that passes the limit raises
UploadTooLarge, an HTTPException, out of the multipart parser, and the framework answers it as any other.
(FastAPI's own `max_body_size` does the same, but answers a too-long Content-Length with a bare "Content Too
Large" text whatever the app's handlers say, where a user needs to know the limit and how to change it.)
"""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class UploadTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_message(limit))


def too_large_message(limit: int) -> str:
    return (
        f"the request is larger than the service's upload limit of {limit / 2**20:g} MB ({limit} bytes); send "
        "smaller photos, or start the service with a larger --max-upload-mb"
    )


class UploadLimit:
    """ASGI middleware refusing request bodies over `limit` bytes (see the module's docstring)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = _content_length(scope)
        if announced is not None and announced > self.limit:
            await _refuse(send, self.limit)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise UploadTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps({"detail": too_large_message(limit)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # The body is left unread: the server closes the connection after this answer.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
