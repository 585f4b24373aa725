"""The one background HTTP server the test servers share: a real socket on 127.0.0.1, a port
of the kernel's choosing, a serving thread, and a stop that also cuts open connections (a
handler waiting on a "hang" answer watches ``stopping``)."""

from __future__ import annotations

import http.server
import socket
import threading
from typing import Any, Self


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: Any

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        return  # clients hanging up (timeouts, aborted connections) are expected in tests


class Background:
    """Start, stop and address a ``ThreadingHTTPServer`` whose handlers reach this object as
    ``self.server.owner``."""

    handler: type[http.server.BaseHTTPRequestHandler]

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = Server(("127.0.0.1", 0), self.handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01},
                                        name=f"{type(self).__name__}:{httpd.server_address[1]}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server is not running")
        return int(self._httpd.server_address[1])

    @property
    def stopping(self) -> threading.Event:
        return self._stopping

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)
