"""The functions the end-to-end tests run under a real Keel: ``python functions.py NAME`` serves
one of them with the built-in server (``asgi``/``wsgi`` as a prefix serves it through that
adapter on wsgiref / a tiny asyncio server instead)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import keel


def ctx_json(ctx: keel.Ctx) -> dict[str, Any]:
    event = ctx.event
    return {
        "invocation_id": ctx.invocation_id,
        "attempt": ctx.attempt,
        "function": ctx.function,
        "idempotency_key": ctx.idempotency_key,
        "deadline_in_future": ctx.deadline is not None and (ctx.remaining() or 0) > 0,
        "traceparent": ctx.traceparent,
        "subscription": ctx.subscription,
        "has_token": ctx.token is not None,
        "event": None if event is None else event.to_json(),
    }


def echo(req: keel.Request) -> Any:
    """Answers its context and payload (and a counter of calls, to tell a replay from a rerun)."""
    echo.calls += 1  # type: ignore[attr-defined]
    return {"ctx": ctx_json(req.ctx), "payload": req.json(), "calls": echo.calls}  # type: ignore[attr-defined]


echo.calls = 0  # type: ignore[attr-defined]


def write(req: keel.Request) -> keel.Effects:
    """``{"key", "value"}``: puts ``things/{key}`` (if absent), deletes ``things/{key}-old``, emits
    ``things.written``."""
    body = req.json()
    return (
        keel.Effects({"wrote": body["key"]}, status=201)
        .put_if_absent("things", body["key"], body["value"])
        .delete("things", body["key"] + "-old")
        .emit("things.written", subject=body["key"], data=body)
    )


def count(req: keel.Request) -> keel.Effects:
    """Reads ``counters/{name}`` through Keel's KV API and writes it back + 1 with ``if_version``."""
    name = req.json()["name"]
    current = req.ctx.kv_get("counters", name)
    if current is None:
        return keel.Effects({"count": 1}).put_if_absent("counters", name, 1)
    return keel.Effects({"count": current.value + 1}).put_if_version(
        "counters", name, current.value + 1, current.version
    )


def flaky(req: keel.Request) -> Any:
    """Fails the first attempt with ``Retryable(after=1)``; the second answers when it ran."""
    if req.ctx.attempt == 1:
        raise keel.Retryable("not yet", after=1)
    return {"attempt": req.ctx.attempt, "at": time.time()}


def reject(req: keel.Request) -> Any:
    raise keel.Permanent("unknown product", status=404)


def crash(req: keel.Request) -> Any:
    """An unexpected exception on the first attempt (a 500, retried); fine on the next."""
    if req.ctx.attempt == 1:
        raise RuntimeError("a bug")
    return {"attempt": req.ctx.attempt}


def on_event(req: keel.Request) -> keel.Effects:
    """A subscriber: stores what it was told of the delivery under ``seen/{event id}``."""
    assert req.ctx.event is not None
    seen = {"ctx": ctx_json(req.ctx), "data": req.json()}
    return keel.Effects(seen).put("seen", req.ctx.event.id, seen)


async def async_echo(req: keel.Request) -> Any:
    return {"attempt": req.ctx.attempt, "payload": req.json()}


def peek(req: keel.Request) -> Any:
    """Reads ``counters/{name}`` with the attempt's function token."""
    found = req.ctx.kv_get("counters", req.json()["name"])
    return {"has_token": req.ctx.token is not None, "value": None if found is None else found.value}


def call_dep(req: keel.Request) -> Any:
    """Calls the ``stub`` dependency through Keel's egress and answers what it answered."""
    answer = req.ctx.dependency("stub").post("/charge?currency=eur", query={"note": "a b"}, json={"cents": 5})
    return {"status": answer.status, "body": answer.raise_for_status().json()}


FUNCTIONS = {
    "echo": echo,
    "write": write,
    "count": count,
    "flaky": flaky,
    "reject": reject,
    "crash": crash,
    "on-event": on_event,
    "async-echo": async_echo,
    "peek": peek,
    "call-dep": call_dep,
}


def serve_wsgi(handler: keel.Handler) -> None:
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    from keel.wsgi import wsgi_app

    make_server("127.0.0.1", int(os.environ["PORT"]), wsgi_app(handler), handler_class=Quiet).serve_forever()


if __name__ == "__main__":
    if sys.argv[1] == "wsgi":
        serve_wsgi(FUNCTIONS[sys.argv[2]])
    else:
        keel.serve(FUNCTIONS[sys.argv[1]])
