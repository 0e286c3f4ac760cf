"""What Keel tells a function about the invocation it is running, read from the function
contract's headers: :class:`Ctx`, and :class:`Request` (the context with the payload).

>>> ctx = Ctx.from_headers({
...     "keel-invocation-id": "01J0000000000000000000000",
...     "keel-attempt": "2",
...     "idempotency-key": "order-42",
...     "ce-id": "e1",
...     "ce-type": "user.registered",
...     "keel-subscription": "welcome-email",
... })
>>> (ctx.invocation_id, ctx.attempt, ctx.idempotency_key)
('01J0000000000000000000000', 2, 'order-42')
>>> (ctx.event.type, ctx.subscription) if ctx.event else None
('user.registered', 'welcome-email')
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from . import _http
from .egress import Dependency
from .errors import BadRequest
from .kv import Versioned, kv_get

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))?$"
)


def parse_rfc3339(text: str) -> datetime | None:
    """An RFC 3339 time (``2026-01-02T03:04:05.678Z``) as an aware UTC ``datetime``; ``None``
    when it is not one. A time without an offset is read as UTC."""
    match = _RFC3339.match(text.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, _z, sign, off_h, off_m = match.groups()
    try:
        micros = int((fraction or "0")[:6].ljust(6, "0"))
        offset = timezone.utc
        if sign:
            delta = timedelta(hours=int(off_h), minutes=int(off_m))
            offset = timezone(delta if sign == "+" else -delta)
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), min(int(second), 59), micros, tzinfo=offset
        )
    except ValueError:
        return None
    return moment.astimezone(timezone.utc)


@dataclass(frozen=True)
class EventAttributes:
    """The CloudEvent an event delivery carries (CloudEvents HTTP binary mode: ``ce-*`` headers;
    the body is the event's data)."""

    id: str
    source: str
    #: The CloudEvent ``type``.
    type: str
    specversion: str = "1.0"
    subject: str | None = None
    #: RFC 3339, as sent.
    time: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "specversion": self.specversion,
            "subject": self.subject,
            "time": self.time,
            "datacontenttype": self.datacontenttype,
            "dataschema": self.dataschema,
        }


