"""A WSGI application that answers the function contract with a handler: run it under any WSGI
server (gunicorn, waitress, ``wsgiref``).

    from keel.wsgi import wsgi_app
    app = wsgi_app(handler)        # gunicorn -b 127.0.0.1:$PORT module:app
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .errors import reason
from .handler import Handler, respond

StartResponse = Callable[..., Any]


def _headers(environ: dict[str, Any]) -> list[tuple[str, str]]:
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-").lower(), str(value)))
    if environ.get("CONTENT_TYPE"):
        headers.append(("content-type", str(environ["CONTENT_TYPE"])))
    if environ.get("CONTENT_LENGTH"):
        headers.append(("content-length", str(environ["CONTENT_LENGTH"])))
    return headers


def _body(environ: dict[str, Any]) -> bytes:
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length = str(environ.get("CONTENT_LENGTH") or "").strip()
    if length.isdigit():
        return bytes(stream.read(int(length))) if int(length) else b""
    # Chunked or unknown length: read to the end (servers that support it end the stream).
    return bytes(stream.read()) if environ.get("wsgi.input_terminated") else b""


def wsgi_app(handler: Handler) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """A WSGI application calling ``handler`` for each ``POST`` (``GET`` answers 200)."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO") or "/")
        if environ.get("QUERY_STRING"):
            path += "?" + str(environ["QUERY_STRING"])
        response = respond(handler, str(environ.get("REQUEST_METHOD", "GET")), path, _headers(environ), _body(environ))
        headers = [*response.headers, ("content-length", str(len(response.body)))]
        start_response(f"{response.status} {reason(response.status)}", headers)
        return [response.body]

    return app
