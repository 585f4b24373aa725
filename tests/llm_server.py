"""A scripted, real-socket OpenAI chat-completions server for tests.

``ScriptedLLMServer`` listens on ``127.0.0.1`` on a random free port and
answers ``POST .../chat/completions`` with non-streaming JSON replies that
each test scripts up front.  Because it is a real HTTP server (running in a
background thread of the pytest process) it can be used both through the
``openai`` SDK in-process and by subprocesses that are handed ``base_url``.

Typical usage::

    import openai
    from tests.llm_server import ScriptedLLMServer, completion, error

    def test_something():
        with ScriptedLLMServer() as server:
            server.enqueue(
                error(429, headers={"retry-after": "0"}),
                completion("hello", prompt_tokens=10, completion_tokens=2, cost=0.001),
            )
            client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
            ...
            assert server.count() == 2
            assert server.requests[-1]["body"]["messages"][0]["content"] == "..."

As a pytest fixture::

    @pytest.fixture
    def llm_server():
        with ScriptedLLMServer() as server:
            yield server

Choosing the reply for each chat request, in order of priority:

1. ``server.responder`` -- a callable ``(request_dict) -> Reply``; when set it
   answers every chat request (useful to answer according to the prompt).
2. The FIFO queue filled by ``server.enqueue(*replies)``; each request pops one.
3. ``server.default`` -- a ``Reply`` or a callable ``(request_dict) -> Reply``.
4. Otherwise a 500 with an error body saying "no scripted reply", so a test
   that under-scripts fails loudly.

A callable (responder, default, or a callable placed in the queue) may also
return a plain ``str``, which is wrapped with ``completion(str)``.  If it
raises, the server answers 500 with the exception text.

Each recorded request is a dict::

    {"path": str, "method": str, "headers": {lower-cased name: value},
     "body": parsed JSON or None, "time": time.monotonic() at arrival}

A request whose body ends before its Content-Length (the client was killed
while sending) is not recorded: no real provider would bill it.

``Reply`` fields beyond status/json/headers let a test simulate transport
trouble: ``delay`` (sleep before answering; interrupted when the server
stops), ``raw`` (send these bytes instead of JSON), ``cut_after`` (declare the
full Content-Length but send only N body bytes, then close), and ``drop``
(close the connection without sending any response).
"""

from __future__ import annotations

import collections
import http.server
import json as _json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from httpd import Background, Server

__all__ = [
    "Reply",
    "ScriptedLLMServer",
    "completion",
    "empty_choices",
    "error",
    "error_in_200",
]


@dataclass
class Reply:
    """One scripted HTTP answer."""

    status: int = 200
    json: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None
    cut_after: int | None = None
    drop: bool = False
    drip: float = 0.0  # seconds between body bytes: alive, but never done in time

    def body_bytes(self) -> bytes:
        if self.raw is not None:
            return self.raw
        if self.json is not None:
            return _json.dumps(self.json).encode("utf-8")
        return b""


ReplySource = Reply | Callable[[dict], Any]


# --------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------


