"""The function contract, independent of any server: a request (method, path, headers, body)
in, the contract's response out. The built-in server, the WSGI and the ASGI adapters all answer
through :func:`respond` / :func:`respond_async`."""

from __future__ import annotations

import asyncio
import inspect
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from . import _http
from .context import Ctx, Request
from .errors import KeelError, Permanent, Retryable, problem_body
from .reply import Reply

#: A handler takes a :class:`~keel.Request` and returns a :class:`~keel.Reply`, an
#: :class:`~keel.Effects`, ``None`` (204) or a JSON value (200) — or an awaitable of one — or
#: raises a :class:`~keel.KeelError`.
Handler = Callable[[Request], Any | Awaitable[Any]]


@dataclass
class Answer:
    """What the function answers."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def _reply_response(reply: Reply) -> Answer:
    headers = [(k.lower(), v) for k, v in reply.headers.items() if k.lower() != "content-type"]
    if reply.content_type is not None:
        headers.insert(0, ("content-type", reply.content_type))
    return Answer(reply.status, headers, reply.body)


def problem_response(error: KeelError) -> Answer:
    """An RFC 9457 problem for ``error``, with ``Retry-After`` when it has one."""
    headers = [("content-type", "application/problem+json")]
    secs = error.retry_after_secs
    if secs is not None:
        headers.append(("retry-after", str(secs)))
    return Answer(error.status, headers, problem_body(error))


def _unexpected(error: BaseException) -> Answer:
    # Logged to stderr, which Keel keeps in its logs; retried like a panic in the Rust SDK.
    traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    sys.stderr.flush()
    detail = f"the handler raised {type(error).__name__}: {error}"
    return problem_response(Retryable(detail, status=500))


def _outcome(value: Any) -> Answer:
    try:
        return _reply_response(Reply.of(value))
    except (TypeError, ValueError) as error:
        return _unexpected(error)


def _early(method: str, headers: _http.HeaderInput, body: bytes, path: str) -> Answer | Request:
    """GET on any path answers 200 (so that ``health_path`` may point anywhere); only POST
    invokes."""
    if method.upper() == "GET":
        return Answer(200, [("content-type", "text/plain")], b"ok")
    if method.upper() != "POST":
        return problem_response(Permanent("only POST invokes a function", status=405))
    lowered = _http.lower_headers(headers)
    return Request(Ctx.from_headers(lowered), body, lowered, path)


def respond(handler: Handler, method: str, path: str, headers: _http.HeaderInput, body: bytes) -> Answer:
    """Runs ``handler`` for one request (an ``async`` handler on an event loop of its own) and
    answers as the contract says: its reply, or its error's status."""
    request = _early(method, headers, body, path)
    if isinstance(request, Answer):
        return request
    try:
        value = handler(request)
        if inspect.isawaitable(value):
            value = asyncio.run(_await(value))
    except KeelError as error:
        return problem_response(error)
    except Exception as error:  # any other failure is a retryable 500
        return _unexpected(error)
    return _outcome(value)


async def _await(value: Awaitable[Any]) -> Any:
    return await value


async def respond_async(handler: Handler, method: str, path: str, headers: _http.HeaderInput, body: bytes) -> Answer:
    """:func:`respond` on a running event loop: an ``async`` handler is awaited, a plain one runs
    in a worker thread (its KV reads and egress calls block)."""
    request = _early(method, headers, body, path)
    if isinstance(request, Answer):
        return request
    try:
        if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(type(handler).__call__):
            value = await handler(request)
        else:
            value = await asyncio.to_thread(handler, request)
            if inspect.isawaitable(value):
                value = await value
    except KeelError as error:
        return problem_response(error)
    except Exception as error:  # any other failure is a retryable 500
        return _unexpected(error)
    return _outcome(value)
