"""A client for applications: invoke functions (sync, or async with an id to follow), publish
events, read invocations and wait for their results, read and write KV — over Keel's HTTP API,
with an API key when Keel's auth is on.

    client = keel.Client("http://127.0.0.1:7733", api_key=os.environ.get("KEEL_API_KEY"))
    reply = client.invoke("register-user", {"email": "ada@example.com"}, idempotency_key="signup-ada")
    print(reply.status, reply.json(), reply.invocation_id, reply.replayed)
    job = client.invoke_async("resize", {"image": "a.png"}, idempotency_key="resize-a")
    print(client.wait_result(job.id).json())
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from . import _http, _json
from .kv import Versioned, join, parse_etag

#: Invocation statuses after which nothing more happens (until a redrive).
FINAL_STATUSES = frozenset({"succeeded", "failed", "dead", "cancelled", "discarded"})

_UNSET: Any = object()


def idempotency_header(key: str) -> str:
    """``key`` as an ``Idempotency-Key`` value: as is, or a quoted structured-field string when
    it holds a space, a quote or a backslash. Keel takes 1–255 printable ASCII characters."""
    if not key or len(key) > 255 or not all(0x20 <= ord(c) <= 0x7E for c in key):
        raise ValueError(f"an idempotency key is 1 to 255 printable ASCII characters, not {key!r}")
    if any(c in key for c in ' "\\') or key != key.strip():
        return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return key


def _duration(delay: float | timedelta | str) -> str:
    """A ``keel-delay`` value: ``"30s"`` as is; seconds or a ``timedelta`` in milliseconds."""
    if isinstance(delay, str):
        return delay
    secs = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    return f"{max(0, round(secs * 1000))}ms"


class Response:
    """An answer of Keel's: for a sync invoke, the function's own status, content type and body
    with ``keel-invocation-id`` and ``keel-attempts``."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        #: Header names lower-cased.
        self.headers = headers
        self.body = body

    @property
    def ok(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    @property
    def invocation_id(self) -> str | None:
        return self.headers.get("keel-invocation-id")

    @property
    def attempts(self) -> int | None:
        value = self.headers.get("keel-attempts", "")
        return int(value) if value.isdigit() else None

    @property
    def replayed(self) -> bool:
        """The stored answer to an earlier request with the same Idempotency-Key and body."""
        return self.headers.get("idempotent-replayed", "").strip().lower() == "true"

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def raise_for_status(self) -> Response:
        """The response when 2xx (or 1xx/3xx); otherwise raises :class:`ApiError`."""
        if self.status >= 400:
            raise ApiError(self)
        return self

    def __repr__(self) -> str:
        return f"Response(status={self.status}, body={self.body[:80]!r})"


class ApiError(Exception):
    """A refusal or failure answered by Keel (an RFC 9457 problem: ``type``, ``title``,
    ``detail``) or by the function (a sync invoke's 4xx passed through, 502 after retries)."""

    def __init__(self, response: Response) -> None:
        self.response = response
        self.status = response.status
        problem: Any = None
        if (response.content_type or "").startswith(("application/problem+json", "application/json")):
            try:
                problem = response.json()
            except ValueError:
                problem = None
        #: The problem's fields (``{}`` when the body is not one).
        self.problem: dict[str, Any] = problem if isinstance(problem, dict) else {}
        self.type: str | None = self.problem.get("type")
        self.title: str | None = self.problem.get("title")
        self.detail: str | None = self.problem.get("detail")
        retry = response.headers.get("retry-after", "").strip()
        #: ``Retry-After`` in seconds, when Keel says when to try again.
        self.retry_after: int | None = int(retry) if retry.isdigit() else None
        super().__init__(f"HTTP {self.status}: {self.detail or self.title or response.text()[:200]}")


class InvocationFailed(Exception):
    """An invocation waited for ended without succeeding (dead, failed, cancelled, discarded)."""

    def __init__(self, invocation: dict[str, Any]) -> None:
        self.invocation = invocation
        self.status: str = invocation.get("status", "")
        self.error: Any = invocation.get("error")
        super().__init__(f"invocation {invocation.get('id')} is {self.status}: {self.error}")


@dataclass(frozen=True)
class Accepted:
    """An async invocation Keel accepted (202: durable)."""

    id: str
    status: str
    #: The stored answer to an earlier request with the same Idempotency-Key and body.
    replayed: bool = False
    location: str | None = None


class Client:
    """Keel's HTTP API. ``url`` defaults to ``$KEEL_URL`` or ``http://127.0.0.1:7733``;
    ``api_key`` to ``$KEEL_API_KEY`` (sent as ``Authorization: Bearer``; none when empty)."""

    def __init__(self, url: str | None = None, *, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.url = (url or os.environ.get("KEEL_URL") or "http://127.0.0.1:7733").rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("KEEL_API_KEY") or None
        self.timeout = timeout

    # -- plumbing -----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        json_body: Any = _UNSET,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """One call to Keel's API at ``path`` (``/v1/...``); any status is an answer. Raises
        ``OSError`` when Keel cannot be reached."""
        sent = _http.lower_headers(headers)
        if json_body is not _UNSET:
            body = _json.to_bytes(json_body)
            sent.setdefault("content-type", "application/json")
        if self.api_key:
            sent["authorization"] = f"Bearer {self.api_key}"
        raw = _http.request(
            method, self.url + path, headers=sent, body=body, timeout=self.timeout if timeout is None else timeout
        )
        return Response(raw.status, raw.headers, raw.body)

    def _post(
        self,
        path: str,
        payload: Any,
        body: bytes | str | None,
        content_type: str | None,
        idempotency_key: str | None,
        headers: Mapping[str, str] | None,
        delay: float | timedelta | str | None = None,
        timeout: float | None = None,
    ) -> Response:
        sent = _http.lower_headers(headers)
        if idempotency_key is not None:
            sent["idempotency-key"] = idempotency_header(idempotency_key)
        if delay is not None:
            sent["keel-delay"] = _duration(delay)
        if body is not None:
            data = body.encode("utf-8") if isinstance(body, str) else body
            if content_type:
                sent["content-type"] = content_type
        else:
            data = _json.to_bytes(None if payload is _UNSET else payload)
            sent["content-type"] = content_type or "application/json"
        return self.request("POST", path, body=data, headers=sent, timeout=timeout)

    @staticmethod
    def _segment(name: str) -> str:
        return join("http://x", name)[len("http://x/") :]

    # -- invoking -----------------------------------------------------------------------------

    def invoke(
        self,
        function: str,
        payload: Any = _UNSET,
        *,
        body: bytes | str | None = None,
        content_type: str | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Sync invoke: waits for the function's answer (Keel retries transient failures within
        the function's ``sync_timeout``) and returns it whatever its status — the function's own
        status and body, ``invocation_id``, ``attempts``, ``replayed``; a 4xx of the function is
        passed through, retries exhausted are a 502, the deadline a 504. Call
        :meth:`Response.raise_for_status` to raise :class:`ApiError` for those. ``payload`` is
        sent as JSON; ``body`` (with ``content_type``) as is."""
        path = f"/v1/functions/{self._segment(function)}/invoke"
        return self._post(path, payload, body, content_type, idempotency_key, headers, timeout=timeout)

    def invoke_async(
        self,
        function: str,
        payload: Any = _UNSET,
        *,
        body: bytes | str | None = None,
        content_type: str | None = None,
        idempotency_key: str | None = None,
        delay: float | timedelta | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Accepted:
        """Async invoke: Keel stores the invocation (durably) and answers 202 at once; ``delay``
        (seconds, a ``timedelta`` or ``"30s"``) schedules it later. Raises :class:`ApiError`
        unless accepted. Follow it with :meth:`get_invocation`, :meth:`wait` or
        :meth:`wait_result`."""
        path = f"/v1/functions/{self._segment(function)}/invocations"
        response = self._post(path, payload, body, content_type, idempotency_key, headers, delay)
        if response.status != 202:
            raise ApiError(response)
        accepted = response.json()
        return Accepted(
            id=accepted["id"],
            status=accepted.get("status", "queued"),
            replayed=response.replayed,
            location=response.headers.get("location"),
        )

    # -- events -------------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        data: Any = _UNSET,
        *,
        event: Mapping[str, Any] | None = None,
        events: Sequence[Mapping[str, Any]] | None = None,
        idempotency_key: str | None = None,
        delay: float | timedelta | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Publishes to ``topic`` and returns Keel's ids of the events (see :meth:`get_event`):
        ``data`` (any JSON: Keel wraps it
        in a CloudEvent whose ``type`` is the topic), or ``event`` (a structured CloudEvent:
        ``{"specversion": "1.0", "id", "source", "type", "data", ...}``), or ``events`` (a batch,
        all or nothing). The same ``source`` + ``id`` again is accepted once. Raises
        :class:`ApiError` unless accepted."""
        given = [x for x in (data, event, events) if x is not _UNSET and x is not None]
        if len(given) != 1:
            raise ValueError("publish takes one of data, event or events")
        path = f"/v1/topics/{self._segment(topic)}/events"
        payload: Any
        if event is not None:
            content_type, payload = "application/cloudevents+json", dict(event)
        elif events is not None:
            content_type, payload = "application/cloudevents-batch+json", [dict(e) for e in events]
        else:
            content_type, payload = "application/json", data
        response = self._post(path, payload, None, content_type, idempotency_key, headers, delay)
        if response.status != 202:
            raise ApiError(response)
        return list(response.json().get("ids", []))

    def get_event(self, event_id: str) -> dict[str, Any]:
        """A published event (by the id :meth:`publish` returned) and its deliveries per
        subscription: ``{"id", "topic", "ce_id", "source", "type", "data", "deliveries": [...]}``."""
        response = self.request("GET", f"/v1/events/{self._segment(event_id)}")
        response.raise_for_status()
        event: dict[str, Any] = response.json()
        return event

    # -- invocations --------------------------------------------------------------------------

    def get_invocation(self, invocation_id: str) -> dict[str, Any]:
        """The invocation: ``id, function, status, attempts[], result?, error?, ...``."""
        response = self.request("GET", f"/v1/invocations/{self._segment(invocation_id)}")
        response.raise_for_status()
        invocation: dict[str, Any] = response.json()
        return invocation

    def get_result(self, invocation_id: str) -> Response:
        """The stored answer of a succeeded invocation, raw, with its status and content type
        (raises :class:`ApiError` when there is none yet)."""
        response = self.request("GET", f"/v1/invocations/{self._segment(invocation_id)}/result")
        return response.raise_for_status()

    def wait(self, invocation_id: str, *, timeout: float = 30.0, interval: float = 0.05) -> dict[str, Any]:
        """Polls the invocation until it reaches a final status (``succeeded``, ``dead``,
        ``failed``, ``cancelled``, ``discarded``) and returns it; raises ``TimeoutError`` after
        ``timeout`` seconds. The interval grows up to 1 s."""
        deadline = time.monotonic() + timeout
        while True:
            invocation = self.get_invocation(invocation_id)
            if invocation.get("status") in FINAL_STATUSES:
                return invocation
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"invocation {invocation_id} still {invocation.get('status')} after {timeout}s")
            time.sleep(min(interval, left))
            interval = min(interval * 1.5, 1.0)

    def wait_result(self, invocation_id: str, *, timeout: float = 30.0) -> Response:
        """:meth:`wait`, then the result of a succeeded invocation; raises
        :class:`InvocationFailed` when it ended otherwise."""
        invocation = self.wait(invocation_id, timeout=timeout)
        if invocation.get("status") != "succeeded":
            raise InvocationFailed(invocation)
        return self.get_result(invocation_id)

    def cancel(self, invocation_id: str) -> dict[str, Any]:
        """Cancels a queued or retrying invocation."""
        response = self.request("POST", f"/v1/invocations/{self._segment(invocation_id)}/cancel", body=b"")
        response.raise_for_status()
        cancelled: dict[str, Any] = response.json() if response.body else {}
        return cancelled

    # -- KV -----------------------------------------------------------------------------------

    def kv_get(self, ns: str, key: str) -> Versioned[Any] | None:
        """The value and its version, or ``None`` when the key is absent."""
        response = self.request("GET", f"/v1/kv/{self._segment(ns)}/{self._segment(key)}")
        if response.status == 404:
            return None
        response.raise_for_status()
        version = parse_etag(response.headers.get("etag", ""))
        return Versioned(response.json(), version if version is not None else 0)

    def kv_put(
        self, ns: str, key: str, value: Any, *, if_version: int | None = None, if_absent: bool = False
    ) -> int | None:
        """Writes ``value`` (only if still at ``if_version``, or only if absent); returns the new
        version. A failed precondition raises :class:`ApiError` with status 412."""
        headers = {}
        if if_version is not None:
            headers["if-match"] = f'"{if_version}"'
        if if_absent:
            headers["if-none-match"] = "*"
        response = self.request(
            "PUT", f"/v1/kv/{self._segment(ns)}/{self._segment(key)}", json_body=value, headers=headers
        )
        response.raise_for_status()
        return parse_etag(response.headers.get("etag", ""))

    def kv_delete(self, ns: str, key: str, *, if_version: int | None = None) -> None:
        """Deletes the key (only if still at ``if_version``)."""
        headers = {"if-match": f'"{if_version}"'} if if_version is not None else {}
        response = self.request("DELETE", f"/v1/kv/{self._segment(ns)}/{self._segment(key)}", headers=headers)
        response.raise_for_status()