class Ctx:
    """The invocation being run. A header that is missing reads as empty (useful when calling a
    function by hand): ``invocation_id`` ``""``, ``attempt`` 1, the others ``None``."""

    def __init__(
        self,
        *,
        invocation_id: str = "",
        attempt: int = 1,
        function: str = "",
        idempotency_key: str | None = None,
        deadline: datetime | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        event: EventAttributes | None = None,
        subscription: str | None = None,
        token: str | None = None,
        keel_url: str | None = None,
    ) -> None:
        self.invocation_id = invocation_id
        #: 1 for the first attempt, counted across retries and redrives.
        self.attempt = attempt
        self.function = function
        #: Stable for the invocation across attempts and redrives: pass it to downstream APIs so
        #: that a retried attempt does not charge a card twice.
        self.idempotency_key = idempotency_key
        #: When Keel stops waiting for this attempt (aware, UTC).
        self.deadline = deadline
        #: W3C trace context of this attempt: pass it on to keep one trace.
        self.traceparent = traceparent
        self.tracestate = tracestate
        #: The CloudEvent, when this invocation is an event delivery.
        self.event = event
        #: The subscription that delivered the event.
        self.subscription = subscription
        #: The attempt's function token (``authorization: Bearer …`` when Keel's auth is on):
        #: the SDK already sends it with its own calls to Keel (:meth:`kv_get`,
        #: :meth:`dependency`); this is for calls to Keel's API it does not make for you. It
        #: expires at the attempt's deadline.
        self.token = token
        #: Where Keel is: ``KEEL_URL`` from the environment, unless given.
        self.keel_url = keel_url if keel_url is not None else os.environ.get("KEEL_URL")

    @classmethod
    def from_headers(cls, headers: _http.HeaderInput, *, keel_url: str | None = None) -> Ctx:
        """Reads the contract's headers (any case); ``KEEL_URL`` from the environment (or
        ``keel_url``) is where KV is read and dependencies are called."""
        h = _http.lower_headers(headers)
        event = None
        if "ce-id" in h:
            event = EventAttributes(
                id=h["ce-id"],
                source=h.get("ce-source", ""),
                type=h.get("ce-type", ""),
                specversion=h.get("ce-specversion", "1.0"),
                subject=h.get("ce-subject"),
                time=h.get("ce-time"),
                datacontenttype=h.get("content-type"),
                dataschema=h.get("ce-dataschema"),
            )
        authorization = h.get("authorization", "")
        token = authorization[len("Bearer ") :] if authorization.startswith("Bearer ") else None
        attempt = h.get("keel-attempt", "").strip()
        deadline = h.get("keel-deadline")
        return cls(
            invocation_id=h.get("keel-invocation-id", ""),
            attempt=int(attempt) if attempt.isdigit() else 1,
            function=h.get("keel-function", ""),
            idempotency_key=h.get("idempotency-key"),
            deadline=parse_rfc3339(deadline) if deadline is not None else None,
            traceparent=h.get("traceparent"),
            tracestate=h.get("tracestate"),
            event=event,
            subscription=h.get("keel-subscription"),
            token=token,
            keel_url=keel_url,
        )

    def remaining(self) -> float | None:
        """Seconds left before :attr:`deadline` (0 once passed); ``None`` without a deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline.timestamp() - time.time())

    def _timeout(self) -> float:
        left = self.remaining()
        return 30.0 if left is None else max(left, 0.001)

    def kv_get(self, ns: str, key: str) -> Versioned[Any] | None:
        """Reads ``key`` in namespace ``ns`` from Keel's KV: ``None`` when absent. The version
        goes to :meth:`keel.Effects.put_if_version` for a write that only applies if nobody wrote
        in between. Raises :class:`~keel.Retryable` (Keel unreachable) or
        :class:`~keel.Permanent` (the stored value is not JSON)."""
        return kv_get(self.keel_url, self.token, ns, key, self._timeout())

    def dependency(self, name: str) -> Dependency:
        """Calls ``name``, a dependency the function declares, through Keel's egress
        (``{KEEL_URL}/v1/egress/{name}{path}`` with this attempt's function token,
        ``keel-invocation-id`` and trace context), so that Keel's breaker, bulkhead, rate limit,
        timeout and retries protect it."""
        return Dependency(
            name, self.keel_url, self.invocation_id, self.token, self.traceparent, self.tracestate, self._timeout()
        )

    def to_json(self) -> dict[str, Any]:
        """What the context holds, as JSON (the token left out)."""
        return {
            "invocation_id": self.invocation_id,
            "attempt": self.attempt,
            "function": self.function,
            "idempotency_key": self.idempotency_key,
            "deadline": None if self.deadline is None else self.deadline.isoformat().replace("+00:00", "Z"),
            "traceparent": self.traceparent,
            "tracestate": self.tracestate,
            "event": None if self.event is None else self.event.to_json(),
            "subscription": self.subscription,
        }

    def __repr__(self) -> str:
        return f"Ctx({self.to_json()!r})"


class Request:
    """One invocation: its context and the payload as received."""

    def __init__(self, ctx: Ctx, body: bytes, headers: dict[str, str] | None = None, path: str = "/") -> None:
        self.ctx = ctx
        self.body = body
        #: The request's headers, names lower-cased.
        self.headers = headers or {}
        #: The path and query Keel posted to (``path`` in the function's config).
        self.path = path

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    def json(self) -> Any:
        """The payload as JSON; a body that does not parse raises :class:`~keel.BadRequest` (a
        400: permanent, not retried)."""
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise BadRequest(f"invalid JSON body: {error}") from error

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"Request(ctx={self.ctx!r}, body={self.body[:80]!r})"
