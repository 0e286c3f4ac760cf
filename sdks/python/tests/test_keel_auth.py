"""End to end with Keel's auth on: the client's API key, and the function token the SDK sends
with its KV reads and egress calls."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import keel
from keel_harness import RETRY, create_key, function, start_keel, stop_keel, write_config

INIT_PROFILE = Path(__file__).resolve().parents[3] / "examples" / "backend" / "functions-py" / "init_profile.py"


class Stub(BaseHTTPRequestHandler):
    """A dependency that answers what it received."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        answer = json.dumps(
            {
                "path": self.path,
                "body": json.loads(body),
                "idempotency_key": self.headers.get("idempotency-key"),
                "authorization": self.headers.get("authorization"),
                "content_type": self.headers.get("content-type"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    stub = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    home: Path = tmp_path_factory.mktemp("keel-auth")
    body = (
        '[auth]\nmode = "keys"\n\n'
        f'[dependencies.stub]\nurl = "http://127.0.0.1:{stub.server_address[1]}"\ntimeout = "2s"\n\n'
        + function("peek", "peek", extra=f'grants = {{ kv = ["counters:read"] }}\n{RETRY}')
        + function("call-dep", "call-dep", extra=f'dependencies = ["stub"]\n{RETRY}')
        + function("call-undeclared", "call-dep", extra=RETRY)
        # The example backend's Python init-profile, with the grants keel.toml gives it.
        + f'[functions.init-profile]\ncommand = ["{sys.executable}", "{INIT_PROFILE}"]\n'
        + 'grants = { kv = ["profiles:write"] }\n'
        + '[topics."user.registered"]\n'
        + '[[subscriptions]]\nname = "profile"\ntopic = "user.registered"\nfunction = "init-profile"\n'
    )
    write_config(home, body)
    secret = create_key(home, "admin")
    server = start_keel(home)
    yield server.url, secret
    stop_keel(server)
    stub.shutdown()


def test_without_the_api_key_keel_answers_401(secured: tuple[str, str]) -> None:
    url, _ = secured
    reply = keel.Client(url, api_key="").invoke("peek", {"name": "x"})
    assert reply.status == 401
    with pytest.raises(keel.ApiError) as refused:
        keel.Client(url, api_key="").invoke_async("peek", {"name": "x"})
    assert refused.value.status == 401


def test_kv_reads_carry_the_function_token(secured: tuple[str, str]) -> None:
    url, secret = secured
    client = keel.Client(url, api_key=secret)
    name = f"n{time.time_ns()}"
    client.kv_put("counters", name, 41)
    reply = client.invoke("peek", {"name": name})
    assert reply.status == 200, reply.text()
    assert reply.json() == {"has_token": True, "value": 41}


def test_egress_calls_the_dependency_with_keels_key_and_not_the_token(secured: tuple[str, str]) -> None:
    url, secret = secured
    client = keel.Client(url, api_key=secret)
    reply = client.invoke("call-dep", {})
    assert reply.status == 200, reply.text()
    answer = reply.json()
    assert answer["status"] == 200
    seen = answer["body"]
    assert seen["path"] == "/charge?currency=eur&note=a+b"
    assert seen["body"] == {"cents": 5} and seen["content_type"] == "application/json"
    assert seen["authorization"] is None, "the function token is for Keel, never forwarded"
    assert seen["idempotency_key"] == f"{reply.invocation_id}/stub/1"


def test_egress_to_an_undeclared_dependency_is_a_permanent_422(secured: tuple[str, str]) -> None:
    url, secret = secured
    client = keel.Client(url, api_key=secret)
    reply = client.invoke("call-undeclared", {})
    assert reply.status == 422, reply.text()
    assert reply.attempts == 1
    assert "stub: forbidden" in reply.json()["detail"]


def test_the_example_init_profile_writes_the_profile_of_a_registered_user(secured: tuple[str, str]) -> None:
    url, secret = secured
    client = keel.Client(url, api_key=secret)
    user_id = f"ada{time.time_ns()}@example.com"
    user = {"user_id": user_id, "email": user_id, "name": "Ada"}
    [event_id] = client.publish("user.registered", user)
    deadline = time.monotonic() + 20
    while (profile := client.kv_get("profiles", user_id)) is None:
        assert time.monotonic() < deadline, client.get_event(event_id)
        time.sleep(0.05)
    assert profile.value == {"display_name": "Ada", "bio": "", "avatar_url": None}
    [delivery] = client.get_event(event_id)["deliveries"]
    invocation = client.wait(delivery["invocation_id"])
    assert invocation["status"] == "succeeded"
    assert invocation["result"] == {"display_name": "Ada", "bio": "", "avatar_url": None}
    # A body that is not a user is a 400: dead at once, like the Rust function.
    bad = client.invoke("init-profile", {"email": "x"})
    assert bad.status == 400 and bad.attempts == 1, bad.text()
