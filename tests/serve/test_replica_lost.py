"""The proxy middleware `ReplicaLost` as a plain ASGI app (no Ray), and `ServeOptions.check()`.

The inner apps stand in for Ray Serve's proxy forwarding to a replica: one that returns without an
answer is what the proxy does when the replica died mid-request.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from restyle.errors import InvalidParameterError
from restyle.serve import ray_app
from restyle.serve.ray_app import LOST, REPEATABLE, ReplicaLost, ServeOptions

Message = dict[str, Any]


# --- a client and fake replicas -------------------------------------------------------------------------
class Client:
    """The client side of one request: its receive() hands out `messages` in order (a disconnect when they
    run out), its send() keeps what the middleware answered."""

    def __init__(self, *messages: Message) -> None:
        self.messages = list(messages)
        self.received = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.received += 1
        if self.messages:
            return self.messages.pop(0)
        return {"type": "http.disconnect", "fabricated_by": "test client"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        assert len(starts) == 1, self.sent
        return starts[0]["status"]

    @property
    def headers(self) -> dict[str, str]:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start.get("headers", [])}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def scope(method: str = "POST", path: str = "/invocations", headers: list[tuple[bytes, bytes]] | None = None):
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *(headers or [])],
    }


def request(body: bytes, *, more_body: bool = False) -> Message:
    return {"type": "http.request", "body": body, "more_body": more_body}


async def read_all(receive: Any) -> tuple[bytes, list[Message]]:
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    return b"".join(m.get("body", b"") for m in messages), messages


async def answer(send: Any, status: int, payload: Any, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


FROM_RB = [(b"x-restyle-replica", b"rb")]


class Replica:
    """A fake inner app: call n (from 1) does `behaviour[n - 1]` (the last one repeats) after reading the
    whole body; it records every call's body bytes and messages."""

    def __init__(self, *behaviour: str) -> None:
        self.behaviour = behaviour
        self.calls = 0
        self.bodies: list[bytes] = []
        self.messages: list[list[Message]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        what = self.behaviour[min(self.calls, len(self.behaviour)) - 1]
        body, messages = await read_all(receive)
        self.bodies.append(body)
        self.messages.append(messages)
        if what == "die":  # Ray's proxy when the replica died: returns without an answer
            return
        if what == "raise":
            raise ConnectionError("actor died")
        if what == "ok":
            await answer(send, 200, {"ok": True, "call": self.calls}, FROM_RB)
        elif what == "restyle-500":
            await answer(send, 500, {"error": "internal", "message": "restyle failed"}, FROM_RB)
        elif what == "bare-500":  # a 500 that no restyle replica wrote
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b"Internal Server Error"})
        else:
            raise AssertionError(what)


def run(app: Any, client: Client, sc: dict[str, Any] | None = None) -> None:
    asyncio.run(app(sc or scope(), client.receive, client.send))


def assert_lost(client: Client) -> None:
    assert client.status == 503
    assert json.loads(client.body) == LOST
    assert client.headers["retry-after"]
    assert client.headers["content-type"] == "application/json"
    assert int(client.headers["content-length"]) == len(client.body)


BODY = json.dumps({"image": "aGVsbG8=", "prompt": "a red skirt", "seed": 7}).encode()


# --- retried or answered as lost --------------------------------------------------------------------------
def test_a_repeatable_request_is_sent_again_when_the_replica_died():
    inner = Replica("die", "ok")
    client = Client(request(BODY))
    run(ReplicaLost(inner), client)
    assert inner.calls == 2
    assert inner.bodies == [BODY, BODY]
    assert client.status == 200
    assert client.headers["x-restyle-replica"] == "rb"
    assert json.loads(client.body) == {"ok": True, "call": 2}
    assert client.received == 1  # the body was read once from the client and replayed


def test_every_image_route_is_repeatable_but_jobs_is_not():
    assert ("POST", "/invocations") in REPEATABLE
    assert ("POST", "/v1/style") in REPEATABLE
    assert ("POST", "/v1/jobs") not in REPEATABLE


def test_a_job_submission_is_not_repeated():
    inner = Replica("die", "ok")
    client = Client(request(BODY))
    run(ReplicaLost(inner), client, scope(path="/v1/jobs"))
    assert inner.calls == 1
    assert inner.bodies == [BODY]
    assert_lost(client)


