"""Batch functions (``batch = { max_size, max_wait }`` in keel.toml): Keel sends up to
``max_size`` async invocations and event deliveries in one request. :func:`batch_handler` makes
a batch handler — a list of :class:`~keel.Request` in (one per item, each with its own
:class:`~keel.Ctx`: id, attempt, idempotency key, event), a :class:`BatchReply` out — into an
ordinary handler for :func:`keel.serve` (or the WSGI and ASGI adapters). A sync call reaches it
as a batch of one.

    import keel

    def index(items: list[keel.Request]) -> keel.BatchReply:
        reply = keel.BatchReply()
        for item in items:
            try:
                reply.result(item.ctx.invocation_id, {"indexed": item.json()["id"]})
            except keel.KeelError as error:   # this item only: retried or dead-lettered alone
                reply.fail(item.ctx.invocation_id, error)
        return reply

    keel.serve(keel.batch_handler(index))
"""

from __future__ import annotations

import base64
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

from .context import Ctx, Request
from .effects import Effects
from .errors import BadRequest, KeelError
from .reply import Reply

#: The content type of a batch request.
BATCH_CONTENT_TYPE = "application/vnd.keel.batch+json"

#: A batch handler: the items in, a :class:`BatchReply` (or an awaitable of one) out.
BatchHandler = Callable[[list[Request]], "BatchReply | Awaitable[BatchReply]"]


class BatchReply:
    """What a batch handler answers: which items failed, and what the others produced. An item
    not failed succeeded.

    >>> from keel import Permanent, Retryable
    >>> reply = BatchReply().result("a", {"ok": True}).fail("b", Retryable("busy", after=2))
    >>> reply.fail("c", Permanent("no such document")).to_json()["failed"]
    [{'id': 'b', 'error': 'busy', 'retry_after': 2}, {'id': 'c', 'error': 'no such document', 'permanent': True}]
    """

    def __init__(self) -> None:
        self._failed: list[tuple[str, KeelError]] = []
        self._results: list[tuple[str, Any]] = []
        self._effects: list[tuple[str, Effects]] = []

    def fail(self, id: str, error: KeelError) -> BatchReply:
        """Item ``id`` failed: retried after Keel's backoff (no sooner than the error's
        ``retry_after``) when the error is retryable, else dead-lettered."""
        self._failed.append((id, error))
        return self

    def result(self, id: str, result: Any) -> BatchReply:
        """Item ``id`` succeeded with ``result`` (JSON)."""
        self._results.append((id, result))
        return self

    def effects(self, id: str, effects: Effects) -> BatchReply:
        """Item ``id`` succeeded with ``effects``, committed with its completion."""
        self._effects.append((id, effects))
        return self

    def to_json(self) -> dict[str, Any]:
        """The answer as Keel reads it: ``{"failed": [...], "results": {...}, "effects": {...}}``."""
        failed = []
        for item_id, error in self._failed:
            item: dict[str, Any] = {"id": item_id, "error": error.message}
            if not error.is_retryable:
                item["permanent"] = True
            elif error.retry_after_secs is not None:
                item["retry_after"] = error.retry_after_secs
            failed.append(item)
        answer: dict[str, Any] = {"failed": failed}
        if self._results:
            answer["results"] = dict(self._results)
        if self._effects:
            answer["effects"] = {item_id: effects.to_json() for item_id, effects in self._effects}
        return answer

    def single(self, item_id: str) -> Any:
        """A sync call's answer (a batch of one): the item's error raised, or its effects, its
        result, or ``None`` (204)."""
        for item, error in self._failed:
            if item == item_id:
                raise error
        for item, effects in self._effects:
            if item == item_id:
                return effects
        for item, result in self._results:
            if item == item_id:
                return Reply.json(result)
        return None


def is_batch(request: Request) -> bool:
    """Whether ``request`` is a batch (its content type says so)."""
    media = (request.content_type or "").split(";")[0].strip().lower()
    return media == BATCH_CONTENT_TYPE


def read_items(request: Request) -> list[Request]:
    """The items of a batch request, each a :class:`~keel.Request` whose context is the batch's
    headers with the item's own."""
    try:
        wire = json.loads(request.body)
    except ValueError as error:
        raise BadRequest(f"malformed batch: {error}") from None
    if not isinstance(wire, list):
        raise BadRequest("malformed batch: not an array")
    items = []
    for item in wire:
        own = dict(request.headers)
        own.pop("content-type", None)
        own.update(
            {
                "keel-invocation-id": str(item["id"]),
                "keel-attempt": str(item["attempt"]),
                "idempotency-key": str(item["idempotency_key"]),
            }
        )
        if item.get("content_type") is not None:
            own["content-type"] = item["content_type"]
        if item.get("subscription") is not None:
            own["keel-subscription"] = item["subscription"]
        for name, value in (item.get("event") or {}).items():
            own[f"ce-{name}"] = str(value)
        if "payload" in item:
            payload = json.dumps(item["payload"], separators=(",", ":")).encode("utf-8")
        else:
            payload = base64.b64decode(item.get("payload_base64") or "")
        items.append(Request(Ctx.from_headers(own, keel_url=request.ctx.keel_url), payload, own, request.path))
    return items


def batch_handler(fn: BatchHandler) -> Callable[[Request], Any]:
    """An ordinary handler (for :func:`keel.serve`, WSGI or ASGI) that answers each batch with
    ``fn`` — a :class:`BatchReply` for Keel — and a sync call as a batch of one. An error raised
    by ``fn`` fails the whole batch (every item retried, or none when it is permanent)."""
    if inspect.iscoroutinefunction(fn):

        async def handle_async(request: Request) -> Any:
            items = read_items(request) if is_batch(request) else [request]
            reply = fn(items)
            return _answer(request, _settled(await reply if inspect.isawaitable(reply) else reply))

        return handle_async

    def handle(request: Request) -> Any:
        return _answer(request, _settled(fn(read_items(request) if is_batch(request) else [request])))

    return handle


def _answer(request: Request, reply: BatchReply) -> Any:
    if is_batch(request):
        return Reply.json(reply.to_json())
    return reply.single(request.ctx.invocation_id)


def _settled(reply: Any) -> BatchReply:
    if not isinstance(reply, BatchReply):
        raise TypeError(f"a batch handler returns a BatchReply, not {type(reply).__name__}")
    return reply
