"""What a handler answers when it succeeds: a status, a content type and a body — usually JSON,
or an :class:`~keel.Effects` envelope.

>>> reply = Reply.json({"ok": True}, status=201)
>>> (reply.status, reply.body)
(201, b'{"ok":true}')
>>> Reply.empty().status
204
"""

from __future__ import annotations

from typing import Any

from . import _json
from .effects import EFFECTS_CONTENT_TYPE, Effects


class Reply:
    """A successful answer. A handler may also return an :class:`~keel.Effects` (answered 200
    with the effects content type), ``None`` (204), ``bytes`` (``application/octet-stream``),
    or any other value, answered as JSON."""

    def __init__(
        self,
        body: bytes = b"",
        *,
        status: int = 200,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.body = body
        self.status = status
        self.content_type = content_type
        self.headers = dict(headers or {})

    @classmethod
    def json(cls, value: Any, *, status: int = 200) -> Reply:
        """``status`` with ``value`` as JSON."""
        return cls(_json.to_bytes(value), status=status, content_type="application/json")

    @classmethod
    def text(cls, text: str, *, status: int = 200) -> Reply:
        """``status`` with a plain-text body."""
        return cls(text.encode("utf-8"), status=status, content_type="text/plain; charset=utf-8")

    @classmethod
    def empty(cls) -> Reply:
        """204, no body."""
        return cls(b"", status=204)

    @classmethod
    def effects(cls, effects: Effects) -> Reply:
        """The envelope, answered 200 with the effects content type; the status the caller sees
        is the envelope's own."""
        return cls(effects.to_bytes(), status=200, content_type=EFFECTS_CONTENT_TYPE)

    def with_status(self, status: int) -> Reply:
        self.status = status
        return self

    @classmethod
    def of(cls, value: Any) -> Reply:
        """The reply a handler's return value stands for."""
        if isinstance(value, Reply):
            return value
        if isinstance(value, Effects):
            return cls.effects(value)
        if value is None:
            return cls.empty()
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls(bytes(value), content_type="application/octet-stream")
        return cls.json(value)

    def __repr__(self) -> str:
        return f"Reply(status={self.status}, content_type={self.content_type!r}, body={self.body[:80]!r})"
