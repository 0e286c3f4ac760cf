"""Calling a dependency through Keel's egress: ``ANY {KEEL_URL}/v1/egress/{dependency}{path}``
with the attempt's function token (when Keel's auth is on) and ``keel-invocation-id``. Keel
answers with the dependency's answer as it is, or with a problem of its own
(``urn:keel:problem:breaker-open``, ``rate-limited``, ``bulkhead-full``, ``dependency-timeout``,
``dependency-unreachable``, ``forbidden``), raised as an :class:`EgressError` — which, left to
propagate out of a handler, tells Keel when to retry the attempt:

============================================  ===========================================
Keel's answer                                 the function answers (error left unhandled)
============================================  ===========================================
``503 breaker-open`` + ``Retry-After``        503 + the same ``Retry-After``
``429 rate-limited`` + ``Retry-After``        503 + the same ``Retry-After``
``503 bulkhead-full`` (+ ``Retry-After``)     503 (+ the same ``Retry-After``)
``504 dependency-timeout``, ``502 …``         503, retried after Keel's backoff
``403 forbidden`` (not declared)              422, permanent: not retried
============================================  ===========================================
"""

from __future__ import annotations

import enum
import json
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from . import _http, _json
from .errors import KeelError, Retryable
from .kv import join


class EgressErrorKind(enum.Enum):
    """What went wrong in an :class:`EgressError`; the value is Keel's problem type."""

    BREAKER_OPEN = "breaker-open"
    RATE_LIMITED = "rate-limited"
    BULKHEAD_FULL = "bulkhead-full"
    TIMEOUT = "dependency-timeout"
    UNREACHABLE = "dependency-unreachable"
    FORBIDDEN = "forbidden"
    #: The request could not be built (a header, the path, the JSON body, ``KEEL_URL``).
    INVALID_REQUEST = "invalid-request"
    #: Keel could not be reached, or its answer not read.
    KEEL_UNAVAILABLE = "keel-unavailable"


_KEEL_STATUS = {
    EgressErrorKind.BREAKER_OPEN: 503,
    EgressErrorKind.BULKHEAD_FULL: 503,
    EgressErrorKind.RATE_LIMITED: 429,
    EgressErrorKind.TIMEOUT: 504,
    EgressErrorKind.UNREACHABLE: 502,
    EgressErrorKind.FORBIDDEN: 403,
}

_DESCRIBE = {
    EgressErrorKind.BREAKER_OPEN: "breaker open",
    EgressErrorKind.RATE_LIMITED: "rate limited",
    EgressErrorKind.BULKHEAD_FULL: "bulkhead full",
    EgressErrorKind.TIMEOUT: "timed out",
    EgressErrorKind.UNREACHABLE: "unreachable",
    EgressErrorKind.FORBIDDEN: "forbidden",
    EgressErrorKind.INVALID_REQUEST: "invalid request",
    EgressErrorKind.KEEL_UNAVAILABLE: "keel unavailable",
}


class EgressError(KeelError):
    """Why a call through egress got no answer from the dependency. As a handler's error:
    ``breaker-open``, ``rate-limited`` and ``bulkhead-full`` are a 503 with ``Retry-After`` =
    Keel's delay, a timeout, an unreachable dependency or Keel a retryable 503, ``forbidden`` and
    an invalid request a permanent 422."""

    def __init__(
        self, dependency: str, kind: EgressErrorKind, detail: str, *, retry_after: float | None = None
    ) -> None:
        self.dependency = dependency
        self.kind = kind
        self.detail = detail
        message = f"{dependency}: {_DESCRIBE[kind]} ({detail})"
        permanent = kind in (EgressErrorKind.FORBIDDEN, EgressErrorKind.INVALID_REQUEST)
        super().__init__(message, status=422 if permanent else 503, retry_after=None if permanent else retry_after)
        self.egress_retry_after = retry_after
        """Keel's ``Retry-After`` in seconds: when the dependency may be called again."""


class DependencyResponse:
    """The dependency's answer, as it gave it."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def ok(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON. A body that is not JSON is a retryable 502: the dependency did not
        answer as expected, and another attempt may see a better answer."""
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise Retryable(
                f"the dependency's answer (HTTP {self.status}) is not the expected JSON: {error}", status=502
            ) from error

    def raise_for_status(self) -> DependencyResponse:
        """The response if 1xx–3xx; otherwise raises the dependency's failure as the function's:
        5xx, 408 and 429 retryable (after the dependency's ``Retry-After``, if it gave one), other
        4xx permanent."""
        from .errors import Permanent

        message = f"the dependency answered HTTP {self.status}"
        if self.status < 400:
            return self
        if self.status >= 500 or self.status in (408, 429):
            raise Retryable(message, after=_retry_after(self.headers))
        raise Permanent(message)

    def __repr__(self) -> str:
        return f"DependencyResponse(status={self.status}, body={self.body[:80]!r})"


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after", "").strip()
    return float(int(value)) if value.isdigit() else None


