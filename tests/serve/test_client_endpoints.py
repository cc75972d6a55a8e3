"""The client against endpoints that are not restyle: dropped connections, HTML, no job API, Ctrl-C."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

import restyle.client as client_module
from restyle.client import Client
from restyle.errors import RestyleError


class Recorder(BaseHTTPRequestHandler):
    """Answers as `self.server.behaviour` says; records every request line."""

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _answer(self) -> None:
        server: Any = self.server
        server.seen.append((self.command, self.path))
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        kind = server.behaviour(self.command, self.path)
        if kind == "drop":
            self.connection.close()
            return
        if kind == "html":
            body, ctype, status = b"<html>hello</html>", "text/html", 200
        elif kind == "404":
            body, ctype, status = b'{"message": "nope"}', "application/json", 404
        elif kind == "slow-ok":
            server.release.wait(30)
            body, ctype, status = json.dumps({"generated_images": []}).encode(), "application/json", 200
        else:
            body, ctype, status = json.dumps(kind).encode(), "application/json", 200
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


@pytest.fixture
def fake() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.seen, server.release = [], threading.Event()
    server.behaviour = lambda method, path: {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()


def _client(server: Any) -> Client:
    return Client(f"http://127.0.0.1:{server.server_address[1]}", timeout=30)


def test_a_dropped_connection_is_one_restyle_error(fake, photo):
    fake.behaviour = lambda method, path: "drop"
    with pytest.raises(RestyleError, match="the connection failed"):
        _client(fake).invoke(photo, "x", mask=photo)


def test_an_answer_that_is_not_json_is_one_restyle_error(fake, photo):
    fake.behaviour = lambda method, path: "html"
    with pytest.raises(RestyleError, match="not JSON"):
        _client(fake).invoke(photo, "x", mask=photo)


def test_an_endpoint_without_the_job_api_is_left_alone(fake, photo, monkeypatch):
    """Polling stops once the endpoint has shown no job for FOLLOW_GIVE_UP_S; the call still succeeds."""
    monkeypatch.setattr(client_module, "FOLLOW_EVERY_S", 0.01)
    monkeypatch.setattr(client_module, "FOLLOW_GIVE_UP_S", 0.2)
    fake.behaviour = lambda method, path: "404" if method == "GET" else "slow-ok"
    followers: list[threading.Thread] = []

    class Recorded(threading.Thread):
        def start(self) -> None:
            super().start()
            followers.append(self)

    monkeypatch.setattr(client_module, "threading", SimpleNamespace(Thread=Recorded, Event=threading.Event))
    answers: list[Any] = []
    call = threading.Thread(target=lambda: answers.append(_client(fake).invoke(photo, "x", progress=print)))
    call.start()
    while not followers:  # started by the call right away; the call's own join below bounds this
        assert call.is_alive() or followers, "the call ended without following its job"
        threading.Event().wait(0.01)
    follower = followers[0]
    follower.join(timeout=60)  # it gives up by itself while the call still waits
    assert not follower.is_alive() and call.is_alive()
    gets = sum(1 for method, _ in fake.seen if method == "GET")
    fake.release.set()
    call.join(timeout=60)
    assert answers == [[]] and gets >= 1
    assert sum(1 for method, _ in fake.seen if method == "GET") == gets  # none after it gave up


def test_ctrl_c_while_waiting_cancels_the_job_on_the_server(fake, photo, monkeypatch):
    fake.behaviour = lambda method, path: (
        {"state": "running", "step": 1, "total": 5} if method == "GET" else {}
    )
    client = _client(fake)

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        if args[0] == "POST" and args[1] == "/invocations":
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    original = client.request
    monkeypatch.setattr(client, "request", interrupted)
    with pytest.raises(KeyboardInterrupt):
        client.invoke(photo, "x", mask=photo, progress=lambda status: None)
    cancels = [path for method, path in fake.seen if method == "POST" and path.endswith("/cancel")]
    assert len(cancels) == 1 and cancels[0].startswith("/v1/jobs/")