def test_a_request_with_a_client_job_id_is_not_repeated():
    inner = Replica("die", "ok")
    client = Client(request(BODY))
    run(ReplicaLost(inner), client, scope(headers=[(b"X-Restyle-Job-Id", b"abc123")]))
    assert inner.calls == 1
    assert_lost(client)


def test_a_read_is_repeatable():
    inner = Replica("die", "ok")
    client = Client(request(b""))
    run(ReplicaLost(inner), client, scope(method="GET", path="/v1/jobs/abc"))
    assert inner.calls == 2
    assert client.status == 200


def test_a_repeatable_request_lost_on_every_try_is_answered_as_lost():
    inner = Replica("die")
    client = Client(request(BODY))
    run(ReplicaLost(inner), client)
    assert inner.calls == 2  # one retry
    assert_lost(client)


def test_retries_zero_sends_once():
    inner = Replica("die", "ok")
    client = Client(request(BODY))
    run(ReplicaLost(inner, retries=0), client)
    assert inner.calls == 1
    assert_lost(client)


def test_restyles_own_500_is_passed_through():
    inner = Replica("restyle-500", "ok")
    client = Client(request(BODY))
    run(ReplicaLost(inner), client)
    assert inner.calls == 1
    assert client.status == 500
    assert client.headers["x-restyle-replica"] == "rb"
    assert json.loads(client.body) == {"error": "internal", "message": "restyle failed"}


def test_a_500_no_replica_wrote_is_lost_and_retried():
    inner = Replica("bare-500", "ok")
    client = Client(request(BODY))
    run(ReplicaLost(inner), client)
    assert inner.calls == 2
    assert client.status == 200  # exactly one response start: nothing of the bare 500 went out
    assert b"Internal Server Error" not in client.body
    assert json.loads(client.body) == {"ok": True, "call": 2}


def test_a_500_no_replica_wrote_on_a_job_submission_is_lost():
    inner = Replica("bare-500")
    client = Client(request(BODY))
    run(ReplicaLost(inner), client, scope(path="/v1/jobs"))
    assert inner.calls == 1
    assert_lost(client)


def test_an_app_raising_before_an_answer_is_lost():
    inner = Replica("raise")
    client = Client(request(BODY))
    run(ReplicaLost(inner), client)
    assert inner.calls == 2
    assert_lost(client)


def test_an_app_raising_before_an_answer_is_retried():
    inner = Replica("raise", "ok")
    client = Client(request(BODY))
    run(ReplicaLost(inner), client)
    assert inner.calls == 2
    assert inner.bodies == [BODY, BODY]
    assert client.status == 200


def test_an_app_raising_after_it_answered_is_not_hidden():
    calls = 0

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": FROM_RB})
        raise RuntimeError("broke mid-answer")

    client = Client(request(BODY))
    with pytest.raises(RuntimeError, match="broke mid-answer"):
        run(ReplicaLost(inner), client)
    assert calls == 1
    assert client.status == 200


# --- bodies -----------------------------------------------------------------------------------------------
def test_a_body_in_chunks_is_replayed_whole():
    inner = Replica("die", "ok")
    client = Client(request(b"abc", more_body=True), request(b"def", more_body=True), request(b"gh"))
    run(ReplicaLost(inner), client)
    assert inner.bodies == [b"abcdefgh", b"abcdefgh"]
    assert client.status == 200