def _keel_problem(status: int, headers: Mapping[str, str], body: bytes) -> tuple[EgressErrorKind, str] | None:
    """Keel's own answer, when the response is one: a problem of the type and status Keel answers."""
    if not headers.get("content-type", "").strip().lower().startswith("application/problem+json"):
        return None
    try:
        problem = json.loads(body)
    except ValueError:
        return None
    kind_text = problem.get("type") if isinstance(problem, dict) else None
    if not isinstance(kind_text, str) or not kind_text.startswith("urn:keel:problem:"):
        return None
    kind_text = kind_text[len("urn:keel:problem:") :]
    for kind, keel_status in _KEEL_STATUS.items():
        if kind.value == kind_text and keel_status == status:
            detail = problem.get("detail")
            return kind, detail if isinstance(detail, str) else ""
    return None


class Dependency:
    """A dependency of the function (``[dependencies.NAME]``, listed in the function's
    ``dependencies``), called through Keel on behalf of the running attempt. Made by
    :meth:`keel.Ctx.dependency`."""

    def __init__(
        self,
        name: str,
        keel_url: str | None,
        invocation_id: str,
        token: str | None,
        traceparent: str | None,
        tracestate: str | None,
        timeout: float | None = None,
    ) -> None:
        self.name = name
        self._keel_url = keel_url
        self._invocation_id = invocation_id
        self._token = token
        self._traceparent = traceparent
        self._tracestate = tracestate
        self._timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        json: Any = None,
        timeout: float | None = None,
    ) -> DependencyResponse:
        """Calls ``method`` ``path`` (``/charges``; a missing leading ``/`` is added; it may carry a
        ``?query``) under the dependency's configured ``url``: the dependency's answer, whatever
        its status, or :class:`EgressError` when Keel answered in its stead (or could not be
        reached). ``json`` sends a JSON body with ``content-type: application/json``. Keel
        forwards all headers but connection headers, ``keel-*`` and ``authorization`` (the
        function's token is for Keel); an ``idempotency-key`` of your own replaces Keel's."""

        def fail(kind: EgressErrorKind, detail: str) -> EgressError:
            return EgressError(self.name, kind, detail)

        sent = _http.lower_headers(headers)
        data: bytes | None
        if json is not None:
            try:
                data = _json.to_bytes(json)
            except (TypeError, ValueError) as error:
                raise fail(EgressErrorKind.INVALID_REQUEST, f"the body is not JSON: {error}") from error
            sent["content-type"] = "application/json"
        else:
            data = body.encode("utf-8") if isinstance(body, str) else body
        if not self._keel_url:
            raise fail(EgressErrorKind.INVALID_REQUEST, "KEEL_URL is not set: cannot call a dependency")
        for name, value in sent.items():
            if not name or any(c in name for c in " \t\r\n:") or any(c in value for c in "\r\n"):
                raise fail(EgressErrorKind.INVALID_REQUEST, f"invalid header {name!r}")
        url = self.url(path, query)
        sent["keel-invocation-id"] = self._invocation_id
        if self._token:
            sent["authorization"] = f"Bearer {self._token}"
        else:
            sent.pop("authorization", None)
        if "traceparent" not in sent and self._traceparent:
            sent["traceparent"] = self._traceparent
            if self._tracestate:
                sent["tracestate"] = self._tracestate
        try:
            response = _http.request(
                method.upper(), url, headers=sent, body=data, timeout=timeout if timeout is not None else self._timeout
            )
        except ValueError as error:
            raise fail(EgressErrorKind.INVALID_REQUEST, f"{url}: {error}") from error
        except OSError as error:
            raise fail(EgressErrorKind.KEEL_UNAVAILABLE, f"keel unreachable: {error}") from error
        problem = _keel_problem(response.status, response.headers, response.body)
        if problem is not None:
            kind, detail = problem
            raise EgressError(self.name, kind, detail, retry_after=_retry_after(response.headers))
        return DependencyResponse(response.status, response.headers, response.body)

    def url(self, path: str, query: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> str:
        """``{KEEL_URL}/v1/egress/{dependency}{path}?{query}``."""
        base = join(self._keel_url or "", "v1", "egress", self.name)
        path, _, path_query = path.partition("?")
        if not path.startswith("/"):
            path = "/" + path
        url = base + urllib.parse.quote(path, safe="/!$&'()*+,;=:@-._~%")
        pairs = list(query.items()) if isinstance(query, Mapping) else list(query or [])
        extra = urllib.parse.urlencode(pairs)
        full_query = "&".join(q for q in (path_query, extra) if q)
        return f"{url}?{full_query}" if full_query else url

    def get(self, path: str, **kwargs: Any) -> DependencyResponse:
        return self.request("GET", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> DependencyResponse:
        return self.request("HEAD", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> DependencyResponse:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> DependencyResponse:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> DependencyResponse:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> DependencyResponse:
        return self.request("DELETE", path, **kwargs)
