"""Reading Keel's KV: ``GET {KEEL_URL}/v1/kv/{ns}/{key}`` answers the value as the JSON body and
its version as ``ETag: "7"``, or 404 when the key is absent."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from . import _http
from .errors import Permanent, Retryable

T = TypeVar("T")

# What the ``url`` crate leaves as is in a path segment (everything else is percent-encoded).
_SEGMENT_SAFE = "!$&'()*+,;=:@-._~"


@dataclass(frozen=True)
class Versioned(Generic[T]):
    """A value read from KV, and the version to write it back at."""

    value: T
    version: int


def parse_etag(value: str) -> int | None:
    """``"7"`` or ``W/"7"`` → 7."""
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    return int(text) if text.isdigit() else None


def join(base: str, *segments: str) -> str:
    """``base`` + ``/seg1/seg2`` with each segment percent-encoded (query of ``base`` dropped)."""
    parts = urllib.parse.urlsplit(base)
    path = parts.path.rstrip("/") + "".join("/" + urllib.parse.quote(s, safe=_SEGMENT_SAFE) for s in segments)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def kv_get(keel_url: str | None, token: str | None, ns: str, key: str, timeout: float | None) -> Versioned[Any] | None:
    if not keel_url:
        raise Retryable("KEEL_URL is not set: cannot read KV")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        response = _http.request("GET", join(keel_url, "v1", "kv", ns, key), headers=headers, timeout=timeout)
    except (OSError, ValueError) as error:
        raise Retryable(f"kv {ns}/{key}: keel unreachable: {error}") from error
    if response.status == 404:
        return None
    if response.status != 200:
        raise Retryable(f"kv {ns}/{key}: keel answered HTTP {response.status}")
    version = parse_etag(response.headers.get("etag", ""))
    if version is None:
        raise Retryable(f"kv {ns}/{key}: no ETag version")
    try:
        value = json.loads(response.body)
    except ValueError as error:
        raise Permanent(f"kv {ns}/{key} does not hold the expected shape: {error}") from error
    return Versioned(value, version)
