"""An ASGI application that answers the function contract with a handler (``async def`` or
plain): run it under any ASGI server (uvicorn, hypercorn).

    from keel.asgi import asgi_app
    app = asgi_app(handler)        # uvicorn --port $PORT module:app
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .handler import Handler, respond_async

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def asgi_app(handler: Handler) -> ASGIApp:
    """An ASGI 3 application calling ``handler`` for each ``POST`` (``GET`` answers 200)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                break
        headers = [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in scope.get("headers", [])]
        path = str(scope.get("path") or "/")
        query = bytes(scope.get("query_string") or b"")
        if query:
            path += "?" + query.decode("latin-1")
        response = await respond_async(handler, str(scope.get("method", "GET")), path, headers, b"".join(chunks))
        out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        out.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": out})
        await send({"type": "http.response.body", "body": response.body})

    return app
