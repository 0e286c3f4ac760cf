"""Errors a handler raises, and the status code each becomes under the function contract:
Keel retries 408, 425, 429 and 5xx (honouring ``Retry-After``), and dead-letters other 4xx.

>>> Retryable("the database is down").status
503
>>> Permanent("unknown product").status
422
>>> Permanent("taken", status=409).status
409
>>> BadRequest("missing email").status
400
>>> later = Retryable(after=1.5)
>>> (later.status, later.retry_after_secs, later.message)
(503, 2, 'retry after 1s 500ms')
"""

from __future__ import annotations

import math
from datetime import timedelta
from http import HTTPStatus
from typing import Any

from . import _json

#: Reason phrases as Keel's Rust SDK writes them in a problem's ``title``.
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Payload Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    417: "Expectation Failed",
    418: "I'm a teapot",
    421: "Misdirected Request",
    422: "Unprocessable Entity",
    423: "Locked",
    424: "Failed Dependency",
    425: "Too Early",
    426: "Upgrade Required",
    428: "Precondition Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates",
    507: "Insufficient Storage",
    508: "Loop Detected",
    510: "Not Extended",
    511: "Network Authentication Required",
}


def reason(status: int) -> str:
    """The reason phrase of ``status`` (``"Error"`` when it has none)."""
    if status in _REASONS:
        return _REASONS[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _is_permanent(status: int) -> bool:
    return 400 <= status < 500 and status not in (408, 425, 429)


def _seconds(delay: float | timedelta) -> float:
    secs = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if not math.isfinite(secs) or secs < 0:
        raise ValueError(f"a delay is a finite number of seconds >= 0, not {delay!r}")
    return secs


def format_duration(secs: float) -> str:
    """``1.5`` → ``"1s 500ms"``, as humantime writes durations (``0s`` for zero)."""
    nanos = round(secs * 1_000_000_000)
    if nanos == 0:
        return "0s"
    days, nanos = divmod(nanos, 86_400 * 10**9)
    parts = []
    if days:
        parts.append(f"{days}day" + ("s" if days > 1 else ""))
    for unit, size in (("h", 3600 * 10**9), ("m", 60 * 10**9), ("s", 10**9), ("ms", 10**6), ("us", 10**3), ("ns", 1)):
        count, nanos = divmod(nanos, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts)


class KeelError(Exception):
    """Why an invocation did not succeed, and whether Keel should try again.

    Raise one of its kinds from a handler: :class:`Retryable`, :class:`Permanent`,
    :class:`BadRequest`. The function answers ``status`` with an RFC 9457 problem whose
    ``detail`` is ``message`` (and ``Retry-After`` when there is a delay).
    """

    def __init__(self, message: str, *, status: int, retry_after: float | timedelta | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after: float | None = None if retry_after is None else _seconds(retry_after)

    def with_status(self, status: int) -> KeelError:
        """Answers with another status of the same class: a permanent error takes a 4xx that Keel
        does not retry (not 408, 425 or 429); a retryable one a 5xx. Other values are ignored."""
        fits = _is_permanent(status) if _is_permanent(self.status) else 500 <= status < 600
        if fits:
            self.status = status
        return self

    def with_message(self, message: str) -> KeelError:
        self.message = message
        self.args = (message,)
        return self

    @property
    def is_retryable(self) -> bool:
        """Whether Keel will retry the invocation."""
        return self.status >= 500 or self.status in (408, 425, 429)

    @property
    def retry_after_secs(self) -> int | None:
        """The ``Retry-After`` header value: whole seconds, rounded up."""
        if self.retry_after is None:
            return None
        return math.ceil(self.retry_after)

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 problem the function answers."""
        return {"type": "about:blank", "title": reason(self.status), "status": self.status, "detail": self.message}

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status}, retry_after={self.retry_after!r})"


class Retryable(KeelError):
    """A failure another attempt may not have (a dependency is down, a timeout): 503, retried
    after Keel's backoff — or, with ``after`` (seconds or a ``timedelta``), not before that delay
    (``Retry-After``, whole seconds rounded up), which Keel honours as the least delay.
    ``status`` may be another 5xx."""

    def __init__(
        self, message: str | None = None, *, after: float | timedelta | None = None, status: int = 503
    ) -> None:
        if message is None:
            message = "retry after " + format_duration(_seconds(after)) if after is not None else "retryable failure"
        super().__init__(message, status=503, retry_after=after)
        self.with_status(status)


class Permanent(KeelError):
    """A failure no retry will fix (invalid input, a business rule): 422 (or another 4xx that
    Keel does not retry, e.g. ``status=409``), not retried; an async invocation goes to the
    dead-letter queue with this message."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message, status=422)
        self.with_status(status)


class BadRequest(Permanent):
    """A malformed request: 400, not retried."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=400)


def problem_body(error: KeelError) -> bytes:
    return _json.to_bytes(error.problem(), sort_keys=True)