def _new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def completion(
    content: str,
    *,
    prompt_tokens: int = 100,
    completion_tokens: int = 50,
    cost: float | None = None,
    finish_reason: str = "stop",
    model: str = "test/model",
    id: str | None = None,  # noqa: A002 - mirrors the JSON field name
) -> Reply:
    """A well-formed ``chat.completion`` reply with one assistant message."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cost is not None:
        usage["cost"] = cost
    return Reply(
        json={
            "id": id or _new_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
        }
    )


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error(
    status: int,
    message: str = "scripted error",
    *,
    headers: dict[str, str] | None = None,
    code: str | int | None = None,
    metadata: dict[str, Any] | None = None,
) -> Reply:
    """An OpenAI-style error reply: ``{"error": {"message", "type", "code"}}``, with
    OpenRouter's ``metadata`` (e.g. a moderation refusal's ``reasons``) when given."""
    err_type = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "api_error")
    body: dict[str, Any] = {"message": message, "type": err_type, "code": code}
    if metadata is not None:
        body["metadata"] = metadata
    return Reply(
        status=status,
        json={"error": body},
        headers=dict(headers or {}),
    )


def error_in_200(message: str = "upstream error", code: int | str = 502) -> Reply:
    """A 200 whose body carries a top-level ``error`` and a choice with
    ``finish_reason: "error"`` (the way OpenRouter reports upstream failures)."""
    return Reply(
        json={
            "id": _new_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "test/model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ""},
                    "finish_reason": "error",
                }
            ],
            "error": {"message": message, "code": code},
        }
    )


def empty_choices(*, prompt_tokens: int = 100, completion_tokens: int = 0) -> Reply:
    """A 200 ``chat.completion`` with ``"choices": []`` (and usage)."""
    return Reply(
        json={
            "id": _new_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "test/model",
            "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle
    # plus delayed ACKs adds ~40 ms to every reply on a kept-alive connection.
    disable_nagle_algorithm = True
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return

    # Track live connections so stop() can close idle keep-alive sockets.
    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.owner._untrack(self.connection)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    # ------------------------------------------------------------------
    def _read_body(self) -> bytes | None:
        """The request body, or None when the client went away before sending all of it."""
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            return b""
        if n <= 0:
            return b""
        data = self.rfile.read(n)
        return data if len(data) == n else None

    def _dispatch(self) -> None:
        owner = self.server.owner
        raw_body = self._read_body()
        if raw_body is None:
            # A request cut off mid-body (its client was killed while sending) never
            # reaches a real provider's model and is never billed: do not count it.
            self.close_connection = True
            return
        body: Any = None
        if raw_body:
            try:
                body = _json.loads(raw_body)
            except ValueError:
                body = None
        request = {
            "path": self.path,
            "method": self.command,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
            "time": time.monotonic(),
            "client_port": self.client_address[1],  # one per connection: shows keep-alive
        }
        owner._record(request)

        path = self.path.split("?", 1)[0]
        route = next((fn for suffix, fn in list(owner.routes.items()) if path.endswith(suffix)), None)
        if route is not None:
            reply = _resolve(route, request)
        elif not path.endswith("/chat/completions"):
            reply = error(404, f"no route for {self.command} {path}", code="not_found")
        elif self.command != "POST":
            reply = error(405, f"method {self.command} not allowed", code="method_not_allowed")
        else:
            reply = owner._next_reply(request)
            if owner.serial is not None:
                # One generation at a time, as a CPU server works: the next request waits.
                owner._arrive()
                with owner.serial:
                    owner._enter()
                    try:
                        self._send(reply)
                    finally:
                        owner._leave()
                return
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        owner = self.server.owner
        if reply.delay > 0 and owner._stopping.wait(reply.delay):
            # Server is shutting down: abandon the request.
            self.close_connection = True
            return
        if reply.drop:
            self.close_connection = True
            return

        body = reply.body_bytes()
        try:
            self.send_response(reply.status)
            names = {k.lower() for k in reply.headers}
            if "content-type" not in names:
                self.send_header("Content-Type", "application/json")
            for k, v in reply.headers.items():
                if k.lower() == "content-length":
                    continue
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            if reply.cut_after is not None:
                self.send_header("Connection", "close")
            self.end_headers()
            if reply.cut_after is not None:
                self.wfile.write(body[: max(0, reply.cut_after)])
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if reply.drip > 0:
                for i in range(len(body)):
                    if owner._stopping.wait(reply.drip):
                        return
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                return
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            # Client went away (e.g. it timed out while we were delaying).
            self.close_connection = True


class ScriptedLLMServer(Background):
    """Real HTTP server on 127.0.0.1 speaking OpenAI chat-completions."""

    handler = _Handler

    def __init__(self) -> None:
        super().__init__()
        self._queue: collections.deque[ReplySource] = collections.deque()
        self._requests: list[dict] = []
        self.default: ReplySource | None = None
        self.responder: Callable[[dict], Any] | None = None
        # Other endpoints of the same server, by path suffix: "/key" -> (request) -> Reply.
        self.routes: dict[str, ReplySource] = {}
        # Set to a lock to answer chat requests one at a time; ``arrived_busy`` counts
        # requests that arrived while another was in generation (0 when clients take turns).
        self.serial: threading.Lock | None = None
        self.arrived_busy = 0
        self._in_generation = 0

    def _arrive(self) -> None:
        with self._lock:
            self.arrived_busy += int(self._in_generation > 0)

    def _enter(self) -> None:
        with self._lock:
            self._in_generation += 1

    def _leave(self) -> None:
        with self._lock:
            self._in_generation -= 1

    # -- addressing -----------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting ------------------------------------------------------
    def enqueue(self, *replies: ReplySource) -> ScriptedLLMServer:
        with self._lock:
            self._queue.extend(replies)
        return self

    @property
    def pending(self) -> int:
        """Number of queued replies not consumed yet."""
        with self._lock:
            return len(self._queue)

    # -- inspection -----------------------------------------------------
    @property
    def requests(self) -> list[dict]:
        """Snapshot (copy) of all recorded requests, in arrival order."""
        with self._lock:
            return list(self._requests)

    def count(self, path_suffix: str = "/chat/completions") -> int:
        with self._lock:
            return sum(
                1 for r in self._requests if r["path"].split("?", 1)[0].endswith(path_suffix)
            )

    # -- internals (called from handler threads) ------------------------
    def _record(self, request: dict) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_reply(self, request: dict) -> Reply:
        source: ReplySource | None
        with self._lock:
            responder = self.responder
            if responder is not None:
                source = responder
            elif self._queue:
                source = self._queue.popleft()
            else:
                source = self.default
        if source is None:
            return error(500, "no scripted reply", code="no_scripted_reply")
        return _resolve(source, request)


def _resolve(source: ReplySource, request: dict) -> Reply:
    if isinstance(source, Reply):
        return source
    try:
        result = source(request)
    except Exception as exc:  # noqa: BLE001 - report to the client loudly
        return error(500, f"scripted responder raised {type(exc).__name__}: {exc}",
                     code="responder_error")
    if isinstance(result, Reply):
        return result
    if isinstance(result, str):
        return completion(result)
    return error(500, f"scripted responder returned {type(result).__name__}, not Reply",
                 code="responder_error")
