"""Small HTTP helpers on the standard library: lower-cased headers and one HTTP call (http.client) that
answers every status instead of raising."""

from __future__ import annotations

import http.client
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

HeaderInput: TypeAlias = Mapping[str, str] | Iterable[tuple[str, str]] | None


def lower_headers(headers: HeaderInput) -> dict[str, str]:
    """Headers with lower-cased names; repeated names are joined with ``", "``."""
    out: dict[str, str] = {}
    if headers is None:
        return out
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        name = name.lower()
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float | None = None,
) -> RawResponse:
    """Makes one request with exactly these headers (and ``content-length`` for a body); any
    HTTP status is an answer, redirects are not followed. Raises ``OSError`` (refused, reset,
    timeout) when there is no answer, ``ValueError`` for a URL that is not http(s)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.netloc, timeout=timeout)
    else:
        connection = http.client.HTTPConnection(parts.netloc, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        connection.request(method, target, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        data = response.read()
        return RawResponse(response.status, lower_headers(response.getheaders()), data)
    except http.client.HTTPException as error:
        raise ConnectionError(f"{method} {url}: {error!r}") from error
    finally:
        connection.close()
