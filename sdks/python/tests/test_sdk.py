"""Unit tests of the SDK's parts: errors, effects, ctx, KV reads and egress against a stand-in
for Keel, the client's headers, the built-in server's shutdown."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.client import _duration, idempotency_header
from keel.context import parse_rfc3339
from keel.errors import format_duration
from keel.handler import respond
from keel.kv import parse_etag

# -- errors ---------------------------------------------------------------------------------


def test_errors_map_to_the_statuses_keel_retries_or_dead_letters() -> None:
    assert keel.Retryable("down").status == 503 and keel.Retryable("down").is_retryable
    assert keel.Permanent("no").status == 422 and not keel.Permanent("no").is_retryable
    assert keel.Permanent("taken", status=409).status == 409
    assert keel.BadRequest("bad").status == 400
    # A status of the wrong class is ignored, as the Rust SDK's with_status does.
    assert keel.Permanent("x", status=429).status == 422
    assert keel.Permanent("x", status=500).status == 422
    assert keel.Retryable("x", status=404).status == 503
    assert keel.Retryable("x", status=502).status == 502


def test_retry_after_rounds_up_and_says_so() -> None:
    assert keel.Retryable(after=3).retry_after_secs == 3
    assert keel.Retryable(after=0.01).retry_after_secs == 1
    assert keel.Retryable(after=timedelta(milliseconds=1500)).retry_after_secs == 2
    assert keel.Retryable("x").retry_after_secs is None
    assert keel.Retryable(after=2).message == "retry after 2s"
    assert keel.Retryable("busy", after=2).message == "busy"
    assert format_duration(3661.5) == "1h 1m 1s 500ms"
    assert format_duration(90000) == "1day 1h"
    with pytest.raises(ValueError):
        keel.Retryable(after=-1)


# -- effects --------------------------------------------------------------------------------


def test_the_envelope_is_byte_for_byte_what_the_rust_sdk_writes() -> None:
    effects = (
        keel.Effects()
        .result({"user_id": "u1"})
        .put_if_absent("users", "u1", {"name": "Ada"})
        .put_if_version("balances", "u1", 90, 7)
        .delete("carts", "u1")
        .emit(keel.Event("user.registered", subject="u1", data={"user_id": "u1"}))
    )
    # serde_json without preserve_order: object keys sorted, compact.
    assert effects.to_bytes() == (
        b'{"events":[{"data":{"user_id":"u1"},"subject":"u1","topic":"user.registered","type":"user.registered"}],'
        b'"kv":[{"if_absent":true,"key":"u1","ns":"users","value":{"name":"Ada"}},'
        b'{"if_version":7,"key":"u1","ns":"balances","value":90},{"delete":true,"key":"u1","ns":"carts"}],'
        b'"result":{"user_id":"u1"},"status":200}'
    )
    assert keel.Effects().to_json() == {"status": 200, "result": None}


def test_the_builder_takes_keyword_preconditions_and_copies_values() -> None:
    value = {"n": 1}
    effects = (
        keel.Effects(status=201)
        .put("a", "k", value, if_version=0)
        .delete("a", "old", if_version=3)
        .emit("orders", type="order.placed")
    )
    value["n"] = 2
    assert effects.to_json() == {
        "status": 201,
        "result": None,
        "kv": [
            {"ns": "a", "key": "k", "value": {"n": 1}, "if_version": 0},
            {"ns": "a", "key": "old", "if_version": 3, "delete": True},
        ],
        "events": [{"topic": "orders", "type": "order.placed"}],
    }
    with pytest.raises(ValueError):
        keel.Effects().put("a", "k", 1, if_version=-1)
    with pytest.raises(TypeError):
        keel.Effects().put("a", "k", object())
    with pytest.raises(ValueError):
        keel.Effects().result(float("nan"))


# -- ctx ------------------------------------------------------------------------------------


def test_deadlines_are_rfc3339() -> None:
    moment = parse_rfc3339("2030-01-01T00:00:00.250Z")
    assert moment is not None and round(moment.timestamp() * 1000) == 1893456000250
    moment = parse_rfc3339("2030-01-01T01:00:00+01:00")
    assert moment is not None and moment.timestamp() == 1893456000
    assert parse_rfc3339("tomorrow") is None
    assert parse_rfc3339("2030-13-01T00:00:00Z") is None
    ctx = keel.Ctx.from_headers({"keel-deadline": "2999-01-01T00:00:00Z"})
    assert ctx.remaining() is not None and (ctx.remaining() or 0) > 0
    assert keel.Ctx.from_headers({"keel-deadline": "2000-01-01T00:00:00Z"}).remaining() == 0.0


def test_a_handler_may_return_plain_values_or_be_async() -> None:
    def status(handler: keel.Handler, body: bytes = b"{}") -> tuple[int, bytes, str | None]:
        answer = respond(handler, "POST", "/", {}, body)
        return answer.status, answer.body, answer.header("content-type")

    assert status(lambda req: {"a": 1}) == (200, b'{"a":1}', "application/json")
    assert status(lambda req: None) == (204, b"", None)
    assert status(lambda req: b"raw") == (200, b"raw", "application/octet-stream")

    async def later(req: keel.Request) -> Any:
        return {"attempt": req.ctx.attempt}

    assert status(later) == (200, b'{"attempt":1}', "application/json")
    # A value JSON cannot represent is the handler's bug: a 500, retried.
    assert status(lambda req: {"x": object()})[0] == 500
    assert status(lambda req: req.json(), b"nope")[0] == 400


# -- a stand-in for Keel --------------------------------------------------------------------


class FakeKeel:
    """Answers every request with ``status``, ``headers`` and ``body``; records what it got."""

    def __init__(self) -> None:
        self.status = 200
        self.headers: dict[str, str] = {}
        self.body = b""
        self.seen: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                fake.seen.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": self.rfile.read(length),
                    }
                )
                self.send_response(fake.status)
                for name, value in fake.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(fake.body)))
                self.end_headers()
                self.wfile.write(fake.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, status: int, body: bytes | str = b"", **headers: str) -> FakeKeel:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.headers = {k.replace("_", "-"): v for k, v in headers.items()}
        return self


@pytest.fixture()
def fake() -> Iterator[FakeKeel]:
    server = FakeKeel()
    yield server
    server.server.shutdown()
    server.server.server_close()


def ctx(url: str, token: str | None = "function-token") -> keel.Ctx:
    headers = {
        "keel-invocation-id": "inv1",
        "keel-attempt": "2",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "k=v",
    }
    if token:
        headers["authorization"] = f"Bearer {token}"
    return keel.Ctx.from_headers(headers, keel_url=url)


PROBLEM = "application/problem+json"


def test_kv_reads_send_the_token_and_read_the_etag(fake: FakeKeel) -> None:
    fake.answer(200, '{"name":"Ada"}', etag='"7"')
    found = ctx(fake.url).kv_get("users", "ada@example.com")
    assert found == keel.Versioned({"name": "Ada"}, 7)
    seen = fake.seen[-1]
    assert seen["path"] == "/v1/kv/users/ada@example.com"
    assert seen["headers"]["authorization"] == "Bearer function-token"
    fake.answer(404)
    assert ctx(fake.url, token=None).kv_get("users", "a/b c") is None
    assert fake.seen[-1]["path"] == "/v1/kv/users/a%2Fb%20c"
    assert "authorization" not in fake.seen[-1]["headers"]
    fake.answer(500, "boom")
    with pytest.raises(keel.Retryable):
        ctx(fake.url).kv_get("users", "u1")
    fake.answer(200, "not json", etag='"1"')
    with pytest.raises(keel.Permanent):
        ctx(fake.url).kv_get("users", "u1")
    with pytest.raises(keel.Retryable, match="KEEL_URL"):
        keel.Ctx(keel_url="").kv_get("users", "u1")
    assert (parse_etag('W/"12"'), parse_etag('"x"')) == (12, None)


def test_egress_sends_method_path_query_headers_body_token_and_trace(fake: FakeKeel) -> None:
    fake.answer(201, '{"id":"ch_1"}', content_type="application/json", x_charge="ch_1")
    response = (
        ctx(fake.url + "/")
        .dependency("payments")
        .post(
            "/charges?expand=customer",
            query=[("currency", "eur"), ("note", "a b&c")],
            headers={"x-request-source": "signup", "idempotency-key": "order-42", "authorization": "Bearer other"},
            json={"cents": 500},
        )
    )
    seen = fake.seen[-1]
    assert seen["method"] == "POST"
    assert seen["path"] == "/v1/egress/payments/charges?expand=customer&currency=eur&note=a+b%26c"
    headers = seen["headers"]
    assert headers["keel-invocation-id"] == "inv1"
    assert headers["x-request-source"] == "signup"
    assert headers["idempotency-key"] == "order-42"
    assert headers["content-type"] == "application/json"
    assert headers["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert headers["tracestate"] == "k=v"
    assert headers["authorization"] == "Bearer function-token", "the function's own cannot replace the token"
    assert json.loads(seen["body"]) == {"cents": 500}
    assert (response.status, response.ok, response.header("X-Charge")) == (201, True, "ch_1")
    assert response.json() == {"id": "ch_1"}

    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS"):
        ctx(fake.url, token=None).dependency("payments").request(method, "charges/ch_1", body="raw")
        seen = fake.seen[-1]
        assert (seen["method"], seen["path"]) == (method, "/v1/egress/payments/charges/ch_1")
        assert "authorization" not in seen["headers"]


@pytest.mark.parametrize(
    ("status", "problem", "retry_after", "kind", "answer_status", "answer_retry"),
    [
        (503, "breaker-open", "7", keel.EgressErrorKind.BREAKER_OPEN, 503, "7"),
        (429, "rate-limited", "2", keel.EgressErrorKind.RATE_LIMITED, 503, "2"),
        (503, "bulkhead-full", "2", keel.EgressErrorKind.BULKHEAD_FULL, 503, "2"),
        (504, "dependency-timeout", None, keel.EgressErrorKind.TIMEOUT, 503, None),
        (502, "dependency-unreachable", None, keel.EgressErrorKind.UNREACHABLE, 503, None),
        (403, "forbidden", None, keel.EgressErrorKind.FORBIDDEN, 422, None),
    ],
)
def test_keels_refusals_become_the_functions_retry(
    fake: FakeKeel,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    problem: str,
    retry_after: str | None,
    kind: keel.EgressErrorKind,
    answer_status: int,
    answer_retry: str | None,
) -> None:
    headers = {"content_type": PROBLEM}
    if retry_after:
        headers["retry_after"] = retry_after
    body = json.dumps({"type": f"urn:keel:problem:{problem}", "status": status, "detail": "payments is unwell"})
    fake.answer(status, body, **headers)
    with pytest.raises(keel.EgressError) as raised:
        ctx(fake.url).dependency("payments").post("/charges")
    error = raised.value
    assert (error.kind, error.dependency, error.detail) == (kind, "payments", "payments is unwell")
    assert error.is_retryable == (kind is not keel.EgressErrorKind.FORBIDDEN)

    # Left to propagate out of a handler: the function's answer.
    monkeypatch.setenv("KEEL_URL", fake.url)

    def handler(req: keel.Request) -> Any:
        return req.ctx.dependency("payments").post("/charges").json()

    answer = respond(handler, "POST", "/", {"keel-invocation-id": "inv1"}, b"{}")
    assert answer.status == answer_status
    assert answer.header("retry-after") == answer_retry


def test_the_dependencys_own_answers_are_responses(fake: FakeKeel) -> None:
    fake.answer(500, "boom", content_type="text/plain", retry_after="3")
    response = ctx(fake.url).dependency("payments").post("/charges")
    assert (response.status, response.ok, response.body) == (500, False, b"boom")
    with pytest.raises(keel.Retryable) as not_json:
        response.json()
    assert not_json.value.status == 502
    with pytest.raises(keel.Retryable) as failed:
        response.raise_for_status()
    assert (failed.value.status, failed.value.retry_after_secs) == (503, 3)
    # Only Keel's types at Keel's statuses are Keel's.
    fake.answer(503, '{"type":"about:blank","status":503}', content_type=PROBLEM)
    assert ctx(fake.url).dependency("payments").get("/").status == 503
    fake.answer(500, '{"type":"urn:keel:problem:breaker-open","status":503}', content_type=PROBLEM)
    assert ctx(fake.url).dependency("payments").get("/").status == 500
    fake.answer(403, "no")
    with pytest.raises(keel.Permanent):
        ctx(fake.url).dependency("payments").get("/").raise_for_status()


def test_egress_without_keel_or_with_an_invalid_request_fails_before_sending(fake: FakeKeel) -> None:
    with pytest.raises(keel.EgressError) as no_keel:
        keel.Ctx(keel_url="").dependency("payments").get("/")
    assert no_keel.value.kind is keel.EgressErrorKind.INVALID_REQUEST and not no_keel.value.is_retryable
    with pytest.raises(keel.EgressError) as bad_header:
        ctx(fake.url).dependency("payments").get("/", headers={"bad header": "x"})
    assert bad_header.value.kind is keel.EgressErrorKind.INVALID_REQUEST
    assert fake.seen == [], "nothing was sent"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    with pytest.raises(keel.EgressError) as down:
        ctx(url).dependency("payments").get("/")
    assert down.value.kind is keel.EgressErrorKind.KEEL_UNAVAILABLE and down.value.is_retryable


# -- the client -----------------------------------------------------------------------------


def test_idempotency_keys_are_sent_bare_or_quoted() -> None:
    assert idempotency_header("order-42") == "order-42"
    assert idempotency_header("order 42") == '"order 42"'
    assert idempotency_header('say "hi"\\') == '"say \\"hi\\"\\\\"'
    for bad in ("", "x" * 256, "café", "tab\t"):
        with pytest.raises(ValueError):
            idempotency_header(bad)
    assert (_duration(30), _duration(timedelta(seconds=1.5)), _duration("5m")) == ("30000ms", "1500ms", "5m")


def test_the_client_sends_the_api_key_key_and_delay(fake: FakeKeel) -> None:
    fake.answer(
        202, '{"id":"inv9","status":"queued"}', location="/v1/invocations/inv9", content_type="application/json"
    )
    client = keel.Client(fake.url, api_key="keel_sk_x")
    accepted = client.invoke_async("re size", {"a": 1}, idempotency_key="k 1", delay=2)
    assert accepted == keel.Accepted("inv9", "queued", False, "/v1/invocations/inv9")
    seen = fake.seen[-1]
    assert seen["path"] == "/v1/functions/re%20size/invocations"
    headers = seen["headers"]
    assert headers["authorization"] == "Bearer keel_sk_x"
    assert (headers["idempotency-key"], headers["keel-delay"]) == ('"k 1"', "2000ms")
    assert headers["content-type"] == "application/json" and seen["body"] == b'{"a":1}'

    fake.answer(409, '{"type":"urn:keel:problem:in-flight","detail":"busy"}', content_type=PROBLEM, retry_after="1")
    with pytest.raises(keel.ApiError) as refused:
        client.invoke_async("f", {})
    assert (refused.value.status, refused.value.detail, refused.value.retry_after) == (409, "busy", 1)

    fake.answer(202, '{"ids":["e1","e2"]}', content_type="application/json")
    assert client.publish("t", events=[{"id": "1"}, {"id": "2"}]) == ["e1", "e2"]
    assert fake.seen[-1]["headers"]["content-type"] == "application/cloudevents-batch+json"
    with pytest.raises(ValueError):
        client.publish("t")


# -- the built-in server --------------------------------------------------------------------

SLOW = """
import sys, time
sys.path.insert(0, {src!r})
import keel

def slow(req):
    time.sleep(float(req.json()["secs"]))
    return {{"slept": req.json()["secs"]}}

keel.serve(slow)
"""


def test_sigterm_lets_requests_in_flight_finish(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    program = tmp_path / "slow.py"
    program.write_text(SLOW.format(src=str(Path(keel.__file__).parents[1])))
    process = subprocess.Popen([sys.executable, str(program)], env={**os.environ, "PORT": str(port)})
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/", body=b'{"secs": 0.5}')
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b'{"slept":0.5}')
        assert process.wait(timeout=10) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
