"""End to end: a real ``keel serve`` running functions served by this SDK, called with this
SDK's client."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

import keel

T = TypeVar("T")


def eventually(what: str, probe: Callable[[], T | None], limit: float = 20.0) -> T:
    deadline = time.monotonic() + limit
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit}s: {what}")
        time.sleep(0.05)


@pytest.fixture()
def client(keel_server: Any) -> keel.Client:
    return keel.Client(keel_server.url)


def test_sync_invoke_carries_the_contract_into_ctx(client: keel.Client) -> None:
    reply = client.invoke("echo", {"hello": "world"})
    assert reply.status == 200, reply.text()
    body = reply.json()
    assert body["payload"] == {"hello": "world"}
    ctx = body["ctx"]
    assert ctx["invocation_id"] == reply.invocation_id
    assert ctx["attempt"] == 1 and reply.attempts == 1
    assert ctx["function"] == "echo"
    assert ctx["deadline_in_future"] is True
    assert ctx["idempotency_key"]  # stable for the invocation: Keel always sends one
    assert ctx["traceparent"] and ctx["traceparent"].startswith("00-")
    assert ctx["event"] is None and ctx["subscription"] is None
    assert not reply.replayed


def test_async_invoke_and_wait_for_the_result(client: keel.Client) -> None:
    accepted = client.invoke_async("async-echo", {"n": 1})
    assert accepted.status == "queued" and accepted.location == f"/v1/invocations/{accepted.id}"
    result = client.wait_result(accepted.id)
    assert result.json() == {"attempt": 1, "payload": {"n": 1}}
    invocation = client.get_invocation(accepted.id)
    assert invocation["status"] == "succeeded" and invocation["function"] == "async-echo"


def test_the_clients_idempotency_key_replays_the_stored_answer(client: keel.Client) -> None:
    key = f"py-replay-{time.time_ns()}"
    first = client.invoke("echo", {"x": 1}, idempotency_key=key)
    again = client.invoke("echo", {"x": 1}, idempotency_key=key)
    assert (first.status, again.status) == (200, 200)
    assert again.replayed and not first.replayed
    assert again.body == first.body, "the same answer, not a second run"
    assert again.invocation_id == first.invocation_id
    different = client.invoke("echo", {"x": 2}, idempotency_key=key)
    assert different.status == 422, different.text()
    with pytest.raises(keel.ApiError) as refused:
        different.raise_for_status()
    assert refused.value.status == 422

    # Async too: the same key and body answer the same invocation id.
    key = f"py-async-{time.time_ns()}"
    a = client.invoke_async("echo", {"y": 1}, idempotency_key=key)
    b = client.invoke_async("echo", {"y": 1}, idempotency_key=key)
    assert a.id == b.id and b.replayed
    # A key that needs quoting (a space) is sent as a structured-field string.
    spaced = client.invoke("echo", {"z": 1}, idempotency_key="order 42 " + key)
    assert spaced.status == 200 and not spaced.replayed, spaced.text()
    assert client.invoke("echo", {"z": 1}, idempotency_key="order 42 " + key).replayed


def test_effects_land_in_kv_and_events_are_published(client: keel.Client) -> None:
    key = f"k{time.time_ns()}"
    client.kv_put("things", f"{key}-write-old", {"stale": True})
    for function in ("write", "wsgi-write"):
        reply = client.invoke(function, {"key": f"{key}-{function}", "value": {"n": 7}})
        assert reply.status == 201, reply.text()
        assert reply.json() == {"wrote": f"{key}-{function}"}
        stored = client.kv_get("things", f"{key}-{function}")
        assert stored is not None and stored.value == {"n": 7} and stored.version >= 1
    assert client.kv_get("things", f"{key}-write-old") is None, "the delete effect applied"
    # The event it emitted was published to things.written.
    invocation = client.get_invocation(reply.invocation_id or "")
    assert invocation["status"] == "succeeded"

    # if_absent: a second write of the same key conflicts (retried, then failed): the value stays.
    again = client.invoke("write", {"key": f"{key}-write", "value": {"n": 8}})
    assert again.status >= 500, again.text()
    stored = client.kv_get("things", f"{key}-write")
    assert stored is not None and stored.value == {"n": 7}


def test_kv_reads_through_keel_and_if_version_writes(client: keel.Client) -> None:
    name = f"c{time.time_ns()}"
    assert [client.invoke("count", {"name": name}).json()["count"] for _ in range(3)] == [1, 2, 3]
    stored = client.kv_get("counters", name)
    assert stored is not None and stored.value == 3


def test_retryable_after_is_retried_no_sooner_than_retry_after(client: keel.Client) -> None:
    accepted = client.invoke_async("flaky", {})
    invocation = client.wait(accepted.id, timeout=30)
    assert invocation["status"] == "succeeded", invocation
    attempts = invocation["attempts"]
    assert len(attempts) == 2, attempts
    result = client.get_result(accepted.id).json()
    assert result["attempt"] == 2
    # Keel honoured Retry-After: 1 as the least delay (its backoff alone is 100 ms).
    first = attempts[0]
    started = [a.get("started_at") for a in attempts]
    assert first.get("status") in (503, None) or "503" in str(first), first
    assert all(started), attempts
    gap = _seconds(started[1]) - _seconds(started[0])
    assert gap >= 0.95, (gap, attempts)


def _seconds(rfc3339: str) -> float:
    from keel.context import parse_rfc3339

    moment = parse_rfc3339(rfc3339)
    assert moment is not None, rfc3339
    return moment.timestamp()


def test_an_unexpected_exception_is_a_500_and_retried(client: keel.Client) -> None:
    reply = client.invoke("crash", {})
    assert reply.status == 200, reply.text()
    assert reply.json() == {"attempt": 2} and reply.attempts == 2


def test_permanent_goes_to_the_dlq_without_a_retry(client: keel.Client) -> None:
    accepted = client.invoke_async("reject", {"sku": "nope"})
    invocation = client.wait(accepted.id, timeout=30)
    assert invocation["status"] == "dead", invocation
    assert len(invocation["attempts"]) == 1, "a permanent failure is not retried"
    assert "unknown product" in str(invocation.get("error")), invocation
    dlq = client.request("GET", "/v1/dlq?function=reject").raise_for_status().json()
    assert accepted.id in [item["id"] for item in dlq["items"]]
    with pytest.raises(keel.InvocationFailed) as failed:
        client.wait_result(accepted.id)
    assert failed.value.status == "dead"
    # A sync call passes the function's 4xx through.
    reply = client.invoke("reject", {})
    assert reply.status == 404 and reply.json()["detail"] == "unknown product"


def test_a_cloudevent_delivery_fills_ctx_event_and_subscription(client: keel.Client) -> None:
    event_id = f"evt-{time.time_ns()}"
    ids = client.publish(
        "things.created",
        event={
            "specversion": "1.0",
            "id": event_id,
            "source": "/tests/python",
            "type": "thing.created",
            "subject": "t1",
            "time": "2026-12-01T06:00:00Z",
            "datacontenttype": "application/json",
            "data": {"thing": 1},
        },
    )
    assert len(ids) == 1
    published = client.get_event(ids[0])
    assert published["ce_id"] == event_id and published["topic"] == "things.created"
    seen: Any = eventually("the delivery ran", lambda: client.kv_get("seen", event_id))
    ctx = seen.value["ctx"]
    assert seen.value["data"] == {"thing": 1}
    assert ctx["subscription"] == "things-seen"
    assert ctx["function"] == "on-event"
    event = ctx["event"]
    assert (event["id"], event["source"], event["type"], event["subject"]) == (
        event_id,
        "/tests/python",
        "thing.created",
        "t1",
    )
    assert event["specversion"] == "1.0"
    assert event["datacontenttype"] == "application/json"
    assert event["time"] == "2026-12-01T06:00:00Z"

    # Plain JSON is wrapped: type = the topic.
    [wrapped] = client.publish("things.created", {"thing": 2})
    ce_id = client.get_event(wrapped)["ce_id"]
    seen = eventually("the wrapped delivery ran", lambda: client.kv_get("seen", ce_id))
    assert seen.value["ctx"]["event"]["type"] == "things.created"
    assert seen.value["ctx"]["event"]["time"] is None
    deliveries = eventually(
        "the delivery is recorded as succeeded",
        lambda: [d for d in client.get_event(wrapped)["deliveries"] if d["status"] == "succeeded"] or None,
    )
    assert deliveries[0]["subscription"] == "things-seen"
    assert seen.value["data"] == {"thing": 2}
