"""Effects: what a function asks Keel to do when its invocation completes — KV writes with
version preconditions, and events to publish — committed atomically with the completion, or not
at all. A failed precondition applies nothing and Keel retries the invocation.

>>> effects = (Effects()
...     .result({"user_id": "u1"})
...     .put_if_absent("users", "u1", {"name": "Ada"})
...     .put_if_version("balances", "u1", 90, 7)
...     .delete("carts", "u1")
...     .emit(Event("user.registered", subject="u1", data={"user_id": "u1"})))
>>> effects.to_json() == {
...     "status": 200,
...     "result": {"user_id": "u1"},
...     "kv": [{"ns": "users", "key": "u1", "value": {"name": "Ada"}, "if_absent": True},
...            {"ns": "balances", "key": "u1", "value": 90, "if_version": 7},
...            {"ns": "carts", "key": "u1", "delete": True}],
...     "events": [{"topic": "user.registered", "type": "user.registered", "subject": "u1",
...                 "data": {"user_id": "u1"}}]}
True
"""

from __future__ import annotations

from typing import Any

from . import _json

#: The content type of an effects envelope.
EFFECTS_CONTENT_TYPE = "application/vnd.keel.effects+json"

_UNSET: Any = object()


def _version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"a KV version is an integer >= 0, not {version!r}")
    return version


class Event:
    """An event to publish on completion. Its CloudEvent ``type`` defaults to the topic; ``data``
    is left out unless given (``data=None`` sends ``null``)."""

    def __init__(self, topic: str, *, type: str | None = None, subject: str | None = None, data: Any = _UNSET) -> None:
        self.topic = topic
        self.type = topic if type is None else type
        self.subject = subject
        self._data = _UNSET if data is _UNSET else _json.to_value(data)

    def with_type(self, type: str) -> Event:
        """The CloudEvent ``type``, when it differs from the topic."""
        self.type = type
        return self

    def with_subject(self, subject: str) -> Event:
        self.subject = subject
        return self

    def with_data(self, data: Any) -> Event:
        self._data = _json.to_value(data)
        return self

    def to_json(self) -> dict[str, Any]:
        event: dict[str, Any] = {"topic": self.topic, "type": self.type}
        if self.subject is not None:
            event["subject"] = self.subject
        if self._data is not _UNSET:
            event["data"] = self._data
        return event

    def __repr__(self) -> str:
        return f"Event({self.to_json()!r})"


class Effects:
    """Builds the ``application/vnd.keel.effects+json`` envelope; return it from a handler.

    Status 200 and result ``null`` unless set; every method returns the builder. Values are
    anything JSON can represent (dataclasses become objects) and are copied when given; a value
    JSON cannot represent raises ``TypeError`` or ``ValueError`` at once.
    """

    def __init__(self, result: Any = None, *, status: int = 200) -> None:
        self._status = status
        self._result = _json.to_value(result)
        self._kv: list[dict[str, Any]] = []
        self._events: list[Event] = []

    def status(self, status: int) -> Effects:
        """The status the caller of a sync invocation sees (a 2xx)."""
        self._status = status
        return self

    def result(self, result: Any) -> Effects:
        """The invocation's result, as JSON."""
        self._result = _json.to_value(result)
        return self

    def put(self, ns: str, key: str, value: Any, *, if_version: int | None = None, if_absent: bool = False) -> Effects:
        """Writes ``value``: whatever the key holds, or only if the key does not exist yet
        (``if_absent``), or only if it is still at ``if_version`` (as read with
        :meth:`keel.Ctx.kv_get`: optimistic concurrency)."""
        write: dict[str, Any] = {"ns": ns, "key": key, "value": _json.to_value(value)}
        if if_absent:
            write["if_absent"] = True
        if if_version is not None:
            write["if_version"] = _version(if_version)
        self._kv.append(write)
        return self

    def put_if_absent(self, ns: str, key: str, value: Any) -> Effects:
        """Writes ``value`` only if the key does not exist yet."""
        return self.put(ns, key, value, if_absent=True)

    def put_if_version(self, ns: str, key: str, value: Any, version: int) -> Effects:
        """Writes ``value`` only if the key is still at ``version``."""
        return self.put(ns, key, value, if_version=version)

    def delete(self, ns: str, key: str, *, if_version: int | None = None) -> Effects:
        """Deletes the key (only if it is still at ``if_version``, when given)."""
        write: dict[str, Any] = {"ns": ns, "key": key}
        if if_version is not None:
            write["if_version"] = _version(if_version)
        write["delete"] = True
        self._kv.append(write)
        return self

    def delete_if_version(self, ns: str, key: str, version: int) -> Effects:
        """Deletes the key only if it is still at ``version``."""
        return self.delete(ns, key, if_version=version)

    def emit(
        self,
        event: Event | str,
        *,
        type: str | None = None,
        subject: str | None = None,
        data: Any = _UNSET,
    ) -> Effects:
        """Publishes an event when the invocation completes: an :class:`Event`, or a topic with
        the event's ``type``, ``subject`` and ``data``."""
        if isinstance(event, str):
            event = Event(event, type=type, subject=subject, data=data)
        self._events.append(event)
        return self

    def to_json(self) -> dict[str, Any]:
        """The envelope as JSON (``kv`` and ``events`` only when there are some)."""
        envelope: dict[str, Any] = {"status": self._status, "result": self._result}
        if self._kv:
            envelope["kv"] = [dict(w) for w in self._kv]
        if self._events:
            envelope["events"] = [e.to_json() for e in self._events]
        return envelope

    def to_bytes(self) -> bytes:
        """The envelope as Keel's Rust SDK writes it (compact, keys sorted)."""
        return _json.to_bytes(self.to_json(), sort_keys=True)

    def __repr__(self) -> str:
        return f"Effects({self.to_json()!r})"
