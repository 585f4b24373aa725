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
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Hang:
    """Answer nothing until the server stops."""


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"


class WebhookServer:
    """Records POSTs in a background thread; each test scripts the answers."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.default: Answer = Answer()
        self._queue: deque[Answer | Hang] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def enqueue(self, *answers: int | Answer | Hang) -> WebhookServer:
        with self._lock:
            for a in answers:
                self._queue.append(Answer(status=a) if isinstance(a, int) else a)
        return self

    def url(self, path: str = "/hook") -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def _next(self) -> Answer | Hang:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def start(self) -> WebhookServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with server._lock:
                    server.posts.append({"path": self.path, "raw": raw, "body": body,
                                         "headers": {k.lower(): v for k, v in self.headers.items()}})
                answer = server._next()
                if isinstance(answer, Hang):
                    server._stopping.wait()
                    return
                self.send_response(answer.status)
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(answer.body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> WebhookServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
