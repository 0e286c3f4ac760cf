"""A batch function's handler: items in (each with its own context), per-item answers out; a
sync call reaches the same handler as a batch of one."""

from __future__ import annotations

import json
from typing import Any

from keel import BATCH_CONTENT_TYPE, BatchReply, Effects, Permanent, Request, Retryable, batch_handler
from keel.handler import respond


def index(items: list[Request]) -> BatchReply:
    reply = BatchReply()
    for item in items:
        item_id = item.ctx.invocation_id
        payload: Any = item.body.decode() if item.content_type == "text/plain" else item.json()
        if payload == "later":
            reply.fail(item_id, Retryable("busy", after=2))
        elif payload == "no":
            reply.fail(item_id, Permanent("refused"))
        elif payload == "effects":
            reply.effects(item_id, Effects().put("docs", item_id, 1))
        elif payload == "boom":
            raise Retryable("the index is down")
        else:
            event = item.ctx.event.type if item.ctx.event else None
            reply.result(
                item_id,
                {
                    "payload": payload,
                    "attempt": item.ctx.attempt,
                    "key": item.ctx.idempotency_key,
                    "function": item.ctx.function,
                    "event": event,
                    "subscription": item.ctx.subscription,
                },
            )
    return reply


BATCH = {"content-type": BATCH_CONTENT_TYPE, "keel-function": "index"}


def post(headers: dict[str, str], body: Any) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = respond(batch_handler(index), "POST", "/", list(headers.items()), raw)
    return answer.status, json.loads(answer.body) if answer.body else None


def test_a_batch_is_answered_per_item_each_with_its_own_context() -> None:
    status, answer = post(
        BATCH,
        [
            {
                "id": "a",
                "attempt": 1,
                "idempotency_key": "a",
                "payload": {"ok": True},
                "content_type": "application/json",
            },
            {"id": "b", "attempt": 3, "idempotency_key": "b", "payload": "later"},
            {"id": "c", "attempt": 1, "idempotency_key": "c", "payload": "no"},
            {"id": "d", "attempt": 1, "idempotency_key": "run/step", "payload": "effects"},
            {
                "id": "e",
                "attempt": 2,
                "idempotency_key": "e",
                "payload_base64": "aGk=",
                "content_type": "text/plain",
                "subscription": "welcome",
                "event": {"id": "e1", "type": "user.registered", "source": "s"},
            },
        ],
    )
    assert status == 200
    assert answer["failed"] == [
        {"id": "b", "error": "busy", "retry_after": 2},
        {"id": "c", "error": "refused", "permanent": True},
    ]
    assert answer["results"]["a"] == {
        "payload": {"ok": True},
        "attempt": 1,
        "key": "a",
        "function": "index",
        "event": None,
        "subscription": None,
    }
    assert answer["results"]["e"] == {
        "payload": "hi",
        "attempt": 2,
        "key": "e",
        "function": "index",
        "event": "user.registered",
        "subscription": "welcome",
    }
    assert answer["effects"]["d"]["kv"] == [{"ns": "docs", "key": "d", "value": 1}]


def test_an_error_fails_the_whole_batch_and_a_sync_call_is_a_batch_of_one() -> None:
    status, problem = post(BATCH, [{"id": "x", "attempt": 1, "idempotency_key": "x", "payload": "boom"}])
    assert (status, problem["detail"]) == (503, "the index is down")
    assert post(BATCH, b'{"not": "a batch"}')[0] == 400
    single = {"keel-invocation-id": "s1", "keel-attempt": "1", "content-type": "application/json"}
    status, result = post(single, {"n": 1})
    assert (status, result["payload"]) == (200, {"n": 1})
    assert post(single, "no")[0] == 422
    assert post(single, "later")[0] == 503
    status, envelope = post(single, "effects")
    assert (status, envelope["kv"][0]["key"]) == (200, "s1")
