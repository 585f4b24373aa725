"""A real HTTP server on 127.0.0.1 that records webhook POSTs and answers as scripted.

    with WebhookServer() as hook:
        hook.enqueue(500, 200)            # first POST gets a 500, the second a 200
        hook.enqueue(Hang())              # the next one gets no answer until the server stops
        url = hook.url("/hooks/T000/B000/token")
        ...
        hook.posts  # [{"path", "headers" (lower-case names), "body" (parsed JSON or None), "raw"}]

Unscripted POSTs get ``hook.default`` (200).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from httpd import Background, Server


@dataclass
class Hang:
    """Answer nothing until the server stops."""


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        owner: WebhookServer = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with owner._lock:
            owner.posts.append({"path": self.path, "raw": raw, "body": body,
                                "headers": {k.lower(): v for k, v in self.headers.items()}})
        answer = owner._next()
        if isinstance(answer, Hang):
            owner.stopping.wait()
            return
        self.send_response(answer.status)
        for k, v in answer.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(answer.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer.body)


class WebhookServer(Background):
    """Records POSTs in a background thread; each test scripts the answers."""

    handler = _Handler

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[dict[str, Any]] = []
        self.default: Answer = Answer()
        self._queue: deque[Answer | Hang] = deque()

    def enqueue(self, *answers: int | Answer | Hang) -> WebhookServer:
        with self._lock:
            for a in answers:
                self._queue.append(Answer(status=a) if isinstance(a, int) else a)
        return self

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _next(self) -> Answer | Hang:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default