def test_a_body_over_the_replay_limit_reaches_the_app_whole_and_is_not_retried(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(ray_app, "MAX_REPLAY_BYTES", 10)
    parts = [b"0123456", b"789abc", b"defgh", b"ijk", b""]
    messages = [request(p, more_body=i < len(parts) - 1) for i, p in enumerate(parts)]
    inner = Replica("die", "ok")
    client = Client(*messages)
    run(ReplicaLost(inner), client)
    assert inner.calls == 1
    assert inner.bodies == [b"".join(parts)]
    seen = inner.messages[0]
    assert [m["body"] for m in seen] == parts  # in order, chunk by chunk
    assert [m["more_body"] for m in seen] == [True, True, True, True, False]
    assert client.received == len(parts)  # nothing read twice, nothing made up
    assert_lost(client)


def test_a_body_over_the_replay_limit_is_answered_normally(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ray_app, "MAX_REPLAY_BYTES", 10)
    parts = [b"x" * 8, b"y" * 8, b"z" * 8]
    inner = Replica("ok")
    client = Client(*[request(p, more_body=i < 2) for i, p in enumerate(parts)])
    run(ReplicaLost(inner), client)
    assert inner.bodies == [b"".join(parts)]
    assert client.status == 200


def test_after_the_replayed_body_the_app_hears_the_clients_own_receive():
    """The proxy listens for the client leaving while the request runs: after the kept body, its receive
    is the client's own, and a client that left is not a dead replica (no second try, no answer)."""
    disconnect = {"type": "http.disconnect", "marker": "client left"}
    heard: list[list[Message]] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        heard.append([await receive(), await receive()])  # as Ray's proxy: hears the disconnect, returns

    client = Client(request(BODY), disconnect)
    run(ReplicaLost(inner), client)
    assert len(heard) == 1, "a client that hung up was taken for a dead replica and sent again"
    first = heard[0]
    assert first[0] == {"type": "http.request", "body": BODY, "more_body": False}
    assert first[1] is disconnect  # the client's own, not one made up before it
    assert client.sent == []  # nothing sent to a client that left


def test_restyles_own_internal_error_carries_the_replica_header(tmp_path):
    """The real app: an unhandled error's 500 (answered outside the app's middleware) names the replica,
    so the proxy middleware passes it on instead of taking it for a dead replica's."""
    from fastapi.testclient import TestClient

    from restyle.serve.app import REPLICA_HEADER, ServerSettings, create_app

    settings = ServerSettings(output_dir=tmp_path, warmup=False, replica="rx")
    app = create_app(settings, lambda s: (_ for _ in ()).throw(RuntimeError("no models here")))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as http:
        r = http.get("/boom")
    assert r.status_code == 500 and r.json()["error"] == "internal"
    assert r.headers[REPLICA_HEADER] == "rx"


def test_other_scopes_pass_straight_through():
    seen: list[tuple[Any, Any, Any]] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    client = Client({"type": "lifespan.startup"})
    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}}
    asyncio.run(ReplicaLost(inner)(lifespan, client.receive, client.send))
    assert len(seen) == 1
    got_scope, got_receive, got_send = seen[0]
    assert got_scope is lifespan
    assert got_receive == client.receive and got_send == client.send
    assert client.received == 0 and client.sent == []


# --- ServeOptions -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"replicas": 0}, "replicas"),
        ({"min_replicas": 1}, "min_replicas"),
        ({"max_replicas": 3}, "min_replicas"),
        ({"min_replicas": 3, "max_replicas": 2}, "max_replicas"),
        ({"min_replicas": 0, "max_replicas": 0}, "max_replicas"),
        ({"target_ongoing_requests": 0}, "target_ongoing_requests"),
        ({"max_ongoing_requests": 0}, "max_ongoing_requests"),
        ({"gpus_per_replica": -1}, "gpus_per_replica"),
        ({"cpus_per_replica": -0.5}, "cpus_per_replica"),
    ],
)
def test_serve_options_check_names_the_bad_field(options: dict[str, Any], field: str):
    with pytest.raises(InvalidParameterError) as err:
        ServeOptions(**options).check()
    assert err.value.field == field
    flags = {"target_ongoing_requests": "--target-ongoing", "max_ongoing_requests": "max_ongoing_requests"}
    flag = flags.get(field, "--" + field.replace("_", "-"))  # the `restyle serve --ray` flag at fault
    assert err.value.message.startswith(flag) or f"/{flag}" in err.value.message, err.value.message


def test_a_negative_min_replicas_is_refused():
    with pytest.raises(InvalidParameterError):
        ServeOptions(min_replicas=-1, max_replicas=2).check()


def test_serve_options_that_are_fine():
    ServeOptions().check()
    ServeOptions(min_replicas=0, max_replicas=1).check()
    ServeOptions(gpus_per_replica=0, cpus_per_replica=0).check()
    ServeOptions(gpus_per_replica=0.5).check()


def test_autoscaling_is_what_ray_serve_expects():
    assert ServeOptions(min_replicas=1, max_replicas=3).autoscaling == {
        "min_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 2.0,
    }
    assert ServeOptions(replicas=4).autoscaling is None
