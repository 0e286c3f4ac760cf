"""The shared SDK contract suite (sdks/contract/cases.json) against every adapter of this SDK:
the built-in server (over real HTTP on 127.0.0.1:0), the WSGI and the ASGI application."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.asgi import asgi_app
from keel.wsgi import wsgi_app

CASES_FILE = Path(__file__).resolve().parents[2] / "contract" / "cases.json"
CASES: list[dict[str, Any]] = json.loads(CASES_FILE.read_text())["cases"]


def behaviour(spec: dict[str, Any]) -> keel.Handler:
    """The handler a case's ``handler`` describes (sdks/contract/README.md)."""

    def handler(req: keel.Request) -> Any:
        if "reply_json" in spec:
            return keel.Reply.json(spec["reply_json"], status=spec.get("status", 200))
        if "reply_text" in spec:
            return keel.Reply.text(spec["reply_text"])
        if spec.get("reply_empty"):
            return keel.Reply.empty()
        if spec.get("echo_json"):
            return keel.Reply.json(req.json())
        if spec.get("echo_text"):
            return keel.Reply.json({"body": req.body.decode("utf-8"), "content_type": req.content_type})
        if spec.get("echo_ctx"):
            ctx = req.ctx
            event = ctx.event
            return keel.Reply.json(
                {
                    "invocation_id": ctx.invocation_id,
                    "attempt": ctx.attempt,
                    "function": ctx.function,
                    "deadline_ms": None if ctx.deadline is None else round(ctx.deadline.timestamp() * 1000),
                    "idempotency_key": ctx.idempotency_key,
                    "traceparent": ctx.traceparent,
                    "tracestate": ctx.tracestate,
                    "token": ctx.token,
                    "subscription": ctx.subscription,
                    "event": None
                    if event is None
                    else {
                        "id": event.id,
                        "type": event.type,
                        "source": event.source,
                        "specversion": event.specversion,
                        "subject": event.subject,
                        "time": event.time,
                        "datacontenttype": event.datacontenttype,
                    },
                }
            )
        if "effects" in spec:
            effects = keel.Effects()
            if "status" in spec:
                effects.status(spec["status"])
            if "result" in spec:
                effects.result(spec["result"])
            for item in spec["effects"]:
                ((kind, args),) = item.items()
                args = dict(args)
                if kind == "put":
                    if args.pop("if_absent", False):
                        effects.put_if_absent(args["ns"], args["key"], args["value"])
                    elif "if_version" in args:
                        effects.put_if_version(args["ns"], args["key"], args["value"], args["if_version"])
                    else:
                        effects.put(args["ns"], args["key"], args["value"])
                elif kind == "delete":
                    if "if_version" in args:
                        effects.delete_if_version(args["ns"], args["key"], args["if_version"])
                    else:
                        effects.delete(args["ns"], args["key"])
                elif kind == "emit":
                    event_ = keel.Event(args["topic"])
                    if "type" in args:
                        event_.with_type(args["type"])
                    if "subject" in args:
                        event_.with_subject(args["subject"])
                    if "data" in args:
                        event_.with_data(args["data"])
                    effects.emit(event_)
                else:
                    raise AssertionError(f"unknown effect {kind}")
            return effects
        if "retryable" in spec:
            r = spec["retryable"]
            error: keel.KeelError = (
                keel.Retryable(after=r["after_secs"]) if r.get("after_secs") is not None else keel.Retryable("")
            )
            if "message" in r:
                error.with_message(r["message"])
            if r.get("status") is not None:
                error.with_status(r["status"])
            raise error
        if "permanent" in spec:
            p = spec["permanent"]
            error = keel.Permanent(p["message"])
            if p.get("status") is not None:
                error.with_status(p["status"])
            raise error
        if "bad_request" in spec:
            raise keel.BadRequest(spec["bad_request"])
        if "throw" in spec:
            raise RuntimeError(spec["throw"])
        raise AssertionError(f"unknown behaviour {spec}")

    return handler


def request_parts(request: dict[str, Any]) -> tuple[str, str, dict[str, str], bytes]:
    if "body_text" in request:
        body = request["body_text"].encode("utf-8")
    elif "body" in request:
        body = json.dumps(request["body"]).encode("utf-8")
    else:
        body = b""
    return request.get("method", "POST"), request.get("path", "/"), dict(request.get("headers", {})), body


Result = tuple[int, dict[str, str], bytes]


def via_server(handler: keel.Handler, method: str, path: str, headers: dict[str, str], body: bytes) -> Result:
    server = keel.make_server(handler, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if body or method in ("POST", "PUT", "PATCH"):
            connection.putheader("content-length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        server.shutdown()
        server.server_close()


def via_wsgi(handler: keel.Handler, method: str, path: str, headers: dict[str, str], body: bytes) -> Result:
    app = wsgi_app(handler)
    route, _, query = path.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": route,
        "QUERY_STRING": query,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ["HTTP_" + key] = value
    seen: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        seen["status"] = int(status.split()[0])
        seen["headers"] = {k.lower(): v for k, v in response_headers}

    data = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], data


def via_asgi(handler: keel.Handler, method: str, path: str, headers: dict[str, str], body: bytes) -> Result:
    app = asgi_app(handler)
    route, _, query = path.partition("?")
    scope = {
        "type": "http",
        "method": method,
        "path": route,
        "query_string": query.encode(),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
    }
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": body[:3], "more_body": True}, {"type": "http.request", "body": body[3:]}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    data = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, data


ADAPTERS = {"server": via_server, "wsgi": via_wsgi, "asgi": via_asgi}


def same(expected: Any, actual: Any) -> bool:
    """JSON equality (``true`` is not ``1``)."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(same(v, actual[k]) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(map(same, expected, actual))
    return bool(expected == actual)


def subset(expected: Any, actual: Any) -> bool:
    """``expected``'s keys in ``actual`` (recursively for objects; arrays compared whole)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and subset(v, actual[k]) for k, v in expected.items())
    return same(expected, actual)


def check(case: dict[str, Any], status: int, headers: dict[str, str], body: bytes) -> None:
    expect = case["expect"]
    assert status == expect["status"], body
    for name, value in expect.get("headers", {}).items():
        assert headers.get(name) == value, (name, headers)
    if "json" in expect:
        assert same(expect["json"], json.loads(body)), body
    if "json_subset" in expect:
        assert subset(expect["json_subset"], json.loads(body)), body
    if "body_text" in expect:
        assert body.decode("utf-8") == expect["body_text"]


def params() -> Iterator[Any]:
    for adapter in ADAPTERS:
        for case in CASES:
            yield pytest.param(adapter, case, id=f"{adapter}: {case['name']}")


@pytest.mark.parametrize(("adapter", "case"), list(params()))
def test_contract_case(adapter: str, case: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    method, path, headers, body = request_parts(case["request"])
    status, response_headers, data = ADAPTERS[adapter](behaviour(case["handler"]), method, path, headers, body)
    check(case, status, response_headers, data)


def test_the_suite_is_there_and_not_empty() -> None:
    assert len(CASES) >= 30
